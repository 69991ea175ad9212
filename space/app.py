"""vlm_lab Space: ask several VLM checkpoints the same question about an image, side by side.

A thin edge: read the settings from the environment, build the UI, call vlm_lab. Runs the
same on Hugging Face (the publisher stages the vlm_lab package and the embedded checkpoints
next to this file) and locally (`make space`, from the repository).

Space variables (README.md's Settings): VLM_LAB_CHECKPOINTS (comma-separated references), VLM_LAB_MAX_PIXELS,
VLM_LAB_MAX_FILE_SIZE, VLM_LAB_MAX_PROMPT_CHARS, VLM_LAB_QUEUE_SIZE, VLM_LAB_MAX_BATCH_SIZE, VLM_LAB_CACHE_BUDGET,
VLM_LAB_DEVICE, VLM_LAB_DTYPE, VLM_LAB_MAX_NEW_TOKENS, VLM_LAB_DEFAULT_MAX_NEW_TOKENS, VLM_LAB_TARGET,
VLM_LAB_UPLOAD_TTL_S, VLM_LAB_HUB_REFRESH_S; VLM_LAB_ROOT (`make space`: the project whose checkpoints it serves).
Secrets: HF_TOKEN (private models), WANDB_API_KEY (log interactions to W&B).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent

try:  # on the Space the package is staged next to this file; locally it is installed in the venv
    import vlm_lab  # noqa: F401
except ImportError:  # run from a repository checkout without an install
    sys.path.insert(0, str(APP_DIR.parent))

# Light imports (neither gradio nor torch): safe before prepare_environment sets the environment.
from vlm_lab.space_examples import load_examples  # noqa: E402
from vlm_lab.space_images import limit_image_pixels  # noqa: E402
from vlm_lab.space_service import Answer, ComparisonService, InteractionLog  # noqa: E402
from vlm_lab.space_settings import (  # noqa: E402
    MAX_BEAMS, MAX_SLOTS, NONE_CHOICE, STRATEGIES, ServingPlan, SpaceSettings, plan_serving, prepare_environment,
    unknown_space_variables,
)

ENV_NOTES = prepare_environment()  # before gradio / huggingface_hub / transformers are imported

import gradio as gr  # noqa: E402
import torch  # noqa: E402

from vlm_lab.errors import VlmLabError  # noqa: E402

log = logging.getLogger("vlm_lab.space")

INTRO = """\
# Compare VLM checkpoints
Upload an image, ask a question, and see up to three checkpoints answer side by side:
how answers change along training, or between models. Latency, new tokens and memory are
shown under each answer.
"""

SCROLL_TO_ANSWERS = """() => {
  const first = document.getElementById("answer-1");
  const box = first && first.getBoundingClientRect();
  if (box && (box.top < 0 || box.bottom > window.innerHeight)) first.scrollIntoView({behavior: "smooth", block: "start"});
}"""

# Gradio puts each answer's Copy button first inside its <label>, so the label names the button and the answer
# has no name: a screen reader read unnamed text boxes. Name each by its label (the checkpoint), now and whenever
# Gradio renders one again (a slot shown, a label changed).
NAME_ANSWERS = """() => {
  const name = () => document.querySelectorAll("[id^=answer-]").forEach(box => {
    const text = box.querySelector("textarea"), label = box.querySelector("[data-testid=block-info]");
    if (!text || !label) return;
    label.id = box.id + "-label";
    if (text.getAttribute("aria-labelledby") !== label.id) text.setAttribute("aria-labelledby", label.id);
  });
  name();
  new MutationObserver(name).observe(document.body, {childList: true, subtree: true});
}"""

# Compare is off while it runs, and the browser moves the focus of a disabled button to the page: a keyboard user's
# place was lost (the next Tab started from the top). Focus goes back to Compare when it is on again, if it was there
# when it was pressed and nothing else has it since; without scrolling (on a phone the answers were just scrolled to).
HOLD_FOCUS = "window.vlmLabCompareFocused = document.activeElement === document.getElementById('compare')"
GIVE_FOCUS_BACK = """if (window.vlmLabCompareFocused) {
    window.vlmLabCompareFocused = false;
    const back = (tries) => {
      const button = document.getElementById("compare"), lost = !document.activeElement || document.activeElement === document.body;
      if (!button || !lost) return;
      if (button.disabled && tries > 0) return setTimeout(() => back(tries - 1), 20);
      button.focus({preventScroll: true});
    };
    setTimeout(() => back(50), 0);
  }"""

# Gradio's default theme, readable (WCAG AA, 4.5:1) in light mode: white on its orange-500 Compare button was 3.5:1
# and the slider's ends (1, 64) 1.9:1. Dark mode passes as it is.
THEME = gr.themes.Default().set(button_primary_background_fill="*primary_700",
                                button_primary_background_fill_hover="*primary_800",
                                body_text_color_subdued="*neutral_500")


def _error(e: Exception) -> gr.Error:
    """What the user sees: the library's message (it names the fix), never a traceback. It stays until closed
    (duration=None): Gradio's 10 s left only 'Error' badges in the answer boxes for a visitor who looked away."""
    if isinstance(e, VlmLabError):  # one line in the log: the owner sees what visitors are told
        log.info("request failed: %s", e)
        return gr.Error(str(e), duration=None, print_exception=False)
    log.exception("unexpected error")
    return gr.Error(f"unexpected {type(e).__name__}: {e}. The app is still running; try again.", duration=None)


