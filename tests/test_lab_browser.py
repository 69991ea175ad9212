"""notebooks/01_explore.ipynb in real JupyterLab, driven by headless Debian Chromium.

Starts JupyterLab on loopback in a scratch project root (the notebook, a
``pyproject.toml`` and ``checkpoints/shapes`` linked to the test checkpoints),
runs every cell (one compares from code), picks two checkpoints in the explorer widget, compares
them with Enter in the prompt and then with a double click on Compare (one run; the runs before stay
under it), starts a third run and, while it runs, has the kernel answer and clicks Stop (the finished
answer stays, the run says what was stopped), and checks that every piece of text in the results
reads (WCAG contrast) in the light and the dark theme; the screenshots land in ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from contrast import CONTRASTS_JS

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# what `code` prints in the notebook's kernel (run after every message the page sent before it)
KERNEL_JS = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  let out = '';
  const future = kernel.requestExecute({code, silent: true});
  future.onIOPub = (msg) => { if (msg.header.msg_type === 'stream') out += msg.content.text; };
  await future.done;
  return out.trim();
}"""

# the lines each element's text takes
LINES_JS = """els => els.map((el) => { const r = document.createRange(); r.selectNodeContents(el);
                                    return new Set([...r.getClientRects()].map((x) => Math.round(x.top))).size; })"""


