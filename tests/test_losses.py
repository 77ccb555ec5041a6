"""Tests of noctcm.training.losses against independent truths (finite differences, forward-mode AD, autograd of
F·g, closed forms, Monte Carlo). Tiny MLP models on flat vectors; CPU, a few seconds in total."""
import copy
import math

import pytest
import torch
import torch.nn as nn

from toy_models import TrigFlowToy
from hypothesis import given, settings, strategies as st

from noctcm.trigflow import add_noise, velocity_target
from noctcm.training.losses import (
    PseudoHuberLoss, adaptive_weighting, consistency_tangent, ctm_loss, diffusion_loss, ect_loss, ect_r,
    ict_index_probs, ict_loss, ict_num_scales, karras_sigmas, normalize_tangent, pseudo_huber, sct_loss,
    tangent_jvp, unwrap_model)

SD = 0.5


class ToyCM(TrigFlowToy):
    "Tiny MLP following the ConsistencyModel protocol on `[B, D]` vectors (optional dropout, learned log-weight)."

    def __init__(self, dim=3, hidden=24, dropout=0.0, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.sigma_d = SD
        self.net = nn.Sequential(nn.Linear(dim + 2, hidden), nn.Tanh(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))
        self.w = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.6)

    def F(self, x_scaled, t, s=None):
        return self.net(torch.cat([x_scaled, torch.sin(t)[:, None], torch.cos(t)[:, None]], 1))

    def log_weight(self, t):
        return self.w(torch.stack([torch.sin(t), torch.cos(t)], 1))[:, 0]


