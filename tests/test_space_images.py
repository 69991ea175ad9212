"""vlm_lab.space_images: uploads read safely, the pixel limit checked before decoding."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from vlm_lab.errors import DataError
from vlm_lab.space_images import read_image

EXAMPLES = Path(__file__).resolve().parents[1] / "space" / "examples"


def test_read_image_accepts_paths_payloads_and_pil_images_as_rgb(tmp_path):
    path = EXAMPLES / "red-circle.png"
    for value in (str(path), {"path": str(path), "meta": {"_type": "gradio.FileData"}}, Image.open(path)):
        img = read_image(value, max_pixels=10_000)
        assert img.mode == "RGB" and img.size == (64, 64)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(rgba)
    assert read_image(str(rgba), max_pixels=100).mode == "RGB"


@pytest.mark.parametrize("value, message", [
    (None, "no image: upload an image"),
    ("", "no image: upload an image"),
    ({"path": None}, "no image"),
    ("/no/such/upload.png", "gone from the server; upload it again"),
])
def test_read_image_says_what_is_missing(value, message):
    with pytest.raises(DataError, match=message):
        read_image(value, max_pixels=10_000)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(big)
    with pytest.raises(DataError, match=r"200x100 = 20,000 pixels, over this Space's limit of 10,000; resize it"):
        read_image(str(big), max_pixels=10_000)
    with pytest.raises(DataError, match="over this Space's limit"):
        read_image(Image.new("RGB", (200, 100)), max_pixels=10_000)
