"""Build the docs site into _docs/ without Quarto.

`nbdev_docs` = `nbdev_proc_nbs` (runs nbdev's processors: show_doc signatures, front matter, test cells kept as
examples; writes _proc/) + `quarto render`. Quarto is a separate binary from GitHub releases (PyPI's quarto-cli
downloads it at install time; no Debian or npm package), so where it is missing this script does the same first step
and renders _proc/ with pandoc (PyPI's pypandoc-binary, in `.[dev]`; equations as MathML, no CDN needed):

    python tools/build_docs.py            # -> _docs/index.html (the README) + one page per notebook
    python -m http.server -d _docs 8000   # preview at http://127.0.0.1:8000

With Quarto installed, `nbdev_docs` builds the full nbdev site into _docs/ instead.
Fails (exit 1) when a notebook does not process or a module page is missing.
"""
import html
import json
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROC, OUT = ROOT / "_proc", ROOT / "_docs"
CSS = """body{max-width:1100px;margin:auto;padding:0 1.5em 3em;font-family:system-ui,sans-serif;line-height:1.5}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #ddd;padding:.4em 0;font-size:.85em;z-index:1}
nav a{margin-right:.8em;white-space:nowrap} pre{background:#f6f8fa;padding:.6em;overflow-x:auto}
code{font-size:.9em} table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:.2em .5em}
img{max-width:100%} .cell-output pre{background:#fff;border-left:3px solid #ddd}"""


def pandoc(src, dst, fmt, title, nav):
    import pypandoc
    pypandoc.convert_file(str(src), "html5", format=fmt, outputfile=str(dst),
                          extra_args=["--standalone", "--mathml", "--toc", "--toc-depth=2", f"--metadata=title:{title}",
                                      f"--include-before-body={nav}", f"--css=style.css", "--wrap=none"])


def quarto_to_plain(src, dst):
    "What Quarto does with nbdev's _proc notebooks, for pandoc: apply `#| echo/output/include` and drop the directives."
    nb = json.loads(pathlib.Path(src).read_text())
    cells = []
    for i, c in enumerate(nb["cells"]):
        text = "".join(c["source"])
        if c["cell_type"] == "raw": continue                                     # front matter: the title is passed
        if c["cell_type"] != "code":
            cells.append({"cell_type": "markdown", "id": f"c{i}", "metadata": {}, "source": text}); continue
        lines = text.splitlines(); dirs = {}
        for l in lines:
            if l.startswith("#|") and ":" in l: k, v = l[2:].split(":", 1); dirs[k.strip()] = v.strip().lower()
        if dirs.get("include") == "false": continue
        src_ = "" if dirs.get("echo") == "false" else "\n".join(l for l in lines if not l.startswith("#|")).strip("\n")
        outs = [] if dirs.get("output") == "false" else c.get("outputs", [])
        clean = []
        for o in outs:
            t = o.get("output_type")
            if t == "stream": clean.append({"output_type": t, "name": o.get("name", "stdout"), "text": o.get("text", "")})
            elif t in ("display_data", "execute_result"):
                clean.append({"output_type": "display_data", "data": o.get("data", {}), "metadata": {}})
            elif t == "error": clean.append({"output_type": "stream", "name": "stderr", "text": "\n".join(o.get("traceback", []))})
        if src_ or clean:
            cells.append({"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None, "outputs": clean,
                          "source": src_})
    nb = {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                                       "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    pathlib.Path(dst).write_text(json.dumps(nb))


def main() -> int:
    r = subprocess.run([str(pathlib.Path(sys.executable).parent / "nbdev_proc_nbs"), "--force", "--n_workers", "0"],
                       cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        print(r.stdout[-4000:], r.stderr[-4000:], "\nnbdev_proc_nbs failed: a notebook does not process", file=sys.stderr)
        return 1
    shutil.rmtree(OUT, ignore_errors=True); OUT.mkdir()
    (OUT / "style.css").write_text(CSS)
    nbs = sorted(p for p in PROC.glob("*.ipynb") if not p.name.startswith("_"))
    titles = {}
    for nb in nbs:
        cells = json.loads(nb.read_text())["cells"]
        fm = next((''.join(c["source"]) for c in cells if c["cell_type"] == "raw"), "")
        t = next((l.split(":", 1)[1].strip().strip("'\"") for l in fm.splitlines() if l.startswith("title:")), nb.stem)
        titles[nb.stem] = t
    nav = OUT / "_nav.html"
    nav.write_text("<nav><a href='index.html'><b>noctcm</b></a>" +
                   "".join(f"<a href='{s}.html' title='{html.escape(t)}'>{s}</a>" for s, t in titles.items()) + "</nav>")
    for nb in nbs:
        plain = PROC / f"_plain_{nb.stem}.ipynb"
        quarto_to_plain(nb, plain)
        pandoc(plain, OUT / f"{nb.stem}.html", "ipynb", titles[nb.stem], nav)
        plain.unlink()
    readme = PROC / "_readme.md"
    readme.write_text((ROOT / "README.md").read_text().replace("](nbs)", "](00_config.html)"))
    pandoc(readme, OUT / "index.html", "gfm+tex_math_dollars", "noctcm", nav)
    if (ROOT / "docs" / "screenshots").is_dir(): shutil.copytree(ROOT / "docs" / "screenshots", OUT / "docs" / "screenshots")
    nav.unlink()
    missing = [p for p in ["index.html", *(f"{n.stem}.html" for n in sorted((ROOT / "nbs").glob("[0-9][0-9]_*.ipynb")))]
               if not (OUT / p).is_file()]
    if missing:
        print("missing pages:", missing, file=sys.stderr); return 1
    pages = sorted(OUT.glob("*.html"))
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"_docs/: {len(pages)} pages, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
