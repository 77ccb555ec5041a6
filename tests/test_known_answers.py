"""Known-answer training tests (issue "Training", part 6): small self-contained training loops on CPU that must
bring a tiny MLP consistency model close to a known truth.

1. Gaussian data x0 ~ N(0, s^2 I): the exact consistency map is f*(x_t, t) = x_t s / sqrt(cos^2 t s^2 + sin^2 t sd^2)
   (the PF-ODE only rescales x_t by the marginal std a(t)). sCD with the exact Gaussian teacher velocity and sCT
   from data must both reduce the mean squared error against f* by orders of magnitude.
2. A 2-D mixture of 8 Gaussians: 1-step (and 2-step) samples of an sCT-trained MLP must have an energy distance to
   the data far below the untrained model's.
The loops reuse `sct_loss` (the real trainer lives elsewhere). Numbers are printed (`pytest -s` shows them).
"""
import math

import pytest
import torch
import torch.nn as nn

from toy_models import TrigFlowToy

from noctcm.trigflow import add_noise, sample_time
from noctcm.training.losses import sct_loss

SD = 0.5


class MLPConsistencyModel(TrigFlowToy):
    """ConsistencyModel protocol on flat vectors: F = MLP([x_scaled, sin/cos(k t)]) with low time frequencies
    (k = 0.5, 1, 2; high frequencies make dF/dt, hence the sCT tangent, large and training unstable), plus a
    learned log-weight head."""

    def __init__(self, dim, hidden=64, depth=3, n_freq=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.sigma_d = SD
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freq) / 2)
        layers, d = [], dim + 2 * n_freq
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.SiLU()]
            d = hidden
        self.net = nn.Sequential(*layers, nn.Linear(d, dim))
        self.w = nn.Sequential(nn.Linear(2 * n_freq, 32), nn.SiLU(), nn.Linear(32, 1))

    def emb(self, t):
        a = t[:, None] * self.freqs
        return torch.cat([torch.sin(a), torch.cos(a)], 1)

    def F(self, x_scaled, t, s=None):
        return self.net(torch.cat([x_scaled, self.emb(t)], 1))

    def log_weight(self, t):
        return self.w(self.emb(t))[:, 0]


def train_sct(model, sample_x0, steps, dxdt_fn=None, batch=256, lr=1e-3, warmup=200, seed=0, noise_fn=None):
    "Minimal sCT / sCD loop: Adam, sCM time proposal (P_mean -1.0, P_std 1.4), tangent warm-up r = min(1, k/H)."
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.99))
    for k in range(steps):
        x0 = sample_x0(batch, g)
        z = SD * torch.randn(x0.shape, generator=g) if noise_fn is None else noise_fn(x0.shape, g)
        t = sample_time(batch, -1.0, 1.4, sigma_d=SD, generator=g)
        dxdt = None if dxdt_fn is None else dxdt_fn(add_noise(x0, z, t), t)
        loss, _ = sct_loss(model, x0, z, t, r=min(1.0, k / warmup), dxdt=dxdt)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    return model


# ------------------------------------------------------------------------------------------- Gaussian data
S_DATA, DIM = 1.0, 4


def marginal_std(t, s=S_DATA):
    return torch.sqrt(torch.cos(t) ** 2 * s ** 2 + torch.sin(t) ** 2 * SD ** 2)


def f_star(x_t, t, s=S_DATA):
    "Exact consistency map for x0 ~ N(0, s^2 I)."
    return x_t * (s / marginal_std(t, s))[:, None]


def v_star(x_t, t, s=S_DATA):
    "Exact PF-ODE velocity = d/dt log a(t) * x_t (the exact sCD teacher)."
    c, si = torch.cos(t), torch.sin(t)
    return x_t * (si * c * (SD ** 2 - s ** 2) / marginal_std(t, s) ** 2)[:, None]


def gaussian_x0(n, g):
    return S_DATA * torch.randn(n, DIM, generator=g)


def f_error(model, n=4096, seed=123, bins=((0.05, 0.5), (0.5, 1.0), (1.0, 1.55))):
    "Mean squared error against f* / s^2, over t ~ U(0.05, 1.55) and x_t ~ p_t; also per t-bin."
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g) * 1.5 + 0.05
    x0, z = gaussian_x0(n, g), SD * torch.randn(n, DIM, generator=g)
    x_t = add_noise(x0, z, t)
    with torch.no_grad():
        err = (model(x_t, t) - f_star(x_t, t)).square().mean(1) / S_DATA ** 2
    return err.mean().item(), [round(err[(t >= a) & (t < b)].mean().item(), 5) for a, b in bins]


def test_exact_map_is_a_fixed_point_of_the_tangent():
    "Sanity of the truth itself: for the exact F*, the sCD tangent g vanishes (f* is constant along the ODE)."
    from noctcm.training.losses import consistency_tangent, tangent_jvp

    class Exact(nn.Module):
        sigma_d = SD

        def F(self, xs, t, s=None):
            x = xs * SD
            return (torch.cos(t)[:, None] * x - f_star(x, t)) / (torch.sin(t)[:, None] * SD)

    g = torch.Generator().manual_seed(0)
    x_t = torch.randn(64, DIM, generator=g, dtype=torch.float64)
    t = torch.rand(64, generator=g, dtype=torch.float64) * 1.4 + 0.1
    F, J = tangent_jvp(Exact(), x_t, t, v_star(x_t, t))
    gt = consistency_tangent(F.double(), J.double(), x_t, v_star(x_t, t), t, 1.0, SD)
    assert gt.abs().max() < 1e-5


