"""vlm_lab.pixel_limit: one message for an image over Pillow's pixel limit, wherever vlm_lab opens it.

Pillow refuses an image of more than twice ``PIL.Image.MAX_IMAGE_PIXELS`` (89,478,485 by default) with its
own words, and only warns between once and twice. vlm_lab refuses above the limit itself, in the CLI, a
data set, the explorer and ``compare_one``: which file (and line), its pixels against the limit, the fix.
The huge images are real PNGs whose header claims the size over a few bytes of data: nothing decodes them.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib

import pytest
from PIL import Image

from vlm_lab import data
from vlm_lab.errors import ConfigError, DataError
from vlm_lab.pixel_limit import PIXELS_ENV

# In a library call Pillow still warns, once, before vlm_lab refuses a warn-band image (the CLI and the Space leave the
# warning out: test_the_cli_says_it_in_one_line_with_no_pillow_warning); here it is expected, not news
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

PILLOW_DEFAULT = 89_478_485  # int(1024 * 1024 * 1024 // 4 // 3), Pillow's MAX_IMAGE_PIXELS


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(path, width: int, height: int):
    """A valid PNG (checksums and all) of ``width`` x ``height`` RGB pixels over 64 bytes of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + _chunk(b"IEND", b""))
    return path


@pytest.fixture(autouse=True)
def pillows_own_limit(monkeypatch):
    """Pillow's default limit and no ``VLM_LAB_MAX_IMAGE_PIXELS``, put back after each test."""
    monkeypatch.delenv(PIXELS_ENV, raising=False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", PILLOW_DEFAULT)


def test_over_twice_the_limit_pillow_refuses_and_the_message_says_file_pixels_limit_and_fix(tmp_path):
    """Pillow's words were all the CLI said: 'Image size (400000000 pixels) exceeds limit of 178956970 pixels,
    could be decompression bomb DOS attack.' (twice the limit it documents), with no fix."""
    bomb = png_header(tmp_path / "bomb.png", 20000, 20000)
    with pytest.raises(Image.DecompressionBombError):  # the premise: Pillow refuses it before its size is seen
        Image.open(bomb)
    with pytest.raises(DataError) as caught:
        data.open_image(bomb)
    said = str(caught.value)
    assert said.startswith(f"{bomb} is 400,000,000 pixels, over the limit of {PILLOW_DEFAULT:,} pixels"), said
    assert "downscale it" in said and f"{PIXELS_ENV}=400000000" in said
    assert "decompression bomb DOS" not in said and "178956970" not in said


def test_between_once_and_twice_the_limit_pillow_only_warns_and_vlm_lab_refuses_it(tmp_path):
    """10000x10000 opened with Pillow's warning alone, and was decoded (300 MB): the limit is the limit."""
    big = png_header(tmp_path / "big.png", 10000, 10000)
    with pytest.warns(Image.DecompressionBombWarning):  # the premise: Pillow itself would open it
        Image.open(big).close()
    with pytest.raises(DataError, match=rf"^{big} is 10000x10000 = 100,000,000 pixels, over the limit of "
                                        rf"{PILLOW_DEFAULT:,} pixels .*; downscale it"):
        data.open_image(big)
    with pytest.raises(DataError, match="10000x10000 = 100,000,000 pixels"):  # an explorer upload: its bytes
        data.open_image(io.BytesIO(big.read_bytes()))


def test_a_data_set_names_every_line_over_the_limit_at_once(tmp_path):
    Image.new("RGB", (32, 24), "red").save(tmp_path / "ok.png")
    png_header(tmp_path / "big.png", 10000, 10000)
    png_header(tmp_path / "bomb.png", 20000, 20000)
    lines = [{"image": name, "prompt": "hi"} for name in ("ok.png", "big.png", "ok.png", "bomb.png")]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    with pytest.raises(DataError) as caught:
        data.read_jsonl(path)
    said = str(caught.value)
    assert f"{path}:2: big.png is 10000x10000 = 100,000,000 pixels; {path}:4: bomb.png is 400,000,000 pixels" in said
    assert f"over the limit of {PILLOW_DEFAULT:,} pixels" in said and "downscale them" in said
    assert f"{PIXELS_ENV}=400000000" in said and "\n" not in said  # the largest: one setting admits them all
    assert len(data.read_jsonl(path, limit=1)) == 1  # lines past --num-samples are not read, so not refused


def test_the_limit_is_pillows_and_vlm_lab_max_image_pixels_sets_it_both_ways(tmp_path, monkeypatch):
    photo = tmp_path / "photo.png"
    Image.effect_noise((300, 100), 40).convert("RGB").save(photo)  # 30,000 real pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # Pillow's documented knob, set by a notebook
    with pytest.raises(DataError, match=rf"{photo} is 30,000 pixels, over the limit of 10,000 pixels .*{PIXELS_ENV}=30000"):
        data.open_image(photo)
    monkeypatch.setenv(PIXELS_ENV, "30000")  # the fix it names
    assert data.open_image(photo).size == (300, 100)
    assert data.read_jsonl(_one_line(tmp_path, "photo.png"))[0].image.size == (300, 100)
    monkeypatch.setenv(PIXELS_ENV, "29999")  # lower than Pillow's own: refused here, Pillow would take it
    with pytest.raises(DataError, match=rf"300x100 = 30,000 pixels, over the limit of 29,999 pixels \({PIXELS_ENV}\)"):
        data.open_image(photo)


@pytest.mark.parametrize("value", ["lots", "0", "-5", "1e9"])
def test_a_limit_that_is_not_a_pixel_count_names_the_variable(tmp_path, monkeypatch, value):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    monkeypatch.setenv(PIXELS_ENV, value)
    with pytest.raises(ConfigError, match=rf"{PIXELS_ENV}='{value}' is not a positive whole number of pixels; "):
        data.open_image(tmp_path / "a.png")


def _one_line(folder, image: str):
    path = folder / f"{image}.jsonl"
    path.write_text(json.dumps({"image": image, "prompt": "What color is the shape?"}) + "\n")
    return path


def test_the_cli_says_it_in_one_line_with_no_pillow_warning(tiny_dir, tmp_path):
    """``vlm-lab compare --data``: the warn band printed Pillow's DecompressionBombWarning (two lines) too."""
    png_header(tmp_path / "big.png", 10000, 10000)
    r = subprocess.run([sys.executable, "-m", "vlm_lab.cli", "compare", str(tiny_dir / "checkpoint-1000"), "--data",
                        str(_one_line(tmp_path, "big.png")), "--device", "cpu", "--out", str(tmp_path / "out"), "--quiet"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: DataError: ") and r.stderr.count("\n") == 1, r.stderr
    assert f"big.png.jsonl:1: big.png is 10000x10000 = 100,000,000 pixels, over the limit of {PILLOW_DEFAULT:,}" in r.stderr
    assert f"{PIXELS_ENV}=100000000" in r.stderr and "DecompressionBomb" not in r.stderr
