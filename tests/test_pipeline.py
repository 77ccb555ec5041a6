"""Pipeline smoke test: the whole `dvc.yaml` on tiny parameters in a throw-away copy of the repository.

A fresh copy (git init, as a fresh clone has it) runs `dvc repro` with a tiny-model override of params.yaml (its
`data` stage fetches the embedded digits); then checks: the fetched data are the committed dvc.lock's, byte for byte,
every stage's outputs exist, the metrics file has every model at every step count, `dvc status`
and a second `dvc repro` say up to date, and changing one parameter marks only the stages below it (`dvc repro --dry`).
Takes about a minute on one CPU thread; no network.
"""
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
TINY = {
    "data": {"resolution": 8, "resolutions": [8, 10]},
    "model": {"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attention_resolutions": [],
              "num_heads": 1, "fno_levels": [0], "fno_bottleneck": True, "fno_modes": 2, "weight_head_channels": 8},
    "training": {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "log_every": 1, "sample_every": 1000,
                 "tangent_warmup_steps": 2, "ect_stage_steps": 2, "device": "cpu"},
    "teacher": {"steps": 4},
    "distillation": {"steps": 4},
    "sampling": {"teacher_steps": 2, "batch_size": 64},
    "evaluation": {"num_samples": 24, "classifier_steps": 10, "batch_size": 64,
                   "metrics": ["fid", "is", "precision", "recall"], "resolution_scales": [1.0, 2.0]},
}
ALL_STAGES = {"data", "prepare", "classifier", "models", "evaluate", "resolution", "report"}
COPY = ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", "noctcm", "configs", "settings.ini"]


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(a.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _run(args, cwd, timeout=300, check=True):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", MPLBACKEND="Agg", NOCTCM_OFFLINE="1",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", DVC_NO_ANALYTICS="1",
               PYTHONPATH=str(cwd), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}")
    return p


def _stages_to_run(cwd) -> set:
    "Stages `dvc repro --dry` would run."
    out = _run([BIN / "dvc", "repro", "--dry"], cwd).stdout
    return set(re.findall(r"Running stage '([^']+)'", out))


def _fresh_clone_repro(work: pathlib.Path):
    "Copy the repository into `work` as a fresh clone would have it and `dvc repro` (the `data` stage fetches)."
    if not (ROOT / "dvc.yaml").is_file():
        pytest.fail("dvc.yaml must be committed at the repository root")
    for name in COPY:
        src = ROOT / name
        if src.is_dir(): shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.is_file(): shutil.copy2(src, work / name)
    (work / ".dvc").mkdir()
    shutil.copy2(ROOT / ".dvc" / "config", work / ".dvc" / "config")
    shutil.copy2(ROOT / ".dvc" / ".gitignore", work / ".dvc" / ".gitignore")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    (work / "params.yaml").write_text(yaml.safe_dump(_merge(params, TINY), sort_keys=False))
    _run(["git", "init", "-q"], work)
    _run(["git", "add", "-A"], work)
    _run(["git", "commit", "-q", "-m", "tiny pipeline"], work)
    repro = _run([BIN / "dvc", "repro"], work, timeout=600)
    data_md5 = lambda lock: next(o["md5"] for o in yaml.safe_load(lock)["stages"]["data"]["outs"] if o["path"] == "data")
    assert data_md5((work / "dvc.lock").read_text()) == data_md5((ROOT / "dvc.lock").read_text()), \
        "the fetched digits differ from the committed dvc.lock's"
    return work, repro


def test_pipeline_end_to_end(tmp_path):
    """One test (pytest-xdist may spread tests of a module over workers; the checks share one pipeline run)."""
    work, repro = _fresh_clone_repro(tmp_path)
    _check_every_stage_ran(work, repro)
    _check_metrics_file(work)
    _check_up_to_date_then_only_downstream_reruns(work)
    _check_deleted_data_is_restored(work)
    _check_changed_param_reruns_downstream_without_resuming_stale_run(work)


