"""The spectral-layer / noise / multi-resolution ablation of issue 9, one configuration per call.

Runs exactly the commands of the DVC pipeline's `teacher` and `distill` runs and its `evaluate` and `resolution` stages
(`noctcm stage ...`, what `dvc exp run -S ...` runs), with the configuration's overrides, in `runs/<name>/`
(paths.models=runs/<name>), against the shared `prepared/` data and `models/classifier/` of the pipeline
(run `dvc repro classifier` or `noctcm data fetch digits && dvc repro classifier` first). The `train` stage (sCT from
scratch) is left out: the default model of the embedded job is the ECT student.

    python benchmarks/ablation.py --list                       # the named configurations and their overrides
    python benchmarks/ablation.py NAME [key=value ...] [--tag=T] # one configuration (plus extra overrides; runs/NAME+T)
    python benchmarks/ablation.py --table runs                 # the markdown table of every finished run

Each run writes runs/<name>/summary.json: parameter count, seconds per teacher / distill step (wall time of the
stage over its steps), and the 1-step FD at 1x and 2x (judges a and b), confident fraction, bicubic baseline.
"""
import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]

# width (model.model_channels) chosen per backbone so that parameter counts agree within 10% (printed by --list):
# conv 379k, fno (today's layout: FNO blocks at the 8-px level and in the bottleneck) 354k, operator (the default) 350k
BACKBONES = {
    "conv": ["model.fno_levels=[]", "model.fno_bottleneck=false", "model.conv_kernel=pixel", "model.model_channels=18"],
    "fno": ["model.fno_levels=[1]", "model.fno_bottleneck=true", "model.conv_kernel=pixel", "model.model_channels=13"],
    "operator": ["model.fno_levels=[0]", "model.fno_bottleneck=false", "model.conv_kernel=physical",
                 "model.model_channels=16"],
    "physconv": ["model.fno_levels=[]", "model.fno_bottleneck=false", "model.conv_kernel=physical",
                 "model.model_channels=18"],
    # the embedded default's own model (today's layout with physical kernels, C = 16; more parameters than the rows
    # above): the noise comparison at the default
    "default": ["model.fno_levels=[1]", "model.fno_bottleneck=true", "model.conv_kernel=physical",
                "model.model_channels=16"],
}
NOISES = {"white": ["model.noise=white"], "grf": ["model.noise=grf"], "band": ["model.noise=band"]}
TRAININGS = {"single": ["data.resolutions=[]"], "multi": ["data.resolutions=[12,16]"]}


def configurations() -> dict:
    out = {}
    for b, bo in BACKBONES.items():
        for n, no in NOISES.items():
            for t, to in TRAININGS.items():
                if b == "fno" and t == "multi":   # today's FNO layers cannot run at 12 px (8 px level, 4 modes)
                    continue
                if b == "physconv" and n == "white":   # the spectral ablation of the resolution-aware design
                    continue
                if n == "band" and b not in ("default", "physconv"):   # band-limited noise: added after the first table
                    continue
                if b == "default" and (n == "grf" or t == "multi"):
                    continue
                out[f"{b}-{n}-{t}"] = bo + no + to
    return out


def run(cmd, log):
    t = time.time()
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n"); f.flush()
        r = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        raise SystemExit(f"failed ({r.returncode}): {' '.join(cmd)}; see {log}")
    return time.time() - t


