"""Training-step cost of two versions of noctcm side by side: `noctcm bench --only steps` of each, interleaved.

    git worktree add /tmp/before <commit>
    python benchmarks/before_after.py /tmp/before . [--rounds 3] [--repeats 5] [--out benchmarks/results/<date>-before-after.md]

Each round runs the bench of BEFORE then AFTER (each in its own process, `--threads 1`, its own `params.yaml`), so
slow phases of a noisy machine hit both. Prints, per method, the median step time of each version over the rounds
and the ratio after ÷ before (< 1: faster).
"""
import argparse
import datetime
import os
import pathlib
import re
import statistics
import subprocess
import sys

ROW = re.compile(r"^\| (sCT|sCD|ECT) step ÷ diffusion step \| [^|]+ \|[^|]*\| ([\d.]+) ms \(\d+ img/s\) vs ([\d.]+) ms")


def bench(code: pathlib.Path, repeats: int) -> dict:
    "{method: ms per step} from one `noctcm bench --only steps` run of the code in `code`."
    env = dict(os.environ, PYTHONPATH=str(code), MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, "-m", "noctcm.cli", "bench", "--config", "params.yaml", "--threads", "1",
                          "--only", "steps", "--repeats", str(repeats), "--no-write"],
                         cwd=code, env=env, capture_output=True, text=True, check=True).stdout
    ms = {}
    for line in out.splitlines():
        m = ROW.match(line)
        if m:
            ms[m.group(1)] = float(m.group(2))
            ms["diffusion"] = float(m.group(3))
    return ms


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    dirs = {"before": pathlib.Path(args.before).resolve(), "after": pathlib.Path(args.after).resolve()}
    runs = {k: [] for k in dirs}
    for r in range(args.rounds):
        for k, d in dirs.items():
            runs[k].append(bench(d, args.repeats))
            print(f"round {r + 1} {k}: {runs[k][-1]}", file=sys.stderr, flush=True)
    rev = lambda d: subprocess.run(["git", "-C", str(d), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    head = (f"`python benchmarks/before_after.py BEFORE AFTER --rounds {args.rounds} --repeats {args.repeats}`: before = "
            f"{rev(dirs['before'])}, after = {rev(dirs['after'])}")
    text = report(runs, head, args.repeats)
    print(text)
    if args.out: pathlib.Path(args.out).write_text(text)


def report(runs: dict, head: str, repeats: int) -> str:
    "The markdown table: per step, the medians of each version and two ratios (of the medians; median of per-round ratios)."
    n = len(runs["before"])
    lines = [f"## Training-step cost before / after ({datetime.date.today()})", "",
             f"{head}; `noctcm bench --threads 1 --only steps`, each version in its own process, interleaved; medians over "
             f"{n} rounds of {repeats}-repeat medians; machine: {os.cpu_count()} CPU cores. The paired ratio (after ÷ before "
             f"within a round, median over rounds) is the one to read on a noisy machine.", "",
             "| step | before (ms) | after (ms) | after ÷ before (medians) | after ÷ before (paired) | per round |",
             "|---|---|---|---|---|---|"]
    for m in ("diffusion", "sCT", "sCD", "ECT"):
        pairs = [(b[m], a[m]) for b, a in zip(runs["before"], runs["after"]) if m in b and m in a]
        if not pairs: continue
        b, a = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        ratios = [y / x for x, y in pairs]
        lines.append(f"| {m} | {b:.1f} | {a:.1f} | {a / b:.2f} | {statistics.median(ratios):.2f} | "
                     f"{', '.join(f'{r:.2f}' for r in ratios)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
