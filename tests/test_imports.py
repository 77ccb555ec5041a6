"""Imports only run downward: every module of `noctcm/` imports (at the top or inside a function) only modules that
stand above it in `LAYERS`, and every module is placed in `LAYERS` (a new module must say where it belongs).
CONTRIBUTING.md's module map is this list."""
import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1] / "noctcm"

LAYERS = [
    "",                                                     # noctcm/__init__.py (the version)
    "config",                                               # the schema and the table of methods: imports nothing of noctcm
    "utils.helpers", "utils.metrics",                       # generic: files, RNG, images; metrics through torch-fidelity
    "grids",                                                # one image on many grids (Fourier resampling, geometries)
    "trigflow", "noise",                                    # the maths of the forward process
    "models.time_conditioning", "models.neural_operators", "models.unet", "models.consistency_model", "models.ema",
    "data.datasets",
    "training.losses", "training.schedulers", "training.distillation", "training.methods", "training.meanflow",
    "training.runtime", "training.batches", "training.checkpoints", "training.history", "training.trainer",
    "generate",
    "resolution",                                           # the resolution stage's measures and judges
    "plots",
    "pipeline.runs", "pipeline.chains", "pipeline.evaluation", "pipeline.resolution", "pipeline.figures",
    "bench",
    "cli",
]


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def imported_modules(source: str, me: str, is_package: bool = False) -> set:
    "The noctcm modules that module `me` (source text `source`) imports anywhere, absolute or relative, in `LAYERS` terms."
    here = me.split(".") if me else []
    package = here if is_package else here[:-1]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
                names = [f"noctcm.{mod}" if mod else "noctcm"]
                if not node.module: names = [f"noctcm.{'.'.join([*base, a.name])}" for a in node.names]
            else:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n == "noctcm" or n.startswith("noctcm."):
                out.add(n[len("noctcm."):] if n != "noctcm" else "")
    return {m for m in map(_layer_of, out) if m is not None} - {me}


def _layer_of(name: str):
    "The entry of LAYERS that `name` (a module, or an attribute of one) belongs to; None for a bare package."
    if name in LAYERS: return name
    owners = [m for m in LAYERS if m and name.startswith(m + ".")]
    return max(owners, key=len) if owners else None


def sources():
    return [p for p in ROOT.rglob("*.py") if p.name != "_modidx.py" and not (p.name == "__init__.py" and p.stat().st_size == 0)]


def test_every_module_has_a_place():
    missing = sorted(module_name(p) for p in sources() if module_name(p) not in LAYERS)
    assert not missing, f"add these modules to LAYERS (and CONTRIBUTING.md's module map): {missing}"


def test_imports_only_run_downward():
    rank = {m: i for i, m in enumerate(LAYERS)}
    upward = []
    for p in sources():
        me = module_name(p)
        for m in imported_modules(p.read_text(), me, p.name == "__init__.py"):
            if m not in rank or rank[m] >= rank[me]:
                upward.append(f"{me} imports {m}")
    assert not upward, upward


def test_the_checker_sees_an_upward_import():
    "The test can fail: an import of a module further down the list, relative or absolute, at the top or in a function."
    helpers = (ROOT / "utils" / "helpers.py").read_text()
    assert imported_modules(helpers, "utils.helpers") == {"config"}
    assert "training.trainer" in imported_modules(helpers + "\nfrom ..training.trainer import train\n", "utils.helpers")
    assert "pipeline.runs" in imported_modules("def f():\n    import noctcm.pipeline.runs\n", "utils.helpers")
    assert imported_modules("from . import losses\n", "training.methods") == {"training.losses"}
