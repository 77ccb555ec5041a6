"""Model tests: time conditioning, FNO U-Net, ConsistencyModel (nbs/03, 05, 06).

Central checks (algorithms.md §10 items 2 and 4): the boundary conditions f(x, 0) == x and G(x, t, t) == x hold
exactly, and the rearranged JVP of F equals cos t sin t sigma_d dF/dt along the TrigFlow trajectory (central finite
differences in float64 and torch.autograd.forward_ad) through the whole model.
"""
import math

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from hypothesis import given, settings, strategies as st
from torch.func import jvp

from noctcm.models.time_conditioning import TrigFlowTimeConditioning
from noctcm.models.unet import UNetModel
from noctcm.models.consistency_model import ConsistencyModel, build_model, load_model

torch.set_num_threads(1)
B4 = lambda a: a.reshape(-1, 1, 1, 1)


def randomise_(model, std=0.05, seed=0):
    "Give zero-initialised parameters (output conv, norm biases, weight head) random values: every path active."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.abs().max() == 0:
                p.copy_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def small_unet(**kw):
    base = dict(model_channels=8, resolution=8, attention_resolutions=(8, 4), num_heads=2,
                fno_levels=(0, 1), fno_bottleneck=True, fno_modes=4)
    base.update(kw)
    return UNetModel(**base)


# --------------------------------------------------------------------------- time conditioning
@pytest.mark.parametrize("kind", ["positional", "fourier"])
@pytest.mark.parametrize("two_time", [False, True])
def test_time_embedding_derivatives_match_finite_differences(kind, two_time):
    torch.manual_seed(0)
    e = TrigFlowTimeConditioning(32, kind=kind, scale=0.7, two_time=two_time).double()
    t = torch.linspace(0.02, 1.55, 9, dtype=torch.float64)
    s = 0.5 * t if two_time else None
    h = 1e-5
    if two_time:
        _, d = jvp(lambda a, b: e(a, b), (t, s), (torch.ones_like(t), -torch.ones_like(s)))
        fd = (e(t + h, s - h) - e(t - h, s + h)) / (2 * h)
    else:
        _, d = jvp(e, (t,), (torch.ones_like(t),))
        fd = (e(t + h) - e(t - h)) / (2 * h)
    assert d.abs().max() > 1e-3
    torch.testing.assert_close(d, fd, rtol=1e-6, atol=1e-9)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.0, math.pi / 2), min_size=1, max_size=6), st.sampled_from(["positional", "fourier"]))
def test_time_embedding_shape_finite_and_batch_independent(ts, kind):
    e = TrigFlowTimeConditioning(16, kind=kind)
    t = torch.tensor(ts)
    out = e(t)
    assert out.shape == (len(ts), 16) and torch.isfinite(out).all()
    torch.testing.assert_close(out[:1], e(t[:1]))   # row i depends only on t[i]


def test_time_embedding_errors_and_state():
    with pytest.raises(ValueError):
        TrigFlowTimeConditioning(16, kind="learned")
    with pytest.raises(ValueError):
        TrigFlowTimeConditioning(16)(torch.rand(2), torch.rand(2))
    a = TrigFlowTimeConditioning(16, kind="fourier", scale=2.0)
    assert "freqs" in a.state_dict()
    b = TrigFlowTimeConditioning(16, kind="fourier", scale=2.0, seed=9)
    assert not torch.equal(a.freqs, b.freqs)
    b.load_state_dict(a.state_dict())
    t = torch.rand(5)
    assert torch.equal(a(t), b(t))


# --------------------------------------------------------------------------- U-Net
_PARAM_COUNTS = {}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("res", [16, 32, 64])
def test_unet_shapes(channels, res):
    torch.manual_seed(0)
    net = randomise_(UNetModel(in_channels=channels, model_channels=8, resolution=res, attention_resolutions=(8,)))
    n = sum(p.numel() for p in net.parameters())
    print(f"UNetModel(C={channels}, res={res}, model_channels=8): {n} parameters")
    x = torch.randn(2, channels, res, res)
    y = net(x, torch.rand(2))
    assert y.shape == x.shape and torch.isfinite(y).all() and y.abs().max() > 0


