"""``vlm-lab compare`` on a user's own files: a phone photo stored sideways and PNGs with transparent
pixels give the model what the Space gives it for the same files (upright; transparency on white)."""

from __future__ import annotations

import json
import random
import subprocess
import sys

from PIL import Image

from vlm_lab import shapes
from vlm_lab.data import open_image

QUESTIONS = {"What shape is this?": 1, "What color is the shape?": 0}  # index into (color, shape)


def _compare(checkpoint, jsonl, out) -> list[str]:
    r = subprocess.run(
        [sys.executable, "-m", "vlm_lab.cli", "compare", str(checkpoint), "--data", str(jsonl),
         "--device", "cpu", "--out", str(out), "--no-cache", "--quiet"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return [row["outputs"][checkpoint.name]["output"] for row in rows]


def _transparent(image: Image.Image) -> Image.Image:
    """The shape on a clear background, stored as transparent black (0, 0, 0, 0) as exporters and PNG
    optimisers commonly write it: an RGBA-to-RGB conversion that drops alpha shows it black."""
    bg = image.getpixel((0, 0))
    mask = Image.eval(image.convert("L"), lambda v: 0 if abs(v - sum(bg) // 3) < 12 else 255)
    return Image.composite(image.convert("RGBA"), Image.new("RGBA", image.size, (0, 0, 0, 0)), mask)


def test_user_files_give_the_answers_of_the_images_as_shown(tiny_checkpoints, tmp_path):
    # (a) the user's files; (b) the same pictures as a person sees them, saved as plain opaque PNGs
    mine, shown = tmp_path / "mine", tmp_path / "shown"
    mine.mkdir(), shown.mkdir()
    records = []
    for i, (color, shape) in enumerate([("red", "circle"), ("blue", "triangle"), ("yellow", "square")]):
        clear = _transparent(shapes.draw_shape(color, shape, random.Random(i)))
        clear.save(mine / f"{i}.png")
        Image.alpha_composite(Image.new("RGBA", clear.size, "white"), clear).convert("RGB").save(shown / f"{i}.png")
        records.append((f"{i}.png", color, shape))
    # a phone photo: stored turned a quarter left, with EXIF orientation 6 (turn it clockwise to view)
    upright = shapes.draw_shape("green", "triangle", random.Random(7))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.transpose(Image.Transpose.ROTATE_90).save(mine / "phone.jpg", quality=95, exif=exif.tobytes())
    with Image.open(mine / "phone.jpg") as stored:  # its decoded pixels, turned as a viewer turns them
        stored.convert("RGB").transpose(Image.Transpose.ROTATE_270).save(shown / "phone.jpg.png")
    records.append(("phone.jpg", "green", "triangle"))
    for folder, suffix in ((mine, ""), (shown, ".png")):
        lines = [
            {"image": name + (suffix if name.endswith(".jpg") else ""), "prompt": q, "reference": (color, shape)[k]}
            for name, color, shape in records for q, k in QUESTIONS.items()
        ]  # fmt: skip
        (folder / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    checkpoint = tiny_checkpoints[-1]
    as_given = _compare(checkpoint, mine / "d.jsonl", tmp_path / "out-mine")
    as_shown = _compare(checkpoint, shown / "d.jsonl", tmp_path / "out-shown")
    assert as_given == as_shown


def test_the_notebook_view_embeds_a_small_upright_thumbnail_of_a_large_photo(tiny_checkpoints, tmp_path):
    """A result shown in a notebook carries its thumbnails in the .ipynb: a 12 MP photo each (MBs of base64 a row)
    made a 50-row view hundreds of MB. The thumbnail is small, and upright as the model saw the photo."""
    import base64
    import io
    import re

    from vlm_lab.results import ComparisonResult

    (tmp_path / "data").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 4000 wide lying on its side: viewers turn it clockwise, 3000 wide x 4000 tall
    Image.effect_noise((4000, 3000), 60).convert("RGB").save(tmp_path / "data" / "photo.jpg", quality=92, exif=exif.tobytes())
    (tmp_path / "data" / "d.jsonl").write_text(json.dumps({"image": "photo.jpg", "prompt": "What color is the shape?"}) + "\n")
    _compare(tiny_checkpoints[-1], tmp_path / "data" / "d.jsonl", tmp_path / "out")
    page = ComparisonResult.load(tmp_path / "out").html()
    (mime, data), = re.findall(r'src="data:(image/\w+);base64,([^"]+)"', page)
    thumb = Image.open(io.BytesIO(base64.b64decode(data)))
    assert mime == "image/jpeg" and thumb.format == "JPEG"  # a photo stays a JPEG
    assert max(thumb.size) <= 96 and thumb.height > thumb.width  # small, and upright (portrait) without EXIF to read
    assert len(page) < 30_000


def test_an_animated_gif_is_saved_as_the_frame_the_model_saw(tiny_checkpoints, tmp_path):
    # the model sees the first frame; comparison.html showed the GIF playing, its later frames never seen (a red
    # shape answered "red" while the page cycled to blue)
    red, blue = (shapes.draw_shape(color, "circle", random.Random(0)) for color in ("red", "blue"))
    red.save(tmp_path / "a.gif", save_all=True, append_images=[blue], duration=200, loop=0)
    seen = open_image(tmp_path / "a.gif")
    (tmp_path / "d.jsonl").write_text(json.dumps({"image": "a.gif", "prompt": "What color is the shape?"}) + "\n")
    _compare(tiny_checkpoints[-1], tmp_path / "d.jsonl", tmp_path / "out")
    row = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    with Image.open(tmp_path / "out" / row["image"]) as saved:
        assert getattr(saved, "n_frames", 1) == 1
        assert saved.convert("RGB").tobytes() == seen.tobytes()


def test_any_animated_image_is_saved_as_the_frame_the_model_saw_and_a_still_one_as_it_is(tiny_checkpoints, tmp_path):
    # an animated WebP or PNG (APNG) played in comparison.html as a GIF did; a still one stays the user's file
    red, blue = (shapes.draw_shape(color, "circle", random.Random(0)) for color in ("red", "blue"))
    for name in ("moving.webp", "moving.png", "moving.gif"):
        red.save(tmp_path / name, save_all=True, append_images=[blue], duration=200, loop=0,
                 **({"lossless": True} if name.endswith(".webp") else {}))  # fmt: skip
    for name in ("still.webp", "still.png", "still.gif"):
        red.save(tmp_path / name)
    names = ["moving.webp", "moving.png", "moving.gif", "still.webp", "still.png", "still.gif"]
    (tmp_path / "d.jsonl").write_text("".join(
        json.dumps({"id": name, "image": name, "prompt": "What color is the shape?"}) + "\n" for name in names))
    _compare(tiny_checkpoints[-1], tmp_path / "d.jsonl", tmp_path / "out")
    rows = {row["id"]: row for row in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    for name in names:
        saved_path = tmp_path / "out" / rows[name]["image"]
        if name.startswith("still"):  # copied byte for byte, in its own format
            assert saved_path.suffix == name[name.rindex("."):]
            assert saved_path.read_bytes() == (tmp_path / name).read_bytes(), name
            continue
        with Image.open(saved_path) as saved:
            assert saved.format == "PNG" and not getattr(saved, "is_animated", False), name
            assert saved.convert("RGB").tobytes() == open_image(tmp_path / name).tobytes(), name
