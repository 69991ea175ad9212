"""Reading images uploaded to the Space safely: the pixel count is checked from the header
before anything is decoded, and every failure is a ``DataError`` that says what to upload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from vlm_lab.data import MAX_ASPECT, aspect_problem  # one limit for uploads and data sets (why: see there)
from vlm_lab.errors import DataError
from vlm_lab.pixel_limit import check_pixels, ignore_pillows_warning, refused_by_pillow

# what a visitor over the Space's pixel limit is told (the wording is pixel_limit's): they cannot change the limit
OVER_LIMIT = {"whose": "this Space's", "fix": "resize it (e.g. to 1024x1024) and upload it again"}

# What a visitor can upload: raster formats browsers show and phones and cameras save (PIL's JPEG opener
# takes a phone's multi-picture JPEG, MPO, too). PIL would also open EPS by running Ghostscript on the
# file, where installed, and a dozen scientific formats: an upload is untrusted, so those are "not an image".
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF", "ICO")


def image_path_of(value: Any) -> Any:
    """The file behind a Gradio image value: a path string, a FileData dict, or a PIL image as is."""
    if isinstance(value, Mapping):
        return value.get("path") or value.get("url")
    return value


def read_image(value: Any, *, max_pixels: int) -> "Image.Image":
    """Open an uploaded image safely: size checked from the header before any pixel is decoded.

    The RGB image a visitor sees in the browser (``data.as_shown``, as the CLI and notebooks read
    a dataset's files): upright by its EXIF orientation, transparency over white, the first frame
    of an animation.

    Raises:
        DataError: no image, not an image, truncated or corrupt, more than ``max_pixels`` pixels, or
            longer than ``MAX_ASPECT`` times its width; each message says what to upload instead.
    """
    from PIL import Image, UnidentifiedImageError

    from vlm_lab.data import as_shown

    value = image_path_of(value)
    if value is None or value == "":
        raise DataError("no image: upload an image (PNG, JPEG or WebP) or pick one of the examples")
    if isinstance(value, Image.Image):
        img = value
        _check_size("the image", img.size, max_pixels)
        return as_shown(img)
    path = Path(str(value))
    if not path.is_file():
        raise DataError("the uploaded image is gone from the server; upload it again")
    if path.stat().st_size == 0:  # an interrupted upload or a placeholder file, not a format problem
        raise DataError(f"{_shown_name(path)} is empty (0 bytes); upload the image again")
    try:
        with Image.open(path, formats=UPLOAD_FORMATS) as img:  # reads the header only
            _check_size(_shown_name(path), img.size, max_pixels)
            img.seek(0)  # the first frame of an animation
            img.load()  # decodes: raises on truncated data
            return as_shown(img)
    except DataError:  # over the pixel limit: a ValueError too, but not a corrupt file
        raise
    except Image.DecompressionBombError as e:  # PIL's own limit (MAX_IMAGE_PIXELS) refused it on open
        raise refused_by_pillow(_shown_name(path), e, max_pixels, **OVER_LIMIT) from None
    except UnidentifiedImageError:
        raise DataError(
            f"{_shown_name(path)} is not an image this app can read; upload a PNG, JPEG or WebP file"
        ) from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated / corrupt data
        raise DataError(
            f"{_shown_name(path)} is truncated or corrupt ({e}); re-save or re-export the image and upload it again"
        ) from None


def limit_image_pixels(max_pixels: int) -> None:
    """Make PIL itself refuse decompression bombs (it raises above twice its limit) for any code path.

    PIL's warning between once and twice the limit is silenced: ``read_image`` refuses those images
    with a message to the visitor, and the warning only put two lines in the log for each of them.
    """
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max_pixels
    ignore_pillows_warning()


def _shown_name(path: Path) -> str:
    return f"the file {path.name!r}"


def _check_size(name: str, size: tuple[int, int], max_pixels: int) -> None:
    check_pixels(name, size, max_pixels, **OVER_LIMIT)
    problem = aspect_problem(size)
    if problem:
        raise DataError(
            f"the image {problem}; this Space takes up to {MAX_ASPECT}:1 (the model would stretch "
            "it to far more pixels than it has); crop it, or pad it toward a square, and upload it again"
        )