def one(name: str, extra=()):
    confs = configurations()
    extra = list(extra)
    tag = next((a.split("=", 1)[1] for a in extra if a.startswith("--tag=")), "")
    extra = [a for a in extra if not a.startswith("--tag=")]
    if name not in confs:
        raise SystemExit(f"unknown configuration {name!r}; known: {', '.join(confs)}")
    confs = {name + tag: confs[name]}
    name = name + tag
    d = ROOT / "runs" / name
    d.mkdir(parents=True, exist_ok=True)
    ov = confs[name] + [f"paths.models=runs/{name}", f"distillation.teacher_checkpoint=runs/{name}/teacher/checkpoint.pt"] + list(extra)
    log = d / "log.txt"
    py = [sys.executable, "-m", "noctcm.cli", "stage"]
    cfg = ["--config", "params.yaml"]
    from noctcm.config import load_config
    c = load_config(str(ROOT / "params.yaml"), ov)
    from noctcm.models.consistency_model import build_model
    params = sum(p.numel() for p in build_model(c).backbone.parameters())
    t_teacher = run(py + ["run", "teacher"] + cfg + ["--out", f"runs/{name}/teacher"] + ov, log)
    t_distill = run(py + ["run", "distill"] + cfg + ["--out", f"runs/{name}/distill"] + ov, log)   # its teacher: the override above
    run(py + ["evaluate"] + cfg + ["--out", f"runs/{name}/metrics.json", "--samples", f"runs/{name}/samples",
                                   "--selection", f"runs/{name}/selection.json"] + ov, log)
    run(py + ["resolution"] + cfg + ["--out", f"runs/{name}/resolution.json", "--figures", f"runs/{name}/resolution",
                                     "--classifiers", "runs/_classifiers", "--reuse-classifiers", "--selection", f"runs/{name}/selection.json"]
        + ov, log)
    m = json.loads((d / "metrics.json").read_text())
    r = json.loads((d / "resolution.json").read_text())["resolution"]
    dist = r.get("distill", {})
    s = {"name": name, "overrides": confs[name] + list(extra), "params": params,
         "teacher_s_per_step": t_teacher / int(c.teacher.steps), "distill_s_per_step": t_distill / int(c.distillation.steps),
         "fd_1x": dist.get("1x", {}).get("1step", {}).get("fd_a"),
         "confident_1x": dist.get("1x", {}).get("1step", {}).get("confident_a"),
         "fd_a_2x": dist.get("2x", {}).get("1step", {}).get("fd_a"),
         "confident_2x": dist.get("2x", {}).get("1step", {}).get("confident_a"),
         "fd_b_2x": dist.get("2x", {}).get("1step", {}).get("fd_b"),
         "fd_b_2x_bicubic": dist.get("2x", {}).get("bicubic_1step", {}).get("fd_b"),
         "fd_b_2x_real": r.get("real", {}).get("2x", {}).get("fd_b"),
         "lift2_fd_a_2x": dist.get("2x", {}).get("lift_2step", {}).get("fd_a"),
         "lift2_confident_2x": dist.get("2x", {}).get("lift_2step", {}).get("confident_a"),
         "lift2_fd_b_2x": dist.get("2x", {}).get("lift_2step", {}).get("fd_b"),
         "fd_b_2x_bicubic2": dist.get("2x", {}).get("bicubic_2step", {}).get("fd_b"),
         "real_fd_1x": m.get("real_test", {}).get("fid"), "summary": m.get("summary", {})}
    (d / "summary.json").write_text(json.dumps(s, indent=1) + "\n")
    print(json.dumps(s))


def table(folder="runs"):
    """Markdown table of every `summary.json` under `folder`. Ratios: 1-step 2x FD(a) / 1-step 1x FD and FD(b) / the
    bicubic upsampling of the 1-step 1x samples; lift (2 NFE) against the 2-step 1x FD and the bicubic upsampling of the
    2-step 1x samples."""
    rows = sorted((json.loads(p.read_text()) for p in pathlib.Path(folder).glob("*/summary.json")), key=lambda s: s["name"])
    f = lambda v, k=1: "—" if v is None else f"{v:.{k}f}"
    r = lambda a, b: "—" if a is None or not b else f"{a / b:.2f}"
    print("| configuration | params | FD 1× | conf. 1× | FD(a) 2× | ÷ 1× | conf. 2× | FD(b) 2× | ÷ bicubic | "
          "lift FD(a) 2× | ÷ 2-step 1× | lift conf. 2× | lift FD(b) 2× | ÷ bicubic 2-step | s/teacher step | s/ECT step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in rows:
        print(f"| {s['name']} | {s['params'] / 1e3:.0f}k | {f(s['fd_1x'])} | {f(s['confident_1x'], 2)} | {f(s['fd_a_2x'])} | "
              f"{r(s['fd_a_2x'], s['fd_1x'])} | {f(s['confident_2x'], 2)} | {f(s['fd_b_2x'])} | "
              f"{r(s['fd_b_2x'], s['fd_b_2x_bicubic'])} | {f(s.get('lift2_fd_a_2x'))} | "
              f"{r(s.get('lift2_fd_a_2x'), s['summary'].get('best_2step_fid'))} | "
              f"{f(s.get('lift2_confident_2x'), 2)} | {f(s.get('lift2_fd_b_2x'))} | {r(s.get('lift2_fd_b_2x'), s.get('fd_b_2x_bicubic2'))} | "
              f"{f(s['teacher_s_per_step'], 3)} | {f(s['distill_s_per_step'], 3)} |")


if __name__ == "__main__":
    a = sys.argv[1:]
    if not a or a[0] in ("-h", "--help"):
        print(__doc__); sys.exit(0)
    if a[0] == "--list":
        from noctcm.config import load_config
        from noctcm.models.consistency_model import build_model
        for n, ov in configurations().items():
            c = load_config(str(ROOT / "params.yaml"), ov)
            print(f"{n:24s} {sum(p.numel() for p in build_model(c).backbone.parameters()) / 1e3:7.0f}k  {' '.join(ov)}")
    elif a[0] == "--names":
        print(" ".join(configurations()))
    elif a[0] == "--table":
        table(a[1] if len(a) > 1 else "runs")
    else:
        one(a[0], a[1:])
