"""The experiment notebooks (nbs/train, evaluate, explore) under papermill with tiny parameters.

Covers both ways of passing parameters: `-p NAME VALUE` (a list passed as text: `-p overrides "[...]"`) and
`-f params.yaml` (every section of a params file injected as a dict). The notebooks run in a throw-away folder
that looks like the repository (params.yaml + dvc.yaml), so nothing is written into the working tree.
"""
import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
TINY = {
    "data": {"resolution": 8, "resolutions": [8, 10]},
    "model": {"model_channels": 8, "channel_mult": [1, 2], "attention_resolutions": [], "num_heads": 1,
              "fno_levels": [0], "fno_modes": 2, "weight_head_channels": 8},
    "training": {"steps": 3, "batch_size": 8, "checkpoint_every": 3, "log_every": 1, "sample_every": 1000,
                 "tangent_warmup_steps": 2, "device": "cpu"},
    "teacher": {"steps": 3},
    "distillation": {"steps": 3},
    "sampling": {"teacher_steps": 2},
    "evaluation": {"num_samples": 16, "classifier_steps": 5, "metrics": ["fid", "is"]},
}


def _merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(a.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _papermill(nb, out, cwd, *args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NOCTCM_OFFLINE="1",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("MPLBACKEND", None)   # the kernel's inline backend puts the figures into the notebook
    cmd = [BIN / "papermill", ROOT / "nbs" / f"{nb}.ipynb", out, "--cwd", cwd, "-k", "python3",
           "--no-progress-bar", *args]
    p = subprocess.run(list(map(str, cmd)), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"papermill {nb} failed:\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return json.loads(pathlib.Path(out).read_text())


def _images(nb) -> int:
    return sum(1 for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
               if "image/png" in o.get("data", {}))


def _repo_like(w: pathlib.Path) -> pathlib.Path:
    params = _merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    (w / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy2(ROOT / "dvc.yaml", w / "dvc.yaml")
    return w


def test_experiment_notebooks(tmp_path):
    """train (-p and -f), then evaluate and explore on its checkpoints: one test, since pytest-xdist may spread the
    tests of a module over workers and these share their checkpoints."""
    w = _repo_like(tmp_path)
    _train_with_p_overrides(w)
    _train_with_f_params_file(w)
    _evaluate(w)
    _explore(w)


def _train_with_p_overrides(workdir):
    "-p stage teacher -p overrides '[...]': the teacher trains into out/teacher; the loss curve and samples show."
    nb = _papermill("train", workdir / "teacher.ipynb", workdir, "-p", "stage", "teacher",
                    "-p", "overrides", "[teacher.steps=2, training.log_every=1]")
    ck = workdir / "out" / "teacher" / "checkpoint.pt"
    import torch
    c = torch.load(ck, map_location="cpu", weights_only=False)
    assert c["step"] == 2 and c["config"]["training"]["objective"] == "diffusion"
    assert _images(nb) >= 2                                           # loss curve + sample grid
    assert (workdir / "prepared" / "train.pt").is_file()             # fetched + prepared on the way


def _train_with_f_params_file(workdir):
    "-f params.yaml injects the sections; -p wins for single knobs; the sections override params_file."
    fparams = workdir / "nb_params.yaml"
    fparams.write_text(yaml.safe_dump({"training": {"steps": 2}}))
    nb = _papermill("train", workdir / "train.ipynb", workdir, "-f", workdir / "params.yaml", "-f", fparams,
                    "-p", "stage", "train", "-p", "out_dir", "out/sct")
    import torch
    c = torch.load(workdir / "out" / "sct" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert c["step"] == 2 and c["config"]["training"]["objective"] == "sct"
    assert c["config"]["model"]["model_channels"] == 8
    assert _images(nb) >= 2


def _evaluate(workdir):
    from noctcm.config import load_config
    from noctcm.pipeline.evaluation import classifier_stage
    cwd = os.getcwd()
    try:
        os.chdir(workdir)
        classifier_stage(load_config("params.yaml"), metrics_out=None, progress=False)
    finally:
        os.chdir(cwd)
    cks = {"sct": "out/sct/checkpoint.pt", "teacher": "out/teacher/checkpoint.pt"}
    nb = _papermill("evaluate", workdir / "evaluate.ipynb", workdir, "-p", "checkpoints", repr(cks),
                    "-p", "metrics_file", "out/m.json")
    m = json.loads((workdir / "out" / "m.json").read_text())
    assert set(m) == {"real_test", "sct", "teacher"}
    assert m["sct"]["1step"]["nfe"] == 1 and m["sct"]["2step"]["nfe"] == 2 and m["teacher"]["heun2"]["nfe"] == 3
    assert m["real_test"]["fid"] < m["sct"]["1step"]["fid"]          # untrained samples are far from the data
    assert _images(nb) >= 4                                          # metric vs NFE, losses, samples, resolutions...


def _explore(workdir):
    nb = _papermill("explore", workdir / "explore.ipynb", workdir, "-p", "checkpoint", "out/sct/checkpoint.pt",
                    "-p", "steps", "2", "-p", "num_samples", "4")
    widgets = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, "the explorer shows its widgets"


def test_experiment_notebooks_are_skipped_by_nbdev_test():
    from nbdev.test import test_nb
    for nb in ("train", "evaluate", "explore"):
        ok, secs = test_nb(ROOT / "nbs" / f"{nb}.ipynb")
        assert ok and secs == 0, f"{nb}.ipynb must carry `skip_exec: true` front matter"
