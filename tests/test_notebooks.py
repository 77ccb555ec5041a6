"""Run the tests that live inside the library notebooks (nbs/NN_*.ipynb), one pytest case per notebook, and check
that the outputs the notebooks keep (figures, small tables) are what the code makes today.

Cells flagged `#| slow` run unless NOCTCM_SKIP_SLOW=1; cells flagged `#| gpu` run only when CUDA is present.
A notebook is run as nbdev's `test_nb` runs it, but through `tools/nb_outputs.py` so that the same run also gives
each cell's fresh outputs: where a notebook stores outputs, every cell that ran must reproduce its stored outputs
(text equal, numbers to 3 significant digits or 5e-4, images decoded and within a mean pixel difference of 2/255).
A stale output fails with the cells named; `python tools/nb_outputs.py nbs/NN_name.ipynb` rewrites them.
Experiment notebooks (train, evaluate, explore) are run with tiny parameters by tests/test_experiment_notebooks.py;
they keep no outputs, and all of nbs/ keeps at most `nb_outputs.BUDGET` bytes of outputs (tests below).
"""
import importlib.util
import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").glob("[0-9][0-9]*_*.ipynb"))
_spec = importlib.util.spec_from_file_location("nb_outputs", ROOT / "tools" / "nb_outputs.py")
nb_outputs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nb_outputs)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(nb):
    outs, shell = nb_outputs.execute(nb)
    if shell.exc is not None:
        sys.stderr.write(shell.prettytb(fname=nb) + "\n")
    assert shell.exc is None, f"a cell in {nb.name} failed (traceback above)"
    stored = json.loads(nb.read_text())
    if nb_outputs.has_outputs(stored):
        stale = nb_outputs.stale_cells(stored, outs)
        assert not stale, (f"{nb.name}: stored outputs are stale (run `python tools/nb_outputs.py nbs/{nb.name}`):\n"
                           + "\n".join(f"  cell {i}: " + "; ".join(d) for i, d in stale.items()))


def test_output_budget():
    "All of nbs/ keeps at most BUDGET bytes of outputs; the experiment notebooks keep none."
    sizes = {p.name: nb_outputs.output_bytes(json.loads(p.read_text())) for p in (ROOT / "nbs").glob("*.ipynb")}
    assert sum(sizes.values()) <= nb_outputs.BUDGET, sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    for name in nb_outputs.EXPERIMENT_NOTEBOOKS:
        assert sizes[f"{name}.ipynb"] == 0, f"nbs/{name}.ipynb keeps outputs: clear them (Jupyter: Clear All Outputs)"
    assert sum(1 for p in NOTEBOOKS if nb_outputs.has_outputs(json.loads(p.read_text()))) >= 8


def test_stale_outputs_are_caught():
    "The comparison is not vacuous: a changed number, a changed text or a different picture is reported."
    import base64, io
    import numpy as np
    from PIL import Image

    def png(a):
        buf = io.BytesIO(); Image.fromarray(a.astype(np.uint8)).save(buf, format="png")
        return base64.b64encode(buf.getvalue()).decode()
    img = np.full((20, 30, 3), 200.0)
    out = lambda text, a: [{"output_type": "stream", "name": "stdout", "text": [text]},
                           {"output_type": "display_data", "metadata": {},
                            "data": {"image/png": png(a), "text/plain": ["<Figure>"]}}]
    same = nb_outputs.differences(out("loss 0.123456 at 5\n", img), out("loss 0.1234561 at 5", img + 1))
    assert same == []                                   # rounding in the last digits, 1/255 per pixel: the same
    assert nb_outputs.differences(out("loss 0.123456 at 5", img), out("loss 0.13 at 5", img))
    assert nb_outputs.differences(out("loss 0.123456 at 5", img), out("loss 0.123456 at 6", img))
    img2 = img.copy(); img2[:, :15] = 0
    assert nb_outputs.differences(out("x", img), out("x", img2))
    assert nb_outputs.differences(out("x", img), out("x", img[:10]))
    assert nb_outputs.differences(out("x", img), out("x", img)[:1])
