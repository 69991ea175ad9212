"""Which image the memory estimate plans for: the worst shape a Space would plausibly be sent.

Many VLM processors count an image's tokens from its height AND width (LLaVA-NeXT /
OneVision pinpoints, Qwen2-VL dynamic resolution, Idefics3 / SmolVLM splitting,
Pixtral, InternVL / Aya Vision / Llama 4 tiles): a panorama or a tall screenshot
can make more tokens than the square image of the same size, and a verdict made
for the square would say "fits" for a workload that does not. So the estimate
counts every shape in a small set at the user's size bound and plans for the most:

- the common aspects either way up: square, 5:4, 4:3, 3:2, 16:9, 2:1 and 4:1,
  with the longer side at the bound;
- the model's own tile grids (pinpoints, canvases), at their own size where it is
  within the bound, else scaled down to it.

``image_size`` says what the user will serve: 0 = any size (the bound is where the
processor stops growing: it shrinks larger images to the same count), ``N`` = images
up to N px on their longer side, ``"HxW"`` = exactly that image. Families whose
count does not depend on the shape (a fixed resize, a fixed count) are counted once,
and the plan says so.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from vlm_lab.errors import ConfigError
from vlm_lab.memory_tokens import ImageTokens, grid_shapes, image_tokens_for_shape, largest_side

# (height, width) ratios tried at the bound: square first (named when it ties the worst), then photos and screens
# either way up (5:4, 4:3, 3:2, 16:9), then panoramas and tall screenshots (2:1, 4:1)
ASPECTS = ((1, 1), (4, 5), (5, 4), (3, 4), (4, 3), (2, 3), (3, 2), (9, 16), (16, 9), (1, 2), (2, 1), (1, 4), (4, 1))
MAX_SIDE = 65536  # no image processor takes a side this long; a larger number is a typo
_SHAPE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")
_HELP = ("a whole number >= 0 (0 = the largest the processor makes, from an image of any size; N = images up to N px "
         "on the longer side) or an exact HEIGHTxWIDTH such as 768x1536")


def parse_image_size(value: Any) -> int | tuple[int, int]:
    """``0`` / ``1024`` / ``"1024"`` -> a bound on the longer side (0: any); ``"768x1536"`` / ``(768, 1536)`` -> that shape.

    Raises:
        ConfigError: anything else, naming the value and the forms that work.
    """
    given = value
    if isinstance(value, str):
        match = _SHAPE_RE.match(value)
        if match:
            value = (int(match[1]), int(match[2]))
        elif value.strip().isdigit():
            value = int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        height, width = value
        if 1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE:
            return int(height), int(width)
    elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SIDE:
        return value
    raise ConfigError(f"image_size must be {_HELP}, sides up to {MAX_SIDE}; got {given!r}")


def image_size_text(value: Any) -> int | str:
    """The canonical config value: an int bound, or ``"HxW"``."""
    parsed = parse_image_size(value)
    return f"{parsed[0]}x{parsed[1]}" if isinstance(parsed, tuple) else parsed


def _at_bound(height: int, width: int, bound: int) -> tuple[int, int]:
    """The (height, width) of that aspect with its longer side ``bound``."""
    scale = bound / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def candidate_shapes(config, settings: dict[str, Any] | None, bound: int) -> list[tuple[int, int]]:
    """The (height, width) images tried at ``bound``: the common aspects, then the model's own grids."""
    shapes = [_at_bound(h, w, bound) for h, w in ASPECTS]
    shapes += [(h, w) if max(h, w) <= bound else _at_bound(h, w, bound) for h, w in grid_shapes(config, settings)]
    return list(dict.fromkeys(shapes))


def plan_image(config, settings: dict[str, Any] | None, image_size: Any = 0) -> ImageTokens:
    """One image's tokens and patches for the estimate: the exact shape asked, else the worst shape at the bound.

    The result's ``plan`` says which image it is and why; ``height``/``width`` are the image to measure with.

    Raises:
        ConfigError: ``image_size`` is not 0, a bound or a ``HxW`` shape.
    """
    asked = parse_image_size(image_size)
    if isinstance(asked, tuple):
        counted = image_tokens_for_shape(config, settings, *asked)
        if counted.by_shape:
            return dataclasses.replace(counted, plan=f"{counted.shape} as asked: {_tokens(counted.tokens)}")
        return dataclasses.replace(counted, plan=_fixed_plan(counted, f"{asked[0]}x{asked[1]} as asked"))
    bound = asked or largest_side(config, settings)
    square = image_tokens_for_shape(config, settings, bound or 1, bound or 1)
    if not square.by_shape:
        return dataclasses.replace(square, plan=_fixed_plan(square, f"up to {asked} px" if asked else "any size"))
    shapes = candidate_shapes(config, settings, bound)
    counted = [image_tokens_for_shape(config, settings, h, w) for h, w in shapes]
    worst = max(counted, key=lambda t: (t.tokens, t.cross_tokens, t.patches))  # the first of equals: the square
    within = f"up to {bound} px" if asked else f"at {bound} px (any size: the processor shrinks larger images to these counts)"
    versus = "the square is the worst" if worst.shape == square.shape else f"a square makes {square.tokens}"
    plan = f"the worst of {len(shapes)} shapes {within}: {worst.shape}, {_tokens(worst.tokens)} ({versus})"
    return dataclasses.replace(worst, plan=plan)


def _fixed_plan(counted: ImageTokens, asked: str) -> str:
    if counted.family == "none":
        return "no image (text only)"
    return (f"{asked}: the count does not depend on the image's shape ({counted.family}), "
            f"planned for a {counted.shape} square, {_tokens(counted.tokens)}")


def _tokens(n: int) -> str:
    return f"{n} token" if n == 1 else f"{n} tokens"
