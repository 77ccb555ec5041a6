"""The error boundary, generated rather than listed (issue 19): every option of every `noctcm` subcommand, walked from
the real argparse parsers (`noctcm.cli.build_parser`, and `noctcm.bench._parser` behind `noctcm bench`), and every
key of the config schema (`noctcm.config`, the leaves of `params.yaml`) get each kind of invalid value that applies to
them: a wrong type, a value out of range, an unknown choice, a missing file, a device this machine does not have, an
unknown option or key, a missing value or a missing required option.

Every case runs in-process (`noctcm.cli.main(argv)`, a few milliseconds each) in a scratch workspace and must end with
exit code 2 and exactly one stderr line, `noctcm: error: ...`, that names the option, key or path; no traceback; and
nothing written, neither in the workspace nor in the repository. `tests/test_bad_inputs.py` keeps the hand-written
cases that need real subprocesses (papermill notebooks, full disks, killed runs).

`python tests/test_error_boundary.py` prints every generated case with the line it prints."""
import argparse
import contextlib
import dataclasses
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import traceback
import typing

import numpy as np
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
MISSING = "does-not-exist"            # every missing path in the cases has this in its name

TINY_MODEL = {"model_channels": 8, "channel_mult": [1, 2], "attention_resolutions": [], "num_heads": 1,
              "fno_levels": [0], "fno_modes": 2, "weight_head_channels": 8}


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


# ---------------------------------------------------------------- the workspace
def make_workspace(w: pathlib.Path) -> pathlib.Path:
    """params.yaml whose data root does not exist (a bad value that slipped through cannot start anything heavy: it
    stops at the data, names the wrong thing and fails the case), a tiny checkpoint and a folder of images."""
    import torch
    from PIL import Image
    from noctcm.config import load_config, to_dict
    from noctcm.models.consistency_model import build_model
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["root"] = "no-data-here"
    (w / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    cfg = load_config(overrides=[f"model.{k}={json.dumps(v)}" for k, v in TINY_MODEL.items()])
    m = build_model(cfg)
    torch.save({"format": "noctcm/1", "config": to_dict(cfg), "step": 0, "model": m.state_dict(),
                "ema_model": m.state_dict()}, w / "ck.pt")
    flat = w / "flat"; flat.mkdir()
    g = np.random.RandomState(0)
    for i in range(12): Image.fromarray(g.randint(0, 256, (8, 8, 3)).astype(np.uint8)).save(flat / f"{i:02d}.png")
    return w


def listing(d: pathlib.Path) -> dict:
    "Every file and folder under `d` with its size and mtime."
    out = {}
    for base, dirs, files in os.walk(d):
        for n in dirs + files:
            p = pathlib.Path(base) / n
            st = p.stat()
            out[str(p.relative_to(d))] = (st.st_size, st.st_mtime_ns)
    return out


def repo_state() -> tuple:
    "The repository's tracked files (size, mtime) and `git status` (untracked files included)."
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True).stdout.split("\0")
    stats = {f: ((ROOT / f).stat().st_size, (ROOT / f).stat().st_mtime_ns) for f in files if f and (ROOT / f).exists()}
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                            text=True).stdout
    return stats, status


# ---------------------------------------------------------------- running one case in-process
def run_cli(argv) -> tuple:
    "`(exit code, stdout, stderr)` of `noctcm.cli.main(argv)`; an exception that escapes main is returned as text."
    from noctcm.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main(list(argv))
        except SystemExit as e: rc = e.code if isinstance(e.code, int) else 1
        except BaseException:                               # a bug: keep its traceback for the report
            rc, err = "exception", io.StringIO(err.getvalue() + traceback.format_exc())
    return rc, out.getvalue(), err.getvalue()


def check_case(argv, needle, w) -> str | None:
    "None if the case ends as it should, else what went wrong."
    before = listing(w)
    rc, out, err = run_cli(argv)
    lines = err.splitlines()
    if "Traceback" in err: return f"traceback:\n{err[-3000:]}"
    if rc != 2: return f"exit {rc} (want 2); stderr: {err[-600:]!r}; stdout: {out[-300:]!r}"
    if len(lines) != 1: return f"{len(lines)} stderr lines (want 1): {err[-1000:]!r}"
    if not lines[0].startswith("noctcm: error: "): return f"not a `noctcm: error:` line: {lines[0]!r}"
    if needle not in lines[0]: return f"{needle!r} not named in {lines[0]!r}"
    after = listing(w)
    if after != before:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        return f"the workspace changed: {changed[:8]}"
    return None


# ---------------------------------------------------------------- cases from the argparse parsers
def _w(argv, w): return [a.replace("{w}", str(w)) for a in argv]

