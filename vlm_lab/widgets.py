"""An ipywidgets explorer: one image + prompt through several checkpoints, side by side.

``explore()`` is what notebooks/01_explore.ipynb displays. The user picks
checkpoints, an example (or uploads an image), types a prompt, picks a decoding
strategy and clicks Compare; each checkpoint's answer, latency, token count and
memory land in one table. All the logic lives here so the notebook is one call,
and the widget is driven (and tested) from Python the way a click drives it.

Compare runs in a background thread (``vlm_lab.widgets_run``): the kernel stays free for other
cells, Stop ends the run at the next token or checkpoint, and ``Explorer.wait()`` (or
``Explorer.run()``, which starts and waits) gives scripts, papermill and nbval finished outputs.

The inputs (the image with its preview, the strategy with its argument) are ``vlm_lab.widgets_inputs``.

Each Compare is kept (``Explorer.history``, newest first, the last ``HISTORY`` runs) and shown
under the next one with what it asked, so a strategy or a prompt can be compared with the one
before. Every explorer of a Python process shares one model cache per device
(``shared_cache``, in ``vlm_lab.widgets_cache``): a notebook cell run again answers from the models already loaded.
"""

from __future__ import annotations

import contextlib
import datetime
import html
import os
import threading
import time
import warnings
from typing import Any, Sequence

import ipywidgets as w

from vlm_lab.checkpoints import CheckpointRef, resolve_each
from vlm_lab.config import GenerationConfig
from vlm_lab.data import Sample, load_samples
from vlm_lab.errors import DataError, VlmLabError
from vlm_lab.widgets_images import PREVIEW_PX, TORNADO_MESSAGE_LIMIT, megabytes, upload_limit  # noqa: F401 - PREVIEW_PX is also this module's API
from vlm_lab.widgets_html import STYLE, Run, message_html, results_html  # noqa: F401 - also this module's API
from vlm_lab.widgets_inputs import STRATEGIES, STRATEGY_ARGS, ExplorerInputs, list_labels  # noqa: F401 - STRATEGIES is also this module's API
from vlm_lab.widgets_run import (  # noqa: F401 - stop_running is also this module's API
    RUN_THREAD, BackgroundRun, RunStopped, stop_running, stopped_note, stopped_waiting, stopping_status, waiting_status,
)
from vlm_lab.widgets_cache import shared_cache

HISTORY = 6  # runs kept and shown: this one and the five before it
MAX_NEW_TOKENS = 4096  # the field's upper bound; generation also stops where the checkpoint reads no further
PICK_SEVERAL = "Ctrl-click (⌘ on a Mac) or Shift-click: several"


