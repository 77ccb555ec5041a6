"""The package as published: `python -m build` makes a wheel and an sdist; the wheel, installed into a fresh venv
and run from a folder outside the repository (no params.yaml, no configs/ beside it), fetches the embedded data,
trains with the packaged defaults and with a preset shipped inside the package, and samples.

To stay fast the fresh venv borrows the *dependencies* (torch, ...) of the running environment through a `.pth`
file (`.pth` files inside a borrowed folder are not processed, so the editable `noctcm` of the running environment
is not visible); `noctcm` itself comes only from the wheel, which the test checks. A full install of the wheel with
its dependencies (`pip install dist/noctcm-*.whl` after the README's torch line) is not exercised here.
"""
import os
import pathlib
import subprocess
import sys
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ["model.model_channels=8", "model.channel_mult=[1,2]", "model.attention_resolutions=[]", "model.num_heads=1",
        "model.fno_levels=[0]", "model.fno_modes=2", "model.weight_head_channels=8", "training.steps=2",
        "training.batch_size=8", "training.checkpoint_every=2", "training.sample_every=1000", "training.device=cpu"]


def _sh(args, cwd, env=None, ok=True):
    r = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    if ok: assert r.returncode == 0, f"{args}\n{r.stdout}\n{r.stderr}"
    return r


@pytest.mark.slow
def test_wheel_outside_the_repository(tmp_path):
    dist = tmp_path / "dist"
    _sh([sys.executable, "-m", "build", "--outdir", dist, ROOT], ROOT)
    wheel, = dist.glob("noctcm-*.whl"); sdist, = dist.glob("noctcm-*.tar.gz")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}   # nothing of the checkout on the path
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}", OMP_NUM_THREADS="1")
    _sh([getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv], tmp_path)
    py = venv / "bin" / "python"
    site = _sh([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env).stdout.strip()
    _sh([py, "-m", "pip", "install", "-q", "--no-deps", wheel], tmp_path, env)
    pathlib.Path(site, "zz_borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")   # after the wheel
    run = tmp_path / "elsewhere"; run.mkdir()
    where = _sh([py, "-c", "import noctcm; print(noctcm.__file__)"], run, env).stdout
    assert where.startswith(str(venv)), where                      # the wheel's copy, not the checkout
    noctcm = venv / "bin" / "noctcm"
    assert "sample" in _sh([noctcm, "--help"], run, env).stdout
    _sh([noctcm, "data", "fetch", "digits"], run, env)
    assert (run / "data" / "digits").is_dir()
    _sh([noctcm, "train", "--out", "out/default", "--no-progress", *TINY], run, env)          # packaged defaults
    assert (run / "out" / "default" / "checkpoint.pt").is_file()
    merged = _sh([noctcm, "config", "--preset", "cifar10_ctcm"], run, env).stdout             # shipped preset
    assert "objective: ect" in merged and "cifar10" in merged, merged
    _sh([noctcm, "train", "--preset", "cifar10_training", "--out", "out/preset", "--no-progress", "data.name=digits",
         "data.resolution=16", "data.channels=1", "data.root=data", "model.dropout=0.0",
         *TINY], run, env)
    import torch
    ck = torch.load(run / "out" / "preset" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ck["config"]["training"]["optimizer"] == "radam" and ck["config"]["training"]["P_std"] == 1.4
    _sh([noctcm, "sample", "--checkpoint", "out/default/checkpoint.pt", "--num_samples", "4", "--out", "samples"], run, env)
    assert list((run / "samples").glob("*.png")) and list((run / "samples").glob("*.npz"))
    bad = _sh([noctcm, "train", "--preset", "nope"], run, env, ok=False)
    assert bad.returncode != 0 and "cifar10_ctcm" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    show = _sh([py, "-m", "pip", "show", "-v", "noctcm"], run, env).stdout
    for want in ("Name: noctcm", "Version: 0.1.0", "Summary: Neural-Operator Continuous-Time Consistency Models",
                 "License: Apache Software License 2.0", "Requires: ", "torch", "Entry-points:", "noctcm = noctcm.cli:main"):
        assert want in show, (want, show)
    meta = _sh([py, "-c", "import importlib.metadata as m; d = m.metadata('noctcm'); "
                "print(d['Description-Content-Type']); print(d.get_payload()[:60])"], run, env).stdout
    assert meta.startswith("text/markdown") and "# noctcm" in meta, meta
    print(f"wheel {wheel.name}: {wheel.stat().st_size / 1e3:.0f} kB, sdist {sdist.stat().st_size / 1e3:.0f} kB")