def test_unet_runs_at_other_resolutions_and_rejects_bad_sizes():
    torch.manual_seed(0)
    net = randomise_(UNetModel(in_channels=3, model_channels=8, resolution=16))
    for H, W in ((32, 32), (64, 64), (16, 32), (18, 18), (8, 8), (5, 7)):   # multigrid: any grid
        assert net(torch.randn(1, 3, H, W), torch.rand(1)).shape == (1, 3, H, W)
    native = UNetModel(in_channels=3, model_channels=8, resolution=16, grid_rule="native")
    with pytest.raises(ValueError, match="divisible by 4"):
        native(torch.randn(1, 3, 18, 18), torch.rand(1))
    with pytest.raises(ValueError):
        net(torch.randn(1, 1, 16, 16), torch.rand(1))       # wrong channel count
    with pytest.raises(ValueError):
        net(torch.randn(2, 3, 16, 16), torch.rand(3))       # wrong batch of times
    with pytest.raises(ValueError):
        net(torch.randn(1, 3, 16, 16), torch.rand(1), torch.rand(1))   # s on a one-time net
    with pytest.raises(ValueError):
        UNetModel(model_channels=10, num_heads=3)           # heads must divide channels


def test_unet_fno_modes_clamped_and_attention_placed():
    net = UNetModel(model_channels=8, resolution=16, channel_mult=(1, 2, 2), fno_levels=(0, 1, 2), fno_modes=6,
                    attention_resolutions=(8,))
    modes = sorted({(m.spectral.modes1, m.spectral.modes2) for m in net.modules() if hasattr(m, "spectral")})
    assert modes == [(2, 2), (4, 4), (6, 6)]        # min(6, 4//2), min(6, 8//2), min(6, 16//2)
    from noctcm.models.unet import AttentionBlock
    # level 1 (8 px): 1 encoder + 2 decoder blocks; the middle (4 px) has none
    assert sum(isinstance(m, AttentionBlock) for m in net.modules()) == 3
    assert not isinstance(net.mid[1], AttentionBlock)


def test_unet_dropout_only_in_training():
    torch.manual_seed(0)
    net = randomise_(UNetModel(model_channels=8, resolution=8, dropout=0.5))
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    net.eval()
    assert torch.equal(net(x, t), net(x, t))
    net.train()
    assert not torch.allclose(net(x, t), net(x, t))


@pytest.mark.parametrize("variant", [
    dict(),
    dict(time_embedding="fourier", double_norm=False),
    dict(two_time=True),
    dict(num_res_blocks=2, channel_mult=(1, 2), fno_bottleneck=False),
])
def test_unet_jvp_matches_forward_ad_and_finite_differences(variant):
    torch.manual_seed(0)
    net = randomise_(small_unet(**variant)).double().eval()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.2, 1.3], dtype=torch.float64)
    vx, vt = torch.randn_like(x), torch.randn_like(t)
    args, tans = ((x, t), (vx, vt))
    if variant.get("two_time"):
        s, vs = 0.5 * t, torch.randn_like(t)
        args, tans = (x, t, s), (vx, vt, vs)
    _, d = jvp(net, args, tans)
    with fwAD.dual_level():
        d_fw = fwAD.unpack_dual(net(*[fwAD.make_dual(a, b) for a, b in zip(args, tans)])).tangent
    h = 1e-5
    fd = (net(*[a + h * b for a, b in zip(args, tans)]) - net(*[a - h * b for a, b in zip(args, tans)])) / (2 * h)
    assert d.abs().max() > 1e-3
    torch.testing.assert_close(d, d_fw, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d, fd, rtol=1e-5, atol=1e-8)


def test_unet_time_derivative_nonzero_through_double_norm():
    "The output really depends on t (through pnorm'ed modulation), so dF/dt is informative."
    torch.manual_seed(0)
    net = randomise_(small_unet()).double().eval()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.8], dtype=torch.float64)
    _, dt = jvp(lambda tt: net(x, tt), (t,), (torch.ones_like(t),))
    assert dt.abs().max() > 1e-3


# --------------------------------------------------------------------------- ConsistencyModel
@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from([torch.float32, torch.float64]), st.floats(0.0, math.pi / 2))
def test_boundary_conditions_exact(seed, dtype, t_val):
    torch.manual_seed(seed % 1000)
    m = randomise_(ConsistencyModel(small_unet(attention_resolutions=(4,))), std=1.0, seed=seed).to(dtype)
    x = 3 * torch.randn(2, 1, 8, 8, dtype=dtype)
    with torch.no_grad():
        assert torch.equal(m(x, torch.zeros(2, dtype=dtype)), x)
        assert torch.equal(m.denoise(x, 0.0), x)
        t = torch.full((2,), t_val, dtype=dtype)
        assert torch.equal(m.jump(x, t, t), x)
        assert torch.equal(m.jump(x, t, torch.zeros_like(t)), m(x, t))


@pytest.mark.parametrize("variant", [dict(), dict(time_embedding="fourier"), dict(two_time=True),
                                     dict(double_norm=False, attention_resolutions=(4,))])
