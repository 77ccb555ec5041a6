"""Build the docs site into _docs/ without Quarto.

`nbdev_docs` = `nbdev_proc_nbs` (runs nbdev's processors: show_doc signatures, front matter, test cells kept as
examples; writes _proc/) + `quarto render`. Quarto is a separate binary from GitHub releases (PyPI's quarto-cli
downloads it at install time; no Debian or npm package), so where it is missing this script does the same first step
and renders _proc/ with pandoc (PyPI's pypandoc-binary, in `.[dev]`; equations as MathML, no CDN needed):

    python tools/build_docs.py            # -> _docs/index.html (the README), docs-NAME.html per docs/NAME.md, one page per notebook
    python -m http.server -d _docs 8000   # preview at http://127.0.0.1:8000

What Quarto would do and this script does too: `#| output: asis` cells (nbdev's `show_doc` API blocks) are Markdown,
so their docstrings render like the prose (math as MathML, `code`); cells whose code is hidden show no empty code box;
images in notebook outputs are written to _docs/media/. Local links of every page are made to work on the site:
a linked `.md` file becomes a page (`benchmarks/README.md` -> `benchmarks-README.html`), a linked notebook its page,
any other linked file (images, logs, JSON) is copied with its path, and nbdev's links to the published API pages
(`doc_host` in settings.ini) point at the local pages.

With Quarto installed, `nbdev_docs` builds the full nbdev site into _docs/ instead.
Fails (exit 1) when a notebook does not process, a module page is missing or a local link or image does not resolve.
"""
import html
import json
import pathlib
import re
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROC, OUT = ROOT / "_proc", ROOT / "_docs"
# No sticky or fixed element (it covered 180-300 px of a 900-px window); the site's navigation wraps to the page width.
CSS = """body{max-width:1100px;margin:auto;padding:0 1.5em 3em;font-family:system-ui,sans-serif;line-height:1.5}
nav.site{display:flex;flex-wrap:wrap;gap:.1em .9em;border-bottom:1px solid #ddd;padding:.5em 0;font-size:.85em}
nav.site a{white-space:nowrap} nav.site a[aria-current]{font-weight:bold;color:inherit;text-decoration:none}
nav#TOC{border:1px solid #ddd;border-radius:4px;padding:.2em 1em;margin:1em 0;font-size:.9em;background:#fafafa}
nav#TOC ul{padding-left:1.2em;margin:.3em 0} .description{color:#555;font-size:1.05em}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto} code{font-size:.9em} table{border-collapse:collapse}
td,th{border:1px solid #ddd;padding:.2em .5em} img{max-width:100%} .cell-output pre{background:#fff;border-left:3px solid #ddd}
.api-doc{border-top:1px solid #ddd;margin:1.6em 0 1em;padding-top:.2em} .api-doc hr{display:none}
.api-doc h3{font-family:ui-monospace,monospace;font-size:1.05em;margin:.4em 0}
.api-doc blockquote{margin:.4em 0;padding:0;border:0} .api-doc blockquote pre{margin:0}
.api-doc table{font-size:.9em;margin:.5em 0}"""
SKIP_LINK = re.compile(r"^(#|[a-z][a-z0-9+.-]*:|//)", re.I)      # in-page anchors, http:, mailto:, data:, //host


def pandoc(src, dst, fmt, title, nav, resource_path):
    import pypandoc
    pypandoc.convert_file(str(src), "html5", format=fmt, outputfile=str(dst), cworkdir=str(OUT),
                          extra_args=["--standalone", "--mathml", "--toc", "--toc-depth=2", f"--metadata=title:{title}",
                                      f"--include-before-body={nav}", "--css=style.css", "--wrap=none",
                                      "--extract-media=media", f"--resource-path={resource_path}"])


