"""Tests of noctcm.training.schedulers.ProgressiveSchedule: boundary values, state round trip / resume,
monotonicity (property-based), config construction, bad input."""
import io
import json
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from noctcm.training.schedulers import ProgressiveSchedule


def test_tangent_warmup_boundaries():
    s = ProgressiveSchedule(tangent_warmup_steps=10_000)
    assert s.tangent_r(0) == 0.0 and s.tangent_r(1) == 1e-4 and s.tangent_r(9_999) == 0.9999
    assert s.tangent_r(10_000) == 1.0 and s.tangent_r(10**7) == 1.0
    assert ProgressiveSchedule(tangent_warmup_steps=0).tangent_r(0) == 1.0


def test_ect_stage_boundaries():
    s = ProgressiveSchedule(ect_stage_steps=25_000)
    assert [s.ect_stage(k) for k in (0, 24_999, 25_000, 49_999, 50_000, 199_999)] == [0, 0, 1, 1, 2, 7]
    assert ProgressiveSchedule(ect_stage_steps=0).ect_stage(10**6) == 0


def test_ict_boundaries():
    s = ProgressiveSchedule(steps=400_000, ict_s0=10, ict_s1=1280)
    assert s.ict_num_scales(0) == 11 and s.ict_num_scales(49_999) == 11 and s.ict_num_scales(50_000) == 21
    assert s.ict_num_scales(399_999) == 1281 and s.ict_num_scales(10**7) == 1281


def test_lr_boundaries():
    s = ProgressiveSchedule(steps=1000, lr=1e-3, lr_warmup_steps=10)
    assert math.isclose(s.lr(0), 1e-4) and math.isclose(s.lr(9), 1e-3) and math.isclose(s.lr(500), 1e-3)
    inv = ProgressiveSchedule(lr=1.0, lr_decay="inv_sqrt", lr_ref_steps=100)
    assert inv.lr(0) == 1.0 and inv.lr(100) == 1.0 and math.isclose(inv.lr(400), 0.5)
    cos = ProgressiveSchedule(steps=110, lr=2.0, lr_warmup_steps=10, lr_decay="cosine")
    assert math.isclose(cos.lr(9), 2.0) and math.isclose(cos.lr(10), 2.0)
    assert math.isclose(cos.lr(60), 1.0) and cos.lr(110) < 1e-12 and cos.lr(10**4) < 1e-12


def test_apply_lr_and_call():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=123.0)
    s = ProgressiveSchedule(lr=0.5, lr_warmup_steps=4, step=1)
    assert s.apply_lr(opt) == 0.25 and opt.param_groups[0]["lr"] == 0.25
    d = s()
    assert d == {"step": 1, "lr": 0.25, "tangent_r": s.tangent_r(1), "ect_stage": 0, "ict_num_scales": 11}


def test_state_round_trip_and_resume():
    kw = dict(steps=1000, lr=3e-4, lr_warmup_steps=50, lr_decay="cosine", tangent_warmup_steps=200,
              ect_stage_steps=100, ict_s0=5, ict_s1=320)
    a = ProgressiveSchedule(**kw)
    a.advance(137)
    # through torch.save (checkpoint) and JSON (plain types only)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = ProgressiveSchedule()
    b.load_state_dict(torch.load(buf, weights_only=True))
    c = ProgressiveSchedule()
    c.load_state_dict(json.loads(json.dumps(a.state_dict())))
    assert b.state_dict() == a.state_dict() == c.state_dict()
    # resuming gives the same trajectory as an uninterrupted schedule
    ref = ProgressiveSchedule(**kw)
    ref.advance(137)
    for _ in range(300):
        assert b() == ref() == c()
        b.advance(); c.advance(); ref.advance()
    with pytest.raises(KeyError):
        ProgressiveSchedule().load_state_dict({"step": 3})


@settings(max_examples=30, deadline=None)
@given(steps=st.integers(1, 5000), warm=st.integers(0, 300), H=st.integers(0, 500), stage=st.integers(0, 400),
       decay=st.sampled_from(["none", "inv_sqrt", "cosine"]), s0=st.integers(1, 20), mult=st.integers(1, 200))
def test_monotonicity(steps, warm, H, stage, decay, s0, mult):
    s = ProgressiveSchedule(steps=steps, lr=1.0, lr_warmup_steps=warm, lr_decay=decay, lr_ref_steps=100,
                            tangent_warmup_steps=H, ect_stage_steps=stage, ict_s0=s0, ict_s1=s0 * mult)
    ks = list(range(0, steps + 50, max(1, steps // 97)))
    r = [s.tangent_r(k) for k in ks]
    a = [s.ect_stage(k) for k in ks]
    n = [s.ict_num_scales(k) for k in ks]
    lr = [s.lr(k) for k in ks]
    assert all(x <= y for x, y in zip(r, r[1:])) and all(0 <= x <= 1 for x in r)
    assert all(x <= y for x, y in zip(a, a[1:]))
    assert all(x <= y for x, y in zip(n, n[1:])) and n[0] == s0 + 1 and max(n) <= s0 * mult + 1
    warm_lr = [v for k, v in zip(ks, lr) if k < warm]
    assert all(x <= y + 1e-15 for x, y in zip(warm_lr, warm_lr[1:]))
    post = [v for k, v in zip(ks, lr) if k >= max(warm - 1, 0)]
    assert all(x >= y - 1e-15 for x, y in zip(post, post[1:]))
    assert all(0 <= v <= 1 for v in lr)


def test_from_config():
    from noctcm.config import load_config
    cfg = load_config(overrides=["training.steps=321", "training.lr_decay=inv_sqrt", "training.ect_stage_steps=7"])
    s = ProgressiveSchedule.from_config(cfg, step=5)
    assert (s.steps, s.lr_decay, s.ect_stage_steps, s.step) == (321, "inv_sqrt", 7, 5)
    assert s.lr_base == cfg.training.lr and s.tangent_warmup_steps == cfg.training.tangent_warmup_steps
    assert ProgressiveSchedule.from_config(cfg.training, step=5).state_dict() == s.state_dict()


@pytest.mark.parametrize("kw", [dict(lr_decay="exp"), dict(steps=0), dict(lr_warmup_steps=-1), dict(lr=-1.0),
                                dict(ict_s0=20, ict_s1=10), dict(tangent_warmup_steps=-5)])
def test_bad_input(kw):
    with pytest.raises(ValueError):
        ProgressiveSchedule(**kw)
