"""Tests of noctcm.training.distillation: the EDM-denoiser adapter against the exact Gaussian PF-ODE velocity and
against a TrigFlow model round trip, TrigFlowTeacher, student initialisation, load_teacher (and the file it names)."""
import copy
import math

import pytest
import torch
import torch.nn as nn

from noctcm.trigflow import add_noise, expand_t
from noctcm.training.distillation import EDMDenoiserTeacher, TrigFlowTeacher, init_student_from_teacher, load_teacher


class TinyCM(nn.Module):
    def __init__(self, dim=4, hidden=16, dropout=0.0, sigma_d=0.5):
        super().__init__()
        self.sigma_d = sigma_d
        self.net = nn.Sequential(nn.Linear(dim + 2, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.w = nn.Linear(1, 1)

    def F(self, x_scaled, t, s=None):
        return self.net(torch.cat([x_scaled, torch.sin(t)[:, None], torch.cos(t)[:, None]], 1))

    def log_weight(self, t):
        return self.w(t[:, None])[:, 0]

    def forward(self, x_t, t):
        return torch.cos(t)[:, None] * x_t - torch.sin(t)[:, None] * self.sigma_d * self.F(x_t / self.sigma_d, t)


def exact_gauss_velocity(x_t, t, s, sd):
    "E[cos t z - sin t x0 | x_t] for x0 ~ N(0, s^2 I), z ~ N(0, sd^2 I), by Gaussian conditioning (float64)."
    t = t.double()
    c, si = torch.cos(t), torch.sin(t)
    var_t = c ** 2 * s ** 2 + si ** 2 * sd ** 2          # Var[x_t]
    cov_v = c * si * sd ** 2 - si * c * s ** 2          # Cov[v_t, x_t]
    return expand_t(cov_v / var_t, x_t) * x_t.double()


@pytest.mark.parametrize("s,sd", [(1.3, 0.5), (0.2, 0.5), (0.5, 0.5), (2.0, 1.0)])
def test_edm_adapter_equals_exact_gaussian_velocity(s, sd):
    den = lambda x, sig: s ** 2 / (s ** 2 + expand_t(sig, x) ** 2) * x
    teacher = EDMDenoiserTeacher(den, sigma_d=sd, denoiser_dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    t = torch.rand(200, generator=g, dtype=torch.float64) * (math.pi / 2 - 2e-4) + 1e-4
    x = torch.randn(200, 3, 2, 2, generator=g, dtype=torch.float64)
    v = teacher.velocity(x, t)
    assert v.dtype == torch.float64
    assert torch.allclose(v, exact_gauss_velocity(x, t, s, sd), rtol=1e-9, atol=1e-10)
    assert torch.allclose(teacher.F(x / sd, t), v / sd)


def test_edm_adapter_endpoints_are_finite_and_close():
    s, sd = 1.3, 0.5
    den = lambda x, sig: s ** 2 / (s ** 2 + expand_t(sig, x) ** 2) * x
    teacher = EDMDenoiserTeacher(den, sigma_d=sd)
    x = torch.randn(4, 5)
    t = torch.tensor([0.0, 1e-8, math.pi / 2, math.pi / 2 - 1e-9])
    v = teacher(x, t)
    assert torch.isfinite(v).all() and v.dtype == torch.float32
    assert torch.allclose(v.double(), exact_gauss_velocity(x, t, s, sd), atol=2e-2)


def test_edm_adapter_inverts_trigflow_model():
    "Round trip: an EDM denoiser built from a TrigFlow model (x0 = cos t x_t - sin t sd F) gives back sd F."
    torch.manual_seed(0)
    m = TinyCM().double()
    sd = 0.5

    def den(x_sigma, sigma):
        t = torch.atan(sigma / sd)
        x_t = torch.cos(t)[:, None] * x_sigma
        return torch.cos(t)[:, None] * x_t - torch.sin(t)[:, None] * sd * m.F(x_t / sd, t)

    teacher = EDMDenoiserTeacher(den, sigma_d=sd)
    x = torch.randn(16, 4, dtype=torch.float64)
    t = torch.rand(16, dtype=torch.float64) * 1.4 + 0.1
    with torch.no_grad():
        assert torch.allclose(teacher.velocity(x, t), sd * m.F(x / sd, t), atol=1e-10)


def test_trigflow_teacher_is_frozen_and_deterministic():
    m = TinyCM(dropout=0.5).train()
    teacher = TrigFlowTeacher(m)
    x, t = torch.randn(8, 4), torch.rand(8) + 0.1
    v1, v2 = teacher.velocity(x, t), teacher(x, t)
    assert torch.equal(v1, v2) and not v1.requires_grad  # eval mode: dropout off
    assert torch.allclose(v1, 0.5 * m.F(x / 0.5, t))
    assert not any(p.requires_grad for p in m.parameters())


def test_student_init_equals_teacher_and_teacher_stays_fixed():
    torch.manual_seed(1)
    teacher_model, student = TinyCM(), TinyCM()
    assert not torch.equal(student.net[0].weight, teacher_model.net[0].weight)
    teacher = TrigFlowTeacher(teacher_model)
    init_student_from_teacher(student, teacher.model)
    for (k1, a), (k2, b) in zip(student.state_dict().items(), teacher_model.state_dict().items()):
        assert k1 == k2 and torch.equal(a, b)
    before = copy.deepcopy(teacher.model.state_dict())
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    x0, t = torch.randn(8, 4), torch.rand(8) + 0.1
    student.F(x0, t).square().mean().backward()
    opt.step()
    assert not torch.equal(student.net[0].weight, teacher_model.net[0].weight)
    assert all(torch.equal(a, b) for a, b in zip(before.values(), teacher.model.state_dict().values()))


def test_bad_inputs():
    with pytest.raises(ValueError, match="architectures differ"):
        init_student_from_teacher(TinyCM(hidden=8), TinyCM(hidden=16))
    with pytest.raises(ValueError):
        EDMDenoiserTeacher(lambda x, s: x, sigma_d=0.0)


def test_load_teacher_from_checkpoint(tmp_path):
    cm = pytest.importorskip("noctcm.models.consistency_model")
    from noctcm.config import load_config, to_dict
    from noctcm.utils.helpers import atomic_save
    cfg = load_config(overrides=["model.model_channels=8", "model.channel_mult=[1,2]", "model.attention_resolutions=[]",
                                 "data.resolution=8", "data.resolutions=[8,10]", "model.fno_levels=[0]", "model.fno_modes=2",
                                 "model.weight_head_channels=8"])
    torch.manual_seed(0)
    model = cm.build_model(cfg)
    ema = cm.build_model(cfg)
    path = tmp_path / "ckpt.pt"
    atomic_save({"format": "noctcm/1", "config": to_dict(cfg), "step": 0, "model": model.state_dict(),
                 "ema_model": ema.state_dict()}, path)
    teacher = load_teacher(path)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 1.2])
    with torch.no_grad():
        assert torch.allclose(teacher.velocity(x, t), ema.eval().velocity(x, t), atol=1e-6)
        raw = load_teacher(path, use_ema=False)
        assert torch.allclose(raw.velocity(x, t), model.eval().velocity(x, t), atol=1e-6)
    from noctcm.data.datasets import sha256_file
    assert teacher.path == path and teacher.sha256 == sha256_file(path)   # recorded in a distilled checkpoint
