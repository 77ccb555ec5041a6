"""Numbers from one source: the tables in README.md and docs/*.md are rendered from results/*.json and
benchmarks/results/*.json by this script, between markers

    <!-- table: NAME -->
    ...generated...
    <!-- end table -->

    python tools/results_tables.py            # rewrite every marked table in README.md and docs/*.md
    python tools/results_tables.py --check    # exit 1 naming each table that differs from its JSON (tests/test_docs_numbers.py)

A table whose JSON is missing renders as a one-line note saying which file to produce.
"""
import argparse
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
MARK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def _load(path):
    p = ROOT / path
    return json.loads(p.read_text()) if p.is_file() else None


def _latest(pattern):
    files = sorted((ROOT / "benchmarks" / "results").glob(pattern))
    return (json.loads(files[-1].read_text()), files[-1].relative_to(ROOT)) if files else (None, None)


def _mm(d, p=2):
    "mean (min–max) of a {mean, min, max} dict."
    return f"{d['mean']:.{p}f} ({d['min']:.{p}f}–{d['max']:.{p}f})"


def summary():
    m = _load("results/metrics.json")
    if m is None: return "_run `dvc repro` to produce results/metrics.json_\n"
    s, real = m["summary"], m["real_test"]["fid"]
    rows = ["| model | NFE | FD | FD / real floor | confident | classes |", "|---|---|---|---|---|---|"]
    for st, label in (("distill", "ECT student (distilled)"), ("train", "sCT (from scratch)")):
        for k, r in m.get(st, {}).items():
            if not isinstance(r, dict) or "fid" not in r: continue
            rows.append(f"| {label} | {r['nfe']} | {r['fid']:.1f} | {r['fid'] / real:.2f}× | {r['classifier_confident_frac']:.1%} | "
                        f"{r.get('classifier_classes_present', '–')} |")
    t = next((v for k, v in m.get("teacher", {}).items() if isinstance(v, dict)), None)
    if t: rows.append(f"| diffusion teacher (Heun) | {t['nfe']} | {t['fid']:.1f} | {t['fid'] / real:.2f}× | {t['classifier_confident_frac']:.1%} | "
                      f"{t.get('classifier_classes_present', '–')} |")
    rows.append(f"| real test images (the floor) | – | {real:.1f} | 1.00× | {m['real_test']['classifier_confident_frac']:.1%} | – |")
    return "\n".join(rows) + "\n"


def resolution():
    r = _load("results/resolution.json")
    if r is None: return "_run `dvc repro` to produce results/resolution.json_\n"
    r = r["resolution"]
    if "controls" not in r: return "_results/resolution.json predates the current `resolution` stage: run `dvc repro`_\n"
    rows = ["| model | size | consistency | sub-lattice incoherence | FD(a) (1× FD) | confident(a) − 1× | FD(b) | bicubic FD(b) | FD(b) / bicubic |",
            "|---|---|---|---|---|---|---|---|---|"]
    for st, label in (("distill", "ECT"), ("train", "sCT")):
        for sc, row in r.get(st, {}).items():
            if sc in ("spread", "1x") or "1step" not in row: continue
            a, b = row["1step"], row.get("bicubic_1step", {})
            one = a["fd_a"] / a["fd_a_over_1x"]
            rows.append(f"| {label} | {sc} ({row['size']} px) | {a['consistency']:.3f} | {a.get('incoherence', float('nan')):.3f} | "
                        f"{a['fd_a']:.1f} ({one:.1f}) | {a.get('confident_a_minus_1x', 0):+.3f} | {a['fd_b']:.1f} | "
                        f"{b.get('fd_b', float('nan')):.1f} | {a.get('fd_b_over_bicubic', float('nan')):.2f} |")
    c = r.get("controls", {})
    rows.append("")
    rows.append("| real test images | " + " | ".join(f"{sc}: FD(b) {v['fd_b']:.1f}, FD(a) {v['fd_a']:.1f}" for sc, v in c.items()) + " |")
    rows.append("|---|" + "---|" * len(c))
    return "\n".join(rows) + "\n"


def resolution_spread():
    r = _load("results/resolution.json")
    if r is None: return "_run `dvc repro` to produce results/resolution.json_\n"
    r = r["resolution"]
    if "controls" not in r: return "_results/resolution.json predates the current `resolution` stage: run `dvc repro`_\n"
    rows = ["| model | size | consistency | incoherence | FD(a) / 1× | confident(a) | FD(b) / bicubic |", "|---|---|---|---|---|---|---|"]
    for st, label in (("distill", "ECT"), ("train", "sCT")):
        for sc, d in r.get(st, {}).get("spread", {}).items():
            rows.append(f"| {label} | {sc} | {_mm(d['consistency'], 3)} | {_mm(d['incoherence'], 3)} | {_mm(d['fd_a_over_1x'])} | "
                        f"{_mm(d['confident_a'], 3)} | {_mm(d['fd_b_over_bicubic'])} |")
    return "\n".join(rows) + "\n"