# a valid command line of each subcommand (the bad value is appended or swapped in); {w} = the workspace
BASE = {
    ("data", "fetch"): ["data", "fetch", "folder", "--src", "{w}/flat", "--root", "{w}/fetched"],
    ("data", "prepare"): ["data", "prepare", "--config", "{w}/params.yaml", "--out", "{w}/prepared"],
    ("train",): ["train", "--config", "{w}/params.yaml", "--out", "{w}/run", "--no-progress"],
    ("sample",): ["sample", "--checkpoint", "{w}/ck.pt", "--out", "{w}/samples", "--num_samples", "2"],
    ("evaluate",): ["evaluate", "--checkpoint", "{w}/ck.pt", "--out", "{w}/metrics.json", "--num_samples", "2"],
    ("config",): ["config", "--config", "{w}/params.yaml"],
    ("bench",): ["bench", "--config", "{w}/params.yaml", "--no-write", "--quick", "--only", "block", "--repeats", "1",
                 "--warmup", "0"],
}
for _s in ("run", "classifiers", "models", "classifier", "evaluate", "resolution", "report"):
    BASE[("stage", _s)] = ["stage", _s, *(["train"] if _s == "run" else []), "--config", "{w}/params.yaml"]

# what each option without a type or choices holds: "input" (a file that must exist), "output" (written or
# optional: not checked before the command runs), "device", or a bad value that the command must refuse.
# Keyed by dest, or by (subcommand, dest) where one name means different things. A new option fails
# `test_every_option_is_classified` until it is listed here.
STRING_OPTIONS = {
    "config": "input", "preset": "input", "checkpoint": "input", "teacher_checkpoint": "input", "src": "input",
    "test_src": "input", "root": "output", "out": "output", "samples": "output", "selection": "output",
    "figures": "output", "classifiers": "output", ("stage", "classifier", "metrics"): "output",
    ("stage", "report", "metrics"): "output", "device": "device", ("evaluate", "metrics"): ["fdi", "FID2"],
    ("bench", "spectral"): ["B64", "B8C8N8M3"], ("bench", "only"): ["nothing"],
}
BENCH_INTERNAL = {"memory_child"}        # argparse.SUPPRESS: the bench's own subprocess protocol


def parsers():
    "`(subcommand path, parser)` of every leaf parser: `noctcm`'s subcommands and `noctcm bench`'s own parser."
    from noctcm import bench
    from noctcm.cli import build_parser
    def walk(p, path):
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs: yield path, p; return
        for a in subs:
            for name, sp in a.choices.items(): yield from walk(sp, path + (name,))
    for path, p in walk(build_parser(), ()):
        if path == ("bench",): yield path, bench._parser()
        elif path != ("notebook",): yield path, p        # papermill's click command line: tests/test_bad_inputs.py
    

def _kind_of(path, action):
    for key in (path + (action.dest,), (path[0], action.dest), action.dest):
        if key in STRING_OPTIONS: return STRING_OPTIONS[key]
    return None


def _without(argv, opt):
    "`argv` without option `opt` and its value."
    i = argv.index(opt)
    return argv[:i] + argv[i + 2:]


def option_cases(w) -> list:
    "`(id, argv, needle)` for every option of every subcommand and every kind of bad value that applies to it."
    cases = []
    add = lambda name, argv, needle: cases.append((name, _w(argv, w), needle.replace("{w}", str(w))))
    from noctcm.cli import build_parser
    top = build_parser()
    add("noctcm-unknown-command", ["fly"], "fly")
    add("noctcm-unknown-option", ["--no-such-option", "config"], "--no-such-option")
    for path, p in parsers():
        base, tag = BASE[path], "-".join(path)
        add(f"{tag}-unknown-option", [*base, "--no-such-option", "1"], "--no-such-option")
        if path[0] in ("data", "stage"):
            add(f"{tag}-unknown-action", [path[0], "fly"], "fly")
        for a in p._actions:
            if isinstance(a, (argparse._HelpAction, argparse._VersionAction)) or a.dest in BENCH_INTERNAL: continue
            if not a.option_strings:                       # positionals: a choice, or config overrides
                if a.choices:
                    i = next(i for i, t in enumerate(base) if t in a.choices)
                    add(f"{tag}-{a.dest}-bad-choice", [*base[:i], "nonsense", *base[i + 1:]], "nonsense")
                continue
            opt = a.option_strings[0]
            name = f"{tag}-{opt.lstrip('-')}"
            if a.required:
                add(f"{name}-missing", _without(base, opt), opt)
            if a.nargs == 0:                               # a flag
                if opt.startswith("--"): add(f"{name}-given-a-value", [*base, f"{opt}=1"], opt)
                continue
            add(f"{name}-no-value", [*base, opt], opt)
            if a.type in (int, float):
                for o in a.option_strings: add(f"{name}-not-a-number{o}", [*base, o, "abc"], opt)
                if a.type is int: add(f"{name}-not-an-int", [*base, opt, "1.5"], opt)
                add(f"{name}-negative", [*base, opt, "-1"], opt)
                continue
            if a.choices:
                add(f"{name}-bad-choice", [*base, opt, "nonsense"], opt)
                continue
            kind = _kind_of(path, a)
            if kind == "input":
                bad = f"{{w}}/{MISSING}.yaml"
                add(f"{name}-missing-file", [*base, opt, bad], MISSING)
            elif kind == "device":
                for dev in (["cuda", "cuda:7"] if not _cuda() else []) + ["tpu", "cuda:x", "gpu0"]:
                    add(f"{name}-{dev}", [*base, opt, dev], opt)
            elif isinstance(kind, list):
                for v in kind: add(f"{name}-{v}", [*base, opt, v], opt)
    return cases