def _empty_label(slot: int) -> str:
    """An answer box's label until it answers (then its checkpoint's): not the dropdowns' "Checkpoint N"."""
    return "Answers" if slot == 0 else f"Answer {slot + 1}"


def build_demo(service: ComparisonService, plan: ServingPlan, defaults: list[str] | None = None) -> gr.Blocks:
    """The UI and both endpoints. ``defaults``: the checkpoints selected at first and used by the
    examples (``service.startup_selection()``); no examples when empty (none of them loads)."""
    settings = service.settings
    labels = service.labels
    defaults = service.default_selection() if defaults is None else defaults
    selected = (defaults or labels[:1]) + [NONE_CHOICE] * MAX_SLOTS
    strategies = list(STRATEGIES)
    generate = {"concurrency_limit": plan.generate_limit, "concurrency_id": "generate"}

    def outputs_for(answers: list[Answer]) -> list:
        updates = []
        for slot in range(MAX_SLOTS):
            if slot < len(answers):
                a = answers[slot]
                updates += [gr.update(value=a.text, label=a.checkpoint, visible=True),
                            gr.update(value=a.stats_markdown(), visible=True)]
            else:
                updates += [gr.update(value="", label=_empty_label(slot), visible=slot == 0),
                            gr.update(value="", visible=False)]
        return updates

    def compare(image, prompt, ckpt1, ckpt2, ckpt3, strategy, max_new_tokens):
        try:
            answers = service.compare(image, prompt, [ckpt1, ckpt2, ckpt3], strategy, max_new_tokens)
        except Exception as e:  # noqa: BLE001 - every failure becomes a message; the app keeps serving
            raise _error(e) from None
        return outputs_for(answers)

    def compare_example(*inputs):
        """The examples' answers, cached at start: a failure shows as the answer, it never stops the start."""
        try:
            return compare(*inputs)
        except gr.Error as e:
            log.warning("an example could not be answered: %s", e.message)
            return [gr.update(value=f"could not answer: {e.message}", label="Error", visible=True)] + outputs_for([])[1:]

    def compare_batch(images, prompts, checkpoints, max_new_tokens):
        try:
            answers = service.answer_batch(images, prompts, checkpoints, max_new_tokens)
        except Exception as e:  # noqa: BLE001
            raise _error(e) from None
        for a in answers:
            if a.error:
                log.info("request failed: %s", a.error)
        if len(answers) == 1 and answers[0].error:  # a request alone in its batch fails as an error
            raise gr.Error(answers[0].error, print_exception=False)
        # in a batch each caller gets only its own error (an error raised here would reach every caller,
        # with the others' messages: their file names)
        return ([a.text for a in answers], [a.new_tokens for a in answers],
                [round(a.latency_s, 4) for a in answers], [a.error for a in answers])

    def clear():
        return [None, ""] + outputs_for([])

    # Gradio keeps every upload until the app stops; delete them after upload_ttl_s (checked hourly at most).
    # A visitor who compares again with an older upload is told to upload it again (read_image).
    delete_cache = (min(settings.upload_ttl_s, 3600), settings.upload_ttl_s)
    with gr.Blocks(title="vlm_lab: compare checkpoints", delete_cache=delete_cache) as demo:
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"], height=240)
            with gr.Column(scale=2, min_width=280):
                # no max_length: the browser cut a pasted question there without a word, and the checkpoints answered
                # a question the visitor had not asked; the service refuses it with its length and the limit
                prompt = gr.Textbox(label="Question", placeholder="What color is the shape?", lines=1)
                with gr.Row():
                    ckpts = [gr.Dropdown([*labels, NONE_CHOICE] if i else labels, value=selected[i],
                                         label=f"Checkpoint {i + 1}", min_width=200) for i in range(MAX_SLOTS)]
                with gr.Row():
                    strategy = gr.Radio(strategies, value=strategies[0], label="Decoding", min_width=200)
                    max_new_tokens = gr.Slider(1, settings.max_new_tokens, value=settings.default_max_new_tokens,
                                               step=1, label="Max new tokens", min_width=200)
                with gr.Row():
                    run = gr.Button("Compare", variant="primary", elem_id="compare")
                    reset = gr.Button("Clear")
        results = []
        with gr.Row(equal_height=True):
            for slot in range(MAX_SLOTS):
                with gr.Column(min_width=200):
                    results += [gr.Textbox(label=_empty_label(slot), lines=2, interactive=False,
                                           buttons=["copy"], visible=slot == 0, elem_id=f"answer-{slot + 1}"),
                                gr.Markdown(label=f"Stats {slot + 1}", visible=False, elem_id=f"stats-{slot + 1}",
                                            elem_classes="stats")]
        inputs = [image, prompt, *ckpts, strategy, max_new_tokens]
        examples, heading = load_examples(APP_DIR / "examples")  # examples/examples.jsonl: your own, else the shapes
        rows = [[str(e.image), e.question, *selected[:MAX_SLOTS], strategies[0], settings.default_max_new_tokens]
                for e in examples]
        if rows and defaults:
            # preprocess=False: the examples take the path an upload takes (read_image, its limits and messages)
            gr.Examples(rows, inputs=inputs, outputs=results, fn=compare_example, preprocess=False,
                        cache_examples=True, cache_mode="eager", example_labels=[e.label for e in examples],
                        label=heading)
        beams = service.memory.beams_note()  # what the API's beam(N) may ask for on this hardware, where it is capped
        gr.Markdown(
            f"Checkpoints: {', '.join(labels)}. Images up to {settings.max_pixels:,} pixels. "
            # a link of its own: the footer's "Use via API" is hidden at phone width (Gradio's CSS, <= 640 px)
            "Programmatic use: the batched `/compare_batch` endpoint ([API page](?view=api)). "
            # beam search is not among the page's Decoding choices: a note on its limits must say where it is offered
            f"The `/compare` endpoint also takes `beam(N)` decoding, up to beam({MAX_BEAMS})"
            + (f"; {beams}." if beams else ".")
        )
        # Answers belong to the image and question they answer: a new upload, an edited question or a
        # Compare that fails (the old answers would stay) empties them, in the browser, no server call.
        empty = {"js": f"() => Array({len(results)}).fill('')", "queue": False}
        # An error stays until closed (_error); a new Compare closes it: it is not about the answers to come.
        close_errors = "document.querySelectorAll('.toast-body.error [data-testid=toast-close]').forEach(b => b.click())"
        # Compare is off while a Compare runs (Gradio's advice: interactive=False, back on in .then): trigger_mode
        # "once" looks for the running event only once it is sent, and a double click on an idle Space ran it twice.
        # In the browser, at the click, so that the second click of a double click finds it off.
        idle, busy = "{__type__: 'update', interactive: true}", "{__type__: 'update', interactive: false}"
        asking = {**empty, "js": f"() => {{ {close_errors}; {HOLD_FOCUS}; return [...Array({len(results)}).fill(''), {busy}]; }}"}
        for trigger in (run.click, prompt.submit):
            trigger(None, None, [*results, run], **asking)
        comparing = [run.click(compare, inputs, results, api_name="compare", preprocess=False, **generate),
                     prompt.submit(compare, inputs, results, api_visibility="private", preprocess=False, **generate)]
        # On a phone the answers are below the form, out of sight of Compare or the keyboard's Enter: bring them
        # into view when they arrive (scrollIntoView also scrolls the page that embeds the Space). Gradio 6's
        # scroll_to_output does nothing: its front end never passes it on.
        for event in comparing:
            event.success(None, None, None, js=SCROLL_TO_ANSWERS, queue=False)
            # back on, answered or failed: not in one .then, which Gradio 6's front end skips after a raised error
            # (it dispatches only .failure listeners then), leaving a visitor told "try again" no button to do it
            for after in (event.success, event.failure):
                after(None, None, run, js=f"() => {{ {GIVE_FOCUS_BACK}; return {idle}; }}", queue=False)
        # ... and a Compare still waiting in the queue is dropped: its answers would arrive beside the new inputs; an
        # error goes too: it was about the old ones, and a new image or question is how a visitor fixes it
        dropped = {**empty, "js": f"() => {{ {close_errors}; return [...Array({len(results)}).fill(''), {idle}]; }}"}
        for trigger in (image.upload, image.clear, prompt.change):
            trigger(None, None, [*results, run], cancels=comparing, **dropped)
        # Gradio empties the image box itself when it refuses a file (over max_file_size), firing neither upload nor
        # clear: an image gone takes its answers with it. Not on every change: an example sets its image and answers.
        keep = "Array({}).fill({{__type__: 'update'}})".format(len(results))
        image.change(None, image, [*results, run], cancels=comparing, queue=False,
                     js=f"(img) => img ? [...{keep}, {idle}] : [...Array({len(results)}).fill(''), {idle}]")
        demo.load(None, None, None, js=NAME_ANSWERS, queue=False)
        reset.click(clear, None, [image, prompt, *results], api_visibility="private",
                    concurrency_limit=plan.cheap_limit)

        # The batched endpoint for gradio_client: one (image, question, checkpoint[, max new tokens])
        # per call, greedy; Gradio groups concurrent calls into batches of up to max_batch_size.
        with gr.Row(visible=False):
            api_in = [gr.Image(type="filepath", label="image"), gr.Textbox(label="prompt"),
                      gr.Textbox(label="checkpoint", value=labels[-1]),
                      gr.Number(label="max_new_tokens", value=settings.default_max_new_tokens, precision=0)]
            api_out = [gr.Textbox(label="answer"), gr.Number(label="new_tokens"),
                       gr.Number(label="latency_s"), gr.Textbox(label="error")]
            api_button = gr.Button()
        api_button.click(compare_batch, api_in, api_out, api_name="compare_batch", batch=True,
                         max_batch_size=plan.max_batch_size, preprocess=False,
                         concurrency_limit=plan.batch_limit, concurrency_id=plan.batch_group)
    return demo


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Gradio self-check otherwise
    for note in ENV_NOTES:
        log.info("environment: %s", note)
    for name in unknown_space_variables(list(os.environ)):
        log.warning("%s: not a variable this app reads (a typo?); it is ignored", name)
    try:
        serve()
    except VlmLabError as e:  # a Space variable or checkpoint list it cannot start with: the fix, not a traceback
        log.error("cannot start: %s", e)
        sys.exit(2)