def grid_rules():
    g, path = _latest("*-grid-rules.json")
    if g is None: return "_run `python benchmarks/grid_rules.py RUN_DIR` to produce benchmarks/results/<date>-grid-rules.json_\n"
    rows = ["| model | size | rule | consistency | sub-lattice incoherence | FD(a) / 1× | FD(b) | FD(b) / bicubic |", "|---|---|---|---|---|---|---|---|"]
    for st, t in g["models"].items():
        for sc in ("2x", "3x"):
            for rule, d in t[sc].items():
                rows.append(f"| {st} | {sc} | {rule} | {_mm(d['consistency'], 3)} | {_mm(d['incoherence'], 3)} | {_mm(d['fd_a_over_1x'])} | "
                            f"{_mm(d['fd_b'], 1)} | {_mm(d['fd_b_over_bicubic'])} |")
    return "\n".join(rows) + f"\n\n_{g['seeds']} sampling seeds, mean (min–max); `{path}`._\n"


def ablation():
    a, path = _latest("*-ablation.json")
    if a is None: return "_run `python benchmarks/ablation.py RUN_DIR` then `--table` to produce benchmarks/results/<date>-ablation.json_\n"
    f = lambda d, k, p=2: _mm(d[k], p) if k in d else "–"
    rows = ["| configuration | parameters | seeds | 1× FD, 1 step | confident | 1× FD, 2 steps | 2× consistency | 2× FD(b) / bicubic | 3× consistency | native 2× consistency | s / step (teacher, ECT) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, d in a["table"].items():
        rows.append(f"| {name} | {d['parameters'] / 1e3:.0f}k | {len(d['seeds'])} | {f(d, '1x_1step.fd_a', 1)} | {f(d, '1x_1step.confident_a')} | "
                    f"{f(d, '1x_2step.fd_a', 1)} | {f(d, 'multigrid_2x.consistency', 3)} | {f(d, 'multigrid_2x.fd_b_over_bicubic')} | "
                    f"{f(d, 'multigrid_3x.consistency', 3)} | {f(d, 'native_2x.consistency', 3)} | "
                    f"{d['s_per_step.teacher']['mean']:.3f}, {d['s_per_step.distill']['mean']:.3f} |")
    return "\n".join(rows) + f"\n\n_mean (min–max) over training seeds; `{path}`._\n"


def cifar():
    c, path = _latest("*-cifar-resolution.json")
    if c is None: return "_run `python benchmarks/cifar_resolution.py ...` to produce benchmarks/results/<date>-cifar-resolution.json_\n"
    t = c["table"]
    rows = ["| 32-px images | FD(b) at 32 px | FD(a) at 16 px |", "|---|---|---|"]
    for name, label in (("native", "native 1-step samples (multigrid)"), ("bicubic", "16-px samples, bicubic"),
                        ("fourier", "16-px samples, ideal (Fourier) upsampling"), ("real", "real test images (the floor)")):
        rows.append(f"| {label} | {_mm(t[name]['fd_b'])} | {_mm(t[name]['fd_a'])} |")
    mins = {k: v / 60 for k, v in c["seconds"].items()}
    return "\n".join(rows) + (f"\n\n_native ÷ bicubic {_mm(t['native']['fd_b_over_bicubic'])}; same-seed consistency "
                              f"{_mm(t['native']['consistency'], 3)}; {c['seeds']} sampling seeds, mean (min–max); teacher "
                              f"{c['steps']['teacher']} + ECT {c['steps']['distill']} steps ({mins.get('teacher', 0):.0f} + "
                              f"{mins.get('distill', 0):.0f} min on one CPU thread); `{path}`._\n")


TABLES = {"summary": summary, "resolution": resolution, "resolution-spread": resolution_spread, "grid-rules": grid_rules,
          "ablation": ablation, "cifar": cifar}


def render(text: str) -> str:
    def sub(m):
        name = m.group("name")
        if name not in TABLES: raise SystemExit(f"unknown table {name!r} (known: {', '.join(TABLES)})")
        return m.group(1) + TABLES[name]() + m.group(4)
    return MARK.sub(sub, text)


def documents():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a committed table differs from its JSON")
    args = ap.parse_args(argv)
    stale = []
    for p in documents():
        if not p.is_file(): continue
        old = p.read_text(); new = render(old)
        if new != old:
            if args.check:
                stale += [f"{p.relative_to(ROOT)}: table {m.group('name')}" for m, n in zip(MARK.finditer(old), MARK.finditer(new))
                          if m.group(0) != n.group(0)]
            else:
                p.write_text(new); print(f"updated {p.relative_to(ROOT)}")
    if stale:
        print("tables that differ from their JSON (run python tools/results_tables.py):\n  " + "\n  ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
