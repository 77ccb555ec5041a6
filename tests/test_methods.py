"""The one table of training methods (noctcm.config.METHODS) and what reads it: the config's choices, the builder,
the teacher decision, the CLI's stages, the bench; and sCD against sCT with the teacher's velocity."""
import pytest
import torch

from noctcm.config import (CHOICES, METHODS, STAGES, ConfigError, load_config, methods_of_stage, stage_config,
                           typed)
from noctcm.trigflow import add_noise, sample_time
from noctcm.training import losses as L
from noctcm.training.distillation import TrigFlowTeacher
from noctcm.training.methods import (SCD, Draws, Method, build_method, may_leave_parameters_unused, method_class,
                                     teacher_checkpoint)

TINY = ["data.resolution=8", "model.model_channels=8", "model.channel_mult=[1,2]", "model.attention_resolutions=[]",
        "model.fno_levels=[0]", "model.fno_modes=2", "model.weight_head_channels=8", "training.batch_size=4"]


def test_the_config_choices_come_from_the_table():
    assert CHOICES["training.objective"] == tuple(METHODS)
    assert CHOICES["distillation.method"] == methods_of_stage("distill") == ("scd", "ect")
    assert stage_config(load_config(), "teacher").training.objective == methods_of_stage("teacher")[0] == "diffusion"
    with pytest.raises(ConfigError, match="meanflow"):          # the error lists the table, MeanFlow included
        load_config(overrides=["training.objective=gan"])


@pytest.mark.parametrize("name", list(METHODS))
def test_every_entry_resolves_to_a_method_with_its_spec(name):
    spec = METHODS[name]
    cls = method_class(name)
    assert issubclass(cls, Method) and cls.__module__ == f"noctcm.{spec.callable.split(':')[0]}"
    assert spec.stage in STAGES and spec.teacher in ("none", "optional", "required")
    cfg = load_config(overrides=[*TINY, f"training.objective={name}", f"model.two_time={spec.two_time}"])
    teacher = object() if spec.teacher == "required" else None
    assert isinstance(build_method(cfg, teacher), cls)


def test_the_teacher_is_decided_in_one_place():
    sct, ect, scd = (load_config(overrides=[f"training.objective={m}"]) for m in ("sct", "ect", "scd"))
    assert teacher_checkpoint(sct) is None and teacher_checkpoint(sct, "train") is None
    with pytest.raises(ConfigError, match="takes no teacher"):
        teacher_checkpoint(sct, given="t.pt")
    assert teacher_checkpoint(ect) is None                                  # optional: only in the distill run
    assert teacher_checkpoint(ect, "distill") == ect.distillation.teacher_checkpoint
    assert teacher_checkpoint(ect, given="t.pt") == "t.pt"
    assert teacher_checkpoint(scd) == scd.distillation.teacher_checkpoint   # required: always
    with pytest.raises(ConfigError, match="needs a teacher"):
        teacher_checkpoint(load_config(overrides=["training.objective=scd", "distillation.teacher_checkpoint=null"]))


def test_ddp_looks_for_unused_parameters_exactly_when_the_head_is_not_trained():
    for name, spec in METHODS.items():
        for adaptive in (True, False):
            cfg = load_config(overrides=[f"training.objective={name}", f"training.adaptive_weight={adaptive}",
                                         f"model.two_time={spec.two_time}"])
            want = not (spec.weight_head and adaptive) or spec.two_time   # a two-time model may leave s unused
            assert may_leave_parameters_unused(cfg) == want, (name, adaptive)


def test_scd_is_sct_with_the_teachers_velocity():
    from noctcm.models.consistency_model import build_model
    cfg = load_config(overrides=[*TINY, "training.objective=scd"])
    torch.manual_seed(0)
    net, teacher = build_model(cfg), TrigFlowTeacher(build_model(cfg))
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    loss, _ = SCD(typed(cfg), teacher)(net, x0, Draws(torch.Generator().manual_seed(1), 4), step=10_000)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(x0.shape, generator=g) * 0.5
    t = sample_time(4, -1.0, 1.4, 0.5, generator=g)
    with torch.no_grad():
        dxdt = teacher.velocity(add_noise(x0, z, t), t)
    assert torch.equal(loss, L.sct_loss(net, x0, z, t, r=1.0, dxdt=dxdt)[0])
    assert not torch.equal(loss, L.sct_loss(net, x0, z, t, r=1.0)[0])   # the teacher makes a difference


def test_the_cli_and_the_bench_read_the_table():
    from noctcm.bench import STEP_METHODS, method_losses
    from noctcm.cli import build_parser
    from noctcm.models.consistency_model import build_model
    args = build_parser().parse_args(["train", "--stage", "distill"])
    assert args.stage == "distill"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--stage", "bogus"])
    assert {m.split("-")[0] for m in STEP_METHODS} <= set(METHODS)
    cfg = load_config(overrides=TINY)
    fns = method_losses(cfg, build_model(cfg))                               # no teacher: no sCD row
    assert set(fns) == {"diffusion", "sct", "sct-fused", "ect"}
    x0 = torch.rand(4, 1, 8, 8)
    assert torch.allclose(fns["sct"](x0)[0], fns["sct-fused"](x0)[0], atol=1e-5)   # same loss, two JVP modes
