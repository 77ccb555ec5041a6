"""Property and convergence tests of noctcm.trigflow (algorithms.md §10 items 1, 3, 8)."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from noctcm.trigflow import (SIGMA_D, add_noise, consistency_sampling, edm_to_trigflow_x, expand_t, pf_ode_sampling,
                             sample_time, sigma_from_t, t_from_sigma, t_mids_for_steps, teacher_time_grid,
                             trigflow_to_edm_x, velocity_target)

f64 = torch.float64


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), log_sigma=st.floats(-6, 6))
def test_edm_trigflow_equivalence(seed, log_sigma):
    g = torch.Generator().manual_seed(seed)
    x0, n = torch.randn(2, 3, 4, 4, generator=g, dtype=f64), torch.randn(2, 3, 4, 4, generator=g, dtype=f64)
    sigma = torch.full((2,), math.exp(log_sigma), dtype=f64)
    t = t_from_sigma(sigma)
    lhs = edm_to_trigflow_x(x0 + expand_t(sigma, x0) * n, t)
    assert torch.allclose(lhs, add_noise(x0, SIGMA_D * n, t), atol=1e-6)
    assert torch.allclose(sigma_from_t(t), sigma, rtol=1e-10)
    assert abs(t_from_sigma(float(sigma[0])) - float(t[0])) < 1e-15
    assert torch.allclose(trigflow_to_edm_x(lhs, t), x0 + expand_t(sigma, x0) * n, rtol=1e-9, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), t=st.floats(0.01, math.pi / 2 - 0.01))
def test_velocity_is_time_derivative(seed, t):
    g = torch.Generator().manual_seed(seed)
    x0, z = torch.randn(3, 2, 3, generator=g, dtype=f64), SIGMA_D * torch.randn(3, 2, 3, generator=g, dtype=f64)
    tt, eps = torch.full((3,), t, dtype=f64), 1e-5
    fd = (add_noise(x0, z, tt + eps) - add_noise(x0, z, tt - eps)) / (2 * eps)
    assert torch.allclose(velocity_target(x0, z, tt), fd, atol=1e-8)


def test_per_sample_times_and_dtypes():
    x0, z = torch.ones(3, 2), torch.zeros(3, 2)
    t = torch.tensor([0.0, math.pi / 3, math.pi / 2])
    assert torch.allclose(add_noise(x0, z, t)[:, 0], torch.cos(t), atol=1e-7)
    assert add_noise(x0.half(), z.half(), t).dtype == torch.float16
    with pytest.raises(ValueError):
        expand_t(torch.zeros(2), x0)


def test_time_proposal_moments():
    t = sample_time(1_000_000, generator=torch.Generator().manual_seed(0), dtype=f64)
    tau = torch.log(SIGMA_D * torch.tan(t))
    se = 1.4 / 1000
    assert abs(tau.mean().item() + 1.0) < 4 * se
    assert abs(tau.std().item() - 1.4) < 4 * se / math.sqrt(2)
    # an independent check of the distribution: P(sigma_EDM < 1) = Phi((0 - P_mean) / P_std)
    p = (SIGMA_D * torch.tan(t) < 1).double().mean().item()
    assert abs(p - 0.5 * (1 + math.erf(1.0 / 1.4 / math.sqrt(2)))) < 2e-3
    t2 = sample_time(8, P_mean=0.3, P_std=0.5, generator=torch.Generator().manual_seed(0))
    assert t2.dtype == torch.float32 and t2.shape == (8,)
    with pytest.raises(ValueError):
        sample_time(4, P_std=0.0)


def _gauss(s):
    def sigma_t(t):
        return torch.sqrt(torch.cos(t) ** 2 * s ** 2 + torch.sin(t) ** 2 * SIGMA_D ** 2)

    def v(x, t):
        t = expand_t(t, x)
        return x * torch.sin(t) * torch.cos(t) * (SIGMA_D ** 2 - s ** 2) / sigma_t(t) ** 2

    def f(x, t):
        return x * s / expand_t(sigma_t(t), x)
    return sigma_t, v, f


def test_gaussian_velocity_is_posterior_mean():
    # E[v_t | x_t] = x_t d ln(sigma_t)/dt, checked by linear regression on samples (independent of the derivation)
    s, t = 0.3, torch.tensor(0.9, dtype=f64)
    g = torch.Generator().manual_seed(0)
    x0, z = s * torch.randn(400_000, generator=g, dtype=f64), SIGMA_D * torch.randn(400_000, generator=g, dtype=f64)
    xt, vt = add_noise(x0, z, t), velocity_target(x0, z, t)
    slope = (xt * vt).mean() / (xt * xt).mean()
    _, v, _ = _gauss(s)
    assert abs(slope.item() - v(torch.ones(1, dtype=f64), t.reshape(1)).item()) < 5e-3


@pytest.mark.parametrize("s", [0.3, 1.0])
@pytest.mark.parametrize("t_max", [None, math.pi / 2])
def test_pf_ode_gaussian_convergence(s, t_max):
    sigma_t, v, _ = _gauss(s)
    z = torch.ones(1, 1, dtype=f64)
    t0 = teacher_time_grid(18)[0] if t_max is None else torch.tensor(t_max, dtype=f64)
    exact = (s / sigma_t(t0)).item()

    def err(n, solver):
        x, nfe = pf_ode_sampling(v, z, n, solver, t_max)
        assert nfe == (2 * n - 1 if solver == "heun" else n)
        return abs(x.item() / exact - 1)
    assert err(18, "heun") < 0.015                       # measured 1.30% (s=0.3), 1.36% (s=1.0)
    h = [err(n, "heun") for n in (72, 144)]
    e = [err(n, "euler") for n in (144, 288)]
    assert 3.0 < h[0] / h[1] < 5.5                        # second order
    assert 1.5 < e[0] / e[1] < 2.5                        # first order
    assert err(72, "heun") < err(72, "euler")


def test_pf_ode_bad_input():
    with pytest.raises(ValueError):
        pf_ode_sampling(lambda x, t: x, torch.ones(1, 1), solver="rk4")
    with pytest.raises(ValueError):
        teacher_time_grid(0)
    assert teacher_time_grid(1).tolist() == [math.atan(160.0), 0.0]


@pytest.mark.parametrize("mids", [(), (1.1,), (1.1, 0.6)])
def test_consistency_sampling_exact_gaussian(mids):
    s = 0.3
    _, _, f = _gauss(s)
    z = SIGMA_D * torch.randn(200_000, 1, generator=torch.Generator().manual_seed(1), dtype=f64)
    x = consistency_sampling(f, z, t_mids=mids, generator=torch.Generator().manual_seed(2))
    assert abs(x.std().item() / s - 1) < 0.01
    # a wrong consistency function (identity) must be caught by the same check
    assert abs(consistency_sampling(lambda x, t: x, z, t_mids=mids).std().item() / s - 1) > 0.1


def test_consistency_sampling_renoise_is_fresh_and_reproducible():
    calls = []

    def f(x, t):
        calls.append((x.clone(), t.clone()))
        return torch.zeros_like(x)
    z = torch.ones(4, 2)
    x1 = consistency_sampling(f, z, t_mids=(1.0,), generator=torch.Generator().manual_seed(0))
    x_mid = calls[1][0]  # = sin(1.0) z' because f returned 0
    assert torch.allclose(calls[0][1], torch.full((4,), math.pi / 2)) and torch.allclose(calls[1][1], torch.full((4,), 1.0))
    zp = SIGMA_D * torch.randn((4, 2), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x_mid, math.sin(1.0) * zp)
    with pytest.raises(ValueError):
        consistency_sampling(f, z, t_mids=(0.5, 1.0))


def test_t_mids_for_steps():
    assert t_mids_for_steps(1, (1.1,)) == ()
    assert t_mids_for_steps(3, (1.1, 0.8, 0.2)) == (1.1, 0.8)
    out = t_mids_for_steps(5, (1.2, 0.9))
    assert out[:2] == (1.2, 0.9) and all(abs(a - b) < 1e-12 for a, b in zip(out[2:], (0.6, 0.3)))
    assert t_mids_for_steps(2, 1.0) == (1.0,)
    with pytest.raises(ValueError):
        t_mids_for_steps(0)