@pytest.mark.parametrize("mode", ["scd_exact_teacher", "sct_from_data"])
def test_gaussian_consistency_map(mode):
    model = MLPConsistencyModel(DIM)
    before, before_bins = f_error(model)
    train_sct(model, gaussian_x0, steps=500, dxdt_fn=v_star if mode.startswith("scd") else None)
    after, after_bins = f_error(model)
    print(f"\n[{mode}] MSE vs f*: before {before:.4g} {before_bins}  after {after:.4g} {after_bins}")
    assert after < 0.05 * before and after < 0.02


# ------------------------------------------------------------------- Gaussian data under GRF (non-white) noise
GRID = 3   # odd: every frequency |k| <= 1 is kept, so the noise covariance has full rank on the grid


def _grf_setup():
    from noctcm.noise import Noise, gaussian_consistency_map, grf_mode_variance
    noise = Noise("grf", length=1 / 5, nu=1.0, sigma=SD)
    nv = grf_mode_variance(GRID, GRID, noise.length, noise.nu, SD)
    f_map, v_map = gaussian_consistency_map(torch.full_like(nv, S_DATA ** 2), nv)
    flat = lambda fn: (lambda x, t: fn(x.double().view(-1, 1, GRID, GRID), t).view(x.shape).to(x.dtype))
    draw = lambda shape, g: noise((shape[0], 1, GRID, GRID), g).view(shape)
    return flat(f_map), flat(v_map), draw


def test_gaussian_consistency_map_under_grf_noise():
    """The known answer generalised (issue 9): with GRF noise the PF-ODE of Gaussian data is still linear, and its
    consistency map is the Fourier multiplier sqrt(a_k)/sigma_t(k) (noctcm.noise.gaussian_consistency_map). sCD with
    that exact velocity and sCT from data, both drawing GRF noise, must learn it; the white-noise map is wrong here."""
    f_map, v_map, draw = _grf_setup()
    D = GRID * GRID

    def err(model, n=4096, seed=123):
        g = torch.Generator().manual_seed(seed)
        t = torch.rand(n, generator=g) * 1.5 + 0.05
        x0, z = S_DATA * torch.randn(n, D, generator=g), draw((n, D), g)
        x_t = add_noise(x0, z, t)
        with torch.no_grad():
            return (model(x_t, t) - f_map(x_t, t)).square().mean().item() / S_DATA ** 2, x_t, t

    # the truth is not the white-noise map: a model that had learned that one would fail the bound below (0.02)
    _, x_t, t = err(lambda x, t: x)
    assert (f_map(x_t, t) - f_star(x_t, t)).square().mean() > 0.04
    for mode in ("scd_exact_teacher", "sct_from_data"):
        model = MLPConsistencyModel(D, hidden=128)
        before = err(model)[0]
        train_sct(model, lambda n, g: S_DATA * torch.randn(n, D, generator=g), steps=800,
                  dxdt_fn=v_map if mode.startswith("scd") else None, noise_fn=draw)
        after = err(model)[0]
        print(f"\n[grf {mode}] MSE vs f*: before {before:.4g} after {after:.4g}")
        assert after < 0.05 * before and after < 0.02, (mode, before, after)


# ------------------------------------------------------------------------------------ 2-D Gaussian mixture
def mog_x0(n, g, k=8, radius=1.0, std=0.05):
    angle = torch.randint(0, k, (n,), generator=g).float() * 2 * math.pi / k
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], 1) + std * torch.randn(n, 2, generator=g)


def energy_distance(x, y):
    return (2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()).item()


def sample(model, n, g, steps=1, t_mid=1.1):
    t = torch.full((n,), math.pi / 2)
    with torch.no_grad():
        x = model(SD * torch.randn(n, 2, generator=g), t)
        if steps == 2:
            tm = torch.full((n,), t_mid)
            x = model(add_noise(x, SD * torch.randn(n, 2, generator=g), tm), tm)
    return x


def test_mixture_of_gaussians_one_step_samples():
    model = MLPConsistencyModel(2, hidden=128)
    g = torch.Generator().manual_seed(1)
    ref = mog_x0(2000, g)
    floor = energy_distance(mog_x0(2000, g), ref)  # two finite data samples
    ed_before = energy_distance(sample(model, 2000, g), ref)
    train_sct(model, mog_x0, steps=600)
    ed1 = energy_distance(sample(model, 2000, g), ref)
    ed2 = energy_distance(sample(model, 2000, g, steps=2), ref)
    print(f"\n[MoG] energy distance: untrained {ed_before:.4g}, sCT 1-step {ed1:.4g}, 2-step {ed2:.4g}, "
          f"data vs data {floor:.4g}")
    assert ed1 < 0.1 * ed_before and ed1 < 0.05