# ---------------------------------------------------------------- cases from the config schema
def schema_keys() -> dict:
    "Every leaf key of the schema -> its declared type (the text of the annotation, e.g. 'Optional[float]')."
    from noctcm.config import Config
    out = {}
    for sec in dataclasses.fields(Config):
        for f in dataclasses.fields(sec.default_factory):
            out[f"{sec.name}.{f.name}"] = f.type if isinstance(f.type, str) else typing.get_type_hints(sec.default_factory)[f.name]
    return out


NEGATIVE_OK = {"training.P_mean", "teacher.P_mean"}    # log-normal means: any real number
ABOVE_RANGE = {"model.dropout": "1.0", "training.ema_beta": "1.0", "training.ema_sigma_rel": "0.5", "distillation.ema_sigma_rel": "0.5",
               "training.meanflow_ratio": "1.5", "training.ect_q": "1.0", "sampling.t_max": "2.0",
               "training.seed": "4294967296", "sampling.seed": "4294967296", "training.betas": "[0.9, 1.0]",
               "sampling.t_mid": "[2.0]", "data.resolution": "3", "data.resolutions": "[16, 3]",
               "evaluation.resolution_scales": "[]", "evaluation.steps": "[]", "model.channel_mult": "[]",
               "evaluation.metrics": "[]", "data.channels": "2"}
PATH_KEYS = {  # keys naming a file that must exist -> a command that reads it before anything heavy
    "distillation.teacher_checkpoint": ["train", "--config", "{w}/params.yaml", "--stage", "distill", "--out", "{w}/run"],
    "data.root": ["data", "prepare", "--config", "{w}/params.yaml", "--out", "{w}/prepared"],
}


def config_cases(w) -> list:
    "`(id, argv, needle)`: each key of the schema with each kind of bad value its type and its rules allow."
    from noctcm.config import CHOICES, SECTIONS
    cfg = ["config"]                                      # the schema's defaults: the cheapest full validation
    cases = []
    for key, t in schema_keys().items():
        bads = []                                           # (kind, value)
        t = t.replace("typing.", "")
        scalar = t.replace("Optional[", "").rstrip("]")
        if t.startswith("List["):
            item = t[5:-1]
            bads += [("not-a-list", "abc"), ("bad-item", "[abc]" if item != "str" else "[[1]]")]
            if item in ("int", "float") and key not in NEGATIVE_OK: bads.append(("negative-item", "[-1]"))
        elif scalar in ("int", "float"):
            bads += [("not-a-number", "abc"), ("nan", ".nan") if scalar == "float" else ("not-an-int", "1.5")]
            if key not in NEGATIVE_OK: bads.append(("negative", "-1"))
        elif scalar == "bool":
            bads += [("not-a-bool", "maybe"), ("a-list", "[1]")]
        elif scalar == "str":
            bads.append(("a-list", "[1, 2]"))
            if key == "training.device": bads += [("tpu", "tpu"), ("cuda-x", "cuda:x")]
        else:
            raise AssertionError(f"{key}: type {t} has no bad values here; add them")
        if key in CHOICES: bads.append(("bad-choice", "nonsense"))
        if key in ABOVE_RANGE: bads.append(("out-of-range", ABOVE_RANGE[key]))
        for kind, v in bads: cases.append((f"config-{key}-{kind}", [*cfg, f"{key}={v}"], key))
        if key in PATH_KEYS:
            cases.append((f"config-{key}-missing-path", _w([*PATH_KEYS[key], f"{key}={{w}}/{MISSING}"], w), MISSING))
    for sec in SECTIONS: cases.append((f"config-{sec}-unknown-key", [*cfg, f"{sec}.no_such_key=1"], f"{sec}.no_such_key"))
    cases.append(("config-unknown-section", [*cfg, "no_such_section.x=1"], "no_such_section"))
    cases.append(("config-override-without-value", [*cfg, "training.steps"], "training.steps"))
    if not _cuda():                                       # the device exists only when the run starts
        for dev in ("cuda", "cuda:3"):
            cases.append((f"train-training.device-{dev}", [*_w(BASE[("train",)], w), f"training.device={dev}"],
                          "training.device"))
    return cases


