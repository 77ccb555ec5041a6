"""Real content above the training band (issue 17): CIFAR-10 trained at 16 px, sampled natively at 32 px against the
real 32-px images, with the bicubic baseline in the same table.

    python benchmarks/cifar_resolution.py --train-zip cifar10-train-jpeg.zip --test-zip cifar10-test-jpeg.zip --work W \
        [--teacher-steps 3000 --distill-steps 2000 --classifier-steps 600] [--out benchmarks/results/<date>-cifar-resolution.json]

Unlike `digits` (whose 32-px images are renders of 8x8 originals: nothing above the 16-px band, so bicubic is the
ceiling), a 32-px CIFAR-10 photograph holds detail a 16-px grid cannot. The run: `noctcm data fetch folder` (the JPEG
copy, 16 px RGB; the test archive is the test split), a diffusion teacher and an ECT student at 16 px (the default
model and objectives, `--teacher-steps` / `--distill-steps`, one CPU thread), then 1-step samples of the same seeds at
16 and 32 px (`multigrid`), scored by `noctcm.resolution`: FD at 32 px against the real 32-px training images in the
features of a classifier trained on them (judge b) for the native samples, the bicubic and the ideal (Fourier)
upsampling of the 16-px samples, and the real 32-px test images (the floor); FD at 16 px (judge a) of each. Three
sampling seeds: mean, min and max. Writes the JSON and `docs/results/cifar_resolution.png` (seeds down: 16 px,
native 32 px, bicubic 32 px; real 32-px images beside). Budget on one 2-core CPU: see docs/resolution.md.
"""
import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def sh(args, log, env):
    with open(log, "a") as f:
        subprocess.run(args, check=True, env=env, stdout=f, stderr=f)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-zip", required=True); ap.add_argument("--test-zip", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--teacher-steps", type=int, default=3000); ap.add_argument("--distill-steps", type=int, default=2000)
    ap.add_argument("--classifier-steps", type=int, default=600); ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default=None); ap.add_argument("--figure", default=str(ROOT / "docs" / "results" / "cifar_resolution.png"))
    args = ap.parse_args(argv)
    W = pathlib.Path(args.work).resolve(); W.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    log, t0, times = W / "run.log", time.time(), {}
    ov = ["data.name=folder", f"data.root={W / 'data'}", "data.resolution=16", "data.channels=3", f"paths.prepared={W / 'prepared'}",
          f"evaluation.classifier_checkpoint={W / 'models' / 'classifier.pt'}", f"evaluation.classifier_steps={args.classifier_steps}",
          f"evaluation.resolution_classifier_steps={args.classifier_steps}", "evaluation.resolution_scales=[1.0,2.0]",
          f"teacher.steps={args.teacher_steps}", f"distillation.steps={args.distill_steps}", "training.checkpoint_every=100000",
          "training.keep_snapshots=false", "training.sample_every=100000", "training.device=cpu"]
    cli = [sys.executable, "-m", "noctcm.cli"]
    if not (W / "prepared" / "train.pt").is_file():
        sh(cli + ["data", "fetch", "folder", "--src", args.train_zip, "--test_src", args.test_zip, "--resolution", "16",
                  "--channels", "3", "--root", str(W / "data")], log, env)
        sh(cli + ["data", "prepare", "--config", str(ROOT / "params.yaml"), "--out", str(W / "prepared"), *ov], log, env)
    times["data"] = time.time() - t0
    for stage, extra in (("teacher", []), ("distill", ["--teacher_checkpoint", str(W / "teacher" / "checkpoint.pt")])):
        if not (W / stage / "done").is_file():
            t = time.time()
            sh(cli + ["train", "--config", str(ROOT / "params.yaml"), "--stage", stage, "--out", str(W / stage), "--no-progress",
                      *extra, *ov], log, env)
            (W / stage / "done").write_text(f"{time.time() - t:.0f}\n")
        times[stage] = float((W / stage / "done").read_text())
    import torch
    torch.set_num_threads(1)
    from noctcm.config import load_config
    from noctcm import resolution as RS
    from noctcm.grids import resize
    from noctcm.models.consistency_model import load_model
    from noctcm.utils.metrics import save_classifier, train_domain_classifier
    cfg = load_config([ROOT / "params.yaml"], ov)
    if not pathlib.Path(cfg.evaluation.classifier_checkpoint).is_file():
        (tr, tl), (te, tel) = RS.real_images(cfg, "train", 16), RS.real_images(cfg, "test", 16)
        clf, acc = train_domain_classifier(tr, tl, steps=args.classifier_steps, seed=0, test_images=te, test_labels=tel)
        save_classifier(clf, cfg.evaluation.classifier_checkpoint, test_accuracy=float(acc))
    t = time.time()
    judges = RS.Judges(cfg, W / "models" / "resolution", "cpu")
    model, _ = load_model(W / "distill" / "checkpoint.pt")
    n, rows = int(cfg.evaluation.num_samples), []
    for k in range(args.seeds):
        x16 = RS._samples(model, cfg, n, 1, k, "cpu")
        x32 = RS._samples(model, cfg, n, 1, k, "cpu", resolution=32)
        test = judges.real("test", 32)
        idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(k))[:n]
        real = test[idx].float() / 127.5 - 1
        cand = {"native": x32, "bicubic": RS.bicubic(x16, 32), "fourier": resize(x16.clamp(-1, 1), 32), "real": real}
        row = {"16px": judges.judge_a(x16)}
        for name, x in cand.items():
            row[name] = {**judges.judge_b(x), **judges.judge_a(x)}
        row["native"]["consistency"] = RS.consistency(x32, x16)
        row["native"]["fd_b_over_bicubic"] = row["native"]["fd_b"] / row["bicubic"]["fd_b"]
        rows.append(row)
        print(f"[cifar] seed {k}: " + ", ".join(f"{c} FD(b) {row[c]['fd_b']:.2f}" for c in cand), flush=True)
        if k == 0:
            fig = RS.resolution_grid([("16 px sample", x16), ("native 32 px", x32), ("bicubic 32 px", cand["bicubic"]),
                                      ("real 32 px", real)], rows=6,
                                     title="CIFAR-10 trained at 16 px: the same seeds at 16 and 32 px")
            pathlib.Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(args.figure, dpi=100, bbox_inches="tight")
    times["score"] = time.time() - t
    judges.close()
    agg = {c: {m: {"mean": float(np.mean([r[c][m] for r in rows])), "min": float(np.min([r[c][m] for r in rows])),
                   "max": float(np.max([r[c][m] for r in rows]))} for m in rows[0][c]} for c in rows[0]}
    out = {"date": datetime.date.today().isoformat(), "steps": {"teacher": args.teacher_steps, "distill": args.distill_steps},
           "classifier_accuracy": {"16px": getattr(judges.classifier(16), "test_accuracy", None),
                                   "32px": judges.accuracy.get(32)},
           "num_samples": n, "seeds": args.seeds, "seconds": times, "table": agg}
    path = pathlib.Path(args.out or ROOT / "benchmarks" / "results" / f"{out['date']}-cifar-resolution.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    f = lambda d: f"{d['mean']:.2f} ({d['min']:.2f}-{d['max']:.2f})"
    print("| samples | FD(b) at 32 px | FD(a) at 16 px |\n|---|---|---|")
    for c in ("native", "bicubic", "fourier", "real"):
        print(f"| {c} | {f(agg[c]['fd_b'])} | {f(agg[c]['fd_a'])} |")
    print(f"native / bicubic: {f(agg['native']['fd_b_over_bicubic'])}; consistency {f(agg['native']['consistency'])}; -> {path}")


if __name__ == "__main__":
    main()
