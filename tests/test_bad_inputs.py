"""Bad inputs, as a new user would type them: every case ends with one line `noctcm: error: <what>: <why>; ...` that
names the key or path, a non-zero exit status and no Python traceback. Real subprocesses (`noctcm`, `python -m
noctcm stage`, `noctcm notebook`); argument checks come before anything heavy, so most cases take a fraction of a
second. Also: a checkpoint write that runs out of space (a 64 kB-scale tmpfs, where the machine allows mounting one)
and a training process killed at random moments with `checkpoint_every=1`.

`python tests/test_bad_inputs.py` prints the table of cases with the line each one prints."""
import io
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
NOCTCM = [sys.executable, "-m", "noctcm.cli"]
TINY_MODEL = {"model_channels": 8, "channel_mult": [1, 2, 2], "attention_resolutions": [], "num_heads": 1,
              "fno_levels": [1], "fno_modes": 2, "weight_head_channels": 8}
TINY = [f"model.{k}={json.dumps(v, separators=(',', ':'))}" for k, v in TINY_MODEL.items()] + [
    "training.batch_size=8", "training.device=cpu", "training.log_every=1", "training.sample_every=1000"]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NOCTCM_OFFLINE="1", PYTHONWARNINGS="ignore",
                PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")


def _png(a):
    from PIL import Image
    b = io.BytesIO(); Image.fromarray(a).save(b, format="PNG"); return b.getvalue()


