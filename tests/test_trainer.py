"""The training loop (noctcm.training.trainer): every method of the table on a tiny U-Net, data order, rank slicing,
gradient checkpointing (applied once), resume guards, logging files. Multi-process and kill/resume tests: test_ddp.py,
test_resume.py."""
import json
import math
import warnings

import pytest
import torch
from hypothesis import given, settings, strategies as st

from noctcm.config import METHODS, ConfigError, load_config
from noctcm.training.batches import EpochSampler, load_train_data
from noctcm.training.methods import Draws
from noctcm.training.runtime import TrainingDiverged
from noctcm.training.trainer import ConsistencyTrainer
from noctcm.utils.helpers import CheckpointError, load_checkpoint

torch.set_num_threads(1)

TINY = ["data.resolution=8", "data.resolutions=[8,10]", "model.model_channels=8", "model.channel_mult=[1,2]", "model.attention_resolutions=[]",
        "model.fno_levels=[0]", "model.fno_modes=2", "model.weight_head_channels=8", "training.batch_size=8",
        "training.log_every=1", "training.sample_every=1000", "training.checkpoint_every=1000", "training.steps=3"]


def tiny_cfg(*extra):
    return load_config(overrides=[*TINY, *extra])


@pytest.fixture(scope="module")
def data():
    "Digit-like random data: blurred blobs in [-1, 1], 8x8, one channel."
    g = torch.Generator().manual_seed(0)
    x = torch.rand(48, 1, 8, 8, generator=g)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)
    return (x - x.mean()) / x.std() * 0.5


def make(cfg, out, data, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("log_dvclive", False)
    return ConsistencyTrainer(cfg, out, data=data, **kw)


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("teacher")
    return make(tiny_cfg("training.objective=diffusion", "training.steps=2"), out, data).fit()


@pytest.mark.parametrize("objective", list(METHODS))
def test_every_method_runs_and_loss_is_finite(objective, tmp_path, data, teacher_ckpt):
    extra = ["model.two_time=true"] if objective in ("ctm", "meanflow") else []
    teacher = teacher_ckpt if METHODS[objective].teacher != "none" else None
    tr = make(tiny_cfg(f"training.objective={objective}", *extra), tmp_path, data, teacher_checkpoint=teacher)
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    path = tr.fit()
    assert path == tmp_path / "checkpoint.pt" and path.is_file()
    assert [h["step"] for h in tr.log.history] == [1, 2, 3]
    assert all(math.isfinite(h["loss"]) and math.isfinite(h["grad_norm"]) for h in tr.log.history)
    # the weights moved, and the EMA is a weighted average (differs from both start and end in general)
    after = tr.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    ck = load_checkpoint(path)
    assert ck["step"] == 3 and ck["config"]["training"]["objective"] == objective
    assert set(ck["ema_model"]) == set(ck["model"])


def test_the_table_has_the_seven_methods():
    assert {"diffusion", "sct", "scd", "ect", "ict", "ctm", "meanflow"} == set(METHODS)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 30), b=st.integers(1, 17), k=st.integers(0, 12), seed=st.integers(0, 2**31))
