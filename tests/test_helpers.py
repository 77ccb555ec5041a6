"""Tests of noctcm.utils.helpers: RNG state, atomic writes, checkpoints, images, unwrapping."""
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from noctcm.utils.helpers import (CheckpointError, atomic_save, atomic_write_bytes, atomic_write_text, get_device,
                                  image_grid, load_checkpoint, rng_state, save_image_grid, seed_everything,
                                  set_rng_state, to_uint8, unwrap)


def _draws():
    return (random.random(), random.gauss(0, 1), np.random.randn(4).tolist(), np.random.randint(0, 1000, 3).tolist(),
            torch.randn(5).tolist(), torch.randint(0, 100, (3,)).tolist())


@pytest.mark.parametrize("odd_gauss", [False, True])
def test_rng_round_trip_through_file(tmp_path, odd_gauss):
    seed_everything(123)
    if odd_gauss:  # numpy caches the second gaussian of a pair; python random caches gauss_next
        np.random.standard_normal()
        random.gauss(0, 1)
    atomic_save({"rng": rng_state()}, tmp_path / "rng.pt")
    first = [_draws() for _ in range(3)]
    seed_everything(999)
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    assert [_draws() for _ in range(3)] == first


def test_rng_restore_in_fresh_process(tmp_path):
    seed_everything(5)
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = torch.randn(3).tolist(), np.random.rand(2).tolist(), random.random()
    code = textwrap.dedent(f"""
        import random, numpy as np, torch
        from noctcm.utils.helpers import set_rng_state
        set_rng_state(torch.load({str(tmp_path / 'rng.pt')!r}, weights_only=True))
        print(repr((torch.randn(3).tolist(), np.random.rand(2).tolist(), random.random())))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert eval(out) == expected


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_rng_round_trip():
    seed_everything(1)
    s = rng_state()
    a = torch.randn(4, device="cuda")
    set_rng_state(s)
    assert torch.equal(a, torch.randn(4, device="cuda"))


def test_seed_validation():
    with pytest.raises(TypeError):
        seed_everything(1.5)
    with pytest.raises(ValueError):
        seed_everything(-1)
    with pytest.raises(ValueError):
        set_rng_state({"python": None})


def test_get_device():
    assert get_device() == get_device("auto")
    assert get_device(torch.device("cpu")).type == "cpu"
    with pytest.raises(ValueError):
        get_device("banana")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            get_device("cuda")
    else:
        with pytest.raises(ValueError, match="device"):
            get_device(f"cuda:{torch.cuda.device_count()}")


class _Boom:
    def __reduce__(self):
        raise RuntimeError("boom")


def test_atomic_save_failure_keeps_old_file(tmp_path):
    p = tmp_path / "ck.pt"
    atomic_save({"v": 1}, p)
    old = p.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"big": torch.zeros(10_000), "x": _Boom()}, p)
    assert p.read_bytes() == old
    assert os.listdir(tmp_path) == ["ck.pt"]


def test_atomic_write_killed_process_leaves_old_file(tmp_path):
    # a process killed in the middle of writing (after the temp file has data) must not touch the destination
    p = tmp_path / "out.txt"
    atomic_write_text("old", p)
    code = textwrap.dedent(f"""
        import os, noctcm.utils.helpers as h
        def write(f):
            f.write(b"partial"); f.flush(); os._exit(3)
        h._atomic_write({str(p)!r}, write)
    """)
    r = subprocess.run([sys.executable, "-c", code])
    assert r.returncode == 3
    assert p.read_text() == "old"


def test_atomic_write_types(tmp_path):
    atomic_write_bytes(bytearray(b"ab"), tmp_path / "a" / "b" / "c.bin")
    assert (tmp_path / "a" / "b" / "c.bin").read_bytes() == b"ab"
    with pytest.raises(TypeError):
        atomic_write_text(b"x", tmp_path / "t.txt")
    with pytest.raises(TypeError):
        atomic_write_bytes("x", tmp_path / "t.bin")


def _ckpt():
    return {"format": "noctcm/1", "config": {"model": {"channels": 8}}, "step": 10,
            "model": nn.Linear(2, 2).state_dict(), "optimizer": torch.optim.Adam(nn.Linear(2, 2).parameters()).state_dict(),
            "rng": rng_state(), "history": [{"step": 1, "loss": 0.3}], "data_state": {"epoch": 0, "perm": torch.arange(4)}}


def test_checkpoint_loads_weights_only(tmp_path):
    p = atomic_save(_ckpt(), tmp_path / "c.pt")
    ck = load_checkpoint(p, weights_only=True)
    assert ck["step"] == 10 and ck["history"][0]["loss"] == 0.3


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99])
def test_checkpoint_truncated(tmp_path, cut):
    p = atomic_save(_ckpt(), tmp_path / "c.pt")
    raw = p.read_bytes()
    p.write_bytes(raw[: int(len(raw) * cut)])
    with pytest.raises(CheckpointError, match="c.pt.*cannot be read"):
        load_checkpoint(p)


def test_checkpoint_corrupt_missing_foreign(tmp_path):
    p = atomic_save(_ckpt(), tmp_path / "c.pt")
    raw = bytearray(p.read_bytes())
    raw[: 64] = b"\xff" * 64
    p.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(p)
    with pytest.raises(CheckpointError, match="nope.pt: file not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not a noctcm/1"):
        load_checkpoint(atomic_save({"format": "other/2"}, tmp_path / "o.pt"))
    with pytest.raises(CheckpointError, match="not a noctcm/1"):
        load_checkpoint(atomic_save([1, 2], tmp_path / "l.pt"))
    (tmp_path / "d.pt").mkdir()
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "d.pt")


def test_to_uint8_against_numpy():
    x = torch.randn(3, 2, 4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.8
    ref = np.clip(np.round((x.numpy() + 1) * 127.5), 0, 255).astype(np.uint8)
    assert np.array_equal(to_uint8(x).numpy(), ref)
    assert np.array_equal(to_uint8(x.float().numpy()[0]).numpy()[0], np.clip(np.round((x.float().numpy()[0] + 1) * 127.5), 0, 255))
    with pytest.raises(ValueError):
        to_uint8(torch.zeros(4, 4))


@pytest.mark.parametrize("n,nrow", [(1, None), (7, 3), (9, None), (4, 10)])
def test_image_grid_layout(n, nrow):
    c, h, w = 3, 4, 6
    vals = torch.linspace(-1, 1, n)
    imgs = vals.view(n, 1, 1, 1).expand(n, c, h, w).clone()
    imgs[:, 1] = -vals.view(n, 1, 1)  # channels differ, so a channel mix-up is caught
    g = image_grid(imgs, nrow=nrow, pad_value=3)
    u = to_uint8(imgs).numpy()
    ncol = min(nrow or int(np.ceil(np.sqrt(n))), n)
    rows = -(-n // ncol)
    assert g.shape == (rows * (h + 1) + 1, ncol * (w + 1) + 1, c)
    for i in range(n):
        r, q = divmod(i, ncol)
        tile = g[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w]
        assert np.array_equal(tile, u[i].transpose(1, 2, 0))
    mask = np.ones(g.shape[:2], bool)
    for i in range(n):
        r, q = divmod(i, ncol)
        mask[1 + r * (h + 1): 1 + r * (h + 1) + h, 1 + q * (w + 1): 1 + q * (w + 1) + w] = False
    assert (g[mask] == 3).all()


def test_save_image_grid_png(tmp_path):
    imgs = torch.rand(5, 1, 8, 8) * 2 - 1
    p = save_image_grid(imgs, tmp_path / "g" / "x.png", nrow=5)
    im = Image.open(p)
    assert im.format == "PNG" and im.mode == "L"
    assert np.array_equal(np.asarray(im), image_grid(imgs, nrow=5)[:, :, 0])
    rgb = Image.open(save_image_grid(imgs.expand(5, 3, 8, 8), tmp_path / "y.png"))
    assert rgb.mode == "RGB"
    with pytest.raises(ValueError):
        save_image_grid(torch.zeros(1, 2, 4, 4), tmp_path / "z.png")


def test_unwrap_compile_and_dataparallel():
    net = nn.Linear(2, 2)
    assert unwrap(torch.compile(net)) is net
    assert unwrap(torch.compile(nn.DataParallel(net))) is net
    assert unwrap(nn.DataParallel(torch.compile(net))) is net
