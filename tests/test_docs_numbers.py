"""Numbers from one source: every table and quoted number that README.md and docs/*.md mark
(`<!-- table: NAME -->` ... `<!-- end table -->`, `<!-- value: NAME -->...<!-- end value -->`) equals what
`tools/results_tables.py` renders from the committed results/*.json and benchmarks/results/*.json.

After a new `dvc repro` (or benchmark run): `python tools/results_tables.py`, then commit the JSON and the documents.
"""
import importlib.util
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("results_tables", ROOT / "tools" / "results_tables.py")
rt = importlib.util.module_from_spec(spec); spec.loader.exec_module(rt)


def test_committed_blocks_match_their_json():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "results_tables.py"), "--check"], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_block_has_a_renderer_and_readme_has_the_summary():
    names = set()
    for p in rt.documents():
        t = p.read_text()
        names |= {m.group("name") for m in rt.MARK.finditer(t)} | {m.group("name") for m in rt.VALUE.finditer(t)}
    assert names <= set(rt.TABLES) | set(rt.VALUES), names - set(rt.TABLES) - set(rt.VALUES)
    readme = (ROOT / "README.md").read_text()
    assert "<!-- table: summary -->" in readme and "<!-- table: targets -->" in readme


def test_a_stale_block_is_named():
    "An edited number in a table or in a sentence makes --check name that block."
    text = (ROOT / "README.md").read_text()
    m = rt.MARK.search(text)
    body = rt.render(m.group(0))
    assert rt.stale_blocks(body) == []
    bad = body.replace("|", "| 999.9 |", 3)
    assert rt.stale_blocks(bad) == [f"table {m.group('name')}"]
    value = "accuracy <!-- value: classifier-accuracy -->0.123456<!-- end value -->"
    assert rt.stale_blocks(value) == ["value classifier-accuracy"]
    assert rt.stale_blocks(rt.render(value)) == []


def test_rendering_is_deterministic():
    for p in rt.documents():
        t = p.read_text()
        assert rt.render(rt.render(t)) == rt.render(t), p