def test_jvp_rearrangement_through_consistency_model(variant):
    """jvp(F, (x_t/sd, t), (cos t sin t v, cos t sin t sd)) == cos t sin t sd dF(x_t/sd, t)/dt along the trajectory
    (central FD, float64) == forward_ad; and the sCM identity cos t df/dt = -cos^2 t (sd F - v) - (cos t sin t x_t + J)."""
    torch.manual_seed(1)
    m = randomise_(ConsistencyModel(small_unet(**variant))).double().eval()
    sd = m.sigma_d
    x0 = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    z = sd * torch.randn(3, 1, 8, 8, dtype=torch.float64)
    t = torch.tensor([0.1, 0.8, 1.45], dtype=torch.float64)
    traj = lambda tt: B4(torch.cos(tt)) * x0 + B4(torch.sin(tt)) * z
    v = B4(torch.cos(t)) * z - B4(torch.sin(t)) * x0
    cs = torch.cos(t) * torch.sin(t)
    Fm, J = jvp(m.F, (traj(t) / sd, t), (B4(cs) * v, cs * sd))
    def fd(fn, eps):   # central difference of fn(t) along the trajectory
        return (fn(t + eps) - fn(t - eps)) / (2 * eps)

    def richardson(fn, eps):   # O(eps^4) extrapolation of two central differences
        return (4 * fd(fn, eps / 2) - fd(fn, eps)) / 3

    F_traj = lambda tt: m.F(traj(tt) / sd, tt)
    eps = 1e-4
    with fwAD.dual_level():
        J_fw = fwAD.unpack_dual(m.F(fwAD.make_dual(traj(t) / sd, B4(cs) * v), fwAD.make_dual(t, cs * sd))).tangent
    scale = J.abs().max().item()
    assert scale > 1e-2
    torch.testing.assert_close(J, J_fw, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(J, fd(F_traj, eps) * B4(cs) * sd, rtol=0, atol=1e-5 * scale)
    torch.testing.assert_close(J, richardson(F_traj, eps) * B4(cs) * sd, rtol=0, atol=1e-8 * scale)
    # the sCM tangent identity, with df/dt by finite differences of the full model f = m(x_t, t)
    dfdt = richardson(lambda tt: m(traj(tt), tt), eps)
    rhs = -B4(torch.cos(t) ** 2) * (sd * Fm - v) - (B4(cs) * traj(t) + J)
    torch.testing.assert_close(B4(torch.cos(t)) * dfdt, rhs, rtol=0, atol=1e-8 * max(1.0, rhs.abs().max().item()))


def test_two_time_model_semantics():
    torch.manual_seed(0)
    m = randomise_(ConsistencyModel(small_unet(two_time=True))).double().eval()
    assert m.two_time
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    t, s = torch.tensor([0.9, 1.2], dtype=torch.float64), torch.tensor([0.3, 0.6], dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(m.F(x, t), m.F(x, t, torch.zeros_like(t)))
        torch.testing.assert_close(m.velocity(x, t), 0.5 * m.F(x / 0.5, t, t))
        assert not torch.allclose(m.jump(x, t, s), m.jump(x, t, 0.5 * s))
        # the s -> t limit of the jump is an Euler step with the velocity
        d = 1e-4
        step = m.jump(x, t, t - d)
        torch.testing.assert_close((x - step) / d, m.velocity(x, t), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError):
        ConsistencyModel(small_unet(), two_time=True)


def test_weight_head_zero_init_but_trainable():
    m = ConsistencyModel(small_unet())
    t = torch.rand(5)
    w = m.log_weight(t)
    assert w.shape == (5,) and torch.equal(w, torch.zeros(5))
    w.sum().backward()
    assert m.weight_head.linear.weight.grad.abs().max() > 0
    assert torch.equal(ConsistencyModel(small_unet(), weight_head_channels=0).log_weight(t), torch.zeros(5))


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_sample_shapes_and_determinism(steps):
    torch.manual_seed(0)
    m = randomise_(ConsistencyModel(small_unet(attention_resolutions=(4,))))
    a = m.sample(3, steps=steps, generator=torch.Generator().manual_seed(1))
    b = m.sample(3, steps=steps, generator=torch.Generator().manual_seed(1))
    c = m.sample(3, steps=steps, generator=torch.Generator().manual_seed(2))
    assert a.shape == (3, 1, 8, 8) and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert m.sample(2, steps=steps, resolution=16, batch_size=1).shape == (2, 1, 16, 16)
    assert m.sample(1, resolution=10).shape == (1, 1, 10, 10)             # any size (multigrid + resampling)
    with pytest.raises(ValueError):
        m.sample(0)


def test_sample_two_steps_matches_manual_recursion_and_respects_t_max():
    torch.manual_seed(0)
    m = randomise_(ConsistencyModel(small_unet(attention_resolutions=(4,)))).double()
    t_max = math.atan(80 / 0.5)
    out = m.sample(2, steps=2, t_mid=0.9, t_max=t_max, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        z = 0.5 * torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
        x = m(z, t_max)
        zp = 0.5 * torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
        x = m(math.cos(0.9) * x + math.sin(0.9) * zp, 0.9)
    torch.testing.assert_close(out, x, rtol=1e-12, atol=1e-12)


def test_sample_rgb_fno_at_other_resolution():
    torch.manual_seed(0)
    m = randomise_(ConsistencyModel(UNetModel(in_channels=3, model_channels=8, resolution=16)))
    assert (m.channels, m.resolution) == (3, 16)
    assert m.sample(2, steps=2, resolution=32).shape == (2, 3, 32, 32)


# --------------------------------------------------------------------------- build / load
def test_build_model_from_config_and_dict():
    from noctcm.config import load_config, to_dict
    cfg = load_config()
    m = build_model(cfg)
    print("default ConsistencyModel parameters:", sum(p.numel() for p in m.parameters()))
    assert isinstance(m, ConsistencyModel) and m.sigma_d == cfg.model.sigma_d
    d = to_dict(cfg)
    d["data"].update(channels=3, resolution=32)
    d["model"].update(two_time=True, time_embedding="fourier", fno_levels=[0])
    m3 = build_model(d)
    assert (m3.channels, m3.resolution, m3.two_time) == (3, 32, True)
    assert m3.backbone.time_embed.kind == "fourier"
    with pytest.raises(ValueError, match="data"):
        build_model({"model": {}})
    with pytest.raises(ValueError, match="backbone"):
        build_model({"model": {"backbone": "nope"}, "data": {"channels": 1, "resolution": 16}})


def _ckpt(cfg_dict, model, ema=None):
    return {"format": "noctcm/1", "config": cfg_dict, "step": 1, "model": model.state_dict(),
            "ema_model": None if ema is None else ema.state_dict(), "ema": {}, "optimizer": {}, "schedule": {},
            "rng": {}, "data_state": {}, "history": []}


def test_load_model_roundtrip_and_errors(tmp_path):
    from noctcm.config import load_config, to_dict
    from noctcm.utils.helpers import atomic_save, CheckpointError
    d = to_dict(load_config())
    d["model"]["model_channels"] = 8
    torch.manual_seed(0)
    m, ema = randomise_(build_model(d)), randomise_(build_model(d), seed=1)
    atomic_save(_ckpt(d, m, ema), tmp_path / "a.pt")
    x, t = torch.randn(2, 1, 16, 16), torch.rand(2)
    with torch.no_grad():
        m_e, cfg = load_model(tmp_path / "a.pt")
        assert torch.equal(m_e.F(x, t), ema.eval().F(x, t)) and cfg.model.model_channels == 8
        m_r, _ = load_model(tmp_path / "a.pt", use_ema=False)
        assert torch.equal(m_r.F(x, t), m.eval().F(x, t))
    atomic_save(_ckpt(d, m), tmp_path / "no_ema.pt")
    with pytest.warns(UserWarning, match="no EMA"):
        load_model(tmp_path / "no_ema.pt")
    d2 = to_dict(load_config())   # config says 32 channels, weights have 8
    atomic_save(_ckpt(d2, m, ema), tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="mismatch.pt"):
        load_model(tmp_path / "mismatch.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_model(tmp_path / "junk.pt")


@pytest.mark.parametrize("res,modes,mult,levels,bottleneck", [
    (16, 4, (1, 2, 2), (0, 1), True), (16, 2, (1, 2, 2), (0, 1), False), (32, 3, (1, 2), (1,), True),
    (32, 8, (1, 1, 2, 2), (0, 2), False), (16, 4, (1, 2, 2), (), False)])
@pytest.mark.parametrize("rule", ["multigrid", "native"])
def test_min_resolution_is_tight(res, modes, mult, levels, bottleneck, rule):
    """The net runs at min_resolution (multigrid: any size; native: 2 pixels at the coarsest level, spectral layers
    keeping the modes a coarse grid holds) and, native, raises a clear ValueError on a size the levels cannot halve."""
    net = UNetModel(model_channels=4, channel_mult=mult, fno_levels=levels, fno_bottleneck=bottleneck, fno_modes=modes,
                    resolution=res, attention_resolutions=(), num_heads=1, grid_rule=rule)
    r, k = net.min_resolution, 2 ** (len(mult) - 1)
    assert r == (1 if rule == "multigrid" else 2 * k)
    assert net(torch.randn(1, 1, r, r), torch.rand(1)).shape == (1, 1, r, r)
    if rule == "native" and k > 1:
        with pytest.raises(ValueError, match=f"divisible by {k}"):
            net(torch.randn(1, 1, r + 1, r + 1), torch.rand(1))
