"""Run the tests that live inside the library notebooks (nbs/NN_*.ipynb), one pytest case per notebook.

Cells flagged `#| slow` run unless NOCTCM_SKIP_SLOW=1; cells flagged `#| gpu` run only when CUDA is present.
Experiment notebooks (train, evaluate, explore) are run with tiny parameters by tests/test_experiment_notebooks.py.
"""
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (ROOT / "nbs").glob("[0-9][0-9]*_*.ipynb"))


def _skip_flags():
    flags = []
    if os.environ.get("NOCTCM_SKIP_SLOW") == "1":
        flags.append("slow")
    try:
        import torch
        if not torch.cuda.is_available():
            flags.append("gpu")
    except ImportError:
        flags.append("gpu")
    return flags


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(nb):
    from nbdev.test import test_nb
    ok, _ = test_nb(nb, skip_flags=_skip_flags(), showerr=True, basepath=str(ROOT))
    assert ok, f"a cell in {nb.name} failed (traceback above)"
