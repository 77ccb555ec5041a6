"""Exact resume after a hard kill: a real `python -m noctcm.cli train` process is SIGKILL-ed after it has written a
checkpoint, restarted with the same command, and its final weights (model and EMA), optimiser state and history must
equal an uninterrupted run's bit for bit (CPU, one thread). Dropout is on and sample grids are written mid-run, so
the global RNG, the trainer generator, the data order and the EMA swap all have to be restored exactly."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

TINY = ["data.resolution=8", "data.resolutions=[8,10]", "model.model_channels=8", "model.channel_mult=[1,2]", "model.attention_resolutions=[]",
        "model.fno_levels=[0]", "model.fno_modes=2", "model.weight_head_channels=8", "training.batch_size=8",
        "model.dropout=0.1", "training.tangent_warmup_steps=10", "training.log_every=3", "training.sample_every=7",
        "training.checkpoint_every=4", "training.steps=28", "training.lr_warmup_steps=5", "training.lr_decay=cosine"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    from noctcm.data.datasets import fetch
    fetch("digits", root=root)
    return root


def _cmd(out, data_root, objective):
    return [sys.executable, "-m", "noctcm.cli", "train", *TINY, f"data.root={data_root}",
            f"training.objective={objective}", "--no-progress", "--out", str(out)]


def _load(path):
    return torch.load(path, weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["sct"])
def test_killed_run_resumes_to_bit_identical_weights(tmp_path, data_root, objective):
    straight = subprocess.Popen(_cmd(tmp_path / "straight", data_root, objective), env=_env(), cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(out, data_root, objective), env=_env(), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = out / "snapshots" / "ckpt-8.pt"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed (make it longer)"
    killed_at = _load(out / "checkpoint.pt")["step"]
    assert 8 <= killed_at < 28
    # the killed run may have logged past its last checkpoint; resuming must drop those lines
    resumed = subprocess.run(_cmd(out, data_root, objective), env=_env(), cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, err = straight.communicate(timeout=300)
    assert straight.returncode == 0, err[-3000:]

    a, b = _load(tmp_path / "straight" / "checkpoint.pt"), _load(out / "checkpoint.pt")
    assert a["step"] == b["step"] == 28
    for key in ("model", "ema_model"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs after resume from step {killed_at}"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[n], sb[n]) for n in sa)
    assert a["ema"] == b["ema"] and a["schedule"] == b["schedule"] and a["data_state"] == b["data_state"]
    assert a["history"] == [{**h, "images_per_s": a["history"][i]["images_per_s"]} for i, h in enumerate(b["history"])]
    lines = [json.loads(s) for s in (out / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in lines] == list(range(3, 28, 3)) + [28]
    assert (out / "snapshots" / f"ckpt-{killed_at}.pt").is_file() and (out / "snapshots" / "ckpt-28.pt").is_file()
    tsv = (out / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").read_text().splitlines()
    assert [int(l.split("\t")[0]) for l in tsv[1:]] == list(range(3, 28, 3)) + [28]
