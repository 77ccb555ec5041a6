"""End-to-end test of `noctcm bench` at tiny sizes: every row is printed with a positive, finite number, the
SpectralConv2d / neuraloperator equality check passes, results files are written. No timing assertions."""
import contextlib
import io
import math
import re
import subprocess
import sys

import pytest
import torch

from noctcm import bench

TINY = ["data.resolution=8", "data.resolutions=[8,10]", "model.model_channels=8", "model.channel_mult=[1,2]", "model.attention_resolutions=[4]",
        "model.fno_modes=2", "model.weight_head_channels=8", "training.batch_size=2", "sampling.teacher_steps=3"]

FIGURES = ["sCT step ÷ diffusion step", "sCT step (jvp='fused') ÷ diffusion step", "sCD step ÷ diffusion step",
           "ECT step ÷ diffusion step", "JVP ÷ forward (no grad)", "FourierConvBlock ÷ 3×3 conv block", "1-step sampling ÷ bare forward",
           "teacher Heun 5 NFE ÷ 1-step sampling", "peak memory of a diffusion step", "peak memory of a sct step",
           "peak memory of a scd step", "peak memory of a ect step", "peak memory of a sct (jvp='fused') step"]


def _table_rows(text):
    "figure -> (value string, detail) for every table row."
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| figure") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = (cells[1], cells[3])
    return rows


def _number(s):
    m = re.match(r"([-+0-9.eE]+|—)", s)
    return float("nan") if m.group(1) == "—" else float(m.group(1))


@pytest.fixture(scope="module")
def bench_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "result.md"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = bench.main(["--repeats", "2", "--warmup", "1", "--threads", "1", "--spectral", "B2C4N8M4,B1C3N12M6",
                         "--no-memory-subprocess", "--out", str(out), *TINY])
    assert rc == 0
    return buf.getvalue(), out


def test_every_row_printed_with_positive_finite_numbers(bench_output):
    text, _ = bench_output
    rows = _table_rows(text)
    for fig in FIGURES:
        hits = [k for k in rows if k.startswith(fig)]
        assert hits, f"row {fig!r} missing from:\n{text}"
        for k in hits:
            v = _number(rows[k][0])
            if "skipped" in rows[k][1]:
                continue
            if k.startswith("peak memory"):
                assert math.isfinite(v) and v >= 0, (k, rows[k])
                saved = float(re.search(r"saved activations ([0-9.]+) MiB", rows[k][1]).group(1))
                assert saved > 0, (k, rows[k])
            else:
                assert math.isfinite(v) and v > 0, (k, rows[k])
    assert "Machine: device=cpu" in text and "torch=" in text


def test_spectral_rows_and_equality_check(bench_output):
    text, _ = bench_output
    rows = _table_rows(text)
    spec = [k for k in rows if k.startswith("SpectralConv2d ÷ neuraloperator")]
    if not bench.neuralop_available():
        assert spec and "skipped: neuraloperator not installed" in rows[spec[0]][1]
        return
    assert len(spec) == 3  # two configs + the median
    for k in spec:
        assert _number(rows[k][0]) > 0
    for k in spec[:2]:
        err = float(re.search(r"rel\. err ([0-9.e+-]+)", rows[k][1]).group(1))
        assert err < 1e-5


def test_results_file_written(bench_output):
    text, out = bench_output
    assert out.read_text() == text.rstrip("\n") + "\n" or out.read_text().strip() == text.strip()


def test_equality_check_catches_a_wrong_mapping(monkeypatch):
    "The bench refuses to time implementations that disagree (here: the twin gets the row blocks swapped)."
    pytest.importorskip("neuralop")
    orig = bench.neuralop_twin

    def wrong_twin(conv):
        no = orig(conv)
        with torch.no_grad():
            w = no.weight.tensor
            m1 = conv.modes1
            w.copy_(torch.cat([w[:, :, m1:], w[:, :, :m1]], 2))
        return no
    monkeypatch.setattr(bench, "neuralop_twin", wrong_twin)
    with pytest.raises(AssertionError, match="disagree"):
        bench.bench_spectral([(2, 4, 8, 4)], torch.device("cpu"), 1, 0, "cpu")


def test_graceful_without_neuraloperator(monkeypatch):
    monkeypatch.setattr(bench, "neuralop_available", lambda: False)
    rows = bench.bench_spectral([(2, 4, 8, 4)], torch.device("cpu"), 1, 0, "cpu")
    assert len(rows) == 1 and "skipped" in rows[0]["detail"] and math.isnan(rows[0]["value"])
    assert "| — |" in bench.format_table(bench.machine_info(torch.device("cpu")), rows)


def test_interleaved_times_counts_and_rotation():
    order = []
    fns = {k: (lambda k=k: order.append(k)) for k in "abc"}
    t = bench.interleaved_times(fns, repeats=3, warmup=1, timer="wall")
    assert {k: len(v) for k, v in t.items()} == {"a": 3, "b": 3, "c": 3}
    assert order == list("abc") + list("abc") + list("bca") + list("cab")
    with pytest.raises(ValueError):
        bench.interleaved_times(fns, repeats=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="B64C64N32M24"):
        bench.parse_spectral_configs("B64C64")
    with pytest.raises(ValueError, match="even"):
        bench.parse_spectral_configs("B2C4N8M3")
    with pytest.raises(ValueError, match="CUDA"):
        bench.main(["--precision", "bf16", "--only", "steps", "--no-write", *TINY])
    with pytest.raises(ValueError, match="unknown sections"):
        bench.main(["--only", "steps,bogus", "--no-write", *TINY])


def test_cli_entry_point_runs_a_section():
    "`python -m noctcm.bench` works as a script (the `noctcm bench` CLI calls the same `main`)."
    r = subprocess.run([sys.executable, "-m", "noctcm.bench", "--only", "sampling", "--repeats", "1", "--warmup", "0",
                        "--no-write", *TINY], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "1-step sampling ÷ bare forward" in r.stdout


def test_memory_in_a_fresh_subprocess():
    "The CPU memory figure runs each objective in a fresh `python -m noctcm.bench --memory-child` process."
    cfg = bench.load_config(None, overrides=TINY)
    rows = bench.bench_memory(cfg, ["sct"], torch.device("cpu"), 2, "fp32", TINY, subprocess_cpu=True)
    assert len(rows) == 1 and rows[0]["figure"] == "peak memory of a sct step"
    assert math.isfinite(rows[0]["value"]) and rows[0]["value"] >= 0
    assert float(re.search(r"saved activations ([0-9.]+) MiB", rows[0]["detail"]).group(1)) > 0
