"""The Space's examples: your own images and questions, or the shipped synthetic shapes.

``examples.jsonl`` in the examples folder (``space/examples/``) is read as any data file is (``vlm_lab.data``: one
``{"image": ..., "prompt": ...}`` per line, images relative to it, JPEG and every format Pillow reads); without it
the folder's PNGs are shown with shapes questions. Publishing uploads the folder with the Space, so both work there.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

EXAMPLES_FILE = "examples.jsonl"
SHAPE_QUESTIONS = ("What color is the shape?", "What shape is it?", "Describe the image.")


@dataclasses.dataclass(frozen=True)
class Example:
    image: Path
    question: str
    label: str  # what the example's button reads: "red circle · What color is the shape?"


def load_examples(folder: Path) -> tuple[list[Example], str]:
    """``(examples, heading)`` of the examples in ``folder``.

    Raises:
        DataError: ``examples.jsonl`` cannot be read (a missing image, a line that is not JSON), naming the line.
    """
    jsonl = folder / EXAMPLES_FILE
    if jsonl.is_file():
        from vlm_lab.data import load_samples

        samples = load_samples(str(jsonl))
        return [_example(Path(s.image_path or ""), s.prompt) for s in samples], "Examples"
    images = sorted(folder.glob("*.png"))
    return [_example(p, SHAPE_QUESTIONS[i % len(SHAPE_QUESTIONS)]) for i, p in enumerate(images)], "Examples (synthetic shapes)"


def _example(image: Path, question: str) -> Example:
    return Example(image, question, f"{image.stem.replace('-', ' ')} · {question}")