# ------------------------------------------------------------------- MeanFlow (noctcm.training.meanflow)
MF_A = 0.25   # data std != sigma_d, so the flow is not the identity


def _gauss_sigma(t):
    "Marginal std of x_t in TrigFlow for N(0, MF_A^2) data: the exact flow map is x_s = x_t sigma(s) / sigma(t)."
    return torch.sqrt(MF_A ** 2 * torch.cos(t) ** 2 + SD ** 2 * torch.sin(t) ** 2)


class TwoTimeGain(TrigFlowToy):
    """Two-time model F(x, t, s) = g(t, s) * x: the exact map of Gaussian data has this form, with
    g* = (cos(t-s) - sigma(s)/sigma(t)) / sin(t-s). `exact_scale`: scale * g* (None: g is a small MLP)."""

    def __init__(self, exact_scale=None):
        super().__init__()
        torch.manual_seed(0)
        self.scale = None if exact_scale is None else nn.Parameter(torch.tensor(float(exact_scale)))
        self.g = nn.Sequential(nn.Linear(6, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 1))

    def F(self, x_scaled, t, s=None):
        s = torch.zeros_like(t) if s is None else s
        if self.scale is not None:
            exact = (torch.cos(t - s) - _gauss_sigma(s) / _gauss_sigma(t)) / torch.sin(t - s)
            return self.scale * exact[:, None] * x_scaled
        f = torch.stack([torch.sin(t), torch.cos(t), torch.sin(s), torch.cos(s), torch.sin(t - s), torch.cos(t - s)], 1)
        return self.g(f) * x_scaled

    def jump(self, x_t, t, s):
        return torch.cos(t - s)[:, None] * x_t - torch.sin(t - s)[:, None] * SD * self.F(x_t / SD, t, s)


def test_meanflow_loss_is_minimised_by_the_exact_average_velocity():
    """The known answer of MeanFlow: the exact flow map of Gaussian data (closed form) is the fixed point of the
    stop-gradient regression. With common random numbers over a large batch, the gradient of the plain (p = 0) loss
    with respect to a scale on the exact network vanishes at scale 1 and pushes towards 1 from both sides."""
    from noctcm.training.meanflow import meanflow_loss
    g = torch.Generator().manual_seed(0)
    n = 40000
    x0, z = MF_A * torch.randn(n, DIM, generator=g), SD * torch.randn(n, DIM, generator=g)
    t = torch.rand(n, generator=g) * 1.4 + 0.1
    s = t * torch.rand(n, generator=g) * 0.95
    grads = {}
    for scale in (0.9, 1.0, 1.1):
        m = TwoTimeGain(scale)
        loss, _ = meanflow_loss(m, x0, z, t, s, p=0.0)
        loss.mean().backward()
        grads[scale] = m.scale.grad.item()
    print(f"\n[meanflow] d loss / d scale at 0.9, 1.0, 1.1: {grads}")
    assert grads[0.9] < 0 < grads[1.1]
    root = 0.9 + 0.2 * -grads[0.9] / (grads[1.1] - grads[0.9])      # where the (linear in scale) gradient vanishes
    assert abs(root - 1.0) < 0.02 and abs(grads[1.0]) < 0.15 * min(-grads[0.9], grads[1.1]), (root, grads)


def test_meanflow_training_learns_the_gaussian_flow_map():
    "A short MeanFlow training of a two-time model on Gaussian data approaches the exact map G*, 1-step included."
    from noctcm.config import load_config, typed
    from noctcm.training.meanflow import MeanFlow
    from noctcm.training.methods import Draws
    cfg = typed(load_config(overrides=["training.objective=meanflow", "model.two_time=true", "training.meanflow_p=0",
                                       "training.meanflow_ratio=0.5"]))
    model, method = TwoTimeGain(), MeanFlow(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def error():
        gg = torch.Generator().manual_seed(1)
        t = torch.rand(2000, generator=gg) * 1.5 + 0.05
        s = t * torch.rand(2000, generator=gg)
        with torch.no_grad():
            gain = model.jump(torch.ones(2000, DIM), t, s)[:, 0]
            one = model.jump(torch.ones(1, DIM), torch.tensor([math.pi / 2]), torch.tensor([0.0]))[0, 0].item()
        return (gain - _gauss_sigma(s) / _gauss_sigma(t)).square().mean().sqrt().item(), one

    before = error()
    for k in range(1000):
        for group in opt.param_groups: group["lr"] = 3e-3 if k < 700 else 3e-4
        loss, _ = method(model, MF_A * torch.randn(256, DIM, generator=g), Draws(g, 256), k)
        opt.zero_grad(); loss.mean().backward(); opt.step()
    after = error()
    print(f"\n[meanflow] RMS error of the map's gain over (t, s): {before[0]:.4f} -> {after[0]:.4f}; "
          f"1-step gain {before[1]:.3f} -> {after[1]:.3f} (exact {MF_A / SD})")
    assert after[0] < 0.25 * before[0] and abs(after[1] - MF_A / SD) < 0.1
