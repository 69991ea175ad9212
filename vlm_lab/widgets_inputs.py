"""The explorer's inputs: the image a Compare uses (an example, an upload, a file on the kernel's
machine) with its preview, the decoding strategy with its argument, and a run's one-line label.

``ExplorerInputs`` is a part of ``vlm_lab.widgets.Explorer``, which builds the controls these
methods read and observe (``example``, ``upload``, ``path``, ``image_source``, ``preview``,
``prompt``, ``strategy``, ``strategy_arg``, ``seed``).
"""

from __future__ import annotations

import io
import os

from vlm_lab.data import open_image
from vlm_lab.errors import DataError
from vlm_lab.short_labels import LIST_CHARS, list_labels  # noqa: F401 - widgets.py takes them from here
from vlm_lab.widgets_html import message_html
from vlm_lab.widgets_images import frame_count, thumbnail, typed_path, unreadable, unreadable_file

STRATEGIES = ("greedy", "nucleus(0.9)", "temperature(0.7)", "beam(3)")
# each strategy's argument in the UI: (label, default, min, max, step); greedy takes none
STRATEGY_ARGS = {
    "nucleus": ("top p", 0.9, 0.01, 1.0, 0.05),
    "temperature": ("temperature", 0.7, 0.05, 5.0, 0.1),
    "beam": ("beams", 3, 1, 16, 1),
}

class ExplorerInputs:
    """The image, reference, strategy and label of ``Explorer`` (see there for the controls)."""

    @property
    def image(self):
        """The image a Compare would use: the upload (or file) when Image is on upload, else the selected example's.

        None when there is none (nothing uploaded yet, or no examples).

        Raises:
            DataError: the example's image is read from a file that cannot be read now (moved, deleted).
        """
        if self.image_source.value == "upload":
            return self.uploaded
        return self.samples[self.example.value].image if self.samples else None

    def _no_image(self) -> str:
        """What to do when ``image`` is None."""
        if self.image_source.value == "upload":
            return f"Nothing is uploaded yet: upload an image or give its path{', or set Image to example' if self.samples else ''}."
        return "Pick an example or upload an image first."

    def _example_unreadable(self, e: DataError) -> str:
        """Why the selected example's image cannot be used, and what to do."""
        sample = self.samples[self.example.value]
        cause = e.__cause__ if isinstance(e.__cause__, DataError) else e  # the data line's own advice is not the explorer's
        where = f" ({sample.line})" if sample.line else ""
        return f"The image of example {sample.id}{where} cannot be read ({cause}): pick another example, or put the file back."

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

    def _on_strategy(self, change) -> None:
        if change["old"] in STRATEGY_ARGS:  # kept for when the user comes back to it
            self._strategy_args[change["old"]] = self.strategy_arg.value
        self._show_strategy_arg()

    def _show_strategy_arg(self) -> None:
        """The argument field names what it sets for the chosen strategy; greedy hides it (and the seed)."""
        spec = STRATEGY_ARGS.get(self.strategy.value)
        self.strategy_arg.layout.display = self.seed.layout.display = None if spec else "none"
        if spec:
            label, _, low, high, step = spec
            with self.strategy_arg.hold_trait_notifications():  # min/max/value checked together, not one by one
                self.strategy_arg.min, self.strategy_arg.max, self.strategy_arg.step = low, high, step
                self.strategy_arg.value, self.strategy_arg.description = self._strategy_args[self.strategy.value], label
            self.seed.layout.display = None if self.strategy.value != "beam" else "none"  # beam search draws nothing

    def _show_preview(self) -> None:
        """The image Compare would use, small; hidden when there is none, never the one before left in its place."""
        try:
            image = self.image
        except DataError as e:
            image = None
            self._say(message_html(self._example_unreadable(e), error=True))
        self.preview.layout.display = None if image is not None else "none"
        if image is not None:
            thumb, buf = thumbnail(image), io.BytesIO()
            thumb.save(buf, format="PNG")
            # its size in pixels, or the page stretches it to the column's width
            self.preview.width, self.preview.height = str(thumb.width), str(thumb.height)
            self.preview.value = buf.getvalue()

    def _on_image_source(self, change) -> None:
        if change["new"] == "example":
            # the browser sends a chosen file only when it differs from the value it holds: cleared, the same photo
            # chosen again is used again (the image stays in ``uploaded`` for the toggle's way back)
            self.upload.value = ()
        self._show_preview()

    def _on_example(self, change) -> None:
        self.prompt.value = self.samples[change["new"]].prompt
        self.image_source.value = "example"
        self._show_preview()

    def _on_path(self, change) -> None:
        typed = change["new"].strip()
        if not typed:
            return
        path = typed_path(typed)
        if typed.startswith(("http://", "https://")):
            why = f"{typed!r} is a URL, which is not downloaded: save the image and give its path, or upload it"
        elif os.path.isdir(path):
            why = f"{path!r} is a folder: give the path of an image file in it"
        else:
            try:
                image = open_image(path)
            except DataError as e:
                why = unreadable_file(typed, path, e)
            else:
                self._use(image, typed if path == os.path.expanduser(typed) else path, "image")
                return
        self._say(message_html(why + self._kept() + ".", error=True))

    def _kept(self) -> str:
        """After an image was refused: whether Compare still has the one shown."""
        try:
            return "; Compare still uses the image shown" if self.image is not None else ""
        except DataError:
            return ""

    def _use(self, image, name: str, kind: str, remark: str = "") -> None:
        """Compare with ``image`` (an upload or a file), shown in the preview and said in the output."""
        self.uploaded, self.uploaded_name = image, name
        self.image_source.value = "upload"
        self._show_preview()
        self._say(message_html(f"Using {kind} {name!r} ({image.width}x{image.height}{remark})."))

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        f = files[0]
        content = bytes(f["content"])
        try:
            image = open_image(io.BytesIO(content))
        except DataError as e:
            self._say(message_html(unreadable(f["name"], content, e) + self._kept() + ".", error=True))
            return
        frames = frame_count(content)
        self._use(image, f["name"], "uploaded image", f", the first of its {frames} frames" if frames > 1 else "")

    def _label(self, prompt: str) -> str:
        """What a run asked, in one line: its prompt, image, strategy (and seed when sampling) and max tokens."""
        shown = prompt if len(prompt) <= 80 else prompt[:77] + "…"
        if self.image_source.value == "upload" and self.uploaded is not None:
            image = repr(self.uploaded_name)
        else:
            image = f"example {self.samples[self.example.value].id}"
        seed = f", seed {self.config.seed}" if self.strategy.value in ("nucleus", "temperature") else ""
        return f"{shown!r} on {image} · {self.config.strategy}{seed} · max {self.config.max_new_tokens} tokens"
