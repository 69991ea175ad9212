"""Synthetic colored-shapes VQA data: the embedded default dataset.

Each image is one large, roughly centred shape of one color on a light
background; each image comes with three questions (color, shape, description).
Everything is drawn with PIL from a seed, so a split is identical on every
machine. ``train`` and ``val`` use disjoint seed streams.
"""

from __future__ import annotations

import random
from typing import Iterator

from PIL import Image, ImageDraw

from vlm_lab.data import Sample
from vlm_lab.errors import DataError

IMAGE_SIZE = 64

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 50, 180),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle", "diamond")

QUESTIONS: dict[str, str] = {
    "color": "What color is the shape?",
    "shape": "What shape is it?",
    "describe": "Describe the image.",
}

# Disjoint seed streams per split: the same seed never draws the same image twice.
_SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_003}


def draw_shape(color: str, shape: str, rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw one ``shape`` in ``color``, centred with a little jitter in place and size."""
    if color not in COLORS:
        raise DataError(f"unknown color {color!r}; known: {', '.join(COLORS)}")
    if shape not in SHAPES:
        raise DataError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    shade = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in COLORS[color])
    background = tuple(rng.randint(225, 255) for _ in range(3))
    img = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(img)
    half = size * rng.uniform(0.28, 0.40)  # large: the shape fills most of the frame
    cx = size / 2 + rng.uniform(-0.08, 0.08) * size
    cy = size / 2 + rng.uniform(-0.08, 0.08) * size
    box = (cx - half, cy - half, cx + half, cy + half)
    if shape == "circle":
        draw.ellipse(box, fill=shade)
    elif shape == "square":
        draw.rectangle(box, fill=shade)
    elif shape == "triangle":
        draw.polygon([(cx, cy - half), (cx - half, cy + half), (cx + half, cy + half)], fill=shade)
    else:  # diamond
        draw.polygon([(cx, cy - half), (cx + half, cy), (cx, cy + half), (cx - half, cy)], fill=shade)
    return img


def iter_images(split: str, seed: int = 0) -> Iterator[tuple[str, Image.Image, str, str]]:
    """Endless stream of ``(image_id, image, color, shape)`` for a split."""
    if split not in _SPLIT_OFFSET:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(_SPLIT_OFFSET)}")
    rng = random.Random(seed + _SPLIT_OFFSET[split])
    index = 0
    while True:
        color = rng.choice(sorted(COLORS))
        shape = rng.choice(SHAPES)
        yield f"{split}-{index:05d}", draw_shape(color, shape, rng), color, shape
        index += 1


def answers(color: str, shape: str) -> dict[str, str]:
    return {"color": color, "shape": shape, "describe": f"a {color} {shape}"}


def make_samples(split: str, num_samples: int, *, seed: int = 0) -> list[Sample]:
    """``num_samples`` question/answer samples, cycling color, shape and describe questions.

    Consecutive samples use consecutive images, and the question kind rotates, so
    any prefix of the list is a balanced mix.
    """
    _check_count("num_samples", num_samples)
    kinds = list(QUESTIONS)
    out: list[Sample] = []
    for i, (image_id, img, color, shape) in zip(range(num_samples), iter_images(split, seed)):
        kind = kinds[i % len(kinds)]
        out.append(
            Sample(
                id=f"{image_id}-{kind}",
                image=img,
                prompt=QUESTIONS[kind],
                reference=answers(color, shape)[kind],
                meta={"question_type": kind},
            )
        )
    return out


def make_training_triples(num_images: int, *, seed: int = 0) -> list[Sample]:
    """Every question for each of ``num_images`` training images (3 samples per image)."""
    _check_count("num_images", num_images)
    out: list[Sample] = []
    for _, (image_id, img, color, shape) in zip(range(num_images), iter_images("train", seed)):
        for kind, answer in answers(color, shape).items():
            out.append(Sample(id=f"{image_id}-{kind}", image=img, prompt=QUESTIONS[kind], reference=answer, meta={"question_type": kind}))
    return out


def _check_count(name: str, value: int) -> None:
    if value < 0:  # zip(range(-3), ...) would silently give nothing
        raise DataError(f"{name} must be >= 0, got {value}")