def _asis_markdown(outputs) -> str:
    "What Quarto shows for an `output: asis` cell: its Markdown output, as Markdown."
    parts = []
    for o in outputs:
        if o.get("output_type") == "stream": parts.append("".join(o.get("text", "")))
        data = o.get("data", {})
        md = data.get("text/markdown", data.get("text/plain"))
        if md is not None: parts.append("".join(md))
    return "\n\n".join(p for p in parts if p.strip())


def title_cell(nb_path, fm) -> tuple:
    """(description, prose) of a notebook's first Markdown cell. nbdev reads that cell as front matter (`# title`,
    the first `>` line as description, `- key: value`) and drops the whole cell from the docs, prose included;
    here the description is the whole `>` block and the prose stays on the page."""
    cells = json.loads(pathlib.Path(nb_path).read_text())["cells"] if pathlib.Path(nb_path).is_file() else []
    if not cells or cells[0]["cell_type"] != "markdown": return None, ""
    text = "".join(cells[0]["source"])
    if not re.search(r"^#\s+\S", text, re.M): return None, ""
    text = re.sub(r"^#\s+.*\n?", "", text, count=1, flags=re.M)
    desc, m = None, re.search(r"^(>.*(\n|$))+", text, re.M)
    if m:
        desc = " ".join(l.lstrip(">").strip() for l in m[0].splitlines())
        text = text[:m.start()] + text[m.end():]
    text = re.sub(r"^-\s+(\S+):.*(\n|$)", lambda b: "" if b[1] in fm else b[0], text, flags=re.M)
    return desc, text.strip()


def quarto_to_plain(src, dst, description=None, prose=""):
    "What Quarto does with nbdev's _proc notebooks, for pandoc: apply `#| echo/output/include` and drop the directives."
    nb = json.loads(pathlib.Path(src).read_text())
    cells = []
    md = lambda i, text: cells.append({"cell_type": "markdown", "id": f"c{i}", "metadata": {}, "source": text})
    if description: md("d", f"::: {{.description}}\n{description}\n\n:::")
    if prose: md("p", prose)
    for i, c in enumerate(nb["cells"]):
        text = "".join(c["source"] or "")
        if c["cell_type"] == "raw": continue                                     # front matter: the title is passed
        if c["cell_type"] != "code":
            md(i, text); continue
        lines = text.splitlines(); dirs = {}
        for l in lines:
            if l.startswith("#|") and ":" in l: k, v = l[2:].split(":", 1); dirs[k.strip()] = v.strip().lower()
        if dirs.get("include") == "false": continue
        src_ = "" if dirs.get("echo") == "false" else "\n".join(l for l in lines if not l.startswith("#|")).strip("\n")
        outs = [] if dirs.get("output") == "false" else c.get("outputs", [])
        if dirs.get("output") == "asis":                                         # show_doc: Markdown, not a code box
            if src_: cells.append({"cell_type": "code", "id": f"c{i}s", "metadata": {}, "execution_count": None,
                                   "outputs": [], "source": src_})
            body = _asis_markdown(outs)
            if body and "show_doc" in text:                              # nbdev's anchors: the name in lower case
                body = re.sub(r"^(#{2,4}) +(\S+?) *$", lambda m: f"{m[1]} {m[2]} {{#{m[2].lower()}}}", body, flags=re.M)
                body = f"::: {{.api-doc}}\n{body}\n\n:::"
            if body: md(i, body)
            continue
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


def front_matter(nb) -> dict:
    import yaml
    cells = json.loads(nb.read_text())["cells"]
    fm = next(("".join(c["source"]) for c in cells if c["cell_type"] == "raw"), "")
    m = re.search(r"^---\s*\n(.*?)\n---", fm, re.S)
    return (yaml.safe_load(m.group(1)) if m else None) or {}


def settings() -> dict:
    import configparser
    p = configparser.ConfigParser(); p.read(ROOT / "settings.ini")
    return dict(p["DEFAULT"])


