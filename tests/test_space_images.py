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


def test_an_empty_upload_says_so(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"")
    with pytest.raises(DataError, match=r"the file 'photo.jpg' is empty \(0 bytes\); upload the image again"):
        read_image(str(tmp_path / "photo.jpg"), max_pixels=100)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(big)
    with pytest.raises(DataError, match=r"200x100 = 20,000 pixels, over this Space's limit of 10,000 pixels; resize it") as caught:
        read_image(str(big), max_pixels=10_000)  # under PIL's own bomb limit (2x): this app's check says it
    assert str(caught.value).startswith("the file 'big.png' is 200x100") and "corrupt" not in str(caught.value)
    with pytest.raises(DataError, match="over this Space's limit"):
        read_image(Image.new("RGB", (200, 100)), max_pixels=10_000)


def test_the_model_sees_the_image_as_the_browser_shows_it(tmp_path):
    # transparency over white (as transformers' convert_to_rgb does), not over black
    clear = tmp_path / "transparent.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(clear)
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).convert("P").save(tmp_path / "palette.png", transparency=0)
    for name in ("transparent.png", "palette.png"):
        assert read_image(str(tmp_path / name), max_pixels=100).getpixel((0, 0)) == (255, 255, 255), name
    # a phone photo stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view)
    photo = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (64, 32), "red").save(photo, exif=exif.tobytes())
    assert read_image(str(photo), max_pixels=10_000).size == (32, 64)


@pytest.mark.parametrize("size, message", [
    ((30000, 1), "the image is 30000x1, 30,000 times as wide as it is tall; this Space takes up to 50:1"),
    ((3, 900), "the image is 3x900, 300 times as tall as it is wide; this Space takes up to 50:1"),
])
def test_a_strip_the_processor_would_blow_up_is_refused(tmp_path, size, message):
    """A 30000x1 PNG (30,000 pixels, a few hundred bytes) took +1.1 GB in the processor on the embedded
    checkpoints, which scale the short side up to 64: wider strips, or LLaVA's 336, ran the Space out of memory."""
    strip = tmp_path / "strip.png"
    Image.new("RGB", size, "red").save(strip)
    with pytest.raises(DataError, match=message):
        read_image(str(strip), max_pixels=10**6)
    assert read_image(Image.new("RGB", (500, 10)), max_pixels=10**6).size == (500, 10)  # 50:1 is taken


def test_only_formats_a_browser_shows_are_opened(tmp_path):
    """PIL opens an EPS by running Ghostscript on it (untrusted PostScript, where Ghostscript is installed);
    without it the visitor was told the file was 'truncated or corrupt (Unable to locate Ghostscript...)'."""
    eps = tmp_path / "logo.eps"
    eps.write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n")
    with pytest.raises(DataError, match=r"^the file 'logo.eps' is not an image this app can read; upload a PNG"):
        read_image(str(eps), max_pixels=10_000)
    for fmt, suffix in (("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("GIF", "gif"), ("BMP", "bmp"),
                        ("TIFF", "tif")):
        path = tmp_path / f"photo-{fmt}.{suffix}"
        Image.new("RGB", (8, 8), "red").save(path, format=fmt)
        assert read_image(str(path), max_pixels=100).getpixel((0, 0))[0] > 200, fmt