def test_epoch_sampler_visits_each_item_once_per_epoch_and_resumes(n, b, k, seed):
    s = EpochSampler(n, b, seed)
    idx = torch.cat([s.next() for _ in range(max(1, (3 * n) // b + 1))])
    for e in range(len(idx) // n):
        assert sorted(idx[e * n:(e + 1) * n].tolist()) == list(range(n))
    a = EpochSampler(n, b, seed)
    for _ in range(k): a.next()
    r = EpochSampler(n, b, seed)
    r.load_state_dict(a.state_dict())
    for _ in range(3):
        assert torch.equal(a.next(), r.next())


def test_epoch_sampler_rejects_a_state_for_other_data():
    s = EpochSampler(10, 4)
    with pytest.raises(CheckpointError):
        EpochSampler(11, 4).load_state_dict(s.state_dict())


def test_rank_slices_of_the_draws_concatenate_to_the_single_process_draws():
    "Per-sample randomness does not depend on the number of processes: ranks see slices of one global draw."
    class Net:
        sigma_d, noise = 0.5, None

    def draws(rows):
        d = Draws(torch.Generator().manual_seed(5), 8, rows)
        return d.noise(Net, torch.zeros(8, 1, 2, 2)), d.time(-1.0, 1.4, 0.5), d.uniform(), d.choice(torch.tensor([0.2, 0.3, 0.5]))

    full = draws(None)
    halves = [draws(slice(0, 4)), draws(slice(4, 8))]
    for i, f in enumerate(full):
        assert torch.equal(torch.cat([halves[0][i], halves[1][i]]), f)
    assert not torch.equal(halves[0][0], halves[1][0])


def test_gradient_checkpointing_is_applied_once_and_gives_the_same_training(tmp_path, data):
    """training.grad_checkpointing=true: the U-Net checkpoints each block once (no checkpoint inside another, no
    module's forward replaced), every checkpointed block runs exactly twice per step (forward + one recompute), and
    the weights equal a run without it. The trainer once also wrapped every `*Block` itself (13 extra checkpoints)."""
    import torch.utils.checkpoint as cp
    cfg = ["training.objective=sct", "training.tangent_warmup_steps=0", "data.resolutions=[]"]

    def run(out, *extra):
        tr = make(tiny_cfg(*cfg, *extra), out, data)
        depth, deepest, calls, orig = [0], [0], [], cp.checkpoint
        # training-mode calls only: a checkpoint save also samples 2 images from the raw and EMA weights (eval mode)
        tr.model.backbone.down[0][0].register_forward_pre_hook(lambda m, a: calls.append(1) if m.training else None)

        def counting(fn, *a, **k):
            depth[0] += 1; deepest[0] = max(deepest[0], depth[0])
            try: return orig(fn, *a, **k)
            finally: depth[0] -= 1
        cp.checkpoint = counting
        try: tr.fit(1)
        finally: cp.checkpoint = orig
        assert not any("forward" in vars(m) for m in tr.model.modules())
        tr.fit()
        return tr, len(calls), deepest[0]

    a, calls_a, depth_a = run(tmp_path / "a")
    b, calls_b, depth_b = run(tmp_path / "b", "training.grad_checkpointing=true")
    # per step, sCT runs the no-grad JVP pass and the with-grad pass; checkpointing adds one recompute of the latter
    n = a.step
    assert (calls_a, depth_a) == (2 * n, 0) and (calls_b, depth_b) == (3 * n, 1), (calls_a, depth_a, calls_b, depth_b)
    for k, v in a.model.state_dict().items():
        assert torch.allclose(v, b.model.state_dict()[k], atol=1e-6, rtol=1e-5), k


def test_resume_refuses_a_different_model(tmp_path, data):
    make(tiny_cfg("training.steps=1"), tmp_path, data).fit()
    with pytest.raises(ConfigError, match="model.model_channels"):
        make(tiny_cfg("model.model_channels=16"), tmp_path, data)


def test_resume_extends_a_finished_run_and_new_knobs_win(tmp_path, data):
    make(tiny_cfg("training.steps=2"), tmp_path, data).fit()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        tr = make(tiny_cfg("training.steps=4", "training.lr=1e-4"), tmp_path, data)
    assert tr.step == 2 and any("changed training settings" in str(x.message) for x in w)
    assert tr.schedule.lr(2) == pytest.approx(1e-4)
    tr.fit()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 4
    lines = [json.loads(s) for s in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in lines] == [1, 2, 3, 4]


def test_scd_without_a_teacher_file_names_the_file(tmp_path, data):
    with pytest.raises(CheckpointError, match="nope.pt"):
        make(tiny_cfg("training.objective=scd", f"distillation.teacher_checkpoint={tmp_path / 'nope.pt'}"),
             tmp_path / "o", data)


def test_divergence_names_the_step_and_keeps_the_last_checkpoint(tmp_path, data):
    tr = make(tiny_cfg("training.steps=6", "training.checkpoint_every=2"), tmp_path, data)
    tr.fit(2)
    good = tr.checkpoint_path.read_bytes()
    real = tr.loss.method

    def bad(net, x0, draws, step):
        loss, stats = real(net, x0, draws, step)
        return loss * float("inf"), stats

    tr.loss.method = bad
    with pytest.raises(TrainingDiverged, match=r"step 3\b") as e:
        tr.fit()
    assert e.value.step == 3 and str(tr.checkpoint_path) in str(e.value)
    assert tr.checkpoint_path.read_bytes() == good


def test_mixed_precision_falls_back_to_fp32_on_cpu(tmp_path, data):
    with pytest.warns(UserWarning, match="CUDA only"):
        tr = make(tiny_cfg("training.precision=bf16", "training.steps=1"), tmp_path, data)
    assert tr.rt.amp_dtype is None
    tr.fit()


def test_logging_files_and_sample_grid(tmp_path, data):
    tr = make(tiny_cfg("training.steps=2", "training.sample_every=2", "training.log_every=2"), tmp_path, data,
              log_dvclive=True)
    tr.fit()
    assert (tmp_path / "samples" / "step-2.png").is_file()
    hist = [json.loads(s) for s in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in hist] == [2] and {"loss", "lr", "grad_norm", "images_per_s"} <= set(hist[0])
    assert (tmp_path / "dvclive" / "metrics.json").is_file()
    assert (tmp_path / "dvclive" / "plots" / "metrics" / "train" / "loss.tsv").is_file()
    assert not (tmp_path / "dvc.yaml").exists() and not (tmp_path / "dvclive" / "dvc.yaml").exists()


def test_batch_size_must_split_over_processes(tmp_path, data, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    import torch.distributed as dist
    monkeypatch.setattr(dist, "is_initialized", lambda: True)  # do not start a process group
    with pytest.raises(ConfigError, match="divisible"):
        make(tiny_cfg(), tmp_path, data)


def test_a_compiled_model_that_fails_falls_back_to_eager_with_the_same_result(tmp_path, data):
    "training.compile=true: if the compiled backbone fails on step 1, the step is redone eagerly (same draws)."
    eager = make(tiny_cfg("training.objective=sct"), tmp_path / "eager", data)
    eager.fit()
    tr = make(tiny_cfg("training.objective=sct"), tmp_path / "compiled", data)

    def broken(*a, **k):
        raise RuntimeError("simulated compiler failure")

    tr.model.backbone._compiled_call_impl = broken  # what nn.Module.compile() installs, made to fail
    tr.compile_pending = True
    with pytest.warns(UserWarning, match="simulated compiler failure"):
        tr.fit()
    assert tr.model.backbone._compiled_call_impl is None
    for k, v in eager.model.state_dict().items():
        assert torch.equal(v, tr.model.state_dict()[k]), k


def test_training_data_come_from_prepared_only_when_it_matches(tmp_path):
    from noctcm.data.datasets import fetch, load_dataset, prepare
    fetch("digits", root=tmp_path / "data")
    cfg = tiny_cfg(f"data.root={tmp_path / 'data'}", f"paths.prepared={tmp_path / 'prep'}")
    direct = load_train_data(cfg)            # nothing prepared yet: read the dataset
    want = load_dataset(cfg.data, "train", root=cfg.data.root).images.float() / 127.5 - 1
    assert torch.equal(direct, want) and direct.shape[1:] == (1, 8, 8) and -1 <= direct.min() < direct.max() <= 1
    prepare(cfg, out_dir=cfg.paths.prepared, root=cfg.data.root)
    saved = torch.load(tmp_path / "prep" / "train.pt", weights_only=True)
    saved["images"] = saved["images"].flip(0)  # mark the prepared copy so we can tell which one was read
    torch.save(saved, tmp_path / "prep" / "train.pt")
    (tmp_path / "prep" / "info.json").write_text((tmp_path / "prep" / "info.json").read_text().replace(
        '"sha256"', '"sha256_ignored"'))
    assert torch.equal(load_train_data(cfg), want.flip(0))
    other = tiny_cfg(f"data.root={tmp_path / 'data'}", f"paths.prepared={tmp_path / 'prep'}", "data.resolution=16")
    assert load_train_data(other).shape[1:] == (1, 16, 16)   # prepared at 8 px: not used for 16 px


def test_no_resume_starts_over_without_stale_snapshots(tmp_path, data):
    make(tiny_cfg("training.steps=4", "training.checkpoint_every=2"), tmp_path, data).fit()
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["ckpt-2.pt", "ckpt-4.pt"]
    tr = make(tiny_cfg("training.steps=3", "training.checkpoint_every=3"), tmp_path, data, resume=False)
    assert tr.step == 0 and not (tmp_path / "checkpoint.pt").exists()
    tr.fit()
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["ckpt-3.pt"]
