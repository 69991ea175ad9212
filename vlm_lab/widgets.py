"""An ipywidgets explorer: one image + prompt through several checkpoints, side by side.

``explore()`` is what notebooks/01_explore.ipynb displays. The user picks
checkpoints, an example (or uploads an image), types a prompt, picks a decoding
strategy and clicks Compare; each checkpoint's answer, latency, token count and
memory land in one table. All the logic lives here so the notebook is one call,
and ``Explorer.run()`` is the click handler, callable (and tested) without a
browser.
"""

from __future__ import annotations

import html
import io
import os
import warnings
from typing import Any, Sequence

import ipywidgets as w

from vlm_lab.checkpoints import CheckpointRef, resolve_each
from vlm_lab.config import GenerationConfig
from vlm_lab.data import Sample, load_samples, open_image
from vlm_lab.errors import DataError, VlmLabError

STRATEGIES = ("greedy", "nucleus(0.9)", "temperature(0.7)", "beam(3)")
# each strategy's argument in the UI: (label, default, min, max, step); greedy takes none
STRATEGY_ARGS = {
    "nucleus": ("top p", 0.9, 0.01, 1.0, 0.05),
    "temperature": ("temperature", 0.7, 0.05, 5.0, 0.1),
    "beam": ("beams", 3, 1, 16, 1),
}
PREVIEW_PX = 128  # the 64x64 shapes are upscaled (nearest) so they are visible; larger images shrink to fit

# compare_one's memory_kind, in words
_MEMORY_KINDS = {"cpu_weights": "weights", "cuda_max_allocated": "peak CUDA"}
_OK_STYLE = "background:#e6f4ea"
_BAD_STYLE = "background:#fce8e6"


def _thumbnail(image):
    """A preview at most PREVIEW_PX on its long side, aspect kept (a 24 MP photo is not sent to the browser)."""
    from PIL import Image

    scale = PREVIEW_PX / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.NEAREST if scale >= 1 else Image.LANCZOS)


def message_html(text: str, *, error: bool = False) -> str:
    """A one-line notice for the output area (errors in red, never a traceback)."""
    color = "#b3261e" if error else "#444"
    return f'<div class="vlm-lab-message" style="color:{color};padding:4px 0">{html.escape(text)}</div>'


def _badges(row: dict[str, Any]) -> str:
    """NaN/inf scores (noise) and cut off at max_new_tokens or the checkpoint's context (incomplete), beside the answer."""
    from vlm_lab.compare import nonfinite_message

    out = ""
    if row.get("nonfinite"):
        # the advice follows the dtype the model runs in (float16 overflow vs broken weights)
        advice = nonfinite_message(row["checkpoint"], 1, 1, row.get("dtype", "?"), dtype_option="dtype=")
        out += f" <span style='color:#b3261e'>NaN/inf: {html.escape(advice)}</span>"
    if row.get("at_context"):  # more tokens cannot help: the image, prompt and answer fill what the checkpoint reads
        out += " <span style='color:#8a5a00'>cut off: the checkpoint reads no further (shorten the prompt)</span>"
    elif row.get("truncated"):
        out += " <span style='color:#8a5a00'>cut off at max new tokens: raise it to see the whole answer</span>"
    return out


def results_html(rows: Sequence[dict[str, Any]], reference: str | list[str] | None = None) -> str:
    """The side-by-side table of ``compare_one`` rows; green/red against the reference (or any of a list) when known."""
    from vlm_lab.model_cache import format_bytes
    from vlm_lab.results import reference_text
    from vlm_lab.scoring import normalized_match

    head = "".join(f"<th style='text-align:left;padding:2px 10px'>{h}</th>" for h in ("checkpoint", "answer", "latency", "tokens", "memory"))
    body = []
    for r in rows:
        style = ""
        if r.get("error"):  # this checkpoint failed; the others' answers stay
            style = _BAD_STYLE
            cells = (html.escape(r["checkpoint"]), f"<span style='color:#b3261e'>{html.escape(r['error'])}</span>", "-", "-", "-")
        else:
            if reference is not None:
                style = _OK_STYLE if normalized_match(r["text"], reference) else _BAD_STYLE
            cells = (
                html.escape(r["checkpoint"]),
                f"<b>{html.escape(r['text']) or '<i>(empty)</i>'}</b>" + _badges(r),
                f"{r['latency_s'] * 1000:.0f} ms",
                str(r["new_tokens"]),
                f"{format_bytes(r['memory_bytes'])} {_MEMORY_KINDS.get(r['memory_kind'], r['memory_kind'])}",
            )
        tds = "".join(f"<td style='padding:2px 10px'>{c}</td>" for c in cells)
        body.append(f"<tr class='vlm-lab-row' style='{style}'>{tds}</tr>")
    ref = f"<div>reference: <b>{html.escape(reference_text(reference))}</b></div>" if reference is not None else ""
    return f"{ref}<table class='vlm-lab-results'><tr>{head}</tr>{''.join(body)}</table>"