class Site:
    "The pages of _docs/ and the repository files they link to."

    def __init__(self, pages: dict, api_pages: dict, api_url: str):
        self.pages = pages              # repository path (relative) -> page name in OUT
        self.api_pages, self.api_url = api_pages, api_url   # nbdev's output-file names -> page names
        self.todo, self.missing = [], []

    def target(self, src: pathlib.Path) -> str | None:
        "The site path for a repository file or folder a page links to; None where it does not exist."
        try: rel = src.resolve().relative_to(ROOT)
        except ValueError: return None
        key = rel.as_posix()
        if key in self.pages: return self.pages[key]
        if src.is_dir():
            if (src / "README.md").is_file(): return self.target(src / "README.md")
            if rel == pathlib.Path("nbs"): return self.pages.get(next(iter(sorted(k for k in self.pages if k.startswith("nbs/"))), ""))
            return None
        if not src.is_file(): return None
        if src.suffix == ".md":                                    # another Markdown document: a page of its own
            self.pages[key] = name = key[:-3].replace("/", "-") + ".html"
            self.todo.append((src, name)); return name
        dst = OUT / key                                            # any other file: copied with its path
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(src, dst)
        return key

    def fix_links(self, page: pathlib.Path, src_dir: pathlib.Path):
        "Point the local links and images of `page` (rendered from a file in `src_dir`) at the site."
        text = page.read_text()
        def one(m):
            attr, url = m.group(1), html.unescape(m.group(2))
            if url.startswith(self.api_url):                        # nbdev's doc links to the published API pages
                path, _, frag = url[len(self.api_url):].partition("#")
                if path in self.api_pages: return f'{attr}="{self.api_pages[path]}{"#" + frag if frag else ""}"'
                return m.group(0)
            if not url or SKIP_LINK.match(url) or _in_site(url.split("#")[0]): return m.group(0)
            path, _, frag = url.partition("#")
            t = self.target(src_dir / path)
            if t is None:
                self.missing.append(f"{page.name}: {attr}={url}"); return m.group(0)
            return f'{attr}="{html.escape(t)}{"#" + frag if frag else ""}"'
        text = re.sub(r'\b(href|src)="([^"]*)"', one, text)
        # an empty code box where a cell's code is hidden (pandoc keeps the cell's empty source)
        text = re.sub(r'<div class="sourceCode" id="cb\d+"><pre\s[^>]*><code[^>]*></code></pre></div>\n?', "", text)
        page.write_text(text)


    def fix_anchors(self):
        """A link to `page.html#name` where that page has no such anchor (nbdev links private helpers and methods
        that get no API block) points at the page."""
        ids = {p.name: set(re.findall(r'\bid="([^"]*)"', p.read_text())) for p in OUT.glob("*.html")}
        for p in OUT.glob("*.html"):
            text = p.read_text()
            new = re.sub(r'href="([^"#/:]+\.html)#([^"]*)"',
                         lambda m: m[0] if m[1] not in ids or m[2] in ids[m[1]] else f'href="{m[1]}"', text)
            if new != text: p.write_text(new)


def guide_pages() -> dict:
    "The docs/*.md pages, in the order the README's tour lists them (then any others): page name -> (link text, title)."
    srcs = sorted((ROOT / "docs").glob("*.md"))
    readme = (ROOT / "README.md").read_text()
    order = lambda p: (readme.find(f"(docs/{p.name})") % (len(readme) + 1), p.name)   # not linked: after the others
    out = {}
    for p in sorted(srcs, key=order):
        h1 = re.search(r"^# +(.+?) *$", p.read_text(), re.M)
        out[f"docs-{p.stem}.html"] = (p.stem, h1[1] if h1 else p.stem)
    return out


def _in_site(path: str) -> bool:
    "Whether `path` (relative to a page) is already a file of the site; `../x` from a docs/ page is a repository file."
    p = (OUT / path).resolve()
    return p.is_file() and p.is_relative_to(OUT.resolve())


