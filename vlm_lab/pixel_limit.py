"""How many pixels an image may have, and the one message for an image over that limit.

Pillow guards against decompression bombs (a few KB of PNG that decode to gigabytes) with
``PIL.Image.MAX_IMAGE_PIXELS`` (89,478,485 by default): it refuses an image of more than twice that
with its own words, and between once and twice only warns, then decodes it. vlm_lab refuses above
the limit itself, wherever it opens an image (``data.open_image`` and ``check_image``: the CLI, data
sets, the explorer; ``space_images.read_image``: the Space, with its own ``VLM_LAB_MAX_PIXELS``), in
one wording: which image, its pixels against the limit, and the fix.

The limit is Pillow's, or ``VLM_LAB_MAX_IMAGE_PIXELS`` where set: read at each open (a sweep's kernels
inherit it), never at import, and never lifted unless asked.
"""

from __future__ import annotations

import os
import re
from typing import Sequence

from vlm_lab.errors import ConfigError, DataError

PIXELS_ENV = "VLM_LAB_MAX_IMAGE_PIXELS"
SHOWN = 5  # images named in one message; the rest are counted

Found = tuple[str, int | None, tuple[int, int] | None]  # (name, pixels, (width, height)); None: not known


class ImageTooLargeError(DataError):
    """An image over a pixel limit; ``pixels`` (None: Pillow refused it without saying), ``size`` (None: Pillow
    refused it before its size was read) and ``limit``, for a caller that names several at once."""

    def __init__(self, message: str, *, pixels: int | None, size: tuple[int, int] | None, limit: int) -> None:
        super().__init__(message)
        self.pixels, self.size, self.limit = pixels, size, limit


def pixel_limit() -> int | None:
    """The most pixels vlm_lab opens an image with: ``VLM_LAB_MAX_IMAGE_PIXELS`` where set, else Pillow's
    ``PIL.Image.MAX_IMAGE_PIXELS`` (None: no limit, as Pillow takes it).

    A value above Pillow's own becomes Pillow's too (it would refuse at twice its own): asked for, not silent.

    Raises:
        ConfigError: ``VLM_LAB_MAX_IMAGE_PIXELS`` is not a positive whole number.
    """
    from PIL import Image

    raw = os.environ.get(PIXELS_ENV, "").strip()
    if not raw:
        return Image.MAX_IMAGE_PIXELS
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigError(f"{PIXELS_ENV}={raw!r} is not a positive whole number of pixels; set it to e.g. 200000000, "
                          "or unset it to keep Pillow's limit")
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit
    return limit


def check_pixels(name: str, size: tuple[int, int], limit: int | None, **wording: str) -> None:
    """Refuse an image of ``size`` over ``limit`` (from its header: nothing decoded). ``wording``: see ``too_many_pixels``.

    Raises:
        ImageTooLargeError: naming ``name``, its size and pixels, the limit and the fix.
    """
    pixels = size[0] * size[1]
    if limit is not None and pixels > limit:
        raise ImageTooLargeError(too_many_pixels([(name, pixels, size)], limit, **wording), pixels=pixels, size=size,
                                 limit=limit)


def refused_by_pillow(name: str, error: Exception, limit: int, **wording: str) -> ImageTooLargeError:
    """The error for an image Pillow refused on open (``DecompressionBombError``: over twice its limit),
    its pixel count read from Pillow's message: Pillow does not say the image's size."""
    m = re.search(r"\((\d+) pixels\)", str(error))
    pixels = int(m.group(1)) if m else None
    return ImageTooLargeError(too_many_pixels([(name, pixels, None)], limit, **wording), pixels=pixels, size=None,
                              limit=limit)


def too_many_pixels(found: Sequence[Found], limit: int, *, whose: str = "", fix: str = "") -> str:
    """The one wording for images over a pixel limit: each one's name and pixels, the limit, and the fix.

    ``whose``: whose limit it is (``"this Space's"``); by default vlm_lab's, which says where it comes from.
    ``fix``: what the reader can do (a Space's visitor can only resize); by default downscale the image(s) or
    raise ``VLM_LAB_MAX_IMAGE_PIXELS`` to admit the largest.
    """
    named = "; ".join(f"{name} is {_pixels(pixels, size)}" for name, pixels, size in found[:SHOWN])
    more = f" (and {len(found) - SHOWN} more)" if len(found) > SHOWN else ""
    if whose:
        over = f"{whose} limit of {limit:,} pixels"
    elif os.environ.get(PIXELS_ENV, "").strip():
        over = f"the limit of {limit:,} pixels ({PIXELS_ENV})"
    else:
        over = (f"the limit of {limit:,} pixels (Pillow's PIL.Image.MAX_IMAGE_PIXELS, its guard against "
                "decompression bombs: small files that decode to gigabytes)")
    if not fix:
        many = len(found) > 1
        largest = max((p for _, p, _ in found if p), default=None)
        raise_to = f"{PIXELS_ENV}={largest}" if largest else f"{PIXELS_ENV} to its pixel count"
        fix = (f"downscale {'them' if many else 'it'} (4096 pixels on the long side is more than a VLM's processor "
               f"keeps), or, if you trust the file{'s' if many else ''}, raise the limit: set the environment "
               f"variable {raise_to}")
    return f"{named}{more}, over {over}; {fix}"


def _pixels(pixels: int | None, size: tuple[int, int] | None) -> str:
    if size:
        return f"{size[0]}x{size[1]} = {pixels:,} pixels"
    return f"{pixels:,} pixels" if pixels else "more than twice the limit's pixels"


def ignore_pillows_warning() -> None:
    """Leave Pillow's ``DecompressionBombWarning`` out of the warnings (of the current ``catch_warnings``
    context, or the process): vlm_lab refuses those images itself, in words that name the fix. For a
    process's owner (the CLI, the Space); a library call leaves the user's warnings alone."""
    import warnings

    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
