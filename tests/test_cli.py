"""The `noctcm` command line: help, one-line user errors with their exit codes, config round trip, a tiny
training run through `python -m noctcm.cli train`, and the divergence exit code."""
import os
import subprocess
import sys

import pytest
import torch
import yaml

from noctcm.cli import build_parser, main
from noctcm.config import load_config, to_dict

TINY = ["data.resolution=8", "data.resolutions=[8,10]", "model.model_channels=8", "model.channel_mult=[1,2]", "model.attention_resolutions=[]",
        "model.fno_levels=[0]", "model.fno_modes=2", "model.weight_head_channels=8", "training.batch_size=8",
        "training.log_every=1", "training.sample_every=1000"]


def run(*args, cwd=None, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "noctcm.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    r = run("data", "fetch", "digits", "--root", root)
    assert r.returncode == 0, r.stderr
    assert (root / "digits" / "images.npy").is_file()
    return root


@pytest.mark.parametrize("cmd", [[], ["data", "fetch"], ["data", "prepare"], ["train"], ["sample"], ["evaluate"],
                                 ["config"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0 and "usage: noctcm" in capsys.readouterr().out


def test_help_through_python_m():
    r = run("--help")
    assert r.returncode == 0 and "train" in r.stdout and "evaluate" in r.stdout


@pytest.mark.parametrize("args, key", [(["config", "training.stepz=3"], "training.stepz"),
                                       (["config", "training.lr=-1"], "training.lr"),
                                       (["train", "training.objective=gan"], "training.objective"),
                                       (["train", "training.objective=meanflow"], "model.two_time=true"),
                                       (["config", "--config", "missing.yaml"], "missing.yaml")])
def test_bad_config_is_one_line_and_exit_2(args, key, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("noctcm: error:") and key in err, err


def test_bad_key_in_a_subprocess_has_no_traceback():
    r = run("train", "model.nope=1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [l for l in r.stderr.strip().splitlines() if l.startswith("noctcm: error:")]


def test_config_round_trips(tmp_path, repo_root, capsys):
    over = ["training.steps=7", "model.channel_mult=[1,2]", "sampling.t_mid=[1.0,0.5]"]
    want = load_config(repo_root / "params.yaml", over)
    out = tmp_path / "p.yaml"
    assert main(["config", "--config", str(repo_root / "params.yaml"), *over, "--out", str(out)]) == 0
    assert to_dict(load_config(out)) == to_dict(want)
    capsys.readouterr()
    assert main(["config", "--config", str(repo_root / "params.yaml"), *over]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == to_dict(want)
    # presets overlay in order, overrides last
    pre = tmp_path / "pre.yaml"
    pre.write_text("training:\n  steps: 11\n  lr: 0.001\n")
    assert main(["config", "--config", str(repo_root / "params.yaml"), "--config", str(pre), "training.lr=0.002",
                 "--out", str(out)]) == 0
    got = load_config(out)
    assert got.training.steps == 11 and got.training.lr == 0.002


def test_overrides_may_come_after_options(tmp_path):
    args, extra = build_parser().parse_known_args(["train", "--out", "x", "training.steps=3", "--no-progress",
                                                   "model.dropout=0.1"])
    assert args.out == "x" and sorted(args.overrides + extra) == ["model.dropout=0.1", "training.steps=3"]


def test_train_tiny_run_writes_checkpoint(tmp_path, data_root):
    out = tmp_path / "run"
    r = run("train", *TINY, "training.steps=2", f"data.root={data_root}", "--out", out, "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == str(out / "checkpoint.pt")
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["format"] == "noctcm/1" and ck["step"] == 2 and ck["config"]["data"]["root"] == str(data_root)
    assert (out / "history.jsonl").is_file() and (out / "dvclive" / "metrics.json").is_file()
    assert not (tmp_path / "dvc.yaml").exists()
    from noctcm.models.consistency_model import load_model
    model, cfg = load_model(out / "checkpoint.pt")
    assert cfg.training.steps == 2 and model.sample(2).shape == (2, 1, 8, 8)


def test_missing_teacher_is_one_line_exit_2(tmp_path, data_root):
    r = run("train", *TINY, "training.objective=scd", f"data.root={data_root}", "--teacher_checkpoint",
            tmp_path / "nope.pt", "--out", tmp_path / "o", "--no-progress")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr[-2000:]
    assert r.stderr.startswith("noctcm: error: checkpoint") and "nope.pt" in r.stderr


def test_missing_data_is_one_line_exit_2(tmp_path):
    r = run("train", *TINY, f"data.root={tmp_path / 'empty'}", "--out", tmp_path / "o", "--no-progress")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("noctcm: error:"), r.stderr[-2000:]


def test_divergence_exit_1_names_the_step_and_keeps_the_checkpoint(tmp_path, data_root):
    out = tmp_path / "run"
    base = ["train", *TINY, f"data.root={data_root}", "--out", out, "--no-progress"]
    r = run(*base, "training.steps=3", "training.checkpoint_every=3")
    assert r.returncode == 0, r.stderr[-3000:]
    good = (out / "checkpoint.pt").read_bytes()
    r = run(*base, "training.steps=10", "training.lr=1e30", "training.checkpoint_every=100")  # resumes at 3
    assert r.returncode == 1, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()   # a one-line warning says lr and steps changed since the checkpoint
    assert "Traceback" not in r.stderr and all(l.startswith("noctcm: ") for l in lines), r.stderr[-3000:]
    assert lines[-1].startswith("noctcm: error: training diverged at step "), r.stderr[-3000:]
    step = int(lines[-1].split("at step ")[1].split(":")[0])
    assert step > 3 and str(out / "checkpoint.pt") in lines[-1]
    assert (out / "checkpoint.pt").read_bytes() == good
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 3


def test_stage_teacher_folds_the_teacher_section_and_picks_the_folder(tmp_path, data_root, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = main(["train", "--stage", "teacher", *TINY, "teacher.steps=1", "teacher.lr=0.001", "training.steps=50",
               f"data.root={data_root}", f"paths.models={tmp_path / 'models'}", "--no-progress"])
    assert rc == 0
    ck = torch.load(tmp_path / "models" / "teacher" / "checkpoint.pt", weights_only=True)
    assert ck["step"] == 1 and ck["config"]["training"]["objective"] == "diffusion"
    assert ck["config"]["training"]["lr"] == 0.001


def test_sample_writes_grid_and_npz(tmp_path, capsys):
    from noctcm.training.trainer import ConsistencyTrainer
    cfg = load_config(overrides=[*TINY, "training.steps=1"])
    ck = ConsistencyTrainer(cfg, tmp_path / "m", data=torch.rand(16, 1, 8, 8) * 2 - 1, progress=False,
                            log_dvclive=False).fit()
    assert main(["sample", "--checkpoint", str(ck), "--num_samples", "6", "--num_steps", "2", "--t_mid", "1.0",
                 "--out", str(tmp_path / "s")]) == 0
    import json, numpy as np
    info = json.loads(capsys.readouterr().out)
    assert (tmp_path / "s" / "samples.png").is_file() and info["checkpoint_step"] == 1
    assert np.load(tmp_path / "s" / "samples.npz")["images"].shape == (6, 1, 8, 8)


def test_sample_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.pt" in err


def test_stage_commands_parse_and_a_bad_key_is_one_line(capsys):
    "`noctcm stage ...` (what dvc.yaml calls): every stage parses, and a bad key is one line and exit code 2."
    for argv in (["stage", "run", "distill"], ["stage", "classifiers"], ["stage", "models", "--jobs", "1"],
                 ["stage", "classifier"], ["stage", "evaluate", "--no-select"], ["stage", "resolution"],
                 ["stage", "report"]):
        assert build_parser().parse_args(argv).stage_command == argv[1]
    assert main(["stage", "evaluate", "--config", "nope.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.yaml" in err
