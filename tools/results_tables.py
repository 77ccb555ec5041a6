"""Numbers from one source: the tables and quoted numbers in README.md and docs/*.md are rendered from results/*.json
and benchmarks/results/*.json by this script, between markers. A block (a table, or a short generated paragraph):

    <!-- table: NAME -->
    ...generated...
    <!-- end table -->

and a number inside a sentence (one line, no line break inside):

    ... test accuracy <!-- value: NAME -->0.990<!-- end value --> ...

    python tools/results_tables.py            # rewrite every marked block in README.md and docs/*.md
    python tools/results_tables.py --check    # exit 1 naming each block that differs from its JSON (tests/test_docs_numbers.py)
    python tools/results_tables.py --list     # the block and value names

The output depends on the JSON files only (no dates, no machine state), so a rerun on unchanged JSON changes nothing.
A block whose JSON is missing renders as a one-line note saying which file to produce. Numbers without a JSON (wall
times, measurements of earlier versions) stay in the docs pages as dated notes, never in README.md.
"""
import argparse
import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
MARK = re.compile(r"(<!-- table: (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def _load(path):
    p = ROOT / path
    return json.loads(p.read_text()) if p.is_file() else None


def _latest(pattern):
    files = sorted((ROOT / "benchmarks" / "results").glob(pattern))
    return (json.loads(files[-1].read_text()), files[-1].relative_to(ROOT)) if files else (None, None)


def _g(v):
    "A number without a needless '.0' (classes present is a mean over draws); anything else as it is."
    return f"{v:.3g}" if isinstance(v, (int, float)) else v


def _mm(d, p=2):
    "mean (min–max) of a {mean, min, max} dict."
    return f"{d['mean']:.{p}f} ({d['min']:.{p}f}–{d['max']:.{p}f})"


def _params():
    import yaml
    p = ROOT / "params.yaml"
    return yaml.safe_load(p.read_text()) if p.is_file() else {}


def _models(m):
    "(label, row, is_best_1step) per evaluated model of results/metrics.json, in the order the tables show them."
    best = "distill" if m.get("summary", {}).get("best_1step_is_distill", 1) else "train"
    out = []
    t = next(((k, v) for k, v in m.get("teacher", {}).items() if isinstance(v, dict)), None)
    if t: out.append((f"diffusion teacher, Heun ({t[0]})", t[1], False))
    for st, label in (("train", "sCT from scratch"), ("distill", "ECT student (distilled from the teacher)")):
        for k, r in m.get(st, {}).items():
            if isinstance(r, dict) and "fid" in r:
                out.append((f"{label}, {_g(r['nfe'])} step{'s' if r['nfe'] > 1 else ''}", r, st == best and k == "1step"))
    return out


def summary():
    "README: FD, its ratio to the real floor, confident share, per model."
    m = _load("results/metrics.json")
    if m is None: return "_run `dvc repro` to produce results/metrics.json_\n"
    real = m["real_test"]
    rows = ["| model | NFE | FD ↓ | FD ÷ real floor | confident (p ≥ 0.9) | classes |", "|---|---|---|---|---|---|",
            f"| real test images (the floor) | – | {real['fid']:.1f} | 1.00× | {real['classifier_confident_frac']:.1%} | "
            f"{_g(real.get('classifier_classes_present', '–'))} |"]
    for label, r, best in _models(m):
        b = "**" if best else ""
        sd = f" ± {r['fid_sd']:.1f}" if "fid_sd" in r else ""
        rows.append(f"| {b}{label}{b} | {_g(r['nfe'])} | {b}{r['fid']:.1f}{b}{sd} | {r['fid'] / real['fid']:.2f}× | "
                    f"{r['classifier_confident_frac']:.1%} | {_g(r.get('classifier_classes_present', '–'))} |")
    draws = next((r["draws"] for _, r, _ in _models(m) if "draws" in r), None)
    how = f"; consistency models: the mean ± sd over {draws:g} sampling draws" if draws else ""
    return "\n".join(rows) + f"\n\n_{real.get('num_samples', '?')} samples per row{how}; `results/metrics.json`._\n"


def metrics():
    "docs/results.md: every measure of results/metrics.json, the selected checkpoints, the machine."
    m = _load("results/metrics.json")
    if m is None: return "_run `dvc repro` to produce results/metrics.json_\n"
    real = m["real_test"]
    rows = ["| model | NFE | FD ↓ | FD ÷ real | IS ↑ | precision | recall | confident (p ≥ 0.9) | classes | images/s |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    one = lambda label, r, nfe, ips: (f"| {label} | {nfe} | {r['fid']:.1f} | {r['fid'] / real['fid']:.2f} | {r['is_mean']:.2f} | "
                                      f"{r['precision']:.2f} | {r['recall']:.2f} | {r['classifier_confident_frac']:.3f} | "
                                      f"{_g(r.get('classifier_classes_present', '–'))} | {ips} |")
    rows.append(one("real test split vs train (the floor)", real, "–", "–"))
    for label, r, best in _models(m):
        rows.append(one(f"**{label}**" if best else label, r, _g(r["nfe"]), f"{r['images_per_s']:.0f}" if "images_per_s" in r else "–"))
    p, steps = _params(), []
    for st, sec, label in (("teacher", "teacher", "teacher"), ("train", "training", "sCT"), ("distill", "distillation", "ECT")):
        if "checkpoint_step" in m.get(st, {}):
            of = p.get(sec, {}).get("steps")
            steps.append(f"{label} step {m[st]['checkpoint_step']:,}" + (f" of {of:,}" if of else ""))
    draws = next((r["draws"] for _, r, _ in _models(m) if "draws" in r), None)
    note = (f"_{real.get('num_samples', '?')} samples per row" + (f" (consistency models: the mean over {draws:g} sampling draws)" if draws else "")
            + f"; checkpoints used: {', '.join(steps)}")
    mach = m.get("machine")
    if isinstance(mach, dict):
        order = ["cpu", "cpu_instructions", "torch_cpu_capability", "system", "torch", "numpy", "python", "threads", "training_threads"]
        keys = [k for k in order if k in mach] + sorted(k for k in mach if k not in order)
        note += "; machine: " + ", ".join(f"{k.replace('_', ' ')} {mach[k]}" for k in keys)
    return "\n".join(rows) + f"\n\n{note}; `results/metrics.json`._\n"


def targets():
    "The job's targets for the best 1-step model (and its 2-step sampling), met or not."
    m = _load("results/metrics.json")
    if m is None: return "_run `dvc repro` to produce results/metrics.json_\n"
    s, n = m["summary"], m["real_test"].get("num_samples", 0)
    best = m["distill" if s.get("best_1step_is_distill", 1) else "train"]
    rows = ["| target | best 1-step model | met | its 2 steps | met |", "|---|---|---|---|---|"]
    yes = lambda ok: "yes" if ok else "**no**"
    two = best.get("2step", {})
    r1, r2 = s["best_1step_fid_over_real"], two.get("fid", float("nan")) / m["real_test"]["fid"]
    rows.append(f"| FD ≤ 2× the real floor | {r1:.2f}× | {yes(r1 <= 2)} | {r2:.2f}× | {yes(r2 <= 2)} |")
    c1, c2 = s["best_1step_confident_frac"], two.get("classifier_confident_frac", float("nan"))
    k1, k2 = round(c1 * n), round(c2 * n)
    rows.append(f"| ≥ 70% of samples classified with p ≥ 0.9 | {c1:.1%} ({k1} of {n}) | {yes(c1 >= 0.7)} | "
                f"{c2:.1%} ({k2} of {n}) | {yes(c2 >= 0.7)} |")
    cl1, cl2 = s.get("best_1step_classes_present", 0), two.get("classifier_classes_present", 0)
    rows.append(f"| every class present | {cl1:g} of 10 | {yes(cl1 >= 10)} | {cl2:g} of 10 | {yes(cl2 >= 10)} |")
    se = (c1 * (1 - c1) / n) ** 0.5 if n else float("nan")
    return "\n".join(rows) + (f"\n\n_The confident share from {n} samples carries a standard error of ±{se:.1%} "
                              f"(binomial); `results/metrics.json`._\n")


def seeds(pattern="*-seeds.json"):
    "README and docs/results.md: the default pipeline over training seeds (benchmarks/seeds.py)."
    d, path = _latest(pattern)
    if d is None: return "_run `python benchmarks/seeds.py RUN_DIR ...` to produce benchmarks/results/<date>-seeds.json_\n"
    yes = lambda ok: "yes" if ok else "**no**"
    rows = ["| training seed | real floor FD | best 1-step FD | ÷ floor | confident | 2-step FD | within the bar |",
            "|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        rows.append(f"| {r['seed']} | {r['floor_fd']:.1f} | {r['best_1step_fd']:.1f} | {r['best_1step_ratio']:.2f}× | "
                    f"{r['best_1step_confident']:.1%} | {r['best_2step_fd']:.1f} | {yes(r['within_bar'])} |")
    a = d["aggregate"]
    pm = lambda k, p=1: f"{a[k]['mean']:.{p}f} ± {a[k]['std']:.{p}f}"
    rows.append(f"| mean ± sd ({len(d['rows'])} seeds) | {pm('floor_fd')} | {pm('best_1step_fd')} | {pm('best_1step_ratio', 2)}× | "
                f"{a['best_1step_confident']['mean']:.1%} ± {a['best_1step_confident']['std']:.1%} | {pm('best_2step_fd')} | "
                f"{sum(r['within_bar'] for r in d['rows'])} of {len(d['rows'])} seeds |")
    mach = next((r["machine"] for r in d["rows"] if isinstance(r.get("machine"), dict)), None)
    where = f"; machine: {mach.get('cpu', '?')} ({mach.get('cpu_instructions', mach.get('torch_cpu_capability', '?'))})" if mach else ""
    judges = {r.get("judge_seed", r["seed"]) for r in d["rows"]}
    judge = (f"one judge for all, its classifiers trained with `evaluation.classifier_seed: {judges.pop()}`" if len(judges) == 1
             else "the judge's classifier trained with the same seed")
    return ("\n".join(rows) + "\n\n_The bar: best 1-step FD ≤ 2.0× the real floor, ≥ 70% of samples classified with "
            f"p ≥ 0.9, 2 steps no worse than 1; {d.get('how', 'each seed is a fresh clone with `training.seed` changed')} ({judge}){where}; `{path}`._\n")


ABLATION_DIR = "benchmarks/results/ablation-2026-12-04"
ABLATION_ROWS = ["conv-white-single", "conv-white-multi", "conv-grf-single", "conv-grf-multi", "fno-white-single",
                 "fno-grf-single", "operator-white-single", "operator-white-multi", "operator-grf-single",
                 "operator-grf-multi", "physconv-grf-single", "physconv-grf-multi"]
BAND_ROWS = [("default-white-single", "white noise", "short"), ("default-band-single", "band noise", "short"),
             ("default-band-single-full", "band noise", "full (the pipeline's teacher + ECT)"),
             ("physconv-band-multi", "band noise, physconv, multi-resolution", "short")]


def _ablation_cols(d):
    "The measures of one per-row JSON of benchmarks/ablation.py (2026-12-04 format)."
    return {"fd": d["fd_1x"], "floor": d["fd_1x"] / d["real_fd_1x"], "a": d["fd_a_2x"] / d["fd_1x"], "conf": d["confident_2x"],
            "b": d["fd_b_2x"] / d["fd_b_2x_bicubic"], "la": d["lift2_fd_a_2x"] / d["summary"]["best_2step_fid"],
            "lb": d["lift2_fd_b_2x"] / d["fd_b_2x_bicubic2"], "lconf": d["lift2_confident_2x"]}


def _bold(rows, key, best):
    "Mark the best value of column `key` (best = min or max) in bold."
    b = best(r[key] for r in rows)
    return lambda r, s: f"**{s}**" if r[key] == b else s


def ablation_2026_12_04():
    "docs/ablation.md: the twelve configurations of 2026-12-04 (one seed each), from the per-row JSON."
    rows = []
    for name in ABLATION_ROWS:
        d = _load(f"{ABLATION_DIR}/{name}.json")
        if d is None: return f"_{ABLATION_DIR}/{name}.json is missing_\n"
        rows.append({"name": name, "params": d["params"], "s": d["distill_s_per_step"], **_ablation_cols(d)})
    B = {k: _bold(rows, k, max if k in ("conf", "lconf") else min) for k in ("fd", "a", "conf", "b", "la", "lb", "lconf")}
    out = ["| configuration | parameters | FD 1× | 2× FD(a) ÷ 1× | 2× confident | 2× FD(b) ÷ bicubic | lift (2 NFE): FD(a) ÷ 2-step 1× "
           "| lift FD(b) ÷ bicubic | lift confident | s / ECT step |", "|---|---|---|---|---|---|---|---|---|---|"]
    fmt = {"fd": "{:.1f}", "a": "{:.2f}", "conf": "{:.2f}", "b": "{:.2f}", "la": "{:.2f}", "lb": "{:.2f}", "lconf": "{:.2f}"}
    for r in rows:
        cells = [B[k](r, f.format(r[k])) for k, f in fmt.items()]
        out.append(f"| {r['name']} | {r['params'] / 1e3:.0f}k | " + " | ".join(cells) + f" | {r['s']:.3f} |")
    return "\n".join(out) + f"\n\n_One training seed per row, 1-step samples unless lift; best of each column in bold; `{ABLATION_DIR}/`._\n"


def ablation_band():
    "docs/ablation.md: band-limited noise on the default model (2026-12-04, the 2-core machine), from the per-row JSON."
    out = ["| model | noise, backbone | protocol | FD 1× | ÷ real floor | 2× FD(a) | ÷ 1× | 2× confident | 2× FD(b) ÷ bicubic "
           "| lift FD(a) ÷ 2-step 1× | lift FD(b) ÷ bicubic |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, what, proto in BAND_ROWS:
        d = _load(f"{ABLATION_DIR}/{name}.json")
        if d is None: return f"_{ABLATION_DIR}/{name}.json is missing_\n"
        c = _ablation_cols(d)
        out.append(f"| {name} ({d['params'] / 1e3:.0f}k) | {what} | {proto} | {c['fd']:.1f} | {c['floor']:.2f}× | {d['fd_a_2x']:.1f} | "
                   f"{c['a']:.2f} | {c['conf']:.2f} | {c['b']:.2f} | {c['la']:.2f} | {c['lb']:.2f} |")
    return "\n".join(out) + f"\n\n_`{ABLATION_DIR}/default-*.json`, `physconv-band-multi.json`._\n"


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
            f = lambda v, p: "–" if v is None or v != v else f"{v:.{p}f}"
            rows.append(f"| {label} | {sc} ({row['size']} px) | {a['consistency']:.3f} | {f(a.get('incoherence'), 3)} | "
                        f"{a['fd_a']:.1f} ({one:.1f}) | {a.get('confident_a_minus_1x', 0):+.3f} | {a['fd_b']:.1f} | "
                        f"{f(b.get('fd_b'), 1)} | {f(a.get('fd_b_over_bicubic'), 2)} |")
    c = r.get("controls", {})
    rows += ["", "| real test images at | FD(b) at that size | FD(a) at 16 px | confident(a) |", "|---|---|---|---|"]
    rows += [f"| {sc} ({v['size']} px) | {v['fd_b']:.1f} | {v['fd_a']:.1f} | {v['confident_a']:.1%} |" for sc, v in c.items()]
    rows.append("\n_1-step samples of the selected checkpoints, main sampling seed; sub-lattice incoherence exists at integer "
                "refinements only, the bicubic baseline at sizes above the training size; `results/resolution.json`._")
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


def distill_sweep():
    "docs/results.md: the teacher / student budget sweep that chose the default (benchmarks/score_snapshots.py)."
    d, path = _latest("*-distill-sweep.json")
    if d is None: return "_no benchmarks/results/<date>-distill-sweep.json_\n"
    rows = ["| run | teacher steps | student EMA σ_rel | ECT stage steps | other | student step | 1-step FD (sd) | confident | 2-step FD |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        name = f"**{r['run']} ({d.get('chosen_label', 'default')})**" if r["run"] == d["chosen"] else r["run"]
        rows.append(f"| {name} | {r['teacher_steps']:,} | {r['student_ema_sigma_rel']:.2f} | {r['ect_stage_steps']} | {r['other'] or ''} | "
                    f"{r['student_step']:,} | {r['fd_1step']:.1f} ({r['fd_1step_sd']:.1f}) | {r['confident_1step']:.1%} | {r['fd_2step']:.1f} |")
    ext = d.get("extended_students", {}).get("rows", [])
    if ext:
        rows += ["", f"| training seed ({d.get('chosen_label', 'new default')}) | student step | 1-step FD (sd) | ÷ floor | confident | 2-step FD |",
                 "|---|---|---|---|---|---|"]
        rows += [f"| {r['training_seed']} | {r['student_step']:,} | {r['fd_1step']:.1f} ({r['fd_1step_sd']:.1f}) | "
                 f"{r['fd_1step'] / d['floor_fd']:.2f}× | {r['confident_1step']:.1%} | {r['fd_2step']:.1f} |" for r in ext]
    return "\n".join(rows) + (f"\n\n_{d['protocol']}; mean (sd) over {d['draws']} draws of {d['num_samples']} samples; real floor "
                              f"FD {d['floor_fd']:.1f}; the second table: "
                              f"{d['extended_students']['what'] if ext else ''}; `{path}`._\n")


def student_sweep():
    "docs/results.md: the ECT student variants over training seeds that chose the present default (score_snapshots.py)."
    d, path = _latest("*-student-sweep.json")
    if d is None: return "_no benchmarks/results/<date>-student-sweep.json_\n"
    seeds = sorted({int(s) for r in d["runs"] for s in r["seeds"]})
    rows = [f"| run | change from the 1,400-step default | student step | {' | '.join(f'seed {s}' for s in seeds)} | mean of seeds 1, 2 |",
            "|---|---|---|" + "---|" * len(seeds) + "---|"]
    for r in d["runs"]:
        steps = sorted({int(k) for v in r["seeds"].values() for k in v["steps"]})
        for k in steps:
            cells, pair = [], []
            for s in seeds:
                v = r["seeds"].get(str(s), {}).get("steps", {}).get(str(k))
                cells.append(f"{v['fd_1step']:.1f} ({v['confident_1step']:.1%})" if v else "")
                if v and s in (1, 2): pair.append(v["fd_1step"])
            bold = r["name"] == d.get("chosen") and k == d.get("chosen_step")
            mean = f"{sum(pair) / len(pair):.1f}" if len(pair) == 2 else ""
            row = [r["name"], r["what"], f"{k:,}", *cells, mean]
            rows.append("| " + " | ".join(f"**{c}**" if bold and c else c for c in row) + " |")
    return "\n".join(rows) + (f"\n\n_1-step FD (confident share); the bar is FD ≤ {2 * d['floor_fd']:.1f} (2.0× the real floor "
                              f"{d['floor_fd']:.1f}) and ≥ 70% confident; {d['protocol']} `{path}`._\n")


def before_after():
    "docs/benchmarks.md: training steps of two versions of the code, interleaved (benchmarks/before_after.py)."
    d, path = _latest("*-before-after.json")
    if d is None: return "_run `python benchmarks/before_after.py BEFORE AFTER --out ...`_\n"
    rows = ["| step | before (ms) | after (ms) | after ÷ before, paired | per round |", "|---|---|---|---|---|"]
    for m, r in d["steps"].items():
        rows.append(f"| {m} | {r['before_ms']:.1f} | {r['after_ms']:.1f} | {r['paired_ratio']:.2f} | "
                    f"{', '.join(f'{x:.2f}' for x in r['round_ratios'])} |")
    return "\n".join(rows) + (f"\n\n_before {d['before']}, after {d['after']}; medians over {d['rounds']} rounds of {d['repeats']} "
                              f"repeats, `noctcm bench --threads 1 --only steps`; paired: the median over rounds of after ÷ before "
                              f"within a round; `{path}`._\n")


TABLES = {"summary": summary, "seeds": seeds, "metrics": metrics, "targets": targets, "resolution": resolution,
          "resolution-spread": resolution_spread, "grid-rules": grid_rules, "ablation": ablation, "cifar": cifar,
          "ablation-2026-12-04": ablation_2026_12_04, "ablation-band": ablation_band, "distill-sweep": distill_sweep,
          "before-after": before_after, "student-sweep": student_sweep, "seeds-previous": lambda: seeds("*-seeds-previous-default.json")}


def _value(path, *keys, fmt="{}"):
    def get():
        d = _load(path)
        for k in keys:
            if not isinstance(d, dict) or k not in d: return f"(run `dvc repro`: no {'.'.join(keys)} in {path})"
            d = d[k]
        return fmt.format(d)
    return get


VALUES = {"classifier-accuracy": _value("results/classifier.json", "test_accuracy", fmt="{:.3f}"),
          "num-samples": _value("results/metrics.json", "real_test", "num_samples", fmt="{:,}"),
          "best-1step-fd": _value("results/metrics.json", "summary", "best_1step_fid", fmt="{:.1f}"),
          "best-1step-ratio": _value("results/metrics.json", "summary", "best_1step_fid_over_real", fmt="{:.2f}×")}
VALUE = re.compile(r"<!-- value: (?P<name>[a-z0-9-]+) -->(?P<body>[^\n]*?)<!-- end value -->")


def render(text: str) -> str:
    def sub(m):
        name = m.group("name")
        if name not in TABLES: raise SystemExit(f"unknown table {name!r} (known: {', '.join(TABLES)})")
        return m.group(1) + TABLES[name]() + m.group(4)
    def val(m):
        name = m.group("name")
        if name not in VALUES: raise SystemExit(f"unknown value {name!r} (known: {', '.join(VALUES)})")
        return f"<!-- value: {name} -->{VALUES[name]()}<!-- end value -->"
    return VALUE.sub(val, MARK.sub(sub, text))


def stale_blocks(text: str) -> list:
    "The names of the marked blocks and values of `text` that differ from what the JSON renders."
    new = render(text)
    if new == text: return []
    out = [f"table {m.group('name')}" for m in MARK.finditer(text) if render(m.group(0)) != m.group(0)]
    return out + [f"value {m.group('name')}" for m in VALUE.finditer(text) if render(m.group(0)) != m.group(0)]


def documents():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a committed block differs from its JSON")
    ap.add_argument("--list", action="store_true", help="print the block and value names")
    args = ap.parse_args(argv)
    if args.list:
        print("tables:", ", ".join(TABLES)); print("values:", ", ".join(VALUES)); return 0
    stale = []
    for p in documents():
        if not p.is_file(): continue
        old = p.read_text(); new = render(old)
        if new != old:
            if args.check: stale += [f"{p.relative_to(ROOT)}: {b}" for b in stale_blocks(old)]
            else: p.write_text(new); print(f"updated {p.relative_to(ROOT)}")
    if stale:
        print("blocks that differ from their JSON (run python tools/results_tables.py):\n  " + "\n  ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
