"""The explorer (nbs/explore.ipynb) in a real browser: JupyterLab + headless Chromium driven by Playwright.

The test trains two tiny checkpoints, starts JupyterLab on 127.0.0.1 (a free port, a random token, no browser) in a
throw-away folder holding a *copy* of the notebook (JupyterLab's autosave never touches nbs/), runs all cells from
the Run menu, then changes the widgets (seed, steps, t_mid, resolution, compare) and checks that the shown samples
change and that no cell shows an error. Screenshots go to `out/screenshots/` (or $NOCTCM_SCREENSHOTS);
`docs/screenshots/explore.png` in the README is one of them.

Needs Debian's `chromium` (/usr/bin/chromium, or $NOCTCM_CHROMIUM) and PyPI's `playwright` (in `.[dev]`);
Playwright's own browser download is not used. Skipped, with the reason, where either is missing.
"""
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


@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server in tmp_path with two tiny checkpoints and a copy of the explorer; yields (url, token)."
    if not pathlib.Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; or set NOCTCM_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    if not (BIN / "jupyter-lab").is_file():
        pytest.skip("jupyterlab is not installed (pip install -e '.[dev]')")
    w = tmp_path / "work"; w.mkdir()
    _run(["data", "fetch", "digits", "--root", "data"], w)
    _run(["train", "--out", "out/sct", "--no-progress", *TINY], w)
    _run(["train", "--out", "out/sct_seed1", "--no-progress", *TINY, "training.seed=1"], w)
    shutil.copy(ROOT / "nbs" / "explore.ipynb", w / "explore.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "jcfg"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "jrun"),
           "IPYTHONDIR": str(tmp_path / "ipy"), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    log = open(tmp_path / "lab.log", "w")
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


def _accept_kernel_dialog(page):
    "Click 'Select' on JupyterLab's 'Select Kernel' dialog if it is open (the notebook's own kernel is preselected)."
    dlg = page.locator(".jp-Dialog").filter(has_text="Select Kernel")
    if dlg.count() and dlg.first.is_visible():
        dlg.first.get_by_role("button", name="Select", exact=True).click()


def test_explorer_in_chromium(lab):
    from playwright.sync_api import sync_playwright, expect
    url, token = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.set_default_timeout(60_000)
        page.goto(f"{url}/lab/tree/explore.ipynb?token={token}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first).to_be_attached(timeout=120_000)
        _accept_kernel_dialog(page)
        def run_all():
            page.locator(".jp-Notebook .jp-Cell").first.click()        # focus the notebook, then Run > Run All Cells
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        run_all()
        status = page.locator(".noctcm-status")
        for i in range(72):                                            # up to 6 min on a loaded machine (CI runs two
            _accept_kernel_dialog(page)                                # workers): JupyterLab may ask for the kernel
            if "update 1:" in (status.first.text_content(timeout=1000) if status.count() else ""): break
            if i % 24 == 23 and not status.count():                    # nothing after 2 min: run all cells again
                run_all()
            page.wait_for_timeout(5000)
        expect(status).to_contain_text("update 1:", timeout=30_000)
        samples = page.locator("img.noctcm-samples")
        expect(samples).to_be_visible()

        news = page.get_by_role("button", name="No", exact=True)     # JupyterLab's "notify about news?" toast
        if news.count(): news.first.click()
        widget_area = page.locator(".jp-OutputArea-output").filter(has=page.locator(".noctcm-status"))

        def shot(name):
            widget_area.scroll_into_view_if_needed()
            widget_area.screenshot(path=str(SHOTS / f"explore-{name}.png"))

        def wait_update(before):
            expect(status).not_to_have_text(before, timeout=60_000)
            assert "Error" not in status.inner_text(), status.inner_text()

        def change(action):
            before, img = status.inner_text(), samples.screenshot()
            action()
            wait_update(before)
            page.wait_for_timeout(300)                   # the new PNG is decoded and drawn
            after = samples.screenshot()
            assert after != img, f"the samples did not change ({status.inner_text()})"
            return after

        def set_readout(cls, value):
            r = page.locator(f".{cls} .widget-readout")
            r.click(); page.keyboard.press("Control+A"); page.keyboard.type(str(value)); page.keyboard.press("Enter")

        shot("initial")
        change(lambda: (page.locator(".noctcm-seed input").fill("7"), page.locator(".noctcm-seed input").press("Enter")))
        shot("seed7")
        change(lambda: set_readout("noctcm-steps", 1))
        change(lambda: set_readout("noctcm-steps", 2))
        expect(page.get_by_text("f(x_t, 1.100)")).to_be_visible()   # the 2-step trajectory
        change(lambda: set_readout("noctcm-t_mid", 0.6))
        shot("tmid06")
        sel = page.locator(".noctcm-resolution select")
        labels = sel.locator("option").all_inner_texts()
        assert labels[0].replace("\xa0", " ") == "8px (training)" and "4px" not in labels, labels   # only sizes the model runs at
        w0 = samples.evaluate("e => e.naturalWidth")
        change(lambda: sel.select_option(label="16px"))
        assert samples.evaluate("e => e.naturalWidth") != w0
        before = status.inner_text()
        page.locator(".noctcm-compare select").select_option(label="out/sct_seed1/checkpoint.pt")
        wait_update(before)
        expect(page.locator("img.noctcm-compare")).to_be_visible()
        page.wait_for_timeout(300)
        assert page.locator("img.noctcm-compare").screenshot() != samples.screenshot()
        shot("compare")
        # no cell shows an error (tracebacks render as stderr outputs with "Error"/"Traceback")
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
        texts = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
        assert not texts, texts
        prompts = page.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
        assert prompts and all(p.strip() not in ("[ ]:", "[*]:") for p in prompts), prompts
        browser.close()
