"""The docs site (`python tools/build_docs.py` -> _docs/) as a person sees it: served on 127.0.0.1, every page opened in
headless Chromium at 1100 x 900 px (Playwright, Debian's `chromium`; no internet needed).

Every `docs/*.md` is a page and in the navigation of the README's page and of each guide page; the README's page and
the results, resolution and notebooks pages show their figures. Per page: no sticky or fixed element covers the
content after scrolling; the site's navigation fits the page width; every image loads and every local link (and its #anchor) resolves; no empty code box; and nbdev's API blocks
(`show_doc`) are rendered like the prose: no raw Markdown or LaTeX (`$`, backticks, `\\command`) outside code and
math, the docstring in the prose's font, equations as MathML. Screenshots of two pages go to `out/screenshots/`
(or $NOCTCM_SCREENSHOTS; `docs/screenshots/docs-*.png` are from this test).

Builds _docs/ first when it is missing or older than its sources (≈ 1 min); CI builds it in the step before.
Skipped, with the reason, where Chromium or Playwright is missing.
"""
import html
import os
import pathlib
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "_docs"
CHROMIUM = os.environ.get("NOCTCM_CHROMIUM") or "/usr/bin/chromium"
SHOTS = pathlib.Path(os.environ.get("NOCTCM_SCREENSHOTS", ROOT / "out" / "screenshots"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WIDTH, HEIGHT = 1100, 900

# in the browser: what a reader would trip over on the current page
PAGE_CHECKS = """() => {
  const W = document.documentElement.clientWidth, H = window.innerHeight;
  window.scrollTo(0, Math.max(0, (document.documentElement.scrollHeight - H) / 2));
  const covering = [...document.querySelectorAll('*')].filter(e => {
    const p = getComputedStyle(e).position; if (p !== 'sticky' && p !== 'fixed') return false;
    const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0 && r.bottom > 0 && r.top < H;
  }).map(e => e.tagName + (e.id ? '#' + e.id : '') + '.' + e.className);
  window.scrollTo(0, 0);
  const nav = document.querySelector('nav:not(#TOC)');               // the site's page links
  const navOut = nav ? [...nav.querySelectorAll('a')].filter(a => a.getBoundingClientRect().right > W + 1).map(a => a.textContent) : null;
  const images = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const emptyPre = [...document.querySelectorAll('pre')].filter(p => !p.textContent.trim()).length;
  const raw = [], api = [...document.querySelectorAll('.api-doc')];
  for (const b of api) {                                  // text outside code, math and the signature block
    const w = document.createTreeWalker(b, NodeFilter.SHOW_TEXT, {acceptNode: n =>
      n.parentElement.closest('code, pre, math, .sourceCode') ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
    let t = ''; while (w.nextNode()) t += w.currentNode.textContent;
    const m = t.match(/[$`]|\\\\[a-zA-Z]{2,}/);
    if (m) raw.push((b.querySelector('h3, h4') || b).textContent.trim() + ': ...' + t.slice(Math.max(0, m.index - 40), m.index + 40) + '...');
  }
  const prose = document.querySelector('.cell.markdown > p');
  const doc = b => b.querySelector(':scope > p:not(:has(> a:only-child))');
  const fonts = prose ? api.filter(doc).filter(b => getComputedStyle(doc(b)).fontFamily !== getComputedStyle(prose).fontFamily).length : 0;
  const loaded = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
  return {covering, navOut, navWidth: nav ? [nav.scrollWidth, nav.clientWidth] : null, images, loaded, emptyPre, raw,
          apiBlocks: api.length, apiMath: api.reduce((s, b) => s + b.querySelectorAll('math').length, 0), fonts,
          links: [...document.querySelectorAll('a[href]')].map(a => a.href)};
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stale() -> bool:
    index = DOCS / "index.html"
    if not index.is_file(): return True
    srcs = [*ROOT.glob("nbs/*.ipynb"), *ROOT.glob("*.md"), *ROOT.glob("benchmarks/**/*.md"), *ROOT.glob("docs/**/*"),
            ROOT / "tools" / "build_docs.py", ROOT / "settings.ini"]
    return max(p.stat().st_mtime for p in srcs if p.is_file()) > index.stat().st_mtime


@pytest.fixture(scope="module")
def site():
    "The built docs site served on 127.0.0.1; yields its base URL."
    if not pathlib.Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set NOCTCM_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    pytest.importorskip("pypandoc", reason="pypandoc is not installed (pip install -e '.[dev]')")
    if _stale():
        r = subprocess.run([sys.executable, str(ROOT / "tools" / "build_docs.py")], cwd=ROOT, capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port), "-d", str(DOCS)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(100):
            try: urllib.request.urlopen(url, timeout=2); break
            except Exception:
                assert proc.poll() is None, "http.server exited"
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate(); proc.wait(10)


def _check_links(links, base):
    "Every local link answers 200, and its #anchor exists on the page it points at."
    bad, texts = [], {}
    for link in sorted(links):
        path, _, frag = link.partition("#")
        if path not in texts:
            try: texts[path] = urllib.request.urlopen(path, timeout=10).read().decode("utf-8", "replace")
            except urllib.error.HTTPError as e: texts[path] = None; bad.append(f"{link}: HTTP {e.code}")
        t = texts[path]
        if t is not None and frag and path.endswith(".html"):
            f = html.escape(urllib.parse.unquote(frag))
            if f'id="{f}"' not in t and f"id='{f}'" not in t: bad.append(f"{link}: no element with id {frag!r}")
    return bad


def test_docs_site_in_chromium(site):
    from playwright.sync_api import sync_playwright
    pages = sorted(p.name for p in DOCS.glob("*.html"))
    assert "index.html" in pages and len(pages) >= 20, pages
    guides = {f"docs-{p.stem}.html" for p in (ROOT / "docs").glob("*.md")}      # every docs/*.md is a page of the site
    assert guides <= set(pages), sorted(guides - set(pages))
    # pages whose figures a reader comes for: at least this many images, all loaded (checked per page below)
    figures = {"index.html": 1, "docs-results.html": 4, "docs-resolution.html": 1, "docs-notebooks.html": 1}
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems, links, api_total, failed = [], set(), 0, []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        page.on("response", lambda r: r.status >= 400 and r.url.startswith(site) and failed.append(f"{r.status} {r.url}"))
        page.on("requestfailed", lambda r: r.url.startswith(site) and failed.append(f"failed {r.url}"))
        for name in pages:
            page.goto(site + name, wait_until="load")
            r = page.evaluate(PAGE_CHECKS)
            say = lambda what: problems.append(f"{name}: {what}")
            if r["covering"]: say(f"sticky/fixed elements cover the content after scrolling: {r['covering']}")
            if r["navOut"] is None: say("no navigation bar (<nav>)")
            elif r["navOut"] or r["navWidth"][0] > r["navWidth"][1] + 1:
                say(f"the navigation is {r['navWidth'][0]} px wide in {r['navWidth'][1]} px; off screen: {r['navOut']}")
            if r["images"]: say(f"images that do not load: {r['images']}")
            if r["loaded"] < figures.get(name, 0): say(f"{r['loaded']} images loaded, expected >= {figures[name]}")
            if name in guides | {"index.html"}:                          # the guide pages are in every page's navigation
                nav_links = page.eval_on_selector_all("nav.site a", "as => as.map(a => a.getAttribute('href'))")
                if not guides <= set(nav_links): say(f"the navigation lacks {sorted(guides - set(nav_links))}")
            if r["emptyPre"]: say(f"{r['emptyPre']} empty code boxes")
            if r["raw"]: say(f"raw Markdown/LaTeX in API blocks: {r['raw'][:3]}")
            if r["fonts"]: say(f"{r['fonts']} API docstrings not in the prose's font")
            api_total += r["apiBlocks"]
            if name == "02b_noise.html" and not (r["apiBlocks"] >= 9 and r["apiMath"] >= 5):   # docstrings with equations
                say(f"{r['apiBlocks']} API blocks (.api-doc) with {r['apiMath']} equations (MathML), expected >= 9 and >= 5")
            links |= {l.split("#")[0] + ("#" + l.split("#", 1)[1] if "#" in l else "") for l in r["links"] if l.startswith(site)}
        # the screenshots: the README's first screen, and prose + API blocks of a module page
        page.goto(site + "index.html", wait_until="load")
        page.screenshot(path=str(SHOTS / "docs-index.png"))
        page.goto(site + "02b_noise.html", wait_until="load")
        page.evaluate("() => { const b = document.querySelector('.api-doc') || document.querySelector('.cell.code'); "
                      "if (b) window.scrollTo(0, b.getBoundingClientRect().top + window.scrollY - 330); }")
        page.screenshot(path=str(SHOTS / "docs-api.png"))
        browser.close()
    if api_total < 100: problems.append(f"only {api_total} API blocks (.api-doc) on the whole site")
    problems += _check_links(links, site)
    problems += [f"request: {f}" for f in failed]
    assert not problems, "\n".join(problems)
