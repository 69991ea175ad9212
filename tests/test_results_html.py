"""comparison.html as a researcher reads it, in real headless Chromium: the samples where a checkpoint
got wrong what the one before got right are marked and can be shown alone, the page fits a narrow
window, and the column names stay in view down a long table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from contrast import CONTRASTS_JS

from vlm_lab.compare import ComparisonResult, compare
from vlm_lab.config import CompareConfig
from vlm_lab.model_cache import format_bytes

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
VISIBLE = "rows => rows.filter(r => r.offsetParent !== null).map(r => r.cells[1].innerText)"  # their ids

# the cells whose text is one plain word (no space or hyphen, not a 400-letter one) and still spans more than one line
SPLIT_WORDS = """cells => cells.filter((c) => {
  const t = c.firstChild;
  if (!t || t.nodeType !== 3 || /[\\s-]/.test(t.textContent.trim()) || !t.textContent.trim() || t.textContent.length > 40) return false;
  const r = document.createRange(); r.selectNodeContents(t);
  return new Set([...r.getClientRects()].map((x) => Math.round(x.top))).size > 1;
}).map((c) => c.textContent)"""

# the lines each element's text takes
LINES_JS = """els => els.map((el) => { const r = document.createRange(); r.selectNodeContents(el);
                                    return new Set([...r.getClientRects()].map((x) => Math.round(x.top))).size; })"""

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def regressing(tiny_checkpoints, tmp_path_factory) -> ComparisonResult:
    """checkpoint-0, checkpoint-1000, then 250, 500 and 750: checkpoint-250 gets wrong many samples checkpoint-1000 got right."""
    out = tmp_path_factory.mktemp("html") / "cmp"
    config = CompareConfig(checkpoints=tuple(str(tiny_checkpoints[i]) for i in (0, -1, 1, 2, 3)), data="shapes:val:12",
                           batch_size=12, device="cpu", output_dir=str(out))  # fmt: skip
    return compare(config, progress=False)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing; run `make browser` (apt-get install -y chromium)")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def test_regressions_are_marked_where_they_happen_and_can_be_shown_alone(regressing, browser):
    result = regressing
    pairs = result.pairs()
    regressed = {(p.b, i) for p in pairs for i in p.right_to_wrong}
    fixed = {(p.b, i) for p in pairs for i in p.wrong_to_right}
    assert regressed and fixed and len(result.disagreements()) == len(result.rows)  # every row disagrees: checkpoint-0
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    page.goto((result.output_dir / "comparison.html").as_uri())
    # [the column's checkpoint, the row's id] of each marked cell
    cells = "marks => marks.map((m) => { const td = m.closest('td'), tr = td.parentElement;"
    cells += " return [td.closest('table').tHead.rows[0].cells[td.cellIndex].innerText, tr.cells[1].innerText]; })"
    assert {tuple(c) for c in page.eval_on_selector_all("table.samples .flip.down", cells)} == regressed
    assert {tuple(c) for c in page.eval_on_selector_all("table.samples .flip.up", cells)} == fixed
    down = page.locator("table.samples td:has(> .flip.down)").first
    assert "was right" in down.inner_text() and "checkpoint-1000" in down.locator(".flip").get_attribute("title")
    assert down.evaluate("td => getComputedStyle(td).boxShadow") != "none"  # the cell itself stands out
    rows = "table.samples tbody tr"
    page.check("input.only-regressions")
    assert page.eval_on_selector_all(rows, VISIBLE) == [r["id"] for r in result.rows if any((n, r["id"]) in regressed for n in result.checkpoints)]
    assert str(len({i for _, i in regressed})) in page.inner_text("label:has(input.only-regressions)")
    page.uncheck("input.only-regressions")
    assert len(page.eval_on_selector_all(rows, VISIBLE)) == len(result.rows)
    page.close()


def test_without_references_there_is_no_regression_toggle(regressing):
    result = ComparisonResult.load(regressing.output_dir)
    for row in result.rows:
        row["reference"] = None
        for out in row["outputs"].values():
            out["score"] = None
    html = result.html()
    assert "class='only-disagree'" in html and "class='only-regressions'" not in html and "was right" not in html
    # nothing scored: no columns of dashes and blanks, but what to add for them
    summary = html[html.index("<table class='summary'>"):]
    summary = summary[: summary.index("</table>")]
    heads = re.findall(r"<th>([^<]*)</th>", summary)
    assert heads == ["checkpoint", "step", "latency", "tokens/s", "memory", "notes"]
    # on CPU the number is the weights' bytes, not a peak: said in the cell, not only on hover
    assert all(f"{format_bytes(s['peak_memory_bytes'])} weights</td>" in summary for s in result.summary)
    assert "no sample has a reference: nothing is scored (add &quot;reference&quot; to each line of the data" in html
    assert "flipped samples" not in html and "<th>reference</th>" not in html  # nor an empty reference column
    settings = html[: html.index("<table class='summary'>")]
    assert "not scored (no references)" in settings and "match" not in settings  # no metric claimed for nothing scored


def test_the_page_fits_a_narrow_window_and_a_long_output_wraps(regressing, tmp_path, browser):
    result = ComparisonResult.load(regressing.output_dir)
    result.rows[0]["outputs"][result.checkpoints[0]]["output"] = "!" * 400  # float16 overflow: one unbroken word
    out = result.save(tmp_path / "long")
    page = browser.new_page(viewport={"width": 800, "height": 700})
    page.goto((out / "comparison.html").as_uri())
    assert page.evaluate("document.documentElement.scrollWidth") <= 800  # no sideways scrolling of the whole page
    ids = page.eval_on_selector_all("table.samples tbody td:nth-child(2)", "cells => cells.map(c => c.offsetWidth)")
    assert min(ids) >= 60  # ids break at their hyphens, not after every letter
    lines = page.eval_on_selector_all("table.samples tbody td:nth-child(2)", LINES_JS)
    assert set(lines) == {1}, lines  # a short id on one line: 'val-00000-' over 'color' is harder to scan
    names = page.eval_on_selector_all("table.summary tbody td:first-child", LINES_JS)
    assert set(names) == {1}, names  # so is a checkpoint's name: the summary scrolls in its box instead
    split = page.eval_on_selector_all("table.samples td, table.samples th", SPLIT_WORDS)
    assert not split, f"words broken across lines: {split[:5]}"
    cell = page.locator("table.samples tbody tr").first.locator("td").nth(4)
    assert cell.bounding_box()["width"] < 400 and "!" * 400 in cell.inner_text().replace("\n", "")
    # five checkpoints do not fit 800 pixels with their words whole: the samples scroll sideways in their own box,
    # and down a long table the checkpoint names stay in view
    box = page.locator("div.samples")
    assert box.evaluate("b => b.scrollWidth > b.clientWidth && b.clientHeight <= innerHeight")
    page.locator("table.samples tbody tr").last.scroll_into_view_if_needed()
    head = page.locator("table.samples thead th").nth(4)
    assert head.inner_text() == result.checkpoints[0]
    assert abs(head.bounding_box()["y"] - box.bounding_box()["y"]) <= 1 and head.bounding_box()["y"] >= 0
    page.emulate_media(media="print")  # printed (or saved as PDF to share), every sample is on paper, not one box's worth
    assert box.evaluate("b => b.scrollHeight <= b.clientHeight")
    page.close()


@pytest.mark.parametrize("body", [
    "<body>",  # a light notebook
    '<body data-jp-theme-light="false" style="background:#111;color:#fff">',  # JupyterLab's dark theme
    '<body class="vscode-dark" style="background:#1f1f1f;color:#ccc">',  # VS Code's
])  # fmt: skip
def test_every_text_in_the_notebook_view_reads_in_light_and_dark_themes(regressing, body, tmp_path, browser):
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    result, _ = _with_long_outputs(regressing, tmp_path)  # with folded answers and their toggles
    (tmp_path / "nb.html").write_text(f'<!doctype html><html><head><meta charset="utf-8"></head>{body}{result.html()}</body></html>')
    page.goto((tmp_path / "nb.html").as_uri())
    page.evaluate("() => document.querySelectorAll('details').forEach((d) => { d.open = true; })")
    assert page.locator("label.unfold").count() >= 15
    contrasts = page.evaluate(CONTRASTS_JS, ".vlm-lab-comparison")
    assert len(contrasts) > 100, contrasts  # the settings, both tables, the toggles and the samples
    unreadable = sorted({(text, round(ratio, 2)) for text, ratio in contrasts if ratio < 4.5})  # WCAG AA
    assert not unreadable, unreadable
    page.close()


LONG = " ".join(f"word{i}" for i in range(400))  # a 512-token description: one sentence of 400 words


def _with_long_outputs(regressing, tmp_path) -> tuple[ComparisonResult, Path]:
    """Every checkpoint's answer to the first three samples is LONG (with its own end, so each cell differs),
    and so is the output of one cell marked 'was right'; the rest stay as generated (short)."""
    result = ComparisonResult.load(regressing.output_dir)
    down = next((p.b, i) for p in result.pairs() for i in p.right_to_wrong)
    for row in result.rows:
        for name, out in row["outputs"].items():
            if row in result.rows[:3] or (name, row["id"]) == down:
                out["output"] = f"{LONG} <end of {name}>"
    return result, result.save(tmp_path / "long-answers")


def test_long_answers_fold_to_a_few_lines_and_unfold_without_script(regressing, tmp_path, browser):
    result, out = _with_long_outputs(regressing, tmp_path)
    assert "<script" not in (out / "comparison.html").read_text()  # the toggles work where scripts do not run
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    page.goto((out / "comparison.html").as_uri())
    rows = page.locator("table.samples tbody tr")
    line = rows.nth(5).locator("td").nth(1).evaluate("td => parseFloat(getComputedStyle(td).fontSize) * 1.25")  # 'normal'
    tall = rows.first.evaluate("tr => tr.offsetHeight")
    assert tall <= 8 * line, (tall, line)  # a few lines, then the marks and the toggle: not 20 lines of words
    cell = rows.first.locator("td").nth(4)
    text = cell.locator(".folded")
    assert text.evaluate("t => t.scrollHeight > 2 * t.clientHeight")  # the rest of the answer is folded away
    # the regression mark of a folded cell stays in view, and the row still shows under "show only these"
    down = page.locator("table.samples td:has(> .flip.down):has(.folded)")
    assert down.count() >= 1 and down.first.locator(".flip.down").is_visible()
    assert down.first.evaluate("td => getComputedStyle(td).boxShadow") != "none"
    assert rows.first.evaluate("tr => tr.classList.contains('disagree') && getComputedStyle(tr).backgroundColor") == "rgb(255, 243, 196)"
    # the cell's own toggle shows the whole answer
    cell.locator("label.unfold").click()
    assert text.evaluate("t => t.scrollHeight <= t.clientHeight") and rows.first.evaluate("tr => tr.offsetHeight") > 3 * tall
    assert rows.nth(1).evaluate("tr => tr.offsetHeight") <= 8 * line  # the other rows stay folded
    page.check("input.only-regressions")
    assert page.locator("table.samples tbody tr:has(.flip.down)").first.is_visible()
    page.uncheck("input.only-regressions")
    # printed: every answer whole, no toggles on paper
    page.emulate_media(media="print")
    assert page.eval_on_selector_all(".folded", "els => els.every(t => t.scrollHeight <= t.clientHeight)")
    assert not page.locator("label.unfold").first.is_visible()
    page.close()


def test_an_answer_of_several_lines_keeps_its_lines_and_folds_when_they_are_many(regressing, tmp_path, browser):
    """A list ("1. red\n2. blue") reads as a list, not run together; ten short lines fold like a long text."""
    result = ComparisonResult.load(regressing.output_dir)
    first, second = result.checkpoints[:2]
    result.rows[0]["outputs"][first]["output"] = "1. red\n2. blue"
    result.rows[0]["outputs"][second]["output"] = "\n".join(f"{i}. shape" for i in range(10))  # 89 characters
    out = result.save(tmp_path / "lines")
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    page.goto((out / "comparison.html").as_uri())
    cells = page.locator("table.samples tbody tr").first.locator("td")
    short, many = cells.nth(4), cells.nth(5)
    assert short.locator(".folded").count() == 0 and short.inner_text().startswith("1. red\n2. blue")
    assert many.locator(".folded").count() == 1 and many.locator("label.unfold").is_visible()
    assert many.locator(".folded").evaluate("t => t.scrollHeight > 2 * t.clientHeight")
    many.locator("label.unfold").click()
    assert many.inner_text().startswith("\n".join(f"{i}. shape" for i in range(10)))
    page.close()


def test_short_answers_are_not_folded(regressing):
    html = regressing.html()
    assert "folded" not in html.split("</style>", 1)[1] and "unfold" not in html.split("</style>", 1)[1]


@pytest.mark.parametrize("body", [
    "<body>",
    '<body data-jp-theme-light="false" style="background:#111;color:#fff">',
    '<body class="vscode-dark" style="background:#1f1f1f;color:#ccc">',
])  # fmt: skip
def test_the_summary_shows_that_more_columns_lie_to_the_right(regressing, body, tmp_path, browser):
    """At 800 px the summary scrolls sideways in its box: a shade on the edge with more beyond it says so."""
    page = browser.new_page(viewport={"width": 800, "height": 700})
    (tmp_path / "nb.html").write_text(f'<!doctype html><html><head><meta charset="utf-8"></head>{body}{regressing.html()}</body></html>')
    page.goto((tmp_path / "nb.html").as_uri())
    box = page.locator("div.wide").first
    assert box.evaluate("b => b.scrollWidth > b.clientWidth")
    # only the box's own painting: its table hidden, its layout kept
    page.add_style_tag(content="div.wide > table{visibility:hidden}")

    def edges() -> tuple[int, int]:
        """How far the box's leftmost and rightmost pixel columns stand out from the page in its middle (0: not at all)."""
        from io import BytesIO

        from PIL import Image

        shot = Image.open(BytesIO(box.screenshot())).convert("L")
        page_grey = shot.getpixel((shot.width // 2, shot.height // 2))
        column = lambda x: max(abs(shot.getpixel((x, y)) - page_grey) for y in range(shot.height))  # noqa: E731
        return column(0), column(shot.width - 1)

    left, right = edges()
    assert right >= 20 and left <= 2, (left, right)  # more to the right, nothing to the left
    box.evaluate("b => { b.scrollLeft = b.scrollWidth; }")
    left, right = edges()
    assert left >= 20 and right <= 2, (left, right)  # scrolled to the end: more to the left only
    page.set_viewport_size({"width": 1600, "height": 700})  # everything fits: no hint at all
    box.evaluate("b => { b.scrollLeft = 0; }")
    assert box.evaluate("b => b.scrollWidth <= b.clientWidth") and edges() == (0, 0)
    page.close()


def test_a_wrong_answer_is_marked_by_more_than_its_colour(regressing, tmp_path, browser):
    """Right answers were green and wrong ones red, nothing else: to a red-green colour-blind reader (1 man in 12)
    'a blue triangle' and 'a blue square' looked alike. A wrong one now starts with a cross; a right one does not."""
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    page.goto((regressing.output_dir / "comparison.html").as_uri())
    before = "cells => cells.map((td) => getComputedStyle(td, '::before').content)"
    wrong, right = (page.eval_on_selector_all(f"table.samples td.{mark}", before) for mark in ("bad", "ok"))
    assert wrong and right and all("✗" in c for c in wrong) and all("✗" not in c and "✓" not in c for c in right), (wrong[:3], right[:3])
    assert "✗" not in page.locator("table.samples td.bad").first.inner_text()  # copied text stays the answer alone
    page.close()
