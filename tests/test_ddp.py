"""Distributed training: `torchrun --nproc_per_node=2 -m noctcm.cli train ...` with gloo on CPU.

Only rank 0 writes (each step appears once in history.jsonl, one set of snapshots), and because every rank draws
the noise of the *global* batch and keeps its slice, 2 processes give the same weights as 1 process with the same
global batch up to float round-off (the gradient all-reduce sums in a different order)."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

TINY = ["data.resolution=8", "data.resolutions=[8,10]", "model.model_channels=8", "model.channel_mult=[1,2]", "model.attention_resolutions=[]",
        "model.fno_levels=[0]", "model.fno_modes=2", "model.weight_head_channels=8", "training.batch_size=8",
        "training.log_every=1", "training.sample_every=2", "training.checkpoint_every=2", "training.steps=4"]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return env


def _torchrun():
    exe = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    return [exe] if exe else [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    from noctcm.data.datasets import fetch
    fetch("digits", root=root)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["sct", "ect"])
def test_two_processes_match_one_process_and_only_rank0_writes(tmp_path, data_root, objective):
    args = ["train", *TINY, f"data.root={data_root}", f"training.objective={objective}", "--no-progress"]
    two = subprocess.run([*_torchrun(), "--standalone", "--nproc_per_node=2", "-m", "noctcm.cli", *args,
                          "--out", str(tmp_path / "two")], env=_env(), cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "noctcm.cli", *args, "--out", str(tmp_path / "one")], env=_env(),
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    # rank 0 alone printed the final path and wrote the files: every step logged exactly once
    assert two.stdout.strip().splitlines() == [str(tmp_path / "two" / "checkpoint.pt")]
    hist = [json.loads(s) for s in (tmp_path / "two" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == [1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "two" / "snapshots").iterdir()) == ["ckpt-2.pt", "ckpt-4.pt"]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    a = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    assert a["world_size"] == 1 and b["world_size"] == 2 and b["step"] == 4
    for key in ("model", "ema_model"):
        for k, v in a[key].items():
            assert torch.allclose(v, b[key][k], rtol=1e-5, atol=1e-6), (key, k)
    # and the run really moved the weights (the comparison is not between two untouched initialisations)
    init = torch.load(tmp_path / "two" / "snapshots" / "ckpt-2.pt", weights_only=True)["model"]
    assert any(not torch.allclose(v, init[k]) for k, v in b["model"].items())
    for h1, h2 in zip(a["history"], b["history"]):
        assert h1["loss"] == pytest.approx(h2["loss"], rel=1e-5, abs=1e-7)
