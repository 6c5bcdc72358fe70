"""Lesson 07's widget in a real browser: JupyterLab, Chromium driven by Playwright, a stroke on the canvas.

The test starts JupyterLab on 127.0.0.1 with a one-off token in a temporary folder (a copy of the
notebook, so the repository's rendered copy is never saved over), opens the notebook in Debian's
Chromium (Playwright's own browser download needs the internet), runs every cell from the Run
menu, draws a stroke on the canvas, and checks that the reconstruction and the PSNR readout
change. The screenshot goes to ``runs/browser/``.

Without Playwright or Chromium it skips and says why; under CI (``CI`` set) it fails instead,
since ``.ci/run`` installs Chromium.
"""

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = "07_play_with_an_mae.ipynb"
SHOTS = ROOT / "runs" / "browser"
CHROMIUM = ("chromium", "chromium-browser")
CELLS_TIMEOUT_MS = 15 * 60 * 1000  # running every cell, training smoke models first on a fresh clone


def _missing(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it: see .ci/run)")
    pytest.skip(reason)


def _chromium() -> str:
    for name in CHROMIUM:
        if path := shutil.which(name):
            return path
    _missing("no Chromium on PATH: install it (Debian: apt-get install -y chromium) to run the browser test")


def _lesson_data_missing() -> list[str]:
    from maelib.data import data_root

    root = data_root(must_exist=False)
    return [str(root / p) for p in ("faces/celeba", "facades/images") if not (root / p).is_dir()]


def _settings(folder: Path) -> None:
    """JupyterLab settings for a test: every cell rendered (no windowing), no autosave, no news fetched."""
    overrides = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                            "checkForUpdates": False},
    }
    for name, value in overrides.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


def hidden_count(readout: str) -> int:
    """``12`` from the widget's readout ``12 of 64 patches hidden | masked PSNR: ...``."""
    return int(re.match(r"(\d+) of \d+ patches hidden", readout).group(1))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server on 127.0.0.1 serving a copy of the notebook; yields (base URL, token)."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "notebooks" / NOTEBOOK, work / NOTEBOOK)
    _settings(tmp_path / "settings")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "MAELIB_PRESET": "smoke"}
    log = open(tmp_path / "jupyterlab.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", "--allow-root", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={work}",
         f"--LabApp.user_settings_dir={tmp_path / 'settings'}", f"--LabApp.workspaces_dir={tmp_path / 'ws'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start: {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield base, token
    finally:
        try:  # shuts the kernels down with the server
            urllib.request.urlopen(urllib.request.Request(f"{base}/api/shutdown?token={token}", method="POST"),
                                   timeout=5)
            server.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            server.kill()
            server.wait()
        log.close()


def test_a_stroke_on_the_canvas_updates_the_reconstruction_and_the_psnr(jupyterlab):
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _missing("Playwright is not installed: pip install playwright (its Python package; Chromium comes from apt)")
    chromium = _chromium()
    if missing := _lesson_data_missing():
        pytest.skip(f"the lesson's images are not in the data root ({', '.join(missing)}): set MAELIB_DATA_DIR")
    base, token = jupyterlab
    code_cells = sum(c["cell_type"] == "code" for c in json.loads((ROOT / "notebooks" / NOTEBOOK).read_text())["cells"])
    SHOTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        try:
            page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}")
            expect(page.locator(".jp-NotebookPanel .jp-Cell").first).to_be_visible(timeout=120_000)
            idle = page.get_by_text("Python 3 (ipykernel) | Idle")  # the status bar, once the kernel is up
            expect(idle).to_be_visible(timeout=120_000)
            # the committed outputs go first, so that every output and prompt seen below is this run's
            page.get_by_role("menuitem", name="Edit", exact=True).click()
            page.get_by_role("menuitem", name="Clear Outputs of All Cells", exact=True).click()
            prompts = page.locator(".jp-CodeCell .jp-InputPrompt")
            expect(prompts).to_have_count(code_cells)  # every cell is in the page (no windowing)
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()

            canvas = page.locator("canvas.mae-canvas")
            expect(canvas).to_be_visible(timeout=CELLS_TIMEOUT_MS)
            # every cell has run (each prompt shows its execution count; an error stops Run All), and the
            # kernel is idle: the pointer's messages are answered now, and no later cell changes the widget
            page.wait_for_function(
                """() => [...document.querySelectorAll(".jp-CodeCell .jp-InputPrompt")]
                    .every(p => /\\[\\d+\\]/.test(p.textContent))""", timeout=CELLS_TIMEOUT_MS)
            expect(idle).to_be_visible(timeout=60_000)

            recon = page.locator("img.mae-reconstruction")
            readout = page.locator(".mae-psnr")
            canvas.scroll_into_view_if_needed()
            # the mask preset from its control: a band of a quarter of the rows (2 of the 8 at 64 px)
            page.locator(".widget-dropdown", has_text="mask").locator("select").select_option("band")
            expect(readout).to_contain_text("16 of 64 patches hidden | masked PSNR", timeout=30_000)
            expect(idle).to_be_visible(timeout=30_000)
            before_src, before_text = recon.get_attribute("src"), readout.inner_text()
            before_pixels = recon.screenshot()

            # a stroke across the canvas: along the middle, then down a diagonal
            box = canvas.bounding_box()
            page.mouse.move(box["x"] + 3, box["y"] + box["height"] * 0.5)
            page.mouse.down()
            page.mouse.move(box["x"] + box["width"] - 3, box["y"] + box["height"] * 0.5, steps=25)
            page.mouse.move(box["x"] + 3, box["y"] + box["height"] - 3, steps=25)
            page.mouse.up()

            # the kernel answers the stroke's pointer messages one by one: wait until the readout settles
            after_text, deadline = before_text, time.monotonic() + 60
            while time.monotonic() < deadline:
                page.wait_for_timeout(1500)
                now = readout.inner_text()
                if now == after_text and now != before_text and idle.is_visible():
                    break
                after_text = now
            assert "masked PSNR" in after_text and after_text != before_text, (before_text, after_text)
            assert hidden_count(after_text) > hidden_count(before_text), "the stroke hid no patch"
            expect(recon).not_to_have_attribute("src", before_src)
            assert recon.screenshot() != before_pixels, "the reconstruction image did not change"
            page.screenshot(path=str(SHOTS / "07_play_with_an_mae.png"), full_page=False)
        except Exception:
            page.screenshot(path=str(SHOTS / "07_play_with_an_mae.failed.png"))
            raise
        finally:
            browser.close()
