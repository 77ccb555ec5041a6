"""Re-execute the library notebooks that keep outputs (figures, small tables) and write those outputs in place.

    python tools/nb_outputs.py                          # every nbs/NN_*.ipynb that stores outputs today
    python tools/nb_outputs.py nbs/02_trigflow.ipynb    # one notebook (also the way to add outputs to a new one)
    python tools/nb_outputs.py --check                  # write nothing; exit 1 when a stored output is stale

Run it after changing a notebook that keeps outputs, then `nbdev_clean` (this script already writes clean JSON).
Cells run as `tests/test_notebooks.py` runs them (`#| gpu` cells only with CUDA, `#| eval: false` never; `#| slow`
cells run), one CPU thread, figures as plain PNG (no retina doubling). A cell that did not run keeps its stored
outputs. The same functions compare stored and fresh outputs in the tests: text equal after stripping (numbers to 3
significant digits or 5e-4), images decoded, equal in size and within a small mean pixel difference (float rounding
differs between CPUs).

Library notebooks keep outputs only where they show what they implement; the experiment notebooks (train, evaluate,
explore) keep none, and all of nbs/ stays within `BUDGET` bytes of outputs (`tests/test_notebooks.py` checks both).
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
NBS = ROOT / "nbs"
BUDGET = 3_000_000                       # bytes of stored outputs in all of nbs/
IMAGE_TOL = 2 / 255                      # mean absolute pixel difference (RGB in [0, 1]) allowed between runs
EXPERIMENT_NOTEBOOKS = ("train", "evaluate", "explore")


def library_notebooks() -> list:
    return sorted(NBS.glob("[0-9][0-9]*_*.ipynb"))


def output_bytes(nb: dict) -> int:
    "Size of a notebook's stored outputs, as JSON."
    return sum(len(json.dumps(c.get("outputs", []))) for c in nb["cells"] if c["cell_type"] == "code"
               and c.get("outputs"))


def has_outputs(nb: dict) -> bool:
    return any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


def skip_flags() -> list:
    flags = ["slow"] if os.environ.get("NOCTCM_SKIP_SLOW") == "1" else []
    try:
        import torch
        if not torch.cuda.is_available(): flags.append("gpu")
    except ImportError:
        flags.append("gpu")
    return flags


def execute(path, flags=None) -> tuple:
    """Run notebook `path` as nbdev's `test_nb` does (cwd = nbs/, repo root on sys.path, IN_TEST=1) but keep the
    outputs. Returns `(outputs, shell)`: `outputs` maps the index of every cell that ran to its outputs (plain
    dicts, cleaned as `nbdev_clean` cleans them); `shell.exc` is the exception that stopped the run, or None."""
    from execnb.shell import CaptureShell
    from fastcore.xtras import working_directory
    from nbdev.clean import clean_nb
    from nbdev.process import NBProcessor
    from nbdev.frontmatter import FrontmatterProc
    path = pathlib.Path(path).resolve()
    flags = set(skip_flags() if flags is None else flags)
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
    os.environ.setdefault("IN_TEST", "1")
    nb = NBProcessor(path, procs=FrontmatterProc, process=True).nb

    def no_eval(cell):
        if cell.cell_type != "code": return True
        if "nbdev_export" + "(" in cell.source: return True
        direc = getattr(cell, "directives_", {}) or {}
        if direc.get("eval:", [""])[0].lower() == "false": return True
        return bool(flags & direc.keys())

    ran = {}
    shell = CaptureShell(path, mpl_format="png")
    shell.run_cell("import torch as _t; _t.set_num_threads(1); del _t")
    try:
        with working_directory(path.parent):
            shell.run_all(nb, exc_stop=True, preproc=no_eval, postproc=lambda c: ran.setdefault(c.idx_, c))
    except BaseException as e:   # noqa: BLE001 (the caller reports it with shell.prettytb)
        shell.exc = e
    outs = {}
    for i, c in ran.items():
        kept = [o for o in json.loads(json.dumps(c.get("outputs", []) or []))   # warnings name local paths: dropped
                if not (o.get("output_type") == "stream" and o.get("name") == "stderr")]
        cell = {"cell_type": "code", "source": [], "metadata": {}, "outputs": kept}
        clean_nb({"cells": [cell], "metadata": {}}, clean_ids=True)
        outs[i] = cell["outputs"]
    return outs, shell


def _text(v) -> str:
    return ("".join(v) if isinstance(v, list) else str(v)).strip()


_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def same_text(a: str, b: str, rel: float = 1e-3, atol: float = 5e-4) -> bool:
    """Equal text, except that numbers need only agree to `rel` or `atol` (float rounding differs between CPUs:
    a printed `tensor(0.1228)` may read 0.1229 elsewhere, a rounding residual 1e-6 may read 3e-6)."""
    a, b = _text(a), _text(b)
    if a == b: return True
    if _NUMBER.split(a) != _NUMBER.split(b): return False
    x, y = _NUMBER.findall(a), _NUMBER.findall(b)
    return len(x) == len(y) and all(abs(float(u) - float(v)) <= max(rel * max(abs(float(u)), abs(float(v))), atol)
                                    for u, v in zip(x, y))


def _image(b64: str):
    import numpy as np
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.float64) / 255


def differences(stored: list, fresh: list) -> list:
    "Why two cells' outputs differ (empty when they agree): same kinds, text equal, images within `IMAGE_TOL`."
    kind = lambda o: (o.get("output_type"), o.get("name"), tuple(sorted(o.get("data", {}))))
    if [kind(o) for o in stored] != [kind(o) for o in fresh]:
        return [f"output kinds {[kind(o) for o in stored]} != {[kind(o) for o in fresh]}"]
    diffs = []
    for a, b in zip(stored, fresh):
        if "text" in a and not same_text(a["text"], b["text"]):
            diffs.append(f"{a.get('name')} text {_text(a['text'])[:300]!r} != {_text(b['text'])[:300]!r}")
        for k, v in a.get("data", {}).items():
            w = b["data"][k]
            if k.startswith("image/") and "svg" not in k:
                x, y = _image(_text(v)), _image(_text(w))
                if x.shape != y.shape: diffs.append(f"{k} size {x.shape} != {y.shape}")
                elif (d := float(abs(x - y).mean())) > IMAGE_TOL: diffs.append(f"{k} mean pixel difference {d:.4f}")
            elif k.startswith("text/") and k != "text/html" and not same_text(v, w):
                diffs.append(f"{k} {_text(v)[:300]!r} != {_text(w)[:300]!r}")
    return diffs


def stale_cells(nb: dict, outs: dict) -> dict:
    "Cells whose stored outputs differ from a fresh run's (cells that did not run are not compared)."
    res = {}
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "code" or i not in outs: continue
        if d := differences(c.get("outputs", []), outs[i]): res[i] = d
    return res


def write(path, outs: dict) -> None:
    path = pathlib.Path(path)
    nb = json.loads(path.read_text())
    for i, o in outs.items(): nb["cells"][i]["outputs"] = o
    path.write_text(json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n")   # as nbdev_clean writes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="notebooks to run (default: every library notebook with outputs)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 when a stored output is stale")
    a = ap.parse_args(argv)
    paths = [pathlib.Path(p) for p in a.notebooks] or [p for p in library_notebooks()
                                                       if has_outputs(json.loads(p.read_text()))]
    bad = 0
    for p in paths:
        outs, shell = execute(p, flags=[f for f in skip_flags() if f != "slow"])
        if shell.exc is not None:
            print(shell.prettytb(fname=p), file=sys.stderr); bad += 1; continue
        nb = json.loads(p.read_text())
        stale = stale_cells(nb, outs)
        if a.check:
            for i, d in stale.items(): print(f"{p.name} cell {i}: " + "; ".join(d))
            bad += bool(stale)
        else:
            write(p, outs)
            print(f"{p.name}: {len(stale)} cell(s) changed, {output_bytes(json.loads(p.read_text()))} bytes of outputs")
    total = sum(output_bytes(json.loads(p.read_text())) for p in NBS.glob("*.ipynb"))
    print(f"nbs/ outputs: {total} bytes (budget {BUDGET})")
    return 1 if bad or total > BUDGET else 0


if __name__ == "__main__":
    sys.exit(main())
