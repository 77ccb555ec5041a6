"""The default pipeline's 1x quality over training seeds: a distribution, not a draw (issue 19).

    # one fresh clone per seed; in clone k set training.seed: k in params.yaml, then `dvc repro evaluate`
    python benchmarks/seeds.py RUN_DIR [RUN_DIR ...] [--out benchmarks/results/<date>-seeds.json]

Reads each folder's params.yaml (its `training.seed`) and results/metrics.json, and writes one JSON: per seed the
real floor, the best 1-step model's FD, its ratio to the floor, its confident share and its 2-step FD, whether each
bar holds (FD <= 2.0x the floor, >= 70% confident, 2 steps no worse than 1), and the mean, standard deviation, min and
max over the seeds; plus the machine each run recorded. `tools/results_tables.py` renders it (README's `seeds` table).
"""
import argparse
import datetime
import json
import pathlib

import numpy as np
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
MEASURES = ["floor_fd", "best_1step_fd", "best_1step_ratio", "best_1step_confident", "best_2step_fd", "best_2step_ratio",
            "teacher_fd", "sct_1step_fd", "ect_1step_fd"]


def one(run: pathlib.Path) -> dict:
    "The measures of one pipeline run folder."
    params = yaml.safe_load((run / "params.yaml").read_text())
    seed = int(params["training"]["seed"])
    judge_seed = int(params["evaluation"].get("classifier_seed", seed))   # before it was a key: the training seed
    m = json.loads((run / "results" / "metrics.json").read_text())
    s, floor = m["summary"], m["real_test"]["fid"]
    row = {"seed": seed, "judge_seed": judge_seed, "floor_fd": floor, "best_model": "distill" if s.get("best_1step_is_distill", 1) else "train",
           "best_1step_fd": s["best_1step_fid"], "best_1step_ratio": s["best_1step_fid_over_real"],
           "best_1step_confident": s["best_1step_confident_frac"], "best_2step_fd": s["best_2step_fid"],
           "best_2step_ratio": s["best_2step_fid"] / floor,
           "teacher_fd": next(v["fid"] for v in m["teacher"].values() if isinstance(v, dict)),   # its one solver row
           "sct_1step_fd": m["train"]["1step"]["fid"], "ect_1step_fd": m["distill"]["1step"]["fid"],
           "num_samples": m["real_test"].get("num_samples"), "machine": m.get("machine")}
    row["bar"] = {"fd_within_2x": row["best_1step_ratio"] <= 2.0, "confident_at_least_70": row["best_1step_confident"] >= 0.70,
                  "two_steps_no_worse": row["best_2step_fd"] <= row["best_1step_fd"]}
    row["within_bar"] = all(row["bar"].values())
    return row


def aggregate(rows: list) -> dict:
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0,
                "min": float(np.min([r[k] for r in rows])), "max": float(np.max([r[k] for r in rows]))} for k in MEASURES}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default=None)
    ap.add_argument("--how", default=None, help="how the run folders were made, when not one fresh clone per seed (shown under the table)")
    args = ap.parse_args(argv)
    rows = sorted((one(pathlib.Path(r)) for r in args.runs), key=lambda r: r["seed"])
    out = {"seeds": [r["seed"] for r in rows], "rows": rows, "aggregate": aggregate(rows),
           "every_seed_within_bar": all(r["within_bar"] for r in rows)}
    if args.how: out["how"] = args.how
    path = pathlib.Path(args.out or ROOT / "benchmarks" / "results" / f"{datetime.date.today()}-seeds.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    for r in rows:
        print(f"seed {r['seed']}: floor {r['floor_fd']:.2f}, best 1-step FD {r['best_1step_fd']:.2f} ({r['best_1step_ratio']:.2f}x), "
              f"confident {r['best_1step_confident']:.1%}, 2-step FD {r['best_2step_fd']:.2f}; within the bar: {r['within_bar']}")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
