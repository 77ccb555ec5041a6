"""The spectral-layer / noise ablation of issue 17: with the exact grid rule, at equal parameters, three training seeds.

    python benchmarks/ablation.py RUN_DIR --work WORK [--configs fno conv ...] [--seeds 0 1 2] [--jobs 2]
    python benchmarks/ablation.py --table WORK [--out benchmarks/results/<date>-ablation.json]

RUN_DIR is a folder where the pipeline ran (`noctcm data fetch digits && dvc repro`): its params.yaml, prepared data
and classifiers (the evaluate stage's and the resolution stage's judge-(b) ones) are used, nothing is written there.
Each (configuration, seed) trains the default pipeline's best model, a diffusion teacher then an ECT student, with
the short protocol (`PROTOCOL`: teacher 1,200 + ECT 800 steps, one CPU thread each) through the CLI
(`noctcm train --stage teacher|distill`), in WORK/<config>-s<seed>/, then scores the student's EMA weights
(`noctcm.resolution`): 1x FD and confident share (1 and 2 steps), and at 2x and 3x (1 step) same-seed consistency,
sub-lattice incoherence, FD(a) / 1x, confident(a) - 1x, FD(b) / bicubic — under the library's `multigrid` rule
and, for comparison, `native`. `--table` aggregates the seeds: mean, min and max per configuration.

Widths (`model.model_channels`) are chosen so that parameter counts agree within 10% of the default's (printed).
"""
import argparse
import concurrent.futures as cf
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = {
    "fno": [],                                                                       # the default: FNO blocks at the 8-px level + bottleneck
    "conv": ["model.fno_levels=[]", "model.fno_bottleneck=false", "model.model_channels=21"],   # no spectral layers
    "fno-fine": ["model.fno_levels=[0,1]", "model.model_channels=15"],               # + FNO blocks at the finest level
    "fno-grf": ["model.noise=grf"],                                                  # the default with Matern GRF noise
}
PROTOCOL = ["teacher.steps=1200", "distillation.steps=800", "distillation.ema_sigma_rel=0.05",   # the EMA it was run with
            "training.checkpoint_every=100000",
            "training.keep_snapshots=false", "training.sample_every=100000", "training.device=cpu"]


def parameters(overrides) -> int:
    from noctcm.config import load_config
    from noctcm.models.consistency_model import build_model
    return sum(p.numel() for p in build_model(load_config([ROOT / "params.yaml"], overrides)).backbone.parameters())


def train(run_dir, work, name, seed):
    "Teacher then ECT student of one configuration and seed, through the CLI; returns the seconds of each."
    out = pathlib.Path(work) / f"{name}-s{seed}"
    ov = CONFIGS[name] + PROTOCOL + [f"training.seed={seed}", f"paths.prepared={run_dir}/prepared", f"data.root={run_dir}/data"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    times = {}
    for stage, extra in (("teacher", []), ("distill", ["--teacher_checkpoint", str(out / "teacher" / "checkpoint.pt")])):
        t = time.time()
        log = open(out.parent / f"{out.name}-{stage}.log", "w")
        subprocess.run([sys.executable, "-m", "noctcm.cli", "train", "--config", str(ROOT / "params.yaml"), "--stage", stage,
                        "--out", str(out / stage), "--no-progress", *extra, *ov], check=True, env=env, stdout=log, stderr=log)
        times[stage] = time.time() - t
    return out, times


def score(run_dir, out, name, seed, times):
    "The measures of one trained student (see the module docstring); writes out/summary.json."
    import torch
    torch.set_num_threads(1)
    from noctcm.config import load_config
    from noctcm import resolution as RS
    from noctcm.models.consistency_model import load_model
    cfg = load_config([ROOT / "params.yaml"], [f"paths.prepared={run_dir}/prepared", f"data.root={run_dir}/data",
                                                  f"evaluation.classifier_checkpoint={run_dir}/models/classifier/classifier.pt"])
    judges = RS.Judges(cfg, run_dir / "models" / "resolution", "cpu")
    model, mcfg = load_model(out / "distill" / "checkpoint.pt")
    n, s0, R0 = int(cfg.evaluation.num_samples), int(cfg.sampling.seed), int(cfg.data.resolution)
    res = {"config": name, "seed": seed, "parameters": parameters(CONFIGS[name]), "seconds": times,
           "s_per_step": {st: times[st] / int(mcfg.training.steps if st == "distill" else 1200) for st in times}}
    for k in (1, 2):
        x1 = RS._samples(model, cfg, n, k, s0, "cpu")
        res[f"1x_{k}step"] = judges.judge_a(x1)
    x1 = RS._samples(model, cfg, n, 1, s0, "cpu")
    one = judges.judge_a(x1)
    for rule in ("multigrid", "native"):
        model.backbone.grid_rule = rule
        for s in (2, 3):
            x = RS._samples(model, cfg, n, 1, s0, "cpu", resolution=s * R0)
            row = {"consistency": RS.consistency(x, x1), **judges.judge_a(x), **judges.judge_b(x)}
            row["incoherence"] = RS.sublattice_incoherence(x, x1)[0]
            row["fd_a_over_1x"], row["confident_a_minus_1x"] = row["fd_a"] / one["fd_a"], row["confident_a"] - one["confident_a"]
            row["fd_b_over_bicubic"] = row["fd_b"] / judges.judge_b(RS.bicubic(x1, s * R0))["fd_b"]
            res[f"{rule}_{s}x"] = row
    model.backbone.grid_rule = "multigrid"
    judges.close()
    (out / "summary.json").write_text(json.dumps(res, indent=1) + "\n")
    return res


def one_run(run_dir, work, name, seed):
    out = pathlib.Path(work) / f"{name}-s{seed}"
    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    out, times = train(run_dir, work, name, seed)
    return score(run_dir, out, name, seed, times)


def table(work) -> dict:
    "{config: {measure: {mean, min, max, n}}} over the finished seeds in `work`."
    rows = [json.loads(p.read_text()) for p in sorted(pathlib.Path(work).glob("*/summary.json"))]
    out = {}
    for name in CONFIGS:
        mine = [r for r in rows if r["config"] == name]
        if not mine: continue
        flat = [_flatten(r) for r in mine]
        out[name] = {"seeds": [r["seed"] for r in mine], "parameters": mine[0]["parameters"],
                     **{k: {"mean": float(np.mean([f[k] for f in flat])), "min": float(np.min([f[k] for f in flat])),
                            "max": float(np.max([f[k] for f in flat]))} for k in flat[0] if all(k in f for f in flat)}}
    return out


def _flatten(r, prefix=""):
    out = {}
    for k, v in r.items():
        if k in ("config", "seed", "parameters"): continue
        if isinstance(v, dict): out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, (int, float)): out[f"{prefix}{k}"] = float(v)
    return out