def serve() -> None:
    """Read the settings, build the service and the UI, serve until stopped."""
    settings = SpaceSettings.from_env(app_dir=APP_DIR)
    # what the Space variables came to (defaults included): an owner checks here that a variable took
    log.info("settings: %s", ", ".join(f"{k}={v}" for k, v in settings.to_dict().items() if k != "checkpoints"))
    limit_image_pixels(settings.max_pixels)
    interactions = InteractionLog(config=settings.to_dict())
    atexit.register(interactions.close)
    if interactions.enabled:
        log.info("W&B: logging interactions (WANDB_API_KEY is set)")
    service = ComparisonService(settings, token=os.environ.get("HF_TOKEN"), interactions=interactions)
    plan = plan_serving(settings, memory=service.memory)  # no more generations at once than its memory holds
    log.info("checkpoints: %s", ", ".join(service.labels))
    for note in service.memory.notes:
        log.info("memory verdict on %s: %s", service.memory.target, note)
    log.info("serving: %s", plan.why)
    if plan.torch_threads:
        torch.set_num_threads(plan.torch_threads)
    demo = build_demo(service, plan, service.startup_selection())
    demo.queue(max_size=plan.queue_size, default_concurrency_limit=plan.cheap_limit,
               status_update_rate=plan.status_update_rate)
    demo.launch(max_threads=plan.max_threads, max_file_size=settings.max_file_size, prevent_thread_lock=True,
                css=".stats p { font-size: 0.85em; opacity: 0.8; margin: 0 }", theme=THEME)
    log.info("ready: serving at %s", demo.local_url)  # after the examples are cached; tests/space_server.py waits for it
    demo.block_thread()


if __name__ == "__main__":
    main()