def _checkpoint(path, channels=8):
    "A noctcm/1 checkpoint of an untrained tiny model (what load_model needs), written in-process (fast)."
    import torch
    from noctcm.config import load_config, to_dict
    from noctcm.models.consistency_model import build_model
    cfg = load_config(overrides=[f"model.{k}={json.dumps(v)}" for k, v in dict(TINY_MODEL, model_channels=channels).items()])
    m = build_model(cfg)
    torch.save({"format": "noctcm/1", "config": to_dict(cfg), "step": 0, "model": m.state_dict(),
                "ema_model": m.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("bad"))


def make_workspace(w):
    "A workspace with bad files, tiny checkpoints, digits data and small image folders (no shared data needed)."
    from noctcm.data.datasets import fetch
    fetch("digits", root=w / "data")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["root"] = str(w / "data")
    (w / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copy2(ROOT / "dvc.yaml", w / "dvc.yaml")
    (w / "garbage.yaml").write_bytes(bytes(random.Random(0).randrange(256) for _ in range(300)))
    (w / "list.yaml").write_text("- training\n- model\n")
    (w / "broken.yaml").write_text("training: [1, 2\n")
    (w / "preset.yaml").write_text("training:\n  stepz: 3\n")
    (w / "notckpt.pt").write_bytes(b"this is not a checkpoint")
    import torch
    torch.save({"weights": torch.zeros(3)}, w / "other.pt")
    ck = _checkpoint(w / "ck.pt")
    _checkpoint(w / "wide.pt", channels=16)
    (w / "trunc.pt").write_bytes(ck.read_bytes()[:2000])
    g = np.random.RandomState(0)
    flat = w / "flat"; flat.mkdir()
    for i in range(12): (flat / f"{i:02d}.png").write_bytes(_png(g.randint(0, 256, (8, 8, 3)).astype(np.uint8)))
    corrupt = w / "corrupt"; shutil.copytree(flat, corrupt)
    (corrupt / "05.png").write_bytes((flat / "05.png").read_bytes()[:40])
    (w / "empty").mkdir()
    for split, classes in (("train", ("cat", "dog")), ("test", ("cat", "emu"))):
        with zipfile.ZipFile(w / f"{split}.zip", "w") as z:
            for c in classes:
                for i in range(3): z.writestr(f"{split}/{c}/{i}.png", _png(g.randint(0, 256, (8, 8, 3)).astype(np.uint8)))
    # a prepared unlabelled folder: the domain classifier must refuse it
    from noctcm.config import load_config
    from noctcm.data.datasets import prepare
    fetch("folder", root=w / "fdata", src=flat, resolution=8, channels=3)
    prepare(load_config(overrides=["data.name=folder", f"data.root={w / 'fdata'}", "data.resolution=8", "data.resolutions=[8,10]", "data.channels=3"]),
            w / "fprep")
    return w


# (id, command (with {w} for the workspace), what the error line must name)
CASES = [
    # noctcm sample / evaluate: arguments checked before the checkpoint is loaded
    ("sample-num-steps-0", "noctcm sample --checkpoint {w}/ck.pt --num_steps 0 --out {w}/s", "--num_steps"),
    ("sample-num-samples-neg", "noctcm sample --checkpoint {w}/ck.pt --num_samples -5 --out {w}/s", "--num_samples"),
    ("sample-t-mid-too-big", "noctcm sample --checkpoint {w}/ck.pt --num_steps 2 --t_mid 2.0 --out {w}/s", "--t_mid"),
    ("sample-t-mid-increasing", "noctcm sample --checkpoint {w}/ck.pt --num_steps 3 --t_mid 0.5 1.0 --out {w}/s", "--t_mid"),
    ("sample-batch-0", "noctcm sample --checkpoint {w}/ck.pt --batch_size 0 --out {w}/s", "--batch_size"),
    ("sample-resolution-30", "noctcm sample --checkpoint {w}/ck.pt --resolution 30 --out {w}/s", "--resolution 30"),
    ("sample-missing-checkpoint", "noctcm sample --checkpoint {w}/nope.pt --out {w}/s", "nope.pt"),
    ("sample-truncated-checkpoint", "noctcm sample --checkpoint {w}/trunc.pt --out {w}/s", "trunc.pt"),
    ("sample-not-a-checkpoint", "noctcm sample --checkpoint {w}/notckpt.pt --out {w}/s", "notckpt.pt"),
    ("sample-foreign-torch-file", "noctcm sample --checkpoint {w}/other.pt --out {w}/s", "other.pt"),
    ("sample-steps-not-int", "noctcm sample --checkpoint {w}/ck.pt --num_steps two --out {w}/s", "--num_steps"),
    ("evaluate-num-steps-0", "noctcm evaluate --checkpoint {w}/ck.pt --num_steps 1 0", "--num_steps"),
    ("evaluate-missing-checkpoint", "noctcm evaluate --checkpoint {w}/nope.pt", "nope.pt"),
    # params files and overrides
    ("params-random-bytes", "noctcm train --config {w}/garbage.yaml", "garbage.yaml"),
    ("params-missing", "noctcm train --config {w}/nope.yaml", "nope.yaml"),
    ("params-a-list", "noctcm train --config {w}/list.yaml", "list.yaml"),
    ("params-broken-yaml", "noctcm config --config {w}/broken.yaml", "broken.yaml"),
    ("override-unknown-key", "noctcm train --config {w}/params.yaml training.lr_rate=1", "training.lr_rate"),
    ("override-bad-range", "noctcm train --config {w}/params.yaml training.lr=-1", "training.lr"),
    ("override-bad-choice", "noctcm config data.name=imagenet", "data.name"),
    ("override-wrong-type", "noctcm config model.channel_mult=oops", "model.channel_mult"),
    ("override-no-value", "noctcm config --config {w}/params.yaml training.steps", "training.steps"),
    # presets
    ("preset-unknown-key", "noctcm config --config {w}/params.yaml --config {w}/preset.yaml", "preset.yaml"),
    ("preset-bad-override", f"noctcm config --config {ROOT}/params.yaml --config {ROOT}/configs/cifar10_ctcm.yaml "
                            "training.ect_q=0.5", "training.ect_q"),
    ("preset-missing", "noctcm config --config {w}/params.yaml --config {w}/configs/nope.yaml", "nope.yaml"),
    # checkpoints in training
    ("teacher-missing", "noctcm train --config {w}/params.yaml --stage distill --teacher_checkpoint {w}/nope.pt", "nope.pt"),
    ("teacher-other-width", "noctcm train --config {w}/params.yaml --stage distill --teacher_checkpoint {w}/wide.pt "
                            "--out {w}/d --no-progress " + " ".join(TINY) + " model.model_channels=8",
     "model.model_channels"),
    # data
    ("folder-missing", "noctcm data fetch folder --src {w}/nope --root {w}/d1", "nope"),
    ("folder-empty", "noctcm data fetch folder --src {w}/empty --root {w}/d1", "empty"),
    ("folder-corrupt-image", "noctcm data fetch folder --src {w}/corrupt --root {w}/d1", "05.png"),
    ("folder-test-unknown-class", "noctcm data fetch folder --src {w}/train.zip --test_src {w}/test.zip --root {w}/d1",
     "emu"),
    ("folder-no-src", "noctcm data fetch folder --root {w}/d1", "src"),
    ("prepare-missing-data", "noctcm data prepare --config {w}/params.yaml data.name=folder data.root={w}/nodata "
                             "--out {w}/p1", "nodata"),
    ("classifier-one-class", "noctcm stage classifier --config {w}/params.yaml data.name=folder "
                             "data.root={w}/fdata data.resolution=8 data.channels=3 paths.prepared={w}/fprep "
                             "--out {w}/c.pt --metrics {w}/c.json", "evaluation.feature_extractor=inception-v3-compat"),
    ("stage-random-bytes", "noctcm stage run train --config {w}/garbage.yaml", "garbage.yaml"),
    # bench (options reach its own parser)
    ("bench-bad-section", "noctcm bench --threads 1 --only nothing", "--only"),
    # papermill notebooks
    ("notebook-train-bad-override", "noctcm notebook train {w}/nb.ipynb --cwd {w} -k python3 --no-progress-bar "
                                    "-p overrides [training.lr=-1]", "training.lr"),
]


def _argv(cmd, w):
    parts = cmd.split()
    head = {"noctcm": NOCTCM, "python": [sys.executable]}[parts[0]]
    return head + [p.replace("{w}", str(w)) for p in parts[1:]]


def run_case(cmd, w, timeout=240):
    return subprocess.run(_argv(cmd, w), cwd=w, env=_env(), capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name,cmd,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(ws, name, cmd, needle):
    r = run_case(cmd, ws)
    err = r.stderr
    assert r.returncode != 0, f"{name}: exit 0\n{r.stdout[-2000:]}\n{err[-2000:]}"
    assert "Traceback" not in err, f"{name}: traceback\n{err[-4000:]}"
    lines = [l for l in err.splitlines() if "error:" in l]
    assert len(lines) == 1, f"{name}: expected one error line\n{err[-3000:]}"
    needle = needle.replace("{w}", str(ws))
    assert needle in lines[0], f"{name}: {needle!r} not named in {lines[0]!r}"
    if not name.endswith("not-int"):          # argparse's own usage errors have their own form (exit 2)
        assert lines[0].startswith("noctcm: error: "), lines[0]
    assert r.returncode == 2, f"{name}: exit {r.returncode}"


def test_enough_cases():
    kinds = {c[0].split("-")[0] for c in CASES}
    assert len(CASES) >= 25 and {"sample", "params", "preset", "teacher", "folder", "notebook"} <= kinds


# ---------------------------------------------------------------- a full disk during a save
def _can_mount_tmpfs(where) -> str | None:
    "None when a tmpfs can be mounted at `where`, else the reason."
    if not hasattr(os, "geteuid") or os.geteuid() != 0: return "not root: cannot mount a tmpfs"
    if shutil.which("mount") is None: return "no mount command"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0: return f"mount -t tmpfs failed: {r.stderr.strip()[:200]}"
    subprocess.run(["umount", str(where)], capture_output=True)
    return None


def _train_cmd(out, data_root, steps, every=1):
    return [*NOCTCM, "train", *TINY, "model.model_channels=4", "data.resolution=8", "data.resolutions=[8,10]", "model.channel_mult=[1,2]",
            "model.fno_levels=[0]", f"data.root={data_root}", f"training.steps={steps}",
            f"training.checkpoint_every={every}", "training.keep_snapshots=false", "--no-progress", "--out", str(out)]


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    from noctcm.data.datasets import fetch
    fetch("digits", root=root)
    return root


def test_disk_full_during_checkpoint_keeps_the_previous_one(tmp_path, digits_root):
    """A tmpfs that holds one checkpoint but not a second one beside it (the atomic write needs both at once): the
    second save fails with one line, exit 2, the first checkpoint still loads, and no temp file is left."""
    mnt = tmp_path / "mnt"; mnt.mkdir()
    reason = _can_mount_tmpfs(mnt)
    if reason: pytest.skip(reason)
    probe = subprocess.run(_train_cmd(tmp_path / "probe", digits_root, 1), env=_env(), capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr[-3000:]
    size = (tmp_path / "probe" / "checkpoint.pt").stat().st_size
    pages = -(-int(size * 1.5 + 16384) // 4096)          # one checkpoint + the history files, not two checkpoints
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={pages * 4096}", "tmpfs", str(mnt)], check=True)
    try:
        r = subprocess.run(_train_cmd(mnt / "run", digits_root, 3), env=_env(), capture_output=True, text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
        line = r.stderr.strip().splitlines()[-1]
        assert line.startswith("noctcm: error: ") and "checkpoint.pt" in line and "No space left" in line, line
        from noctcm.utils.helpers import load_checkpoint
        assert load_checkpoint(mnt / "run" / "checkpoint.pt")["step"] == 1
        assert not [p.name for p in (mnt / "run").iterdir() if p.name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


# ---------------------------------------------------------------- kills at random moments
def test_killed_at_random_moments_every_survivor_resumes(tmp_path, digits_root):
    """SIGKILL a training run (checkpoint every step) at random moments after it has saved, three times; after every
    kill the checkpoint there loads and the step never goes back; the fourth start resumes and finishes."""
    from noctcm.utils.helpers import load_checkpoint
    out, steps, rnd, last, kills = tmp_path / "run", 100, random.Random(), 0, 0
    ck = out / "checkpoint.pt"
    cmd = _train_cmd(out, digits_root, steps)
    while kills < 3:
        before = ck.stat().st_mtime_ns if ck.exists() else None
        p = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while p.poll() is None and time.time() < deadline and (not ck.exists() or ck.stat().st_mtime_ns == before):
            time.sleep(0.005)                            # until this process has saved once
        time.sleep(rnd.uniform(0.0, 0.3))                # then a random moment (it saves every step)
        if p.poll() is not None: break
        p.send_signal(signal.SIGKILL); p.wait(); kills += 1
        step = int(load_checkpoint(ck)["step"])          # the survivor is loadable
        assert last <= step < steps, (last, step)
        last = step
    assert kills >= 2, "the run finished before it could be killed (make it longer)"
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    final = load_checkpoint(ck)
    assert final["step"] == steps and final["history"][-1]["step"] == steps
    assert not [q.name for q in out.iterdir() if q.name.endswith(".tmp")]


if __name__ == "__main__":       # the table for the closing note: case, exit code, the line it prints
    import tempfile
    w = make_workspace(pathlib.Path(tempfile.mkdtemp()))
    for name, cmd, needle in CASES:
        r = run_case(cmd, w)
        line = [l for l in r.stderr.splitlines() if "error:" in l]
        print(f"| `{name}` | {r.returncode} | `{line[-1] if line else r.stderr.strip()[-200:]}` |".replace(str(w), "W"))


def test_divergence_leaves_a_checkpoint_that_samples(tmp_path, digits_root):
    """Issue 19: from a healthy step-4 checkpoint, `training.lr=1e30 training.grad_clip=0 training.checkpoint_every=1`
    turns the weights into finite but enormous numbers after a finite loss. The run must stop with one line naming the
    step, leave the last *usable* checkpoint (and snapshot), and `noctcm sample` on it must give finite samples."""
    out = tmp_path / "run"
    ok = subprocess.run(_train_cmd(out, digits_root, 4), env=_env(), capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = subprocess.run([*_train_cmd(out, digits_root, 20), "training.lr=1e30", "training.grad_clip=0",
                          "training.keep_snapshots=true"], env=_env(), capture_output=True, text=True, timeout=600)
    lines = [l for l in bad.stderr.splitlines() if l.strip() and "Warning" not in l and "warnings.warn" not in l]
    assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert lines[-1].startswith("noctcm: error: training diverged at step ") and "last good checkpoint" in lines[-1], lines[-3:]
    from noctcm.generate import generate
    from noctcm.models.consistency_model import load_model
    from noctcm.utils.helpers import load_checkpoint
    step = int(lines[-1].split("at step ")[1].split(":")[0])
    assert load_checkpoint(out / "checkpoint.pt")["step"] < step
    snaps = sorted(int(p.stem.split("-")[1]) for p in (out / "snapshots").glob("ckpt-*.pt"))
    assert not snaps or max(snaps) < step, (snaps, step)
    for use_ema in (True, False):
        model, _ = load_model(out / "checkpoint.pt", use_ema=use_ema)
        assert torch_isfinite(generate(model, 8, 1, progress=False)), use_ema
    s = subprocess.run([*NOCTCM, "sample", "--checkpoint", str(out / "checkpoint.pt"), "--num_samples", "4",
                        "--out", str(tmp_path / "samples")], env=_env(), capture_output=True, text=True, timeout=600)
    assert s.returncode == 0, s.stderr[-2000:]


def torch_isfinite(x) -> bool:
    import torch
    return bool(torch.isfinite(x).all())