# whether a text fits an input's box, measured in the input's font
FITS_JS = """(el, text) => { const s = getComputedStyle(el), c = document.createElement('canvas').getContext('2d');
                              c.font = s.font; const pad = parseFloat(s.paddingLeft) + parseFloat(s.paddingRight);
                              return c.measureText(text).width <= el.clientWidth - pad; }"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_serving(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"jupyter lab did not answer {url} in {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def lab(tmp_path, tiny_dir, venv_bin):
    """JupyterLab serving a scratch project root; yields its base URL; the server (and its kernels) die after."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; run `make browser` (apt-get install -y chromium)")
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    shutil.copy(ROOT / "notebooks" / "01_explore.ipynb", project / "notebooks")
    (project / "checkpoints").mkdir()
    (project / "checkpoints" / "shapes").symlink_to(tiny_dir, target_is_directory=True)
    home = tmp_path / "jupyter"  # no user settings, workspaces or runtime files outside the test
    notification = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text('{"fetchNews": "false", "checkForUpdates": false}')  # no news toast over the widget
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
        "HF_HUB_OFFLINE": "1",
        "JUPYTER_CONFIG_PATH": str(ROOT / "notebooks" / ".jupyter"),  # as `make lab`: uploads past the default 10 MiB message
    }
    port = _free_port()
    log = tmp_path / "lab.log"
    cmd = [
        str(venv_bin / "jupyter"), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0", "--IdentityProvider.token=", f"--ServerApp.root_dir={project}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run all cells through Lab's own command
        "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly",  # offline: no PyPI lookups
        *(["--allow-root"] if os.geteuid() == 0 else []),  # CI containers run as root
    ]  # fmt: skip
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_serving(f"{base}/api/status", proc, log)
        yield base
    finally:
        # SIGTERM lets the server shut its kernels down; then make sure the whole group is gone
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@contextlib.contextmanager
def explore_notebook(lab: str, failure_shot: Path | None = None) -> Iterator:
    """Notebook 01 opened on ``lab`` in headless Chromium, its cells run (the explorer renders from the kernel): the page.

    A block that fails leaves a screenshot at ``failure_shot``, if given (CI keeps test-artifacts/)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(90_000)
            page.goto(f"{lab}/lab/tree/notebooks/01_explore.ipynb?reset")
            page.wait_for_function("() => window.jupyterapp?.shell.currentWidget?.sessionContext?.session?.kernel")
            page.locator(".jp-Notebook").first.click()  # focus the notebook, as a user would
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            try:
                yield page
            except Exception:
                if failure_shot is not None:
                    page.screenshot(path=str(failure_shot))
                raise
        finally:
            browser.close()


def test_explore_notebook_compares_two_checkpoints_in_the_browser(lab, artifacts_dir):
    from playwright.sync_api import expect

    expect.set_options(timeout=120_000)  # kernel start + model loads on 2 busy cores
    shot = artifacts_dir / "lab-01-explore.png"
    with explore_notebook(lab, failure_shot=artifacts_dir / "lab-01-explore-failure.png") as page:
        # the explorer renders from the kernel; then pick checkpoint-250 and checkpoint-1000
        select = page.locator(".widget-select-multiple select")
        expect(select).to_be_visible()
        expect(select.locator("option")).to_have_count(5)
        select.select_option(label=["checkpoint-250", "checkpoint-1000"])
        # the strategy's argument field shows for a sampling strategy, under its own name, and hides for greedy
        strategy = page.locator(".widget-dropdown", has_text="Strategy").locator("select")
        top_p = page.locator(".widget-text", has_text="top p")
        strategy.select_option("nucleus")
        expect(top_p).to_be_visible()
        strategy.select_option("greedy")
        expect(top_p).to_be_hidden()
        page.locator(".widget-text", has_text="Prompt").locator("input").press("Enter")  # Enter compares

        rows = page.locator("table.vlm-lab-results tr.vlm-lab-row")  # every run's
        current = page.locator(".widget-html-content > table.vlm-lab-results tr.vlm-lab-row")  # the last run's
        expect(current.nth(0)).to_contain_text("checkpoint-250")
        expect(current).to_have_count(2)
        expect(current.nth(1)).to_contain_text("checkpoint-1000")
        expect(current.nth(1)).to_contain_text("red")  # the first example asks for the color of a red shape
        # a checkpoint's name and its numbers each on one line (the earlier run's cut-off note took their room)
        short = page.locator("table.vlm-lab-results tr.vlm-lab-row td:not(:nth-child(2))")
        assert short.evaluate_all(LINES_JS) == [1] * 4 * 4  # this run's 2 rows and the notebook's run's 2, 4 cells each
        page.locator(".widget-html-content").first.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "lab-01-explore-two.png"))
        # a first-time user learns how to pick several checkpoints in a multiple select
        hint = page.get_by_text("Ctrl-click (⌘ on a Mac) or Shift-click: several")
        expect(hint).to_be_visible()
        assert hint.evaluate("e => e.scrollWidth <= e.clientWidth")  # whole, not cut off with an ellipsis
        # the image path's placeholder is read whole, in the field's own font
        path = page.locator(".widget-text", has_text="Image path").locator("input")
        assert path.evaluate(FITS_JS, path.get_attribute("placeholder")), path.get_attribute("placeholder")
        expect(page.get_by_role("button", name="Compare")).to_be_enabled()
        history = "explorer.wait(); print(len(explorer.history))"  # after the runs the page started
        assert page.evaluate(KERNEL_JS, history) == "2"  # the notebook's run from code, then Enter's
        # again, with a double click: one more run (the second click reaches the kernel while the
        # first runs, or so soon after it that it was made before its answers showed), and the runs
        # before stay under it
        compare = page.get_by_role("button", name="Compare")
        compare.dblclick()
        expect(page.locator(".vlm-lab-earlier")).to_contain_text("Earlier runs")
        expect(rows).to_have_count(6)
        assert page.evaluate(KERNEL_JS, history) == "3"  # asked after both clicks were handled (the kernel takes them in order)

        # Stop: the run is held after its first answer (in the kernel, by an observer the test adds) until
        # the kernel is asked to go on: a kernel the run blocked could never be asked
        hold = ("import threading; held, go_on = threading.Event(), threading.Event(); explorer.progress.observe("
                "lambda c: (held.set(), go_on.wait(300)) if c['new'] == 1 else None, names='value')")  # fmt: skip
        page.evaluate(KERNEL_JS, hold)
        select.select_option(label=["checkpoint-0", "checkpoint-500", "checkpoint-1000"])
        stop = page.get_by_role("button", name="Stop")
        expect(stop).to_be_disabled()
        compare.click()
        expect(stop).to_be_enabled()
        expect(compare).to_be_disabled()
        expect(page.locator(".widget-html-content")).to_contain_text("Running checkpoint-0 (1/3)")
        # the kernel answers while the run is held after its first answer
        assert page.evaluate(KERNEL_JS, "held.wait(300); print(explorer.running, len(explorer.rows))") == "True 1"
        stop.click()
        expect(page.get_by_role("button", name="Stopping…")).to_be_disabled()
        page.evaluate(KERNEL_JS, "go_on.set()")
        note = page.locator(".vlm-lab-warn", has_text="Stopped:")
        expect(note).to_have_text("Stopped: 1 of 3 checkpoints finished; not run: checkpoint-500, checkpoint-1000.")
        expect(current).to_have_count(1)
        expect(compare).to_be_enabled()
        expect(page.get_by_role("button", name="Stop")).to_be_disabled()
        box = page.locator(".widget-image").first.bounding_box()  # the preview, not stretched to its column
        assert box and max(box["width"], box["height"]) <= 130, box
        results = page.locator("table.vlm-lab-results").first
        results.scroll_into_view_if_needed()
        page.screenshot(path=str(shot), full_page=False)
        for theme, light, layout in (("JupyterLab Light", "true", "white"), ("JupyterLab Dark", "false", "#111")):
            page.evaluate(f"() => window.jupyterapp.commands.execute('apputils:change-theme', {{theme: '{theme}'}})")
            # the attribute our dark colours key on, and the theme's own stylesheet, both in place
            page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{light}' && getComputedStyle("
                                   f"document.body).getPropertyValue('--jp-layout-color0').trim() === '{layout}'")
            contrasts = page.evaluate(CONTRASTS_JS, ".widget-html-content:has(table.vlm-lab-results)")
            assert len(contrasts) > 20, contrasts  # the labels, the header and both tables' cells
            unreadable = [(text, round(ratio, 2)) for text, ratio in contrasts if ratio < 4.5]  # WCAG AA
            assert not unreadable, f"{theme}: {unreadable}"
        expect(page.locator("#jupyterlab-splash")).to_have_count(0)  # the splash a theme change shows
        page.screenshot(path=str(artifacts_dir / "lab-01-explore-dark.png"), full_page=False)
    assert shot.stat().st_size > 10_000
