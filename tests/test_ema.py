"""Tests of noctcm.models.ema (algorithms.md §6, §10 item 12)."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from noctcm.models.ema import EMA, gamma_to_sigma_rel, halflife_beta, power_beta, sigma_rel_to_gamma
from noctcm.utils.helpers import atomic_save, load_checkpoint


@settings(max_examples=50, deadline=None)
@given(gamma=st.floats(0.01, 500))
def test_gamma_sigma_rel_round_trip(gamma):
    assert abs(sigma_rel_to_gamma(gamma_to_sigma_rel(gamma)) - gamma) < 1e-7 * max(1.0, gamma)


@pytest.mark.parametrize("sigma_rel,gamma", [(0.05, 16.97), (0.10, 6.94), (0.075, 10.29), (0.015, 63.66)])
def test_published_pairs(sigma_rel, gamma):
    assert abs(sigma_rel_to_gamma(sigma_rel) - gamma) < 0.006


def test_sigma_rel_is_profile_std():
    # independent check: std of the profile p(x) ∝ x^gamma on [0, 1] (time relative to the current step) by quadrature
    g = 6.94
    x = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    p = x ** g
    p = p / torch.trapezoid(p, x)
    mean = torch.trapezoid(p * x, x)
    std = torch.sqrt(torch.trapezoid(p * (x - mean) ** 2, x))
    assert abs(std.item() - gamma_to_sigma_rel(g)) < 1e-6


def test_bad_input():
    with pytest.raises(ValueError):
        sigma_rel_to_gamma(0.0)
    with pytest.raises(ValueError):
        power_beta(0, 1.0)
    with pytest.raises(ValueError):
        EMA(nn.Linear(1, 1), kind="polyak")


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros((), dtype=torch.float64))


@pytest.mark.parametrize("sigma_rel", [0.05, 0.10, 0.2])
def test_power_ema_matches_direct_weighted_average(sigma_rel):
    # independent computation: weights (1 - beta_i) prod_{j>i} beta_j with beta_j = (1 - 1/j)^(gamma + 1)
    m, T = Scalar(), 60
    ema = EMA(m, kind="power", sigma_rel=sigma_rel)
    seq = torch.randn(T, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for k in range(T):
        m.w.data.fill_(seq[k].item())
        ema.update(m)
        if k == 0:
            assert ema.model.w.item() == seq[0].item()
    g = ema.gamma
    betas = [(1 - 1 / j) ** (g + 1) for j in range(1, T + 1)]
    w = [(1 - betas[i]) * math.prod(betas[i + 1:]) for i in range(T)]
    assert abs(sum(w) - 1) < 1e-12
    assert abs(ema.model.w.item() - sum(wi * s for wi, s in zip(w, seq.tolist()))) < 1e-12


@pytest.mark.parametrize("batch,halflife_kimg", [(8, 0.08), (64, 3.2)])
def test_halflife(batch, halflife_kimg):
    m = Scalar()
    ema = EMA(m, kind="halflife", halflife_kimg=halflife_kimg, batch_size=batch)
    m.w.data.fill_(1.0)
    n = round(halflife_kimg * 1000 / batch)
    for _ in range(n):
        ema.update(m)
    assert abs(ema.model.w.item() - 0.5) < 1e-12
    assert abs(halflife_beta(batch, halflife_kimg * 1000) ** n - 0.5) < 1e-12


def test_constant_beta():
    m = Scalar()
    ema = EMA(m, kind="constant", beta=0.9)
    m.w.data.fill_(1.0)
    for _ in range(3):
        assert ema.update(m) == 0.9
    assert abs(ema.model.w.item() - (1 - 0.9 ** 3)) < 1e-12


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))


def test_buffers_copied_and_frozen():
    net = _net()
    ema = EMA(net, kind="power")
    net.train()
    net(torch.randn(7, 3))  # changes running stats and num_batches_tracked
    ema.update(net)
    assert torch.equal(ema.model[1].running_mean, net[1].running_mean)
    assert ema.model[1].num_batches_tracked.item() == 1
    assert not ema.model.training and all(not p.requires_grad for p in ema.model.parameters())


def test_unwraps_dataparallel_and_compile():
    net = _net()
    ema = EMA(nn.DataParallel(net))
    assert ema.ema_state_dict().keys() == net.state_dict().keys()
    ema.update(torch.compile(net))
    ema.update(nn.DataParallel(net))
    assert ema.step == 2


def test_swap_restores_exactly():
    net = _net()
    ema = EMA(net, kind="constant", beta=0.5)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0).add_(0.1)
    ema.update(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(4, 3)
    net.eval()
    with ema.swap(net):
        y_ema = net(x)
    assert torch.equal(y_ema, ema.model(x))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(RuntimeError):
        with ema.swap(net):
            raise RuntimeError("fail")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_state_dict_round_trip_through_checkpoint(tmp_path):
    net = _net()
    ema = EMA(net, kind="power", sigma_rel=0.1)
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.1)
        ema.update(net)
    p = atomic_save({"format": "noctcm/1", "ema": ema.state_dict(), "ema_model": ema.ema_state_dict()}, tmp_path / "c.pt")
    ck = load_checkpoint(p, weights_only=True)
    ema2 = EMA(_net(), kind="power", sigma_rel=0.1)
    ema2.load_state_dict(ck["ema"])
    assert ema2.step == 3
    for k, v in ema.ema_state_dict().items():
        assert torch.equal(v, ema2.ema_state_dict()[k])
    # bookkeeping only + weights passed separately; continued updates stay identical
    ema3 = EMA(_net(), kind="power", sigma_rel=0.1)
    ema3.load_state_dict(ema.state_dict(include_model=False), ema_model_state=ck["ema_model"])
    ema.update(net)
    ema3.update(net)
    for k, v in ema.ema_state_dict().items():
        assert torch.equal(v, ema3.ema_state_dict()[k])
    with pytest.warns(UserWarning):
        EMA(_net(), kind="constant").load_state_dict(ck["ema"])