def batch(B=6, D=3, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(B, D, generator=g, dtype=dtype) * 0.7
    z = torch.randn(B, D, generator=g, dtype=dtype) * SD
    t = torch.rand(B, generator=g, dtype=dtype) * 1.4 + 0.08
    return x0, z, t


def reference_tangent(model, x0, z, t, r, dxdt=None, h=1e-5):
    """g = -cos^2 t (sd F - dx/dt) - r cos t sin t (x_t + sd dF/dt), with dF/dt by central finite differences
    along x(t') = x_t + (t'-t) dx/dt in float64 on a float64 copy of the model (no JVP involved)."""
    m = copy.deepcopy(model).double()
    x0, z, t = x0.double(), z.double(), t.double()
    x_t = add_noise(x0, z, t)
    v = velocity_target(x0, z, t) if dxdt is None else dxdt.double()
    with torch.no_grad():
        F = m.F(x_t / SD, t)
        dFdt = (m.F((x_t + h * v) / SD, t + h) - m.F((x_t - h * v) / SD, t - h)) / (2 * h)
    c, s = torch.cos(t)[:, None], torch.sin(t)[:, None]
    return -c * c * (SD * F - v) - r * c * s * (x_t + SD * dFdt)


def l2_normalize(g, c=0.1):
    return g / (g.norm(dim=1, keepdim=True) + c)


# ----------------------------------------------------------------------------------------------- JVP / tangent
def test_jvp_matches_finite_differences_and_forward_ad():
    m = ToyCM().double()
    x0, z, t = batch(dtype=torch.float64)
    x_t, v = add_noise(x0, z, t), velocity_target(x0, z, t)
    F, J = tangent_jvp(m, x_t, t, v)
    h = 1e-5
    with torch.no_grad():
        fd = (m.F(add_noise(x0, z, t + h) / SD, t + h) - m.F(add_noise(x0, z, t - h) / SD, t - h)) / (2 * h)
    cs = (torch.cos(t) * torch.sin(t))[:, None]
    assert torch.allclose(J.double(), cs * SD * fd, atol=1e-6)
    # second implementation: torch.autograd.forward_ad
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level(), torch.no_grad():
        out = m.F(fwAD.make_dual(x_t / SD, cs * v), fwAD.make_dual(t, cs[:, 0] * SD))
        J2 = fwAD.unpack_dual(out).tangent
    assert torch.allclose(J.double(), J2, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(F.double(), m.F(x_t / SD, t), atol=1e-6)


def test_tangent_at_r0_is_velocity_mismatch():
    m = ToyCM()
    x0, z, t = batch()
    x_t, v = add_noise(x0, z, t), velocity_target(x0, z, t)
    F, J = tangent_jvp(m, x_t, t, v)
    g = consistency_tangent(F, J, x_t, v, t, 0.0, SD)
    assert torch.allclose(g, -(torch.cos(t) ** 2)[:, None] * (SD * F - v), atol=1e-7)
    # and the full tangent (r = 1) matches the finite-difference reference
    g1 = consistency_tangent(F, J, x_t, v, t, 1.0, SD)
    assert torch.allclose(g1.double(), reference_tangent(m, x0, z, t, 1.0), atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(scale=st.floats(1e-6, 1e6), B=st.integers(1, 5), C=st.integers(1, 3), H=st.integers(1, 9),
       c=st.floats(1e-3, 1.0), seed=st.integers(0, 1000))
def test_normalised_tangent_norm_below_one(scale, B, C, H, c, seed):
    g = scale * torch.randn(B, C, H, H, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert (normalize_tangent(g, "l2", c).flatten(1).norm(dim=1) < 1).all()
    assert (normalize_tangent(g, "rms", c).flatten(1).pow(2).mean(1).sqrt() < 1).all()
    assert normalize_tangent(g, "clip").abs().max() <= 1
    assert torch.equal(normalize_tangent(g, "none"), g)
    # the L2 version is exactly g / (||g|| + c)
    n = g.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    assert torch.allclose(normalize_tangent(g, "l2", c), g / (n + c))


# ---------------------------------------------------------------------------------------------- sCT / sCD loss
@pytest.mark.parametrize("r", [0.0, 0.4, 1.0])
@pytest.mark.parametrize("prior", [False, True])
def test_sct_loss_value_at_start(r, prior):
    "loss = e^w/D ||g||^2 - w (times the prior weight 1/(sd tan t) when enabled), g from finite differences."
    m = ToyCM()
    x0, z, t = batch()
    loss, stats = sct_loss(m, x0, z, t, r=r, tangent_norm="l2", adaptive=True, prior_weight=prior)
    g = l2_normalize(reference_tangent(m, x0, z, t, r)).float()
    w = m.log_weight(t).detach()
    prior_w = 1 / (SD * torch.tan(t)) if prior else torch.ones_like(t)
    expected = torch.exp(w) * prior_w * g.square().sum(1) / 3 - w
    assert torch.allclose(loss.detach(), expected, rtol=1e-4, atol=1e-6)
    assert set(stats) >= {"loss", "mse", "g_norm", "g_norm_normalized", "log_weight"}


def test_sct_loss_gradient_is_minus_JT_g():
    "grad_theta mean(L) = -(2/B) sum_b e^{w_b}/D J_b^T g_b, computed independently as autograd of F·g."
    m = ToyCM()
    x0, z, t = batch(B=5)
    loss, _ = sct_loss(m, x0, z, t, r=0.7, tangent_norm="l2", adaptive=True)
    params = list(m.net.parameters())
    grads = torch.autograd.grad(loss.mean(), params + list(m.w.parameters()))
    g = l2_normalize(reference_tangent(m, x0, z, t, 0.7)).float()
    w = m.log_weight(t).detach()
    coef = (-2 * torch.exp(w) / 3 / x0.shape[0])[:, None]
    F = m.F(add_noise(x0, z, t) / SD, t)
    ref = torch.autograd.grad((F * (coef * g)).sum(), params)
    for a, b in zip(grads[: len(params)], ref):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-6), (a - b).abs().max()
    # the weight head sees d/dw (e^w m - w) = e^w m - 1 with m = ||g||^2 / D
    wl = m.log_weight(t)
    ref_w = torch.autograd.grad(((torch.exp(wl) * g.square().sum(1) / 3 - wl)).mean(), list(m.w.parameters()))
    for a, b in zip(grads[len(params):], ref_w):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_sct_loss_scd_uses_given_dxdt():
    m = ToyCM()
    x0, z, t = batch()
    dxdt = torch.randn_like(x0)
    loss, _ = sct_loss(m, x0, z, t, r=0.5, dxdt=dxdt, tangent_norm="none", adaptive=False)
    g = reference_tangent(m, x0, z, t, 0.5, dxdt=dxdt).float()
    assert torch.allclose(loss.detach(), g.square().mean(1), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError):
        sct_loss(m, x0, z, t, dxdt=dxdt[:, :2])


def test_sct_loss_shares_dropout_masks():
    """With dropout, the JVP pass (which gives F^- in g) and the with-grad pass (whose Jacobian the gradient uses)
    must draw the same masks: value and gradient equal those of one forward pass with the starting RNG state."""
    m = ToyCM(dropout=0.5).train()
    x0, z, t = batch(B=8)
    x_t, v = add_noise(x0, z, t), velocity_target(x0, z, t)
    params = list(m.net.parameters())
    torch.manual_seed(7)
    F_ref = m.F(x_t / SD, t)  # the masks sct_loss must reproduce in both passes
    with torch.no_grad():
        F_other = m.F(x_t / SD, t)
    assert not torch.allclose(F_ref, F_other)  # dropout does change the output
    g = -(torch.cos(t) ** 2)[:, None] * (SD * F_ref.detach() - v)  # r = 0, no normalisation
    expected = g.square().mean(1)
    ref_grad = torch.autograd.grad((F_ref * (-2 / 3 / 8 * g)).sum(), params)
    torch.manual_seed(7)
    loss, _ = sct_loss(m, x0, z, t, r=0.0, tangent_norm="none", adaptive=False)
    assert torch.allclose(loss.detach(), expected, rtol=1e-5, atol=1e-7)
    grads = torch.autograd.grad(loss.mean(), params)
    for a, b in zip(grads, ref_grad):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_jvp_primal_equals_separate_forward_with_dropout():
    "The JVP's primal output can replace a third forward pass: it equals a no-grad forward with the same RNG."
    m = ToyCM(dropout=0.3).train()
    x0, z, t = batch()
    x_t, v = add_noise(x0, z, t), velocity_target(x0, z, t)
    torch.manual_seed(3)
    F_primal, _ = tangent_jvp(m, x_t, t, v)
    torch.manual_seed(3)
    with torch.no_grad():
        F_sep = m.F(x_t / SD, t)
    assert torch.allclose(F_primal, F_sep, atol=1e-6)


def test_sct_loss_bad_input():
    m = ToyCM()
    x0, z, t = batch()
    with pytest.raises(ValueError, match="tangent_norm"):
        sct_loss(m, x0, z, t, tangent_norm="bogus")


def test_sct_loss_works_through_dataparallel_unwrap():
    m = ToyCM()
    assert unwrap_model(nn.DataParallel(m)) is m


# ------------------------------------------------------------------------------------------ adaptive weighting
@pytest.mark.parametrize("m_val", [1e-4, 0.05, 1.0, 37.0])
def test_adaptive_weight_optimum(m_val):
    from scipy.optimize import minimize_scalar
    res = minimize_scalar(lambda w: float(adaptive_weighting(torch.tensor([m_val], dtype=torch.float64),
                                                             torch.tensor([w], dtype=torch.float64))),
                          bounds=(-20, 20), method="bounded", options={"xatol": 1e-8})
    assert abs(res.x + math.log(m_val)) < 1e-4


def test_diffusion_loss_adaptive_form():
    m = ToyCM()
    x0, z, t = batch()
    plain, _ = diffusion_loss(m, x0, z, t)
    ad, st_ = diffusion_loss(m, x0, z, t, adaptive=True)
    w = m.log_weight(t)
    assert torch.allclose(ad, torch.exp(w) * plain - w)
    x_t = add_noise(x0, z, t)
    assert torch.allclose(plain, (SD * m.F(x_t / SD, t) - velocity_target(x0, z, t)).square().mean(1))


# ------------------------------------------------------------------------------------------------ pseudo-Huber
def test_pseudo_huber_limits():
    d = torch.randn(5, 2, 4, 4, dtype=torch.float64)
    l2 = d.flatten(1).norm(dim=1).float()
    assert torch.allclose(pseudo_huber(d, 0.0), l2)
    assert torch.allclose(pseudo_huber(d, 1e-6), l2, atol=2e-6)
    # small residual: ||d||^2 / (2c)
    small = 1e-5 * d
    assert torch.allclose(pseudo_huber(small, 0.5), small.flatten(1).pow(2).sum(1).float() / 1.0, rtol=1e-4)
    # exact formula against float64
    for c in (0.03, 1.0):
        assert torch.allclose(pseudo_huber(d, c).double(), torch.sqrt(d.flatten(1).pow(2).sum(1) + c * c) - c,
                              rtol=1e-5)
    assert torch.allclose(PseudoHuberLoss(0.1, reduction="mean")(d, torch.zeros_like(d)), pseudo_huber(d, 0.1).mean())
    with pytest.raises(ValueError):
        pseudo_huber(d, -1.0)


def test_pseudo_huber_zero_residual_gradient_is_finite():
    d = torch.zeros(3, 4, requires_grad=True)
    pseudo_huber(d, 0.0).sum().backward()
    assert torch.isfinite(d.grad).all()


# --------------------------------------------------------------------------------------------------------- ECT
@pytest.mark.parametrize("stage", range(6))
def test_ect_ratio(stage):
    sig = torch.logspace(-3, 2, 50, dtype=torch.float64)
    expected = (1 - (1 + 8 * torch.sigmoid(-sig)) / 2 ** (stage + 1)).clamp_min(0)
    assert torch.allclose(ect_r(sig, stage) / sig, expected)
    assert (ect_r(sig, stage) < sig).all() and (ect_r(sig, stage) >= 0).all()


def test_ect_r_zero_at_small_sigma_stage0():
    # stage 0: r = 0 iff n(sigma) = 1 + 8 sigmoid(-sigma) >= 2 iff sigma <= ln 7 = 1.9459
    sig = torch.tensor([1e-3, 0.01, 0.1, 0.5, 1.2, 1.94])
    assert (ect_r(sig, 0) == 0).all()
    assert (ect_r(torch.tensor([1.95, 5.0]), 0) > 0).all()
    with pytest.raises(ValueError):
        ect_r(sig, -1)


def test_ect_loss_target_is_x0_where_r_is_zero():
    m = ToyCM()
    x0, z, _ = batch()
    t = torch.full((6,), 0.3)  # sigma = 0.5 tan 0.3 = 0.155 -> r = 0 at stage 0
    loss, stats = ect_loss(m, x0, z, t, stage=0)
    sigma = SD * torch.tan(t)
    expected = (m(add_noise(x0, z, t), t) - x0).norm(dim=1) / sigma
    assert torch.allclose(loss, expected, rtol=1e-5)
    assert stats["frac_r0"] == 1


def test_ect_loss_matches_independent_computation_and_shares_masks():
    m = ToyCM()
    x0, z, _ = batch()
    t = torch.full((6,), 1.3)
    loss, _ = ect_loss(m, x0, z, t, stage=2, c=0.01)
    sigma = SD * math.tan(1.3)
    r_sig = sigma * (1 - (1 + 8 / (1 + math.exp(sigma))) / 8)
    r = torch.full((6,), math.atan(r_sig / SD))
    delta = m(add_noise(x0, z, t), t) - m(add_noise(x0, z, r), r)
    expected = (torch.sqrt(delta.square().sum(1) + 1e-4) - 0.01) / (sigma - r_sig)
    assert torch.allclose(loss, expected, rtol=1e-3)
    # dropout: at a late stage r -> t, so Delta -> 0 only if both passes use the same mask
    md = ToyCM(dropout=0.5).train()
    _, st_late = ect_loss(md, x0, z, t, stage=25)
    assert st_late["distance"] < 1e-3


# --------------------------------------------------------------------------------------------------------- iCT
def test_ict_curriculum():
    K = 400_000
    k_prime = math.floor(K / (math.log2(math.floor(1280 / 10)) + 1))
    assert k_prime == 50_000
    assert ict_num_scales(0, K) == 11 and ict_num_scales(K - 1, K) == 1281
    assert [ict_num_scales(i * k_prime, K) for i in range(8)] == [11, 21, 41, 81, 161, 321, 641, 1281]
    assert ict_num_scales(k_prime - 1, K) == 11
    with pytest.raises(ValueError):
        ict_num_scales(0, 0)


def test_karras_sigmas_formula():
    s = karras_sigmas(18)
    i = torch.arange(18, dtype=torch.float64)
    ref = (0.002 ** (1 / 7) + i / 17 * (80 ** (1 / 7) - 0.002 ** (1 / 7))) ** 7
    assert torch.allclose(s, ref) and math.isclose(s[0].item(), 0.002) and math.isclose(s[-1].item(), 80.0)
    with pytest.raises(ValueError):
        karras_sigmas(1)


def test_ict_index_probs_match_lognormal_monte_carlo():
    sig = karras_sigmas(21)
    p = ict_index_probs(sig)
    g = torch.Generator().manual_seed(0)
    ln = torch.randn(400_000, generator=g, dtype=torch.float64) * 2.0 - 1.1
    s = ln.exp()
    s = s[(s >= sig[0]) & (s <= sig[-1])]
    counts = torch.bucketize(s, sig[1:-1], right=True).bincount(minlength=20).double()
    assert torch.allclose(p, counts / counts.sum(), atol=3e-3)
    assert math.isclose(p.sum().item(), 1.0)


def test_ict_loss_matches_independent_computation():
    m = ToyCM(dim=4)
    g = torch.Generator().manual_seed(2)
    x0, z = torch.randn(5, 4, generator=g), SD * torch.randn(5, 4, generator=g)
    idx = torch.tensor([0, 3, 5, 8, 9])
    loss, _ = ict_loss(m, x0, z, 11, idx=idx)
    sig = karras_sigmas(11)
    lo, hi = sig[idx], sig[idx + 1]
    t_lo, t_hi = torch.atan(lo / SD).float(), torch.atan(hi / SD).float()
    with torch.no_grad():
        delta = m(add_noise(x0, z, t_hi), t_hi) - m(add_noise(x0, z, t_lo), t_lo)
    c = 0.00054 * math.sqrt(4)
    expected = (torch.sqrt(delta.double().square().sum(1) + c * c) - c) / (hi - lo)
    assert torch.allclose(loss.double(), expected, rtol=1e-4)
    # sampled indices are reproducible with a generator
    l1, _ = ict_loss(m, x0, z, 41, generator=torch.Generator().manual_seed(5))
    l2, _ = ict_loss(m, x0, z, 41, generator=torch.Generator().manual_seed(5))
    assert torch.equal(l1, l2)


# --------------------------------------------------------------------------------------------------------- CTM
class ExactGaussCM(nn.Module):
    "Exact maps for x0 ~ N(0, s^2 I): G(x, t, s) = x a(s)/a(t), a(t)^2 = cos^2 t s^2 + sin^2 t sd^2."
    sigma_d, sdat = SD, 1.3

    def a(self, t):
        return torch.sqrt(torch.cos(t) ** 2 * self.sdat ** 2 + torch.sin(t) ** 2 * SD ** 2)

    def jump(self, x, t, s):
        return x * (self.a(s) / self.a(t))[:, None]

    def velocity(self, x, t):
        c, si = torch.cos(t), torch.sin(t)
        return x * (si * c * (SD ** 2 - self.sdat ** 2) / self.a(t) ** 2)[:, None]


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_ctm_loss_zero_for_exact_map(solver):
    ex = ExactGaussCM()
    g = torch.Generator().manual_seed(0)
    x0, z = 1.3 * torch.randn(128, 4, generator=g), SD * torch.randn(128, 4, generator=g)
    t = torch.rand(128, generator=g) * 1.3 + 0.2
    l_ex, _ = ctm_loss(ex, ex.velocity, x0, z, t, solver=solver, teacher_dt=0.05, lambda_dsm=0.0, generator=g)
    l_toy, _ = ctm_loss(ToyCM(dim=4), ex.velocity, x0, z, t, solver=solver, teacher_dt=0.05, lambda_dsm=0.0,
                        generator=g)
    tol = 1e-4 if solver == "euler" else 1e-6
    assert l_ex.mean() < tol and l_toy.mean() > 1e3 * l_ex.mean()


def test_ctm_gradient_flows_through_inner_jump_only():
    "Independent: outer G evaluated by a frozen deep copy of the model gives the same parameter gradient."
    m = ToyCM(dim=3)
    x0, z, t = batch()
    s = t * 0.5
    loss, _ = ctm_loss(m, None, x0, z, t, s=s, lambda_dsm=0.0)
    grads = torch.autograd.grad(loss.mean(), list(m.net.parameters()))
    frozen = copy.deepcopy(m).requires_grad_(False)
    u = torch.maximum(s, t - 0.1)
    with torch.no_grad():
        target = frozen.jump(frozen.jump(add_noise(x0, z, u), u, s), s, torch.zeros_like(t))
    est = frozen.jump(m.jump(add_noise(x0, z, t), t, s), s, torch.zeros_like(t))
    ref = torch.autograd.grad((est - target).square().mean(1).mean(), list(m.net.parameters()))
    for a, b in zip(grads, ref):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    assert all(p.requires_grad for p in m.parameters())


def test_ctm_dsm_term_and_metric_check():
    m = ToyCM()
    x0, z, t = batch()
    l0, st0 = ctm_loss(m, "self", x0, z, t, lambda_dsm=0.0, generator=torch.Generator().manual_seed(0))
    l1, st1 = ctm_loss(m, "self", x0, z, t, lambda_dsm=2.0, generator=torch.Generator().manual_seed(0))
    dsm, _ = diffusion_loss(m, x0, z, t)
    assert torch.allclose(l1 - l0, 2.0 * dsm, atol=1e-6)
    with pytest.raises(ValueError):
        ctm_loss(m, None, x0, z, t, metric="lpips")


def test_sct_loss_under_bf16_autocast():
    "bf16 with-grad pass + float32 JVP: loss maths in float32, close to the all-float32 loss, gradients flow."
    m = ToyCM()
    x0, z, t = batch(B=8)
    ref, _ = sct_loss(m, x0, z, t, r=1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = sct_loss(m, x0, z, t, r=1.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    assert torch.allclose(loss, ref, rtol=5e-2, atol=1e-3)
    loss.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.net.parameters())


# ------------------------------------------------------------------------ sct_loss(jvp='fused'): one dual pass
@pytest.mark.parametrize("r,prior,scd,dropout", [(1.0, False, False, 0.0), (0.3, True, False, 0.4),
                                                 (0.7, False, True, 0.4)])
def test_sct_loss_fused_equals_separate(r, prior, scd, dropout):
    "jvp='fused' (one forward-mode pass with grad) gives the loss value and gradients of the two separate passes."
    m = ToyCM(dropout=dropout).train()
    x0, z, t = batch(B=6)
    dxdt = torch.randn_like(x0) if scd else None
    out = []
    for mode in ("separate", "fused"):
        torch.manual_seed(5)
        loss, stats = sct_loss(m, x0, z, t, r=r, dxdt=dxdt, prior_weight=prior, jvp=mode)
        out.append((loss.detach(), stats["jvp_norm"], torch.autograd.grad(loss.mean(), list(m.parameters()))))
    assert torch.allclose(out[0][0], out[1][0], rtol=1e-5, atol=1e-6)
    assert torch.allclose(out[0][1], out[1][1], rtol=1e-5)
    for a, b in zip(out[0][2], out[1][2]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="jvp"):
        sct_loss(m, x0, z, t, jvp="both")


def test_sct_loss_fused_on_the_fno_unet():
    """On the real network (tiny FNO U-Net with spectral convs, attention, GroupNorm), with and without
    `use_jvp_layers` (whose tangents are computed without grad in the fused pass): same value, same gradients."""
    from noctcm.models.consistency_model import ConsistencyModel
    from noctcm.models.neural_operators import use_jvp_layers
    from noctcm.models.unet import UNetModel
    torch.manual_seed(0)
    net = UNetModel(in_channels=1, model_channels=8, channel_mult=(1, 2), attention_resolutions=(4,), fno_modes=2,
                    resolution=8)
    with torch.no_grad():
        net.out_conv.weight.normal_(0, 0.1)
    m = ConsistencyModel(net, weight_head_channels=8)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(3, 1, 8, 8, generator=g, ) * 2 - 1
    z = torch.randn(3, 1, 8, 8, generator=g) * SD
    t = torch.tensor([0.2, 0.9, 1.4])
    for swap in (False, True):
        if swap:
            assert use_jvp_layers(m) > 0
        res = []
        for mode in ("separate", "fused"):
            loss, _ = sct_loss(m, x0, z, t, r=1.0, jvp=mode)
            res.append((loss.detach(), torch.autograd.grad(loss.mean(), [p for p in m.parameters()], allow_unused=True)))
        assert torch.allclose(res[0][0], res[1][0], rtol=1e-4, atol=1e-6)
        for a, b in zip(res[0][1], res[1][1]):
            assert (a is None and b is None) or torch.allclose(a, b, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_tangent_jvp_dual_equals_func(dropout):
    "Forward-mode dual tensors (default) and torch.func.jvp give the same primal and tangent (same RNG state)."
    m = ToyCM(dropout=dropout).train()
    x0, z, t = batch()
    x_t, v = add_noise(x0, z, t), velocity_target(x0, z, t)
    torch.manual_seed(2)
    a = tangent_jvp(m, x_t, t, v, method="dual")
    torch.manual_seed(2)
    b = tangent_jvp(m, x_t, t, v, method="func")
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[1], b[1], atol=1e-6)
    with pytest.raises(ValueError, match="method"):
        tangent_jvp(m, x_t, t, v, method="fd")
