"""The explorer's buttons as JupyterLab draws them (real JupyterLab, headless Debian Chromium): Stop is red
only while there is a run to stop; disabled, it looks like every other disabled button; a 12 MB photo uploaded
through the button reaches the kernel (JupyterLab started as `make lab` starts it)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_lab_browser import KERNEL_JS, LINES_JS, explore_notebook, lab  # noqa: F401 - lab is the fixture

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


# where each part of the explorer is drawn: the checkpoint list, the hint under it, the controls column and the output area
BOXES_JS = """() => { const box = (e) => e.getBoundingClientRect();
  const select = document.querySelector('.widget-select-multiple select');
  const hint = [...document.querySelectorAll('.widget-label')].find((e) => e.textContent.startsWith('Ctrl-click'));
  const example = [...document.querySelectorAll('.widget-dropdown')].find((e) => e.textContent.includes('Example'));
  const area = select.closest('.jp-OutputArea-output');
  return {select: box(select).width, hint: box(hint).right, controls: box(example.parentElement).left,
          right: Math.max(...[...area.querySelectorAll('.widget-inline-hbox, .widget-text, .widget-dropdown')]
                             .filter((e) => e.offsetParent).map((e) => box(e).right)),
          area: box(area).right}; }"""


def test_the_layout_holds_for_every_strategy_and_an_unbroken_answer(lab, artifacts_dir):  # noqa: F811 - the fixture
    """A sampling strategy's argument and seed fit the controls' column (they widened it, squeezing the checkpoint
    list and drawing the controls over its hint); an answer with no spaces ('!!!!' noise, a URL) wraps in its cell
    (it widened the table past the output, whose latency, tokens and memory were cut off unseen)."""
    from playwright.sync_api import expect

    expect.set_options(timeout=120_000)
    with explore_notebook(lab, failure_shot=artifacts_dir / "lab-01-layout-failure.png") as page:
        page.evaluate(KERNEL_JS, "explorer.wait()")
        page.get_by_role("button", name="Compare").scroll_into_view_if_needed()
        greedy = page.evaluate(BOXES_JS)
        # the upload button says its limit (a larger file never reaches the kernel, and nothing says so) and its
        # count of uploads, read whole: it was cut to 'Upload image ...', its tooltip 'null'
        upload = page.locator(".widget-upload")
        assert upload.evaluate("e => e.scrollWidth <= e.clientWidth"), upload.inner_text()
        assert "256 MB" in upload.inner_text() and "path" in upload.get_attribute("title"), upload.get_attribute("title")
        assert greedy["hint"] <= greedy["controls"], greedy
        strategy = page.locator(".widget-dropdown", has_text="Strategy").locator("select")
        for name, label in (("nucleus", "top p"), ("temperature", "temperature"), ("beam", "beams")):
            strategy.select_option(name)
            field = page.locator(".widget-text", has_text=label)
            expect(field).to_be_visible()
            assert field.locator(".widget-label").evaluate("e => e.scrollWidth <= e.clientWidth"), label  # read whole
            boxes = page.evaluate(BOXES_JS)
            page.screenshot(path=str(artifacts_dir / f"lab-01-layout-{name}.png"))
            assert boxes["select"] == greedy["select"], (name, boxes, greedy)  # the list keeps its width
            assert boxes["hint"] <= boxes["controls"], (name, boxes)  # nothing drawn over the hint
            assert boxes["right"] <= boxes["area"], (name, boxes)  # every control inside the output area
        # a laptop's narrow window, the file browser open: the controls go under the list, none cut off
        page.set_viewport_size({"width": 1000, "height": 900})
        strategy.select_option("nucleus")
        page.screenshot(path=str(artifacts_dir / "lab-01-layout-narrow.png"))
        narrow = page.evaluate(BOXES_JS)
        assert narrow["right"] <= narrow["area"] and narrow["select"] == greedy["select"], narrow
        page.set_viewport_size({"width": 1280, "height": 900})
        # the notebook's run, its answers replaced by ones with no place to break
        unbroken = ("from vlm_lab.widgets_html import Run; rows = [dict(r) for r in explorer.history[0].rows]; "
                    "rows[0]['text'] = '!' * 400; rows[1]['text'] = 'https://example.com/' + 'x' * 300; "
                    "rows[1]['checkpoint'] = 'lr1e-4-bs64-warmup100-vision-unfrozen-long-experiment-name/checkpoint-1000'; "
                    "explorer._show('', Run('unbroken', rows).html(), explorer.history)")  # fmt: skip
        page.evaluate(KERNEL_JS, unbroken)
        table = page.locator(".widget-html-content > table.vlm-lab-results")
        expect(table.locator("tr.vlm-lab-row").first).to_contain_text("!!!!")
        table.scroll_into_view_if_needed()
        page.screenshot(path=str(artifacts_dir / "lab-01-layout-unbroken.png"))
        area = table.evaluate("t => t.closest('.jp-OutputArea-output').getBoundingClientRect().right")
        memory = table.locator("tr.vlm-lab-row").first.locator("td").nth(4)  # the last column, drawn inside the output
        assert memory.evaluate("td => td.getBoundingClientRect().right") <= area
        # a long checkpoint name (a run's folder and checkpoint-N) wraps in its folder, its checkpoint-N whole, and
        # leaves the answer the most room
        name, answer = (table.locator("tr.vlm-lab-row").nth(1).locator("td").nth(i) for i in (0, 1))
        assert name.locator("span").evaluate_all(LINES_JS) == [1], name.inner_text()
        assert name.evaluate("td => td.getBoundingClientRect().width") < answer.evaluate("td => td.getBoundingClientRect().width")


def test_a_12_mb_photo_uploaded_in_the_browser_reaches_the_kernel(lab, tmp_path, artifacts_dir):  # noqa: F811 - the fixture
    # one websocket message carries the file: past the server's limit (tornado's 10 MiB unless raised, as
    # notebooks/.jupyter/ does for `make lab`) the server drops the connection, the page reconnects, and nothing arrives
    from playwright.sync_api import expect

    expect.set_options(timeout=120_000)  # kernel start on 2 busy cores
    photo = tmp_path / "phone photo.png"
    noise = np.random.default_rng(0).integers(0, 256, (2048, 2048, 3), dtype=np.uint8)  # noise does not compress
    Image.fromarray(noise).save(photo, compress_level=1)
    assert photo.stat().st_size > 12 * 2**20
    with explore_notebook(lab, failure_shot=artifacts_dir / "lab-01-upload-failure.png") as page:
        with page.expect_file_chooser() as chooser:  # the button opens the file dialog, as for a user
            page.locator(".widget-upload").click()
        chooser.value.set_files(str(photo))
        expect(page.locator(".widget-html-content").first).to_contain_text("Using uploaded image 'phone photo.png' (2048x2048)")
        assert page.evaluate(KERNEL_JS, "print(explorer.image_source.value, explorer.uploaded.size)") == "upload (2048, 2048)"
        # a file beside the notebook, by the path JupyterLab's Copy Path gives (relative to the server's root,
        # notebooks/ here as under `make lab`; the kernel works in the project root)
        Image.fromarray(noise[:64, :48]).save(tmp_path / "project" / "notebooks" / "beside.png")
        path = page.locator(".widget-text", has_text="Image path").locator("input")
        path.fill("beside.png")
        path.press("Enter")
        expect(page.locator(".widget-html-content").first).to_contain_text("notebooks/beside.png' (48x64)")
        # back to an example, then the same photo chosen again: the browser sends it again, and it is used again
        page.locator(".widget-toggle-button", has_text="example").click()
        expect(page.locator(".widget-image").first).to_have_attribute("width", "128")  # the example's preview
        with page.expect_file_chooser() as chooser:
            page.locator(".widget-upload").click()
        chooser.value.set_files(str(photo))
        expect(page.locator(".widget-html-content").first).to_contain_text("Using uploaded image 'phone photo.png' (2048x2048)")