def all_cases(w) -> list:
    return option_cases(w) + config_cases(w)


# ---------------------------------------------------------------- the tests
@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    w = make_workspace(tmp_path_factory.mktemp("boundary"))
    cwd = os.getcwd(); os.chdir(w)                        # relative default paths (models/, results/) land here
    yield w
    os.chdir(cwd)


def test_schema_and_params_yaml_have_the_same_keys():
    def leaves(d, pre=""):
        for k, v in d.items():
            if isinstance(v, dict): yield from leaves(v, pre + k + ".")
            else: yield pre + k
    assert set(leaves(yaml.safe_load((ROOT / "params.yaml").read_text()))) == set(schema_keys())


def test_every_option_is_classified():
    "Every option that takes a string is either checked by a generated case or listed as an output (see above)."
    unknown = [(path, a.dest) for path, p in parsers() for a in p._actions
               if a.option_strings and a.nargs != 0 and a.type is None and not a.choices
               and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))
               and a.dest not in BENCH_INTERNAL and _kind_of(path, a) is None]
    assert not unknown, f"classify these options in STRING_OPTIONS: {unknown}"


def test_every_generated_bad_input_is_one_line(ws):
    repo_before = repo_state()
    cases = all_cases(ws)
    assert len({c[0] for c in cases}) == len(cases), "duplicate case ids"
    failures = []
    for name, argv, needle in cases:
        why = check_case(argv, needle, ws)
        if why: failures.append(f"{name}: noctcm {' '.join(argv)}\n    {why}")
    print(f"{len(cases)} bad inputs tried ({len(option_cases(ws))} from the argparse parsers, "
          f"{len(config_cases(ws))} from the config schema)")
    assert repo_state() == repo_before, "the repository changed"
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures[:40])
    assert len(cases) >= 300, f"only {len(cases)} cases generated: is the parser walk or the schema walk broken?"
    kinds = {n.split("-", 1)[0] for n, _, _ in cases}
    assert {"data", "train", "sample", "evaluate", "config", "stage", "bench"} <= kinds, kinds


@pytest.mark.parametrize("argv, needle", [
    (["evaluate", "--checkpoint", "{w}/ck.pt", "--metrics", "fdi"], "--metrics: unknown metric(s) ['fdi']"),
    (["sample", "--checkpoint", "{w}/ck.pt", "--out", "{w}/s", "--device", "cuda"], "--device: 'cuda'"),
], ids=["evaluate-metrics-fdi", "sample-device-cuda"])
def test_the_two_escapes_of_issue_19(ws, argv, needle):
    if "cuda" in argv and _cuda(): pytest.skip("this machine has CUDA")
    assert check_case(_w(argv, ws), needle, ws) is None, run_cli(_w(argv, ws))


# property-based: any word that is not a number, and any negative number, for any numeric key
try:
    from hypothesis import HealthCheck, given, settings, strategies as st
except ImportError:                                      # hypothesis is a dev extra; the generated table stands alone
    given = None

if given is not None:
    def _numeric_keys(negative_ok=True):
        return sorted(k for k, t in schema_keys().items() if t.replace("Optional[", "").rstrip("]") in ("int", "float")
                      and (negative_ok or k not in NEGATIVE_OK))

    _SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                         suppress_health_check=[HealthCheck.function_scoped_fixture])

    @_SETTINGS
    @given(key=st.sampled_from(_numeric_keys()), word=st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
    def test_a_word_for_a_number_is_one_line(ws, key, word):
        value = yaml.safe_load(word)
        if not isinstance(value, str): return               # YAML reads yes/no/null/... as other types
        assert check_case(["config", f"{key}={word}"], key, ws) is None

    @_SETTINGS
    @given(key=st.sampled_from(_numeric_keys(negative_ok=False)),
           value=st.one_of(st.integers(max_value=-1), st.floats(max_value=-1e-6, allow_infinity=False, allow_nan=False)))
    def test_a_negative_number_is_one_line(ws, key, value):
        assert check_case(["config", f"{key}={value!r}"], key, ws) is None


if __name__ == "__main__":       # every generated case and the line it prints
    import tempfile
    w = make_workspace(pathlib.Path(tempfile.mkdtemp()))
    os.chdir(w)
    cases = all_cases(w)
    for name, argv, needle in cases:
        rc, _, err = run_cli(argv)
        print(f"| `{name}` | {rc} | `{err.strip()[-300:]}` |".replace(str(w), "W"))
    print(f"{len(cases)} bad inputs tried")