class Explorer(ExplorerInputs):
    """The widget tree plus its state; display it, or drive it from Python.

    Attributes are the controls (``checkpoints``, ``example``, ``upload``,
    ``image_source``, ``prompt`` (Enter in it compares too), ``strategy`` (greedy, nucleus, temperature, beam) with its
    argument ``strategy_arg`` and the sampling ``seed``, ``max_new_tokens``, ``log``, ``button``,
    ``stop_button`` and the ``progress`` bar) and the ``output`` HTML area. A click (or Enter) starts
    the run in the background and returns: ``running`` says whether one is going, ``stop()`` ends it
    at the next safe point, ``wait()`` waits for it; ``run()`` starts one and waits. ``rows`` holds the last results (``compare_one``'s dicts:
    checkpoint, text, new_tokens, latency_s, memory_bytes, memory_kind, nonfinite, truncated, at_context,
    plus dtype; a checkpoint that failed has only checkpoint and ``error``); ``history`` holds the
    last ``HISTORY`` runs (``Run``), newest first. ``cache`` is ``shared_cache(device)`` unless given.
    """

    def __init__(self, refs: list[CheckpointRef], samples: list[Sample], *, dtype: str = "auto", device: str = "auto", cache=None,
                 unlisted: dict[str, Exception] | None = None) -> None:
        self.refs, self.samples = refs, samples
        self.unlisted = dict(unlisted or {})  # references that resolved to nothing, and why: said above the table
        self.dtype, self.device = dtype, device
        self._cache = cache
        self.uploaded = None  # PIL image of the last good upload
        self.uploaded_name = ""
        self.history: list[Run] = []
        # the frontend's clock when the last run's click was sent, plus how long it ran: a click or an
        # Enter sent before then was made before its answers showed (a double click), and is dropped
        self._busy_until: datetime.datetime | None = None
        self._bg = BackgroundRun(on_stop=self._on_stop)
        self._render_lock = threading.RLock()  # the run's thread and the kernel's both write the output area
        self._view: tuple[str, str, Sequence[Run] | None] = ("", "", None)  # status, this run, earlier runs
        self._notice = ""  # what an input event said during a run, shown above its progress
        # where the run's checkpoint is in the model cache, as its hooks tell: ("preparing" (read, not loading yet),
        # "waiting" (a Stop ends it) or "loading" (a load cannot be cut short), its name); None: no load under way
        self._loading: tuple[str, str] | None = None
        self.rows: list[dict[str, Any]] = []
        self.config: GenerationConfig | None = None  # what the last Compare generated with

        from vlm_lab.compare import unique_names

        # checkpoint-1000 of two runs: runA/checkpoint-1000 and runB/checkpoint-1000, in the list, the table and W&B
        self.names = unique_names(refs)
        default = sorted({0, len(refs) - 1})
        self.checkpoints = w.SelectMultiple(
            options=[(label, i) for i, label in enumerate(list_labels(self.names))], value=tuple(default), rows=min(len(refs), 6),
            description="Checkpoints", layout=w.Layout(width="360px"), tooltip=PICK_SEVERAL,
        )
        # a multiple select's Ctrl-click is not what a first-time user tries: said under it, not only on hover
        self.pick_hint = w.Label(PICK_SEVERAL, style={"font_size": "85%"},
                                 layout=w.Layout(margin="0 0 4px 92px", width="268px"))  # under the list, past its label
        self.example = w.Dropdown(
            options=[(f"{s.id}: {s.prompt}", i) for i, s in enumerate(samples)], value=0 if samples else None,
            description="Example", layout=w.Layout(width="420px"),
        )
        # the limit on the button: a larger file never reaches the kernel and nothing says so (see `path`); its width
        # fits the count ipywidgets adds ("(1)"), which the default 148px cut to "Upload image ..."
        limit = upload_limit()
        raise_it = "; `make lab` allows 256 MB" if limit == TORNADO_MESSAGE_LIMIT else ""
        limit = megabytes(limit)
        self.upload = w.FileUpload(accept="image/*", multiple=False, description=f"Upload image ≤ {limit}", layout=w.Layout(width="max-content"),
                                   tooltip=f"an image up to {limit} (this Jupyter server's message limit{raise_it}): a larger one "
                                           "never arrives; type its path under Image path instead")  # fmt: skip
        # an image on the kernel's machine: the browser's upload cannot carry a file past the server's websocket
        # message limit (it fails without a word), and remote images live there anyway
        self.path = w.Text(placeholder="or a file on the kernel's machine (any size)", description="Image path",
                           tooltip=f"uploads stop at {limit} (this Jupyter server's message limit); a path here has none",
                           continuous_update=False, layout=w.Layout(width="420px"))  # fmt: skip
        self.image_source = w.ToggleButtons(options=["example", "upload"], value="example", description="Image")
        self.preview = w.Image(format="png")
        self.prompt = w.Text(value=samples[0].prompt if samples else "", description="Prompt", layout=w.Layout(width="420px"))
        self.strategy = w.Dropdown(options=["greedy", *STRATEGY_ARGS], value="greedy", description="Strategy")
        # "temperature" is wider than the 80px labels of the fields above (it showed as "temperat…")
        self.strategy_arg = w.BoundedFloatText(value=1.0, min=0.0, max=1.0, step=0.05, layout=w.Layout(width="200px"),
                                               style={"description_width": "88px"})  # fmt: skip
        self.seed = w.BoundedIntText(value=0, min=0, max=2**32 - 1, description="Seed", layout=w.Layout(width="200px"),
                                     tooltip="sampling repeats for the same seed; change it to draw other answers")
        self._strategy_args = {name: spec[1] for name, spec in STRATEGY_ARGS.items()}  # each one's last argument
        self.strategy.observe(self._on_strategy, names="value")
        self._show_strategy_arg()
        self.max_new_tokens = w.BoundedIntText(value=8, min=1, max=MAX_NEW_TOKENS, description="Max tokens")
        self.log = w.Checkbox(value=False, description="Log this comparison (W&B)", indent=False)
        self.log.disabled = _log_interaction() is None
        self.button = w.Button(description="Compare", button_style="primary", icon="play")
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True,
                                    tooltip="end the run after the token being generated; finished answers stay")
        # red only while there is a run to stop: a disabled "danger" button is drawn pink (60% opacity), a live call to action
        self.stop_button.observe(lambda c: setattr(self.stop_button, "button_style", "" if c["new"] else "danger"), names="disabled")
        self.progress = w.IntProgress(value=0, min=0, max=1, layout=w.Layout(width="160px", display="none"))
        self.output = w.HTML()
        self._show(message_html("Pick checkpoints and an image, then click Compare (or press Enter in the prompt)."))

        self.example.observe(self._on_example, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.path.observe(self._on_path, names="value")  # on Enter or leaving the field
        self.image_source.observe(self._on_image_source, names="value")
        self.button.on_click(self._on_click)
        self.stop_button.on_click(lambda _: self.stop())
        self.prompt.on_msg(self._on_prompt_msg)  # Enter: the browser sends {"event": "submit"}
        self._show_preview()

        # the argument and the seed under the strategy, within the column's 420px: beside it they widened the
        # column, which squeezed the checkpoint list and drew the controls over its hint
        strategy_args = w.HBox([self.strategy_arg, self.seed])
        controls = w.VBox([self.example, self.upload, self.path, self.image_source, self.prompt, self.strategy, strategy_args,
                           self.max_new_tokens, self.log, w.HBox([self.button, self.stop_button, self.progress])])  # fmt: skip
        picks = w.VBox([self.checkpoints, self.pick_hint, self.preview], layout=w.Layout(flex="0 0 auto"))  # never squeezed
        controls.layout.flex = "0 0 auto"
        # a narrow window (a laptop, the file browser open) puts the controls under the list, rather than cut them off
        self.ui = w.VBox([w.HBox([picks, controls], layout=w.Layout(flex_flow="row wrap")), self.output])

    def _unlisted_html(self) -> str:
        """One red line per reference that could not be listed, with its error (what, which, the fix)."""
        return "".join(message_html(f"Not listed: {spec!r}: {type(e).__name__}: {e}", error=True) for spec, e in self.unlisted.items())

    def _show(self, status: str = "", current: str = "", earlier: Sequence[Run] | None = None) -> None:
        """The output area: the unlisted references, a status line, this run's table, then the earlier runs."""
        with self._render_lock:
            self._view = (status, current, earlier)
            self._render()

    def _say(self, message: str) -> None:
        """A message from an input event (an upload, a path): above the progress while a run goes, else alone."""
        with self._render_lock:
            if self.running:
                self._notice = message
                self._render()
            else:
                self._notice = ""
                self._show(message)

    def _render(self) -> None:
        status, current, earlier = self._view
        earlier = self.history if earlier is None else earlier
        past = ""
        if earlier:
            runs = "".join(f"<details{' open' if i == 0 else ''}><summary>{html.escape(r.label)}</summary>{r.html(label=False)}</details>"
                           for i, r in enumerate(earlier))  # fmt: skip
            past = f"<div class='vlm-lab-earlier' style='margin-top:10px'><b>Earlier runs</b> (newest first){runs}</div>"
        self.output.value = STYLE + self._unlisted_html() + self._notice + status + current + past

    def _on_prompt_msg(self, _widget, content, _buffers) -> None:
        if content.get("event") != "submit":
            return
        if self.running:  # Enter in the prompt, typed for the next run while this one goes
            self._say(message_html("The Compare is stopping: press Enter again once it has ended." if self._bg.stop_requested
                                   else "A Compare is running: press Enter again when it ends, or Stop it first."))  # fmt: skip
            return
        self._on_click()

    def _on_click(self, _button=None) -> None:
        """A Compare click or Enter from the browser: start a run, unless one is going or this was a double click.

        The run goes in the background, so a second click of a double click (sent before the button's
        disabled state reached the browser) arrives while it runs and is dropped. A run so short that it
        ended before the second click was read is caught by the frontend's own clock (the last click's
        send time plus the run's length), so a kernel on another machine with its clock off never drops
        a click made after the answers showed.
        """
        if self.running:
            return
        sent = _sent_at()
        if sent is not None and self._busy_until is not None and sent < self._busy_until:
            return
        self.start(_sent=sent)

    # -- running -----------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Whether a Compare of this explorer is running (in the background)."""
        return self._bg.running

    def stop(self) -> None:
        """End the running Compare at its next safe point: the next token, or before the next checkpoint.

        The answers that finished stay in ``rows`` and in the table; the run's note says what was
        stopped and what never ran. A checkpoint that is loading finishes its load first.
        """
        self._bg.stop()

    def _on_stop(self) -> None:
        self.stop_button.disabled, self.stop_button.description = True, "Stopping…"
        with self._render_lock:  # in place of the status line; the run's next message replaces it
            if self._loading is not None:  # (read under the lock: the cache's hooks change it holding it)
                _, current, earlier = self._view
                self._show(message_html(stopping_status(*self._loading), warn=True), current, earlier)
        if self._cache is not None:  # last, after the notice: a run waiting in the cache for room stops waiting now
            self._cache.wake()

    def wait(self, timeout: float | None = None) -> list[dict[str, Any]]:
        """Wait for the running Compare (if any) to end; its rows.

        An interrupt while waiting stops the run at its next safe point, then propagates.

        Raises:
            TimeoutError: ``timeout`` seconds passed first (the run goes on).
            Exception: what the run raised outside a checkpoint's own row (also shown in the output).
        """
        if not self._bg.wait(timeout):
            raise TimeoutError(f"the Compare is still running after {timeout} s; explorer.stop() ends it")
        return self.rows

    def run(self, _button=None) -> list[dict[str, Any]]:
        """Compare and wait for the answers (the click, for scripts, papermill and tests); the rows.

        Waits first for a run already going. A checkpoint that fails gets its error in its own row; the
        others still answer. ``[]`` when the inputs are refused (the output says why).
        """
        self._bg.wait(raise_error=False)  # a click's run: its error is in the output, not this call's
        return self.wait() if self.start() else []

    def start(self, *, _sent: datetime.datetime | None = None) -> bool:
        """Start a Compare in the background with what the controls hold now; False when refused.

        The inputs are read here, so changing them while the run goes prepares the next run.
        """
        if self.running:
            self._say(message_html("The Compare is stopping: start the next one once it has ended." if self._bg.stop_requested
                                   else "A Compare is running: wait for it or Stop it first."))  # fmt: skip
            return False
        chosen = list(self.checkpoints.value)
        prompt = self.prompt.value.strip()
        if not chosen:
            self._show(message_html("Select at least one checkpoint (ctrl/shift-click to select several).", error=True))
            return False
        if not prompt:
            self._show(message_html("Type a prompt first.", error=True))
            return False
        try:
            image = self.image  # once: an example read from a file is decoded on each access
        except DataError as e:
            self._show(message_html(self._example_unreadable(e), error=True))
            return False
        if image is None:
            self._show(message_html(self._no_image(), error=True))
            return False
        try:
            config = GenerationConfig(strategy=self.strategy_text, max_new_tokens=int(self.max_new_tokens.value),
                                      batch_size=1, seed=int(self.seed.value))  # fmt: skip
        except VlmLabError as e:
            self._show(message_html(f"{type(e).__name__}: {e}", error=True))
            return False
        self.config = config
        self.rows = []
        run = Run(self._label(prompt), self.rows, self.reference)
        todo = [(self.refs[i], self.names[i]) for i in chosen]
        log = self.log.value
        self._notice = ""
        # first: the first click imports torch and loads models (seconds), and a second click must find it off
        self.button.disabled = True
        self.stop_button.disabled, self.stop_button.description = False, "Stop"
        self.progress.max, self.progress.value, self.progress.layout.display = len(todo), 0, None
        self._show(message_html("Starting…"), "", self.history)
        started = time.monotonic()

        def work() -> None:
            try:
                self._work(run, todo, image, prompt, config, log=log)
            except BaseException as e:  # noqa: BLE001 - said in the output; wait() raises it with its traceback
                run.note = f"Compare failed: {type(e).__name__}: {e} (explorer.wait() raises it with its traceback)."
                run.failed = True
                with contextlib.suppress(Exception):  # showing it may be what failed: wait() still raises it
                    self._finish(run)
                raise
            finally:
                if _sent is not None:  # before the button is back: a click sent until now was made during the run
                    self._busy_until = _sent + datetime.timedelta(seconds=time.monotonic() - started)
                self.progress.layout.display = "none"
                self.stop_button.disabled, self.stop_button.description = True, "Stop"
                self.button.disabled = False

        self._bg.start(work, name=RUN_THREAD)
        return True

    def _work(self, run: Run, todo: list[tuple[CheckpointRef, str]], image, prompt: str, config: GenerationConfig, *,
              log: bool) -> None:  # fmt: skip
        """The run's thread: each checkpoint in turn, the table growing; then history, and W&B when asked."""
        waiting = message_html("Waiting for another explorer's Compare to finish (its Stop button ends it, or "
                               "vlm_lab.widgets.stop_running() when its cell was run again)…")  # fmt: skip
        with self._bg.turn(lambda: self._show(waiting, run.html())) as mine:
            stopped_in = None
            for i, (ref, name) in enumerate(todo, start=1):
                if not mine or self._bg.stop_requested:
                    break
                try:
                    self.rows.append(self._answer(ref, name, image, prompt, config, f"({i}/{len(todo)})", run))
                except RunStopped as e:
                    stopped_in = f"{name} was stopped {e}"
                    break
                self.progress.value = i
            if len(self.rows) < len(todo):
                run.note = stopped_note(todo, self.rows, stopped_in, started=mine)
        self._finish(run)
        if log and run.note:
            self._show(message_html("Not logged to W&B: the run was stopped before every checkpoint answered.", warn=True),
                       run.html(), self.history[1:])  # fmt: skip
        elif log:
            tracked = self._log(image, prompt, config)
            note = f"Logged: {tracked}" if tracked is not None else "W&B logging is disabled or failed (see the warning)."
            self._show(message_html(note), run.html(), self.history[1:])

    def _finish(self, run: Run) -> None:
        """The run goes on top of the history and the output shows it above the earlier ones."""
        if not self.history or self.history[0] is not run:
            self.history = [run, *self.history][:HISTORY]
        self._show("", run.html(), self.history[1:])

    # Displaying an Explorer displays its widget tree.
    def _repr_mimebundle_(self, **kwargs):
        return self.ui._repr_mimebundle_(**kwargs)

    @property
    def cache(self):
        """The ``ModelCache`` Compare loads into: the one given to ``explore``, else ``shared_cache(device)``."""
        if self._cache is None:
            self._cache = shared_cache(self.device)  # on first use: it imports torch
        return self._cache

    def _answer(self, ref: CheckpointRef, name: str, image, prompt: str, config: GenerationConfig, step: str, run: Run) -> dict[str, Any]:
        """``ref``'s row, under its ``name`` in the list; its error (in words, never a traceback) when it cannot load or answer.

        Raises:
            RunStopped: Stop was asked while it generated, loaded, or waited in the cache for room.
        """
        from vlm_lab.compare import compare_one
        from vlm_lab.model_cache import WaitCancelled

        try:
            with contextlib.ExitStack() as in_use:
                if ref not in self.cache:  # its files are read (hashed) before it loads or waits: seconds for a large model
                    self._show(message_html(f"Opening {name} {step}…"), run.html())
                    self._loading = ("preparing", name)
                try:
                    # in use until it has answered: a load in another cell (sharing the cache) waits for its room
                    # instead of evicting it meanwhile (it would stay in memory beside that cell's model)
                    loaded = in_use.enter_context(self.cache.use(
                        ref, dtype=self.dtype, device=self.device, cancel=self._bg.stop_event,
                        on_wait=lambda wait: self._cache_waits(wait, name, step, run), on_load=lambda _: self._cache_loads(name, step, run)))
                except WaitCancelled as e:
                    raise stopped_waiting(e, ref) from None
                finally:
                    self._loading = None
                if self._bg.stop_requested:
                    raise RunStopped("after loading")
                self._show(message_html(f"Running {name} {step}…"), run.html())
                with self._bg.stoppable(loaded.model):
                    (row,) = compare_one(self.cache, [ref], image, prompt, config, dtype=self.dtype, device=self.device)
        except RunStopped:
            raise
        except VlmLabError as e:
            return {"checkpoint": name, "error": f"{type(e).__name__}: {e}"}
        except Exception as e:  # noqa: BLE001 - a button callback's traceback would vanish into the browser console
            return {"checkpoint": name, "error": f"{name} failed while answering ({type(e).__name__}: {e})"}
        return row | {"checkpoint": name}

    def _cache_waits(self, wait, name: str, step: str, run: Run) -> None:
        """The model cache's ``on_wait``: the status says what ``name``'s turn waits for, and a Stop ends the wait."""
        with self._render_lock:
            self._show(message_html(waiting_status(wait, name, step)), run.html())
            self._loading = ("waiting", name)

    def _cache_loads(self, name: str, step: str, run: Run) -> None:
        """The model cache's ``on_load``: ``name`` begins loading, unless a Stop came first (nothing is loaded then).

        Under the output's lock, as ``_on_stop`` reads what to say: a Stop either comes first and this raises,
        or it says the load cannot be cut short.
        """
        with self._render_lock:
            if self._bg.stop_requested:
                raise RunStopped("before loading")
            self._show(message_html(f"Loading {name} {step}…"), run.html())
            self._loading = ("loading", name)

    def _log(self, image, prompt: str, config: GenerationConfig):
        """Log this comparison as a W&B run (offline unless a key is set); the ``TrackedRun`` or None."""
        log_interaction = _log_interaction()
        if log_interaction is None:
            return None
        answers = [r for r in self.rows if not r.get("error") and not r.get("nonfinite")]  # no errors, no NaN noise
        if not answers:
            return None
        return log_interaction(
            image=image, prompt=prompt,
            outputs={r["checkpoint"]: r["text"] for r in answers},
            latency_s={r["checkpoint"]: r["latency_s"] for r in answers},
            memory_mb={r["checkpoint"]: r["memory_bytes"] / 2**20 for r in answers},
            config=config.to_dict(),
        )


def _sent_at() -> datetime.datetime | None:
    """The frontend's send time of the message the kernel is handling (its header date); None outside a kernel."""
    try:
        from ipykernel.kernelbase import Kernel
    except ImportError:
        return None
    if not Kernel.initialized():
        return None
    date = (Kernel.instance().get_parent("shell") or {}).get("header", {}).get("date")
    if isinstance(date, str):
        try:
            date = datetime.datetime.fromisoformat(date.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(date, datetime.datetime):
        return None
    return date if date.tzinfo else date.replace(tzinfo=datetime.timezone.utc)


def _log_interaction():
    """``vlm_lab.tracking.log_interaction`` when tracking is available, else None."""
    try:
        from vlm_lab import tracking
    except ImportError:
        return None
    return getattr(tracking, "log_interaction", None)


def explore(
    checkpoints: str | Sequence[str] = "checkpoints/shapes",
    data: str = "shapes:val:24",
    *,
    dtype: str = "auto",
    device: str = "auto",
    cache=None,
) -> Explorer:
    """Build the explorer over the checkpoints a folder/list resolves to and the samples of ``data``.

    Args:
        checkpoints: a training-output folder (expands to its checkpoint-N), model folders, hub ids,
            or a comma-separated string of them.
        data: ``shapes:SPLIT[:N]`` or a JSONL of ``{image, prompt, reference?}``; its samples fill the
            Example dropdown.
        dtype, device: as in ``CompareConfig``.
        cache: a ``ModelCache`` of its own; by default the one every explorer on ``device`` shares
            (``shared_cache``), so a re-run cell does not load its models a second time.

    A reference that resolves to nothing (a typo, a hub run that cannot be listed) does not hide the
    others: the explorer lists those it found and says which could not be listed and why, in red above
    its results (``Explorer.unlisted``) and as a ``CheckpointsNotListedWarning``.

    Raises:
        CheckpointNotFoundError: no reference resolves to anything (each one's error, which lists what exists).
        DataError: the data spec or file is unusable.
    """
    refs, unlisted = resolve_each(list(checkpoints) if not isinstance(checkpoints, str) else checkpoints)
    samples = load_samples(os.fspath(data))
    for spec, e in unlisted.items():
        warnings.warn(f"the explorer does not list {spec!r}: {e}", CheckpointsNotListedWarning, stacklevel=2)
    return Explorer(refs, samples, dtype=dtype, device=device, cache=cache, unlisted=unlisted)


class CheckpointsNotListedWarning(UserWarning):
    """A checkpoint reference given to ``explore`` resolved to nothing; the explorer shows the others."""