def _check_deleted_data_is_restored(work):
    """Issue 19: `data/` deleted after a run: `dvc repro` restores it (the `data` stage: from DVC's cache when it holds
    the files, else by fetching again) and nothing below reruns."""
    shutil.rmtree(work / "data")
    again = _run([BIN / "dvc", "repro"], work).stdout
    assert set(re.findall(r"Running stage '([^']+)'", again)) <= {"data"}, again[-3000:]
    assert re.search(r"Stage 'data' is cached|Running stage 'data'", again), again[-3000:]
    assert (work / "data" / "digits" / "images.npy").is_file() and "up to date" in _run([BIN / "dvc", "status"], work).stdout


def _check_every_stage_ran(work, repro):
    ran = set(re.findall(r"Running stage '([^']+)'", repro.stdout))
    assert ran == ALL_STAGES, (ran, repro.stdout[-3000:])
    for st in ("teacher", "train", "distill"):
        assert (work / "models" / st / "checkpoint.pt").is_file(), st
        assert list((work / "models" / st / "snapshots").glob("ckpt-*.pt")), f"{st}: no snapshots"
    assert (work / "models" / "classifier" / "classifier.pt").is_file()
    for p in ("../resolution/resolutions.png", "../resolution/resolution.csv", "loss.png", "fid_vs_nfe.png", "samples.png", "trajectory.png",
              "loss_train.csv", "loss_teacher.csv", "loss_distill.csv", "fid_vs_nfe.csv"):
        f = work / "results" / "plots" / p
        assert f.is_file() and f.stat().st_size > 0, p
        if p.endswith(".png"): assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
    for p in ("train_1step.png", "train_2step.png", "distill_1step.png", "distill_2step.png", "teacher_heun2.png"):
        assert (work / "results" / "samples" / p).is_file(), p
    # the judge-(b) classifier (16 px = 2x) is trained in the models stage and loaded, not retrained, by resolution
    log = repro.stdout + repro.stderr
    assert "[classifiers] 16px classifier: test accuracy" in log, log[-3000:]
    assert re.search(r"\[resolution\] 16px classifier: \S*classifier_16px.pt \(test accuracy", log), log[-3000:]
    assert "trained here" not in log, log[-3000:]


def _check_metrics_file(work):
    m = json.loads((work / "results" / "metrics.json").read_text())
    assert m["real_test"]["num_samples"] == TINY["evaluation"]["num_samples"]
    for model in ("train", "distill"):
        for k in ("1step", "2step"):
            row = m[model][k]
            assert row["nfe"] == int(k[0]) and row["fid"] >= 0 and 0 <= row["classifier_confident_frac"] <= 1, (model, k, row)
    assert m["teacher"]["heun2"]["nfe"] == 3                                       # Heun, 2 steps: 2*2-1 evaluations
    assert m["summary"]["best_1step_fid"] == min(m["train"]["1step"]["fid"], m["distill"]["1step"]["fid"])
    sel = json.loads((work / "results" / "selection.json").read_text())
    assert set(sel) == {"teacher", "train", "distill"} and "validation_fd" in sel["train"]
    shown = _run([BIN / "dvc", "metrics", "show", "--json"], work).stdout
    assert "best_1step_fid" in shown and "test_accuracy" in shown and "fd_a" in shown
    r = json.loads((work / "results" / "resolution.json").read_text())["resolution"]
    for model in ("train", "distill"):
        for tag in ("1x", "2x"):
            assert r[model][tag]["1step"]["fd_a"] >= 0 and 0 <= r[model][tag]["1step"]["consistency"] < 1, (model, tag)
        assert r[model]["1x"]["1step"]["consistency"] == 0 and "fd_b" in r[model]["2x"]["bicubic_1step"]
        assert "lift_2step" in r[model]["2x"] and "incoherence" in r[model]["2x"]["1step"]
        assert {"mean", "min", "max"} <= set(r[model]["spread"]["2x"]["consistency"])
    assert r["controls"]["2x"]["size"] == 16 and r["controls"]["2x"]["fd_b"] >= 0


