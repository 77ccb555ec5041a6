"""The CIFAR-10 presets: schema-valid overlays of params.yaml, the published recipe numbers, a model that builds at
32x32x3 and runs forward on a batch of 2, and stage configs (teacher / distill) that validate."""
import math
import pathlib

import pytest
import torch

from noctcm.config import load_config, stage_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRESETS = ["cifar10_training", "cifar10_distillation", "cifar10_ctcm"]


def _cfg(name, overrides=()):
    return load_config([ROOT / "params.yaml", ROOT / "configs" / f"{name}.yaml"], overrides)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_is_valid_and_cifar_sized(name):
    cfg = _cfg(name)
    assert (cfg.data.name, cfg.data.resolution, cfg.data.channels) == ("cifar10", 32, 3)
    assert cfg.evaluation.feature_extractor == "inception-v3-compat" and cfg.evaluation.num_samples == 50000
    for stage in ("train", "teacher", "distill"):
        s = stage_config(cfg, stage)
        assert s.training.objective == {"train": cfg.training.objective, "teacher": "diffusion",
                                        "distill": cfg.distillation.method}[stage]


@pytest.mark.parametrize("name", PRESETS)
def test_preset_model_builds_at_32x32x3_and_runs(name):
    from noctcm.models.consistency_model import build_model
    torch.manual_seed(0)
    cfg = _cfg(name)
    model = build_model(cfg).eval()
    n_params = sum(p.numel() for p in model.parameters())
    # the papers' CIFAR-10 nets have 55-56M parameters; the FNO levels add complex mode weights on top
    print(f"{name}: {n_params / 1e6:.1f}M parameters")
    assert 20e6 < n_params < 1e9, n_params
    x = 0.5 * torch.randn(2, 3, 32, 32)
    t = torch.tensor([0.3, 1.2])
    with torch.no_grad():
        y = model(x, t)
    assert y.shape == (2, 3, 32, 32) and torch.isfinite(y).all()
    # f(x, 0) = x exactly (boundary condition of the TrigFlow parametrisation), also for the big preset network
    with torch.no_grad():
        torch.testing.assert_close(model(x, torch.zeros(2)), x)
    del model


def test_published_recipe_numbers():
    "Numbers from the papers (algorithms.md §1-§2): sCM (Lu & Song 2024), ECT (Geng et al. 2024)."
    sct, scd, ect = (_cfg(n) for n in PRESETS)
    # sCM: tau ~ N(-1.0, 1.4^2), tangent warm-up 10k, g/(||g|| + 0.1), RAdam 1e-4 betas (0.9, 0.99), t_mid 1.1
    for c in (sct, scd):
        t = c.training
        assert (t.P_mean, t.P_std, t.tangent_warmup_steps, t.tangent_norm, t.tangent_c) == (-1.0, 1.4, 10000, "l2", 0.1)
        assert (t.optimizer, t.lr, list(t.betas)) == ("radam", 1e-4, [0.9, 0.99])
        assert t.adaptive_weight and t.prior_weight and list(c.sampling.t_mid) == [1.1]
    assert sct.training.objective == "sct" and scd.training.objective == "scd" and scd.distillation.method == "scd"
    # ECT: tau ~ N(-1.1, 2.0^2), q = 2, n(t) = 1 + 8 sigmoid(-t), c = 0, RAdam 1e-4 betas (0.9, 0.999), dropout 0.2,
    # 2-step mid sigma 0.821 (EDM) -> t_mid = arctan(0.821 / sigma_d)
    e = ect.training
    assert (ect.distillation.method, e.objective, e.P_mean, e.P_std, e.ect_q, e.ect_k, e.ect_b, e.huber_c) == \
        ("ect", "ect", -1.1, 2.0, 2.0, 8.0, 1.0, 0.0)
    assert (e.lr, list(e.betas), ect.model.dropout, e.batch_size) == (1e-4, [0.9, 0.999], 0.2, 128)
    assert math.isclose(ect.sampling.t_mid[0], math.atan(0.821 / ect.model.sigma_d), abs_tol=1e-4)
    for c in (sct, scd, ect):
        assert c.model.sigma_d == 0.5 and c.training.ema_beta == 0.9999 and c.training.ema_kind == "constant"


def test_preset_overrides_still_apply():
    cfg = _cfg("cifar10_ctcm", ["training.steps=10", "model.model_channels=64"])
    assert cfg.training.steps == 10 and cfg.model.model_channels == 64
