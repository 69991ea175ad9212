"""The explorer's buttons as JupyterLab draws them (real JupyterLab, headless Debian Chromium): Stop is red
only while there is a run to stop; disabled, it looks like every other disabled button."""

from __future__ import annotations

import pytest
from test_lab_browser import KERNEL_JS, explore_notebook, lab  # noqa: F401 - lab is the fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# the button's background as drawn: its colour with the button's opacity over the white page, [r, g, b]
DRAWN_JS = """(b) => { const s = getComputedStyle(b), a = parseFloat(s.opacity);
  const [r, g, bl] = s.backgroundColor.match(/\\d+(\\.\\d+)?/g).map(Number);
  return [r, g, bl].map((v) => Math.round(v * a + 255 * (1 - a))); }"""


def _reddish(rgb: list[int]) -> bool:
    r, g, b = rgb
    return r - max(g, b) > 40


def test_stop_is_red_only_while_it_can_stop_something(lab, artifacts_dir):  # noqa: F811 - the fixture
    from playwright.sync_api import expect

    expect.set_options(timeout=120_000)  # kernel start + model loads on 2 busy cores
    with explore_notebook(lab) as page:
        stop, compare = page.get_by_role("button", name="Stop"), page.get_by_role("button", name="Compare")
        expect(stop).to_be_disabled()
        expect(compare).to_be_enabled()
        page.evaluate(KERNEL_JS, "explorer.wait()")  # the notebook's own run from code has ended
        page.get_by_role("button", name="Compare").scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "lab-01-stop-idle.png"))
        idle = stop.evaluate(DRAWN_JS)
        assert not _reddish(idle), idle  # nothing to stop: not a bright red call to action
        assert stop.evaluate("b => parseFloat(getComputedStyle(b).opacity)") < 1
        # a run held after its first answer: Stop is live, and red
        hold = ("import threading; held, go_on = threading.Event(), threading.Event(); explorer.progress.observe("
                "lambda c: (held.set(), go_on.wait(300)) if c['new'] == 1 else None, names='value')")  # fmt: skip
        page.evaluate(KERNEL_JS, hold)
        page.locator(".widget-select-multiple select").select_option(label=["checkpoint-0", "checkpoint-500"])
        compare.click()
        expect(stop).to_be_enabled()
        assert page.evaluate(KERNEL_JS, "held.wait(300); print(explorer.running)") == "True"
        assert _reddish(stop.evaluate(DRAWN_JS)), stop.evaluate(DRAWN_JS)
        page.screenshot(path=str(artifacts_dir / "lab-01-stop-live.png"))
        stop.click()
        stopping = page.get_by_role("button", name="Stopping…")
        expect(stopping).to_be_disabled()
        assert not _reddish(stopping.evaluate(DRAWN_JS)), stopping.evaluate(DRAWN_JS)  # clicked: nothing more to do
        page.evaluate(KERNEL_JS, "go_on.set(); explorer.wait()")
        expect(stop).to_be_disabled()
        assert not _reddish(stop.evaluate(DRAWN_JS)), stop.evaluate(DRAWN_JS)
        page.screenshot(path=str(artifacts_dir / "lab-01-stop-after.png"))
