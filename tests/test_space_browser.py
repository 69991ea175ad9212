"""The Space in a real browser: headless Debian Chromium through Playwright (sync API).

Uploads an image, picks two checkpoints, clicks Compare, reads both answers, and leaves
screenshots in test-artifacts/ (desktop and phone width) for a person to look at.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from space_server import ROOT, running_space

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
IMAGE = ROOT / "space" / "examples" / "blue-square.png"


@pytest.fixture(scope="module")
def space(tiny_dir, tmp_path_factory):
    """``(url, log_path)`` of the app every test here uses."""
    with running_space({"VLM_LAB_CHECKPOINTS": str(tiny_dir)}, workdir=tmp_path_factory.mktemp("space-browser")) as started:
        yield started


@pytest.fixture(scope="module")
def space_url(space):
    return space[0]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not shutil.which("chromium") and not (ROOT / CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed; run `make browser`")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def pick(page, label: str, option: str) -> None:
    """Choose ``option`` in the Gradio dropdown labelled ``label`` (its own list, not another's)."""
    box = page.get_by_label(label, exact=True)
    box.click()
    listbox = box.get_attribute("aria-controls")
    page.locator(f"[id='{listbox}']").get_by_role("option", name=option, exact=True).click()
    box.press("Escape")


@pytest.mark.parametrize("width, height, name", [(1280, 900, "space-desktop.png"), (390, 844, "space-phone.png")])
def test_upload_pick_two_checkpoints_compare(browser, space_url, artifacts_dir, width, height, name):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": width, "height": height})
    page.set_default_timeout(30_000)
    try:
        page.goto(space_url)
        page.locator("input[type=file]").first.set_input_files(str(IMAGE))
        expect(page.locator("img[src*='blue-square']").first).to_be_visible()
        page.get_by_label("Question").fill("Describe the image.")
        pick(page, "Checkpoint 1", "checkpoint-250")
        pick(page, "Checkpoint 2", "checkpoint-1000")
        pick(page, "Checkpoint 3", "(none)")
        page.get_by_role("button", name="Compare", exact=True).click()
        for slot, checkpoint in ((1, "checkpoint-250"), (2, "checkpoint-1000")):
            expect(page.locator(f"#answer-{slot}")).to_contain_text(checkpoint)  # the column's label
        expect(page.locator("#answer-2 textarea")).to_have_value("a blue square")
        expect(page.locator("#answer-1 textarea")).not_to_have_value("")
        expect(page.locator("#answer-3")).to_be_hidden()
        for slot in (1, 2):
            expect(page.locator(f"#stats-{slot}")).to_contain_text("latency")
        page.screenshot(path=str(artifacts_dir / name), full_page=True)
        page.get_by_role("button", name="Clear", exact=True).click()
        expect(page.get_by_label("Question")).to_have_value("")
        expect(page.locator("#answer-2")).to_be_hidden()
        expect(page.locator("#answer-1 textarea")).to_have_value("")
    finally:
        page.close()


def test_clicking_an_example_shows_three_cached_answers(browser, space_url, artifacts_dir):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    try:
        page.goto(space_url)
        page.get_by_role("button", name="red circle · What color is the shape?").click()
        expect(page.get_by_label("Question")).to_have_value("What color is the shape?")
        for slot, checkpoint in ((1, "checkpoint-0"), (2, "checkpoint-500"), (3, "checkpoint-1000")):
            expect(page.locator(f"#answer-{slot}")).to_contain_text(checkpoint)
        expect(page.locator("#answer-3 textarea")).to_have_value("red")
        page.screenshot(path=str(artifacts_dir / "space-example.png"), full_page=True)
    finally:
        page.close()


def test_answers_never_stay_beside_another_image_question_or_a_failed_compare(browser, space_url):
    """Answers belong to the image and question they were asked about: a new upload, an edited question
    or a Compare that fails empties them instead of leaving the last answers next to other inputs."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    examples = ROOT / "space" / "examples"
    answer = page.locator("#answer-3 textarea")  # checkpoint-1000 by default
    compare = page.get_by_role("button", name="Compare", exact=True)
    try:
        page.goto(space_url)
        page.locator("input[type=file]").first.set_input_files(str(examples / "red-circle.png"))
        page.get_by_label("Question").fill("What color is the shape?")
        compare.click()
        expect(answer).to_have_value("red")
        page.locator("input[type=file]").first.set_input_files(str(examples / "blue-square.png"))
        expect(page.locator("img[src*='blue-square']").first).to_be_visible()
        expect(answer).to_have_value("")
        compare.click()
        expect(answer).to_have_value("blue")
        page.get_by_label("Question").fill("What shape is it?")
        expect(answer).to_have_value("")
        compare.click()
        expect(answer).to_have_value("square")
        # the upload expires on the server (as the Space's upload TTL deletes it); the same inputs fail
        src = page.locator("img[src*='blue-square']").first.get_attribute("src")
        Path(unquote(src.split("file=", 1)[1])).unlink()
        compare.click()
        expect(page.get_by_text("upload it again").first).to_be_visible()
        expect(answer).to_have_value("")
    finally:
        page.close()


def test_a_compare_waiting_in_the_queue_is_dropped_when_the_image_changes(browser, space_url):
    """Under load a visitor's Compare waits in the queue; they upload another image meanwhile. The old
    question's answers then arrived beside the new image. Changing the image (or the question) now
    cancels the waiting Compare."""
    from gradio_client import Client, handle_file
    from playwright.sync_api import expect

    examples = ROOT / "space" / "examples"
    busy = Client(space_url, verbose=False, analytics_enabled=False)
    slow = ("checkpoint-0", "checkpoint-250", "checkpoint-500", "beam(4)", 64)  # checkpoint-0 never stops early
    jobs = [busy.submit(handle_file(examples / "red-circle.png"), "Describe the image.", *slow, api_name="/compare")
            for _ in range(24)]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)
    answer = page.locator("#answer-3 textarea")  # checkpoint-1000 by default, shown once a Compare answers
    try:
        page.goto(space_url)
        page.locator("input[type=file]").first.set_input_files(str(examples / "red-circle.png"))
        page.get_by_label("Question").fill("What color is the shape?")
        page.get_by_role("button", name="Compare", exact=True).click()
        page.locator("input[type=file]").first.set_input_files(str(examples / "blue-square.png"))
        expect(page.locator("img[src*='blue-square']").first).to_be_visible()
        assert not all(job.done() for job in jobs), "the queue was already empty: this test could not fail"
        # queued behind the visitor's Compare: once it is answered, that Compare has run (or was dropped)
        marker = busy.submit(handle_file(examples / "red-circle.png"), "What color is the shape?", "checkpoint-1000",
                             "(none)", "(none)", "greedy", 8, api_name="/compare")
        for job in [*jobs, marker]:
            job.result(timeout=120)
        page.wait_for_timeout(500)  # for the browser to show answers that arrived
        expect(page.locator("#answer-3")).to_be_hidden()  # as before any Compare: no answer beside the blue square
        expect(page.locator("#answer-1 textarea")).to_have_value("")
        page.get_by_role("button", name="Compare", exact=True).click()
        expect(answer).to_have_value("blue")
    finally:
        page.close()


def test_on_a_phone_the_answers_come_into_view(browser, space_url):
    """At phone width the answers are below the form: a visitor who asks with the keyboard's Enter (or taps
    Compare at the bottom of the screen) saw nothing happen, the answers arriving off screen."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.set_default_timeout(30_000)
    try:
        page.goto(space_url)
        page.locator("input[type=file]").first.set_input_files(str(IMAGE))
        expect(page.locator("img[src*='blue-square']").first).to_be_visible()
        question = page.get_by_label("Question")
        question.fill("What color is the shape?")
        expect(page.locator("#answer-1")).not_to_be_in_viewport()  # below the form: this test could fail
        question.press("Enter")
        expect(page.locator("#answer-3 textarea")).to_have_value("blue")
        expect(page.locator("#answer-1")).to_be_in_viewport()
    finally:
        page.close()


