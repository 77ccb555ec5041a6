"""The explorer (nbs/explore.ipynb) in a real browser: JupyterLab + headless Chromium driven by Playwright.

`test_explorer_in_chromium` trains three tiny checkpoints (two sCT runs and a diffusion teacher), starts JupyterLab on
127.0.0.1 (a free port, a random token, no browser, `--allow-root`) in a throw-away folder holding a *copy* of the
notebook (JupyterLab's autosave never touches nbs/), runs all cells from the Run menu, then changes the widgets (seed,
steps, t_mid, resolution, compare, the teacher) and checks what a person sees: the shown samples change, no cell
shows an error, the trajectory's last row is the grid's first samples (decoded from the PNGs the page shows), the
teacher gets its own steps (`sampling.teacher_steps`) and no t_mid, `compare` says "(none)", snapshots are listed
in step order, the intro shows no front matter. Screenshots go to `out/screenshots/` (or $NOCTCM_SCREENSHOTS).

`test_explorer_on_trained_models` does the same on a trained pipeline's `models/` folder (read only, linked into the
throw-away folder) and writes the README's screenshots; it runs only when $NOCTCM_MODELS names that folder:

    NOCTCM_MODELS=/path/to/clone/models NOCTCM_SCREENSHOTS=docs/screenshots \
        pytest -q tests/test_explore_browser.py::test_explorer_on_trained_models tests/test_docs_browser.py

Needs Debian's `chromium` (/usr/bin/chromium, or $NOCTCM_CHROMIUM) and PyPI's `playwright` (in `.[dev]`);
Playwright's own browser download is not used. Skipped, with the reason, where either is missing.
"""
import base64
import contextlib
import io
import math
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
CHROMIUM = os.environ.get("NOCTCM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = pathlib.Path(os.environ.get("NOCTCM_SCREENSHOTS", ROOT / "out" / "screenshots"))
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TINY = ["data.resolution=8", "data.resolutions=[8,10]", "model.model_channels=8", "model.channel_mult=[1,2]", "model.attention_resolutions=[]",
        "model.num_heads=1", "model.fno_levels=[0]", "model.fno_modes=2", "model.weight_head_channels=8",
        "training.steps=3", "training.batch_size=8", "training.checkpoint_every=3", "training.sample_every=1000",
        "training.tangent_warmup_steps=2", "training.device=cpu"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args, cwd):
    r = subprocess.run([str(BIN / "noctcm"), *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr


def _needs_browser():
    if not pathlib.Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set NOCTCM_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    if not (BIN / "jupyter-lab").is_file():
        pytest.skip("jupyterlab is not installed (pip install -e '.[dev]')")


@contextlib.contextmanager
def _jupyterlab(tmp_path, w):
    "JupyterLab serving folder `w` (with a copy of the explorer) on 127.0.0.1; yields (url, token)."
    shutil.copy(ROOT / "nbs" / "explore.ipynb", w / "explore.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrun"),
           "IPYTHONDIR": str(tmp_path / "ipy"), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = open(tmp_path / "lab.log", "w")
    # --allow-root: JupyterLab refuses to start as root without it (containers, CI)
    proc = subprocess.Popen([str(BIN / "jupyter-lab"), "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={w}",
                             f"--LabApp.workspaces_dir={tmp_path / 'ws'}", "--LabApp.news_url=",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                             "--LabApp.extension_manager=readonly", "--allow-root"],
                            cwd=w, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2); break
            except Exception:
                assert proc.poll() is None, (tmp_path / "lab.log").read_text()
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text())
        yield url, token
    finally:
        proc.terminate()
        try: proc.wait(20)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


@pytest.fixture
def lab(tmp_path):
    "JupyterLab in tmp_path with three tiny checkpoints (two sCT runs, a teacher), two snapshots and the explorer."
    _needs_browser()
    w = tmp_path / "work"; w.mkdir()
    _run(["data", "fetch", "digits", "--root", "data"], w)
    _run(["train", "--out", "out/sct", "--no-progress", *TINY], w)
    _run(["train", "--out", "out/sct_seed1", "--no-progress", *TINY, "training.seed=1"], w)
    _run(["train", "--stage", "teacher", "--out", "out/teacher", "--no-progress", *TINY, "teacher.steps=3"], w)
    snaps = w / "models" / "train" / "snapshots"; snaps.mkdir(parents=True)
    for step in (200, 1000):                                      # the menu lists them by step, not as text
        shutil.copy(w / "out" / "sct" / "checkpoint.pt", snaps / f"ckpt-{step}.pt")
    with _jupyterlab(tmp_path, w) as x:
        yield x


@pytest.fixture
def trained_lab(tmp_path):
    "JupyterLab on a trained pipeline's models/ folder ($NOCTCM_MODELS, linked, read only) and the explorer."
    models = os.environ.get("NOCTCM_MODELS")
    if not models:
        pytest.skip("set NOCTCM_MODELS to a trained models/ folder (after `dvc repro`) to run the explorer on it")
    models = pathlib.Path(models).resolve()
    assert (models / "train" / "checkpoint.pt").is_file(), f"no train/checkpoint.pt in NOCTCM_MODELS={models}"
    _needs_browser()
    w = tmp_path / "work"; w.mkdir()
    (w / "models").symlink_to(models, target_is_directory=True)
    with _jupyterlab(tmp_path, w) as x:
        yield x


def _accept_kernel_dialog(page):
    "Click 'Select' on JupyterLab's 'Select Kernel' dialog if it is open (the notebook's own kernel is preselected)."
    dlg = page.locator(".jp-Dialog").filter(has_text="Select Kernel")
    if dlg.count() and dlg.first.is_visible():
        dlg.first.get_by_role("button", name="Select", exact=True).click()


def _png_pixels(img) -> "np.ndarray":
    "The PNG an <img> shows (an ipywidgets blob: URL), decoded to a grey-level array."
    import numpy as np
    from PIL import Image
    b64 = img.evaluate("""async e => { const b = new Uint8Array(await (await fetch(e.src)).arrayBuffer());
                                       let s = ''; for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode(...b.subarray(i, i + 8192));
                                       return btoa(s); }""")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("L")).astype(int)


def _tiles(grid, ncol, R, n):
    "The first n R x R images of an `image_grid` PNG with ncol images per row, drawn s x s per pixel."
    s, rem = divmod(grid.shape[1], ncol * (R + 1) + 1)
    assert s >= 1 and rem == 0, (grid.shape, ncol, R)
    g = grid[::s, ::s]
    return [g[1 + (i // ncol) * (R + 1):][:R, 1 + (i % ncol) * (R + 1):][:, :R] for i in range(n)]


class Explorer:
    "The explorer in a JupyterLab page: run it, change its widgets, read what it shows."

    def __init__(self, page, url, token):
        from playwright.sync_api import expect
        self.page, self.expect = page, expect
        page.goto(f"{url}/lab/tree/explore.ipynb?token={token}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first).to_be_attached(timeout=120_000)
        _accept_kernel_dialog(page)
        self.run_all()
        self.status = page.locator(".noctcm-status")
        for i in range(72):                                            # up to 6 min on a loaded machine (CI runs two
            _accept_kernel_dialog(page)                                # workers): JupyterLab may ask for the kernel
            if "update 1:" in (self.status.first.text_content(timeout=1000) if self.status.count() else ""): break
            if i % 24 == 23 and not self.status.count():               # nothing after 2 min: run all cells again
                self.run_all()
            page.wait_for_timeout(5000)
        expect(self.status).to_contain_text("update 1:", timeout=30_000)
        self.samples = page.locator("img.noctcm-samples")
        expect(self.samples).to_be_visible()
        news = page.get_by_role("button", name="No", exact=True)     # JupyterLab's "notify about news?" toast
        if news.count(): news.first.click()
        self.widget_area = page.locator(".jp-OutputArea-output").filter(has=page.locator(".noctcm-status"))

    def run_all(self):
        self.page.locator(".jp-Notebook .jp-Cell").first.click()      # focus the notebook, then Run > Run All Cells
        self.page.get_by_role("menuitem", name="Run", exact=True).click()
        self.page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

    def shot(self, path):
        "A screenshot of the explorer's output; the notebook's sticky toolbar would cover its top row, so it is hidden."
        self.page.add_style_tag(content=".jp-NotebookPanel-toolbar{display:none !important}")
        self.widget_area.evaluate("e => e.scrollIntoView({block: 'start'})")   # its top row; the page is tall enough
        self.widget_area.screenshot(path=str(path))

    def wait_update(self, before):
        self.expect(self.status).not_to_have_text(before, timeout=120_000)
        assert "Error" not in self.status.inner_text(), self.status.inner_text()
        self.page.wait_for_timeout(300)                                # the new PNGs are decoded and drawn

    def change(self, action, same_ok=False):
        before, img = self.status.inner_text(), self.samples.screenshot()
        action()
        self.wait_update(before)
        after = self.samples.screenshot()
        assert same_ok or after != img, f"the samples did not change ({self.status.inner_text()})"
        return after

    def set_readout(self, cls, value):
        r = self.page.locator(f".{cls} .widget-readout")
        r.click(); self.page.keyboard.press("Control+A"); self.page.keyboard.type(str(value)); self.page.keyboard.press("Enter")

    def readout(self, cls) -> str:
        return self.page.locator(f".{cls} .widget-readout").inner_text().strip()

    def selected(self, cls) -> str:
        return self.page.locator(f".{cls} select").evaluate("s => s.selectedIndex < 0 ? '' : s.options[s.selectedIndex].text")

    def select(self, cls, label):
        before = self.status.inner_text()
        self.page.locator(f".{cls} select").select_option(label=label)
        self.wait_update(before)

    def resolution(self) -> int:
        return int(self.page.locator(".noctcm-resolution select").evaluate("s => s.options[s.selectedIndex].text").split("px")[0])

    def check_trajectory(self, num_samples=16):
        "The trajectory's last row shows the grid's first samples (same noise), and its label says so."
        traj = self.page.locator(".noctcm-trajectory")
        n = min(8, num_samples)
        self.expect(traj).to_contain_text(f"the last row is the grid's first {n} images")
        R = self.resolution()
        grid = _tiles(_png_pixels(self.samples), math.ceil(math.sqrt(num_samples)), R, n)
        last = _tiles(_png_pixels(traj.locator("img").last), n, R, n)
        assert max(t.std() for t in grid) > 1, "the grid's images are blank"
        diff = max(int(abs(a - b).max()) for a, b in zip(grid, last))
        assert diff <= 2, f"the trajectory's last row differs from the grid's first {n} samples by {diff}/255"


def _no_errors(page):
    "No cell shows an error (tracebacks render as stderr outputs with 'Error'/'Traceback'); every cell ran."
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    texts = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
    assert not texts, texts
    prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
    assert prompts and all(p.strip() not in ("[ ]:", "[*]:") for p in prompts), prompts


def _check_teacher(ex, steps=18):
    "A diffusion teacher gets its own steps (sampling.teacher_steps) and no t_mid; the PF-ODE label says so."
    assert ex.readout("noctcm-steps") == str(steps), ex.readout("noctcm-steps")
    ex.expect(ex.page.locator(".noctcm-t_mid")).to_be_hidden()
    ex.expect(ex.page.locator(".jp-OutputArea-output").filter(has_text="PF-ODE heun").first).to_contain_text(
        f"{steps} steps ({2 * steps - 1} NFE)")


@contextlib.contextmanager
def _explorer(lab, width: int, height: int):
    "An `Explorer` on the lab's notebook in a fresh Chromium page of `width` x `height`; the browser closes after."
    from playwright.sync_api import sync_playwright
    url, token = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(60_000)
            yield page, Explorer(page, url, token)
        finally:
            browser.close()


def test_explorer_in_chromium(lab):
    with _explorer(lab, 1500, 1100) as (page, ex):
        expect = ex.expect
        # the intro renders without nbdev's front matter; menus: "(none)", snapshots by step
        intro = page.locator(".jp-MarkdownCell .jp-RenderedMarkdown").first.inner_text()
        assert "Explore a checkpoint" in intro and "skip_exec" not in intro, intro[:300]
        assert ex.selected("noctcm-compare") == "(none)", ex.selected("noctcm-compare")
        opts = page.locator(".noctcm-path select option").all_inner_texts()
        snaps = [o for o in opts if "snapshots/ckpt-" in o]
        assert snaps == ["models/train/snapshots/ckpt-200.pt", "models/train/snapshots/ckpt-1000.pt"], opts
        ex.check_trajectory()
        ex.shot(SHOTS / "explore-initial.png")
        ex.change(lambda: (page.locator(".noctcm-seed input").fill("7"), page.locator(".noctcm-seed input").press("Enter")))
        ex.check_trajectory()
        ex.shot(SHOTS / "explore-seed7.png")
        ex.change(lambda: ex.set_readout("noctcm-steps", 1))
        expect(page.locator(".noctcm-t_mid")).to_be_hidden()          # t_mid does not apply to 1 step
        ex.change(lambda: ex.set_readout("noctcm-steps", 2))
        expect(page.locator(".noctcm-t_mid")).to_be_visible()
        expect(page.get_by_text("f(x_t, 1.100)")).to_be_visible()   # the 2-step trajectory
        ex.change(lambda: ex.set_readout("noctcm-t_mid", 0.6))
        ex.check_trajectory()
        ex.shot(SHOTS / "explore-tmid06.png")
        sel = page.locator(".noctcm-resolution select")
        labels = sel.locator("option").all_inner_texts()
        px = [int(l.split("px")[0]) for l in labels]
        assert "8px (training)" in [l.replace("\xa0", " ") for l in labels] and px == sorted(px), labels
        assert px[0] == 4, labels   # the multigrid rule runs 0.5x too (a model under grid_rule=native starts at 2**levels)
        w0 = ex.samples.evaluate("e => e.naturalWidth")
        ex.change(lambda: sel.select_option(label="16px"))
        assert ex.samples.evaluate("e => e.naturalWidth") != w0
        ex.check_trajectory()
        ex.select("noctcm-compare", "out/sct_seed1/checkpoint.pt")
        expect(page.locator("img.noctcm-compare")).to_be_visible()
        assert page.locator("img.noctcm-compare").screenshot() != ex.samples.screenshot()
        ex.shot(SHOTS / "explore-compare.png")
        # the teacher: its own steps, no t_mid, no trajectory; back to a consistency model: its steps again
        ex.select("noctcm-compare", "(none)")
        ex.change(lambda: page.locator(".noctcm-path select").select_option(label="out/teacher/checkpoint.pt"))
        _check_teacher(ex)
        expect(page.locator(".noctcm-trajectory")).to_contain_text("not drawn for a PF-ODE teacher")
        ex.shot(SHOTS / "explore-teacher.png")
        ex.change(lambda: page.locator(".noctcm-path select").select_option(label="out/sct/checkpoint.pt"))
        assert ex.readout("noctcm-steps") == "2"
        expect(page.locator(".noctcm-t_mid")).to_be_visible()
        ex.check_trajectory()
        _no_errors(page)


def test_explorer_on_trained_models(trained_lab):
    "The explorer on a trained pipeline's checkpoints: digits, not noise; writes explore.png / explore-teacher.png."
    with _explorer(trained_lab, 1400, 1500) as (page, ex):
        page.locator(".jp-SideBar.jp-mod-left .lm-TabBar-tab.lm-mod-current").first.click()   # close the file browser
        ex.expect(ex.widget_area).to_contain_text("models/train/checkpoint.pt: 2-step")
        ex.check_trajectory()
        ex.select("noctcm-compare", "models/distill/checkpoint.pt")
        ex.expect(page.locator("img.noctcm-compare")).to_be_visible()
        ex.shot(SHOTS / "explore.png")
        ex.select("noctcm-compare", "(none)")
        ex.change(lambda: page.locator(".noctcm-path select").select_option(label="models/teacher/checkpoint.pt"))
        _check_teacher(ex)
        ex.shot(SHOTS / "explore-teacher.png")
        _no_errors(page)