class Explorer:
    """The widget tree plus its state; display it, or drive it from Python.

    Attributes are the controls (``checkpoints``, ``example``, ``upload``,
    ``image_source``, ``prompt``, ``strategy`` (greedy, nucleus, temperature, beam) with its
    argument ``strategy_arg`` and the sampling ``seed``, ``max_new_tokens``, ``log``, ``button``)
    and the ``output`` HTML area. ``rows`` holds the last results (``compare_one``'s dicts:
    checkpoint, text, new_tokens, latency_s, memory_bytes, memory_kind, nonfinite, truncated, at_context,
    plus dtype; a checkpoint that failed has only checkpoint and ``error``).
    """

    def __init__(self, refs: list[CheckpointRef], samples: list[Sample], *, dtype: str = "auto", device: str = "auto", cache=None,
                 unlisted: dict[str, Exception] | None = None) -> None:
        self.refs, self.samples = refs, samples
        self.unlisted = dict(unlisted or {})  # references that resolved to nothing, and why: said above the table
        self.dtype, self.device = dtype, device
        self.cache = cache
        self.uploaded = None  # PIL image of the last good upload
        self.rows: list[dict[str, Any]] = []
        self.config: GenerationConfig | None = None  # what the last Compare generated with

        from vlm_lab.compare import unique_names

        # checkpoint-1000 of two runs: runA/checkpoint-1000 and runB/checkpoint-1000, in the list, the table and W&B
        self.names = unique_names(refs)
        default = sorted({0, len(refs) - 1})
        self.checkpoints = w.SelectMultiple(
            options=[(name, i) for i, name in enumerate(self.names)], value=tuple(default), rows=min(len(refs), 6),
            description="Checkpoints", layout=w.Layout(width="360px"),
        )
        self.example = w.Dropdown(
            options=[(f"{s.id}: {s.prompt}", i) for i, s in enumerate(samples)], value=0 if samples else None,
            description="Example", layout=w.Layout(width="420px"),
        )
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="Upload image")
        self.image_source = w.ToggleButtons(options=["example", "upload"], value="example", description="Image")
        self.preview = w.Image(format="png")
        self.prompt = w.Text(value=samples[0].prompt if samples else "", description="Prompt", layout=w.Layout(width="420px"))
        self.strategy = w.Dropdown(options=["greedy", *STRATEGY_ARGS], value="greedy", description="Strategy")
        self.strategy_arg = w.BoundedFloatText(value=1.0, min=0.0, max=1.0, step=0.05, layout=w.Layout(width="200px"))
        self.seed = w.BoundedIntText(value=0, min=0, max=2**32 - 1, description="Seed", layout=w.Layout(width="200px"),
                                     tooltip="sampling repeats for the same seed; change it to draw other answers")
        self.strategy.observe(lambda _: self._show_strategy_arg(), names="value")
        self._show_strategy_arg()
        self.max_new_tokens = w.BoundedIntText(value=8, min=1, max=256, description="Max tokens")
        self.log = w.Checkbox(value=False, description="Log this comparison (W&B)", indent=False)
        self.log.disabled = _log_interaction() is None
        self.button = w.Button(description="Compare", button_style="primary", icon="play")
        self.output = w.HTML(value=self._unlisted_html() + message_html("Pick checkpoints and an image, then click Compare."))

        self.example.observe(self._on_example, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.image_source.observe(lambda _: self._show_preview(), names="value")
        self.button.on_click(self.run)
        self._show_preview()

        strategy = w.HBox([self.strategy, self.strategy_arg, self.seed])
        controls = w.VBox([self.example, self.upload, self.image_source, self.prompt, strategy, self.max_new_tokens, self.log, self.button])
        self.ui = w.VBox([w.HBox([w.VBox([self.checkpoints, self.preview]), controls]), self.output])

    def _unlisted_html(self) -> str:
        """One red line per reference that could not be listed, with its error (what, which, the fix)."""
        return "".join(message_html(f"Not listed: {spec!r}: {type(e).__name__}: {e}", error=True) for spec, e in self.unlisted.items())

    # Displaying an Explorer displays its widget tree.
    def _repr_mimebundle_(self, **kwargs):
        return self.ui._repr_mimebundle_(**kwargs)

    @property
    def image(self):
        """The image a Compare would use: the upload when chosen, else the selected example's."""
        if self.image_source.value == "upload" and self.uploaded is not None:
            return self.uploaded
        return self.samples[self.example.value].image if self.samples else None

    @property
    def reference(self) -> str | None:
        """The selected example's reference answer, when its own image and prompt are in use."""
        if self.image_source.value == "upload" or not self.samples:
            return None
        s = self.samples[self.example.value]
        return s.reference if self.prompt.value.strip() == s.prompt else None

    @property
    def strategy_text(self) -> str:
        """The chosen strategy as ``GenerationConfig`` takes it: ``greedy``, ``nucleus(0.9)``, ``beam(3)``..."""
        name = self.strategy.value
        if name == "greedy":
            return name
        value = self.strategy_arg.value
        return f"{name}({int(value) if name == 'beam' else value:g})"

    def _show_strategy_arg(self) -> None:
        """The argument field names what it sets for the chosen strategy; greedy hides it (and the seed)."""
        spec = STRATEGY_ARGS.get(self.strategy.value)
        self.strategy_arg.layout.display = self.seed.layout.display = None if spec else "none"
        if spec:
            label, default, low, high, step = spec
            with self.strategy_arg.hold_trait_notifications():  # min/max/value checked together, not one by one
                self.strategy_arg.min, self.strategy_arg.max, self.strategy_arg.step = low, high, step
                self.strategy_arg.value, self.strategy_arg.description = default, label
            self.seed.layout.display = None if self.strategy.value != "beam" else "none"  # beam search draws nothing

    def _show_preview(self) -> None:
        image = self.image
        if image is not None:
            thumb, buf = _thumbnail(image), io.BytesIO()
            thumb.save(buf, format="PNG")
            # its size in pixels, or the page stretches it to the column's width
            self.preview.width, self.preview.height = str(thumb.width), str(thumb.height)
            self.preview.value = buf.getvalue()

    def _on_example(self, change) -> None:
        self.prompt.value = self.samples[change["new"]].prompt
        self.image_source.value = "example"
        self._show_preview()

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0]
        try:
            image = open_image(io.BytesIO(bytes(f["content"])))
        except DataError as e:
            kept = "; Compare still uses the image shown" if self.image is not None else ""
            if e.__cause__ is None:  # readable, but refused (a strip the processor would blow up): the message has the fix
                self.output.value = message_html(f"{f['name']!r}: {e}{kept}.", error=True)
                return
            why = e.__cause__  # PIL's reason (too many pixels, truncated file...), not the BytesIO's repr
            self.output.value = message_html(
                f"Cannot read {f['name']!r} as an image ({why}); upload a PNG, JPEG or another format Pillow opens{kept}.",
                error=True,
            )
            return
        self.uploaded = image
        self.image_source.value = "upload"
        self._show_preview()
        self.output.value = message_html(f"Using uploaded image {f['name']!r} ({image.width}x{image.height}).")

    def run(self, _button=None) -> list[dict[str, Any]]:
        """The Compare click: run every selected checkpoint on the image + prompt, show the table.

        A checkpoint that fails gets its error in its own row; the others still answer.
        """
        self.button.disabled = True  # first: the first click imports torch and loads models (seconds)
        try:
            return self._compare()
        finally:
            self.button.disabled = False

    def _compare(self) -> list[dict[str, Any]]:
        chosen = list(self.checkpoints.value)
        refs = [self.refs[i] for i in chosen]
        prompt = self.prompt.value.strip()
        if not refs:
            self.output.value = message_html("Select at least one checkpoint (ctrl/shift-click to select several).", error=True)
            return []
        if not prompt:
            self.output.value = message_html("Type a prompt first.", error=True)
            return []
        image = self.image  # once: an example read from a file is decoded on each access
        if image is None:
            self.output.value = message_html("Pick an example or upload an image first.", error=True)
            return []
        self.output.value = message_html("Starting…")
        try:
            self.config = GenerationConfig(strategy=self.strategy_text, max_new_tokens=int(self.max_new_tokens.value),
                                           batch_size=1, seed=int(self.seed.value))  # fmt: skip
        except VlmLabError as e:
            self.output.value = message_html(f"{type(e).__name__}: {e}", error=True)
            return []
        from vlm_lab.model_cache import ModelCache

        if self.cache is None:
            self.cache = ModelCache()
        self.rows = []
        try:
            for i, (ref, name) in enumerate(zip(refs, [self.names[j] for j in chosen]), start=1):
                doing = "Running" if ref in self.cache else "Loading and running"  # a first load can take minutes
                self.output.value = message_html(f"{doing} {name} ({i}/{len(refs)})…") + results_html(self.rows)
                self.rows.append(self._answer(ref, name, image, prompt))
        except KeyboardInterrupt:  # the kernel's stop button: keep what finished, say so
            self.output.value = message_html(f"Interrupted: {len(self.rows)} of {len(refs)} checkpoints answered.", error=True)
            self.output.value += results_html(self.rows, self.reference)
            return self.rows
        self.output.value = self._unlisted_html() + results_html(self.rows, self.reference)
        if self.log.value:
            tracked = self._log(image, prompt, self.config)
            note = f"Logged: {tracked}" if tracked is not None else "W&B logging is disabled or failed (see the warning)."
            self.output.value += message_html(note)
        return self.rows

    def _answer(self, ref: CheckpointRef, name: str, image, prompt: str) -> dict[str, Any]:
        """``ref``'s row, under its ``name`` in the list; its error (in words, never a traceback) when it cannot load or answer."""
        from vlm_lab.compare import compare_one

        try:
            (row,) = compare_one(self.cache, [ref], image, prompt, self.config, dtype=self.dtype, device=self.device)
        except VlmLabError as e:
            return {"checkpoint": name, "error": f"{type(e).__name__}: {e}"}
        except Exception as e:  # noqa: BLE001 - a button callback's traceback would vanish into the browser console
            return {"checkpoint": name, "error": f"{name} failed while answering ({type(e).__name__}: {e})"}
        return row | {"checkpoint": name}

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
        cache: a ``ModelCache`` to share with other comparisons (a fresh one by default).

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