def _check_up_to_date_then_only_downstream_reruns(work):
    assert "up to date" in _run([BIN / "dvc", "status"], work).stdout
    again = _run([BIN / "dvc", "repro"], work).stdout
    assert "Running stage" not in again, again
    params = yaml.safe_load((work / "params.yaml").read_text())
    original = (work / "params.yaml").read_text()
    cases = [  # knob -> the stages that read it (`--dry` cannot know that their outputs will change downstream)
        (("training", "tangent_c", 0.2), {"models"}),   # within `models`, each run's guard decides which runs retrain
        (("teacher", "lr", 1e-3), {"models"}),
        (("distillation", "method", "scd"), {"models"}),
        (("sampling", "t_mid", [1.0]), {"evaluate", "resolution", "report"}),
        (("evaluation", "classifier_steps", 11), {"classifier"}),
        (("evaluation", "resolution_classifier_steps", 12), {"models", "resolution"}),   # models trains the classifiers
        (("evaluation", "resolution_scales", [1.0, 1.5]), {"models", "resolution"}),
        (("data", "resolutions", [8]), {"prepare", "models"}),
    ]
    try:
        for (section, key, value), want in cases:
            changed = _merge(params, {section: {key: value}})
            (work / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
            assert _stages_to_run(work) == want, (section, key)
    finally:
        (work / "params.yaml").write_text(original)
    assert "up to date" in _run([BIN / "dvc", "status"], work).stdout


def _guard_lines(log: str) -> dict:
    "{run: 'resuming' | 'afresh: <reason>'} from the guard's log lines of one `models` stage run."
    out = {}
    for run, what in re.findall(r"\[guard\] models/(\w+): (.*)", log):
        out[run] = "resuming" if what.startswith("resuming") else what
    return out


def _check_changed_param_reruns_downstream_without_resuming_stale_run(work):
    """training.lr changed: `models` and the stages below rerun; inside `models` only the train run restarts (the
    teacher reads teacher.lr, distill distillation.lr: both find their finished checkpoints untouched), and persist:
    true kept models/train, so the guard must restart it instead of resuming the old run. Then teacher.lr changed:
    the teacher restarts, and so does distill, whose own settings did not change but whose teacher did."""
    original = (work / "params.yaml").read_text()
    params = yaml.safe_load(original)
    digest = lambda run: hashlib.sha256((work / "models" / run / "checkpoint.pt").read_bytes()).hexdigest()
    try:
        before = {run: digest(run) for run in ("teacher", "train", "distill")}
        (work / "params.yaml").write_text(yaml.safe_dump(_merge(params, {"training": {"lr": 1e-3}}), sort_keys=False))
        out = _run([BIN / "dvc", "repro"], work)
        log = out.stdout + out.stderr
        assert set(re.findall(r"Running stage '([^']+)'", out.stdout)) == {"models", "evaluate", "resolution", "report"}, out.stdout
        guard = _guard_lines(log)
        assert guard["teacher"] == guard["distill"] == "resuming", guard
        assert "starting afresh, training.lr changed" in guard["train"], log[-3000:]
        assert "[classifiers] 16px classifier: up to date" in log, log[-3000:]
        assert digest("teacher") == before["teacher"] and digest("distill") == before["distill"]
        import torch
        ck = torch.load(work / "models" / "train" / "checkpoint.pt", map_location="cpu", weights_only=False)
        assert ck["config"]["training"]["lr"] == 1e-3 and ck["step"] == TINY["training"]["steps"]
        assert ck["history"][0]["step"] <= 1, "the history must start from scratch, not from the old run"
        (work / "params.yaml").write_text(yaml.safe_dump(_merge(params, {"training": {"lr": 1e-3}, "teacher": {"lr": 1e-3}}),
                                          sort_keys=False))
        out = _run([BIN / "dvc", "repro", "models"], work)
        guard = _guard_lines(out.stdout + out.stderr)
        assert "teacher.lr" not in guard["teacher"] and "training.lr changed" in guard["teacher"], guard   # teacher.lr folds into training.lr
        assert "its teacher changed" in guard["distill"] and guard["train"] == "resuming", guard
        ck = torch.load(work / "models" / "distill" / "checkpoint.pt", map_location="cpu", weights_only=False)
        assert ck["teacher"]["sha256"] == digest("teacher") and ck["step"] == TINY["distillation"]["steps"]
    finally:
        (work / "params.yaml").write_text(original)
