"""Training-step cost of two versions of noctcm side by side: `noctcm bench --only steps` of each, interleaved.

    git worktree add /tmp/before <commit>
    python benchmarks/before_after.py /tmp/before . [--rounds 3] [--repeats 5] [--out benchmarks/results/<date>-before-after.json]

Each round runs the bench of BEFORE then AFTER (each in its own process, `--threads 1`, its own `params.yaml`), so
slow phases of a noisy machine hit both. Prints, per method, the median step time of each version over the rounds
and the ratio after ÷ before (< 1: faster), of the medians and paired (within a round, median over rounds); `--out`
writes them, with every round's times, as JSON (`tools/results_tables.py` renders docs/benchmarks.md's table).
"""
import argparse
import datetime
import json
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
    out = {"date": str(datetime.date.today()), "before": rev(dirs["before"]), "after": rev(dirs["after"]),
           "rounds": args.rounds, "repeats": args.repeats, "cpu_count": os.cpu_count(), "runs": runs, "steps": summary(runs)}
    for m, r in out["steps"].items():
        print(f"{m}: before {r['before_ms']:.1f} ms, after {r['after_ms']:.1f} ms, after / before {r['ratio_of_medians']:.2f} "
              f"(paired {r['paired_ratio']:.2f}; rounds {', '.join(f'{x:.2f}' for x in r['round_ratios'])})")
    if args.out: pathlib.Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


def summary(runs: dict) -> dict:
    "Per step: the median time of each version, the ratio of the medians, and the paired ratio (median over rounds of after ÷ before within the round)."
    out = {}
    for m in ("diffusion", "sCT", "sCD", "ECT"):
        pairs = [(b[m], a[m]) for b, a in zip(runs["before"], runs["after"]) if m in b and m in a]
        if not pairs: continue
        b, a = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        ratios = [y / x for x, y in pairs]
        out[m] = {"before_ms": b, "after_ms": a, "ratio_of_medians": a / b, "paired_ratio": statistics.median(ratios),
                  "round_ratios": ratios}
    return out


if __name__ == "__main__":
    main()