def nav_html(titles: dict, current: str, guides: dict = None) -> str:
    "The site's page links: the README, the docs/*.md pages (bold), then one per notebook."
    links = ([("index.html", "<b>noctcm</b>", "the README")] + [(h, f"<b>{n}</b>", t) for h, (n, t) in (guides or {}).items()]
             + [(f"{s}.html", s, t) for s, t in titles.items()])
    return ("<nav class='site' aria-label='pages'>\n" + "\n".join(
        f"<a href='{h}' title='{html.escape(t)}'{' aria-current=page' if h == current else ''}>{n}</a>"
        for h, n, t in links) + "\n</nav>")


def render(src, dst_name, fmt, title, titles, resource_path, plain=None, guides=None):
    nav = PROC / f"_nav_{dst_name}.html"
    nav.write_text(nav_html(titles, dst_name, guides))
    try: pandoc(plain or src, OUT / dst_name, fmt, title, nav, resource_path)
    finally: nav.unlink()


def main() -> int:
    r = subprocess.run([str(pathlib.Path(sys.executable).parent / "nbdev_proc_nbs"), "--force", "--n_workers", "0"],
                       cwd=ROOT, capture_output=True, text=True)
    if r.returncode:
        print(r.stdout[-4000:], r.stderr[-4000:], "\nnbdev_proc_nbs failed: a notebook does not process", file=sys.stderr)
        return 1
    shutil.rmtree(OUT, ignore_errors=True); OUT.mkdir()
    (OUT / "style.css").write_text(CSS)
    nbs = sorted(p for p in PROC.glob("*.ipynb") if not p.name.startswith("_"))
    fms = {nb.stem: front_matter(nb) for nb in nbs}
    titles = {s: str(fm.get("title", s)) for s, fm in fms.items()}
    cfg = settings()
    guides = guide_pages()
    site = Site({"README.md": "index.html", **{f"nbs/{s}.ipynb": f"{s}.html" for s in titles}},
                {fm["output-file"]: f"{s}.html" for s, fm in fms.items() if fm.get("output-file")},
                cfg.get("doc_host", "").rstrip("/") + "/" + cfg.get("doc_baseurl", "").strip("/") + "/")
    for nb in nbs:
        plain = PROC / f"_plain_{nb.stem}.ipynb"
        desc, prose = title_cell(ROOT / "nbs" / nb.name, fms[nb.stem])
        quarto_to_plain(nb, plain, desc or fms[nb.stem].get("description"), prose)
        render(nb, f"{nb.stem}.html", "ipynb+fenced_divs+link_attributes+header_attributes", titles[nb.stem], titles, ROOT / "nbs",
               plain, guides)
        plain.unlink()
        site.fix_links(OUT / f"{nb.stem}.html", ROOT / "nbs")
    site.todo.append((ROOT / "README.md", "index.html"))
    for name in guides:                                            # every docs/*.md page, linked or not
        site.target(ROOT / "docs" / (name[len("docs-"):-len(".html")] + ".md"))
    while site.todo:                                               # README.md, docs/*.md, then the Markdown files they link to
        src, name = site.todo.pop(0)
        text = src.read_text()
        h1 = re.search(r"^# +(.+?) *\n", text, re.M)              # the first heading is the page's title
        title, text = (h1[1], text[:h1.start()] + text[h1.end():]) if h1 else (src.name, text)
        md = PROC / f"_md_{name}.md"; md.write_text(text)
        render(md, name, "gfm+tex_math_dollars", title, titles, src.parent, guides=guides)
        md.unlink()
        site.fix_links(OUT / name, src.parent)
    site.fix_anchors()
    missing = [p for p in ["index.html", *guides, *(f"{n.stem}.html" for n in sorted((ROOT / "nbs").glob("[0-9][0-9]_*.ipynb")))]
               if not (OUT / p).is_file()]
    if missing:
        print("missing pages:", missing, file=sys.stderr); return 1
    if site.missing:
        print("local links or images that do not resolve:", *site.missing, sep="\n  ", file=sys.stderr); return 1
    pages = sorted(OUT.glob("*.html"))
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"_docs/: {len(pages)} pages, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