@pytest.mark.parametrize("width", [390, 1280])
def test_the_api_page_the_text_points_at_opens_at_any_width(browser, space_url, width):
    """The text said 'see *Use via API* below', and at phone width Gradio hides that footer link: a visitor
    on a phone had nothing to tap. The text links the API page itself."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": width, "height": 844}, is_mobile=width < 640, has_touch=width < 640)
    page.set_default_timeout(30_000)
    try:
        page.goto(space_url)
        expect(page.get_by_text("Checkpoints: checkpoint-0")).to_be_visible()
        link = page.get_by_role("link", name="API page", exact=True)
        expect(link).to_be_visible()
        target = link.get_attribute("target")
        if target == "_blank":
            with page.expect_popup() as opened:
                link.click()
            docs = opened.value
        else:
            link.click()
            docs = page
        docs.set_default_timeout(30_000)
        expect(docs.get_by_text("/compare_batch").first).to_be_visible()
    finally:
        page.close()


def test_an_error_stays_until_closed_or_the_next_compare(browser, space_url):
    """The reason a Compare failed was shown for 10 s (Gradio's default), then only red 'Error' badges stayed in
    the answer boxes: a visitor who looked away (or scrolled to the answers on a phone) never learnt what to fix.
    It stays now, until closed or until the next Compare (it would be beside answers it is not about)."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    page.clock.install()  # the toast's timer runs on this clock: a minute passes without waiting for it
    try:
        page.goto(space_url)
        page.locator("input[type=file]").first.set_input_files(str(IMAGE))
        expect(page.locator("img[src*='blue-square']").first).to_be_visible()
        page.get_by_role("button", name="Compare", exact=True).click()  # no question
        message = page.get_by_text("no question: type a question about the image")
        expect(message).to_be_visible()
        page.clock.run_for(60_000)
        expect(message).to_be_visible()
        # a toast on its way out is inert at once (its fade runs on the real clock), so this is not a race
        assert message.evaluate("e => !e.closest('[inert]')"), "the error is leaving the page by itself"
        page.get_by_label("Question").fill("What color is the shape?")
        page.get_by_role("button", name="Compare", exact=True).click()
        expect(page.locator("#answer-3 textarea")).to_have_value("blue")
        expect(message).to_be_hidden()
        page.get_by_label("Question").fill("")
        page.get_by_label("Question").press("Enter")  # Enter asks too
        expect(message).to_be_visible()
        page.get_by_role("button", name="Close", exact=True).click()
        expect(message).to_be_hidden()
    finally:
        page.close()


def test_a_screen_reader_hears_which_checkpoint_gave_each_answer(browser, space_url):
    """Each answer box's label is inside a <label> whose first control is its Copy button (Gradio's layout), so the
    answer itself had no name: a screen reader read three unnamed text boxes. Each is named by its checkpoint."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    try:
        page.goto(space_url)
        expect(page.get_by_role("textbox", name="Answers", exact=True)).to_have_value("")  # before any answer
        page.locator("input[type=file]").first.set_input_files(str(IMAGE))
        page.get_by_label("Question").fill("What color is the shape?")
        page.get_by_role("button", name="Compare", exact=True).click()
        expect(page.get_by_role("textbox", name="checkpoint-1000", exact=True)).to_have_value("blue")
        expect(page.get_by_role("textbox", name="checkpoint-500", exact=True)).to_have_value("blue")
        pick(page, "Checkpoint 1", "checkpoint-750")
        page.get_by_role("button", name="Compare", exact=True).click()
        expect(page.get_by_role("textbox", name="checkpoint-750", exact=True)).to_have_value("blue")
        expect(page.get_by_role("textbox", name="checkpoint-0", exact=True)).to_have_count(0)
    finally:
        page.close()


def test_a_question_over_the_limit_is_refused_not_cut(browser, space_url):
    """The question box cut a pasted question at 500 characters without a word (the browser's maxlength): the
    checkpoints answered a question the visitor had not asked. The Space says how long it is and the limit."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    question = "What color is the shape? " * 24  # 600 characters
    try:
        page.goto(space_url)
        page.locator("input[type=file]").first.set_input_files(str(IMAGE))
        page.get_by_label("Question").fill(question)
        page.get_by_role("button", name="Compare", exact=True).click()
        expect(page.get_by_text("the question is 599 characters; this Space takes at most 500: shorten it")).to_be_visible()
        expect(page.get_by_label("Question")).to_have_value(question)
    finally:
        page.close()


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_the_page_text_is_readable(browser, space_url, theme):
    """WCAG AA (4.5:1) for the form and the answers: in light mode white on Gradio's orange Compare button was 3.5:1
    and the slider's ends (1, 64) 1.9:1. Gradio's own footer is left as Gradio draws it."""
    from playwright.sync_api import expect

    from contrast import CONTRASTS_JS

    page = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme=theme)
    page.set_default_timeout(30_000)
    try:
        page.goto(f"{space_url}/?__theme={theme}")
        page.locator("input[type=file]").first.set_input_files(str(IMAGE))
        page.get_by_label("Question").fill("What color is the shape?")
        page.get_by_role("button", name="Compare", exact=True).click()
        expect(page.locator("#stats-3")).to_contain_text("latency")
        contrasts = page.evaluate(CONTRASTS_JS, "main.contain")  # the app, not the footer
        assert any(text == "Compare" for text, _ in contrasts) and len(contrasts) > 30, contrasts
        unreadable = [(text, round(ratio, 2)) for text, ratio in contrasts if ratio < 4.5]
        assert not unreadable, f"{theme}: {unreadable}"
    finally:
        page.close()


def test_a_double_click_on_compare_runs_it_once_and_a_click_after_it_answered_runs_again(browser, space):
    """Gradio's trigger_mode "once" looks for a running Compare before it has registered the first one: a double
    click on an idle Space ran the comparison twice (the second's answers replacing the first's, twice the wait
    for everyone queued behind it). A marker sent through the API behind the clicks says when they have run."""
    from gradio_client import Client, handle_file
    from playwright.sync_api import expect

    url, log_path = space
    ran = "compare start (3 checkpoint(s), greedy, 16 tokens)"  # the page's defaults; the marker asks for 7 tokens
    marker = Client(url, verbose=False, analytics_enabled=False)

    def runs(at_least: int) -> int:
        """How many Compares the page ran, once ``at_least`` have started and any it sent with them has too."""
        deadline = time.monotonic() + 60
        while log_path.read_text().count(ran) < at_least and time.monotonic() < deadline:
            time.sleep(0.1)
        marker.predict(handle_file(IMAGE), "What color is the shape?", "checkpoint-1000", "(none)", "(none)", "greedy", 7,
                       api_name="/compare")  # queued behind what the page sent: once answered, those have started
        return log_path.read_text().count(ran)

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    compare = page.get_by_role("button", name="Compare", exact=True)
    try:
        page.goto(url)
        page.locator("input[type=file]").first.set_input_files(str(IMAGE))
        expect(page.locator("img[src*='blue-square']").first).to_be_visible()
        page.get_by_label("Question").fill("What color is the shape?")
        before = log_path.read_text().count(ran)
        compare.dblclick()
        expect(page.locator("#answer-3 textarea")).to_have_value("blue")
        assert runs(before + 1) == before + 1
        expect(compare).to_be_enabled()
        compare.click()  # after the first answered: a Compare of its own
        assert runs(before + 2) == before + 2
        expect(page.locator("#answer-3 textarea")).to_have_value("blue")
    finally:
        page.close()


def test_compare_is_back_on_after_a_compare_that_failed(browser, space_url):
    """Compare is off while it runs and back on when it answered; Gradio 6 runs a ``.then`` after success only
    when the function raised (its front end dispatches only ``.failure`` listeners then), so a failed Compare
    left the button off: a visitor told "try again" could not, unless they edited the question or the image."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    compare = page.get_by_role("button", name="Compare", exact=True)
    try:
        page.goto(space_url)
        compare.click()  # no image, no question: refused
        message = page.get_by_text("no image and no question")
        expect(message).to_be_visible()
        expect(compare).to_be_enabled()
        page.get_by_role("button", name="Close", exact=True).click()
        expect(message).to_be_hidden()
        compare.click()  # and it asks again
        expect(message).to_be_visible()
        expect(compare).to_be_enabled()
    finally:
        page.close()


def test_an_upload_over_the_size_limit_leaves_no_answers_beside_the_emptied_image(browser, space_url, tmp_path):
    """Gradio refuses a file over max_file_size in the browser and empties the image box, firing neither upload nor
    clear: the last answers stayed under an empty box, as if about nothing (or the next image)."""
    from playwright.sync_api import expect

    too_big = tmp_path / "too-big.png"
    too_big.write_bytes(b"\0" * (20 * 2**20 + 1))  # the Space's default VLM_LAB_MAX_FILE_SIZE is 20mb
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    answer = page.locator("#answer-3 textarea")
    try:
        page.goto(space_url)
        page.locator("input[type=file]").first.set_input_files(str(IMAGE))
        page.get_by_label("Question").fill("What color is the shape?")
        page.get_by_role("button", name="Compare", exact=True).click()
        expect(answer).to_have_value("blue")
        page.locator("input[type=file]").first.set_input_files(str(too_big))
        expect(page.get_by_text("exceed the maximum allowed size").first).to_be_visible()
        expect(page.locator("img[src*='blue-square']")).to_have_count(0)
        expect(answer).to_have_value("")
    finally:
        page.close()


@pytest.mark.parametrize("key", ["Enter", "Space"])
def test_a_keyboard_user_keeps_their_place_on_compare(browser, space_url, key):
    """Compare is off while it runs (a disabled button), and the browser moved focus from it to the page: a visitor
    on the keyboard who pressed Enter found their place lost, the next Tab starting from the top of the page. Focus
    is on Compare again when it answered, so Enter asks again."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    compare = page.get_by_role("button", name="Compare", exact=True)
    try:
        page.goto(space_url)
        page.locator("input[type=file]").first.set_input_files(str(IMAGE))
        page.get_by_label("Question").fill("What color is the shape?")
        compare.focus()
        page.keyboard.press(key)
        expect(page.locator("#answer-3 textarea")).to_have_value("blue")
        expect(compare).to_be_focused()
        page.keyboard.press("Tab")
        expect(page.get_by_role("button", name="Clear", exact=True)).to_be_focused()
        page.get_by_label("Question").fill("")  # and after a Compare that failed
        compare.focus()
        page.keyboard.press(key)
        expect(page.get_by_text("no question: type a question").first).to_be_visible()
        expect(compare).to_be_focused()
    finally:
        page.close()


def test_an_error_about_the_last_image_goes_when_another_is_uploaded(browser, space_url, tmp_path):
    """An error stays until closed or the next Compare, and so 'the file broken.png is truncated or corrupt ... upload it
    again' stayed beside the good image the visitor had just uploaded, as if about it. A new image or an edited
    question (what the visitor does to fix an error) closes it."""
    from playwright.sync_api import expect

    broken = tmp_path / "broken.png"
    broken.write_bytes(IMAGE.read_bytes()[:100])  # cut in its pixel data
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(30_000)
    compare = page.get_by_role("button", name="Compare", exact=True)
    try:
        page.goto(space_url)
        page.locator("input[type=file]").first.set_input_files(str(broken))
        expect(page.locator("img[src*='broken']")).to_have_count(1)  # uploaded (the browser cannot show it)
        page.get_by_label("Question").fill("What color is the shape?")
        compare.click()
        message = page.get_by_text("the file 'broken.png' is truncated or corrupt")
        expect(message).to_be_visible()
        page.locator("input[type=file]").first.set_input_files(str(IMAGE))
        expect(page.locator("img[src*='blue-square']").first).to_be_visible()
        expect(message).to_be_hidden()
        page.get_by_label("Question").fill("")
        compare.click()
        expect(page.get_by_text("no question: type a question").first).to_be_visible()
        page.get_by_label("Question").fill("What color is the shape?")
        expect(page.get_by_text("no question: type a question")).to_be_hidden()
    finally:
        page.close()