def markdown(t: dict) -> str:
    f = lambda d, k, p=2: f"{d[k]['mean']:.{p}f} ({d[k]['min']:.{p}f}–{d[k]['max']:.{p}f})" if k in d else "–"
    lines = ["| config | params | seeds | 1x FD (1 step) | confident | 1x FD (2 steps) | 2x consistency | 2x FD(a)/1x | 2x FD(b)/bicubic | 3x consistency | 3x FD(b)/bicubic | native 2x consistency | s/step teacher, ECT |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, d in t.items():
        lines.append(f"| {name} | {d['parameters'] / 1e3:.0f}k | {len(d['seeds'])} | {f(d, '1x_1step.fd_a', 1)} | {f(d, '1x_1step.confident_a')} | "
                     f"{f(d, '1x_2step.fd_a', 1)} | {f(d, 'multigrid_2x.consistency', 3)} | {f(d, 'multigrid_2x.fd_a_over_1x')} | "
                     f"{f(d, 'multigrid_2x.fd_b_over_bicubic')} | {f(d, 'multigrid_3x.consistency', 3)} | {f(d, 'multigrid_3x.fd_b_over_bicubic')} | "
                     f"{f(d, 'native_2x.consistency', 3)} | {d['s_per_step.teacher']['mean']:.3f}, {d['s_per_step.distill']['mean']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", help="a folder where the pipeline ran")
    ap.add_argument("--work", default="runs/ablation")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--table", default=None, help="aggregate the runs in this folder")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.table:
        t = table(args.table)
        path = pathlib.Path(args.out or ROOT / "benchmarks" / "results" / f"{datetime.date.today()}-ablation.json")
        path.write_text(json.dumps({"protocol": PROTOCOL, "configs": CONFIGS, "table": t}, indent=1) + "\n")
        print(markdown(t)); print(f"-> {path}")
        return
    run_dir = pathlib.Path(args.run).resolve()
    base = parameters([])
    for name in args.configs:
        print(f"{name}: {parameters(CONFIGS[name])} parameters ({parameters(CONFIGS[name]) / base:.3f} x the default)", flush=True)
    pathlib.Path(args.work).mkdir(parents=True, exist_ok=True)
    jobs = [(name, seed) for seed in args.seeds for name in args.configs]
    with cf.ProcessPoolExecutor(args.jobs) as ex:
        futs = {ex.submit(one_run, run_dir, args.work, name, seed): (name, seed) for name, seed in jobs}
        for fut in cf.as_completed(futs):
            name, seed = futs[fut]
            r = fut.result()
            print(f"[ablation] {name} seed {seed}: 1x FD {r['1x_1step']['fd_a']:.1f}, 2x consistency "
                  f"{r['multigrid_2x']['consistency']:.3f}, FD(b)/bicubic {r['multigrid_2x']['fd_b_over_bicubic']:.2f}", flush=True)
    print(markdown(table(args.work)))


if __name__ == "__main__":
    main()
