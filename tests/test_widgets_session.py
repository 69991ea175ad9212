"""The explorer over a working session: re-created in the same kernel, run after run, driven
from the keyboard, fed odd uploads. Real checkpoints, real generation, no browser."""

from __future__ import annotations

import datetime
import html
import io

import pytest

from vlm_lab import widgets
from vlm_lab.widgets import explore


def _upload(name: str, content: bytes) -> tuple[dict, ...]:
    """What ipywidgets' FileUpload holds after the browser sends one file."""
    return ({"name": name, "type": "", "size": len(content), "content": memoryview(content),
             "last_modified": datetime.datetime.now(datetime.timezone.utc)},)  # fmt: skip


@pytest.fixture
def fresh_cache():
    from vlm_lab.model_cache import ModelCache

    return ModelCache()


def test_an_explorer_created_again_reuses_the_models_already_loaded(tiny_checkpoints):
    """Re-running the notebook cell made a second explorer with its own cache: every model loaded
    again while the first copies stayed alive in the old widgets' callbacks (twice the memory)."""
    specs = [str(tiny_checkpoints[0]), str(tiny_checkpoints[-1])]
    first = explore(specs, "shapes:val:2", device="cpu")
    first.checkpoints.value = (0, 1)
    assert first.run() and len(first.cache) >= 2
    loads = first.cache.stats["loads"]
    again = explore(specs, "shapes:val:2", device="cpu")  # the cell run a second time
    again.checkpoints.value = (0, 1)
    assert again.run()
    assert again.cache is first.cache and first.cache.stats["loads"] == loads  # nothing loaded twice


def test_each_run_stays_below_the_next_with_what_it_asked(tiny_checkpoints, fresh_cache):
    e = explore([str(tiny_checkpoints[0]), str(tiny_checkpoints[-1])], "shapes:val:3", device="cpu", cache=fresh_cache)
    e.checkpoints.value = (0, 1)
    greedy = e.run()
    e.strategy.value, e.seed.value = "nucleus", 7
    sampled = e.run()
    assert [run.rows for run in e.history] == [sampled, greedy]  # newest first
    assert e.history[0].label != e.history[1].label
    out = html.unescape(e.output.value)
    assert out.count("<table class='vlm-lab-results'>") == 2
    now, before = out.index("nucleus(0.9), seed 7"), out.index("greedy")
    assert now < out.index("Earlier runs") < before  # this run on top, the one before under it
    assert f"'{e.prompt.value}'" in out and f"example {e.samples[0].id}" in out and "max 8 tokens" in out
    e.prompt.value = "  "
    e.run()  # a refused click keeps what was there
    assert "Type a prompt" in e.output.value and len(e.history) == 2 and "nucleus(0.9), seed 7" in e.output.value
    e.prompt.value = "What shape is it?"
    for _ in range(widgets.HISTORY):
        e.run()
    assert len(e.history) == widgets.HISTORY  # the oldest runs go


def test_enter_in_the_prompt_compares(tiny_checkpoints, fresh_cache):
    e = explore([str(tiny_checkpoints[-1])], "shapes:val:2", device="cpu", cache=fresh_cache)
    e.checkpoints.value = (0,)
    e.prompt.value = "What shape is it?"
    e.prompt._handle_custom_msg({"event": "submit"}, [])  # what the browser sends on Enter in a Text field
    e.wait()
    assert [r["checkpoint"] for r in e.rows] == ["checkpoint-1000"] and e.history[0].label.startswith("'What shape is it?'")


def test_uploads_that_are_not_images_say_what_they_are(tiny_checkpoints):
    from PIL import Image

    e = explore([str(tiny_checkpoints[-1])], "shapes:val:2", device="cpu")
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)  # an iPhone photo's first bytes
    cases = {
        "empty.png": (b"", "'empty.png' is empty (0 bytes): upload it again"),
        "IMG_0001.HEIC": (heic, "'IMG_0001.HEIC' is a HEIC/HEIF photo, which Pillow cannot read without pillow-heif"),
        "scan.xyz": (b"\x13\x37 not a known format", "'scan.xyz' is not in an image format Pillow reads"),
    }
    for name, (content, said) in cases.items():
        e.image_source.value = "example"
        e.upload.value = _upload(name, content)
        out = html.unescape(e.output.value)
        assert said in out and "BytesIO" not in out and "Compare still uses the image shown" in out, out
        assert e.image_source.value == "example"
    frames = [Image.new("RGB", (64, 64), color) for color in ("red", "blue", "green")]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    e.upload.value = _upload("spin.gif", gif.getvalue())
    assert "Using uploaded image 'spin.gif' (64x64, the first of its 3 frames)" in html.unescape(e.output.value)
    assert e.image.getpixel((0, 0)) == (255, 0, 0)


def test_max_new_tokens_reaches_a_long_description(tiny_dir):
    """A real VLM's detailed description runs to hundreds of tokens; the field stopped at 256."""
    e = explore(str(tiny_dir), "shapes:val:2", device="cpu")
    e.max_new_tokens.value = 1024
    assert e.max_new_tokens.value == 1024


def test_each_strategy_keeps_the_argument_typed_for_it(tiny_dir):
    """Trying temperature and going back to nucleus put top p back to 0.9: the 0.5 typed was lost."""
    e = explore(str(tiny_dir), "shapes:val:2", device="cpu")
    e.strategy.value, e.strategy_arg.value = "nucleus", 0.5
    e.strategy.value, e.strategy_arg.value = "temperature", 1.3
    e.strategy.value = "greedy"
    e.strategy.value = "nucleus"
    assert e.strategy_text == "nucleus(0.5)" and e.strategy_arg.description == "top p"
    e.strategy.value = "temperature"
    assert e.strategy_text == "temperature(1.3)"
    e.strategy.value = "beam"
    assert e.strategy_text == "beam(3)"  # never typed: its default


def test_an_image_on_the_kernels_machine_is_taken_by_its_path(tiny_dir, tmp_path, fresh_cache):
    """The browser's upload cannot carry a file past Jupyter's 10 MiB websocket limit (nothing happens);
    a path reads any size, and is where a remote kernel's images are anyway."""
    from vlm_lab import shapes

    e = explore(str(tiny_dir), "shapes:val:2", device="cpu", cache=fresh_cache)
    e.path.value = str(tmp_path / "nowhere.png")
    assert f"image not found: {tmp_path / 'nowhere.png'}; Compare still uses the image shown" in html.unescape(e.output.value)
    assert e.image_source.value == "example"
    import random

    shapes.draw_shape("blue", "circle", random.Random(3)).save(tmp_path / "blue.png")
    e.path.value = str(tmp_path / "blue.png")
    assert e.image_source.value == "upload" and f"Using image '{tmp_path / 'blue.png'}' (64x64)" in html.unescape(e.output.value)
    e.checkpoints.value = (len(e.refs) - 1,)
    e.prompt.value = "What color is the shape?"
    assert e.run()[0]["text"] == "blue" and f"on '{tmp_path / 'blue.png'}'" in e.history[0].label


def test_an_example_whose_image_file_is_gone_says_so_instead_of_failing_silently(tiny_checkpoints, tmp_path, fresh_cache):
    """A data set's image moved or deleted after the explorer was made: picking its example raised in the
    observer (a traceback in JupyterLab's log, the previous example's preview left on screen) and a click on
    Compare did nothing at all."""
    from vlm_lab.data import load_samples, write_jsonl

    data = write_jsonl(load_samples("shapes:val:3"), tmp_path)
    e = explore([str(tiny_checkpoints[-1])], str(data), device="cpu", cache=fresh_cache)
    e.samples[1].source_file.unlink()
    e.example.value = 1  # raised DataError here
    out = html.unescape(e.output.value)
    assert f"The image of example val-00001-shape ({data}:2) cannot be read (image not found: " in out and "pick another example" in out
    assert "re-save" not in out  # one piece of advice: the explorer's
    assert e.preview.layout.display == "none"  # not the previous example's image under this example's prompt
    e.button.click()
    assert e.wait() == [] and not e.running and f"The image of example val-00001-shape ({data}:2) cannot be read" in html.unescape(e.output.value)
    assert not e.history and not e.button.disabled
    e.example.value = 2
    assert e.preview.layout.display != "none" and e.run()[0]["text"]


def test_image_set_to_upload_with_nothing_uploaded_is_refused_not_run_on_the_example(tiny_checkpoints, fresh_cache):
    """The toggle on 'upload' before any upload: Compare ran on the example (its preview still shown) without
    judging it against the example's reference, and the run's label named the example."""
    e = explore([str(tiny_checkpoints[-1])], "shapes:val:2", device="cpu", cache=fresh_cache)
    e.image_source.value = "upload"
    assert e.image is None and e.preview.layout.display == "none"
    assert e.run() == [] and not e.history
    assert "Nothing is uploaded yet: upload an image or give its path, or set Image to example." in html.unescape(e.output.value)
    e.image_source.value = "example"
    assert e.preview.layout.display != "none" and e.run()[0]["text"] == e.samples[0].reference


def test_an_unreadable_file_given_by_path_says_why_and_the_fix_as_an_upload_does(tiny_dir, tmp_path):
    """The path field showed PIL's words alone ("cannot identify image file"; the decompression-bomb limit) with no fix."""
    from PIL import Image

    e = explore(str(tiny_dir), "shapes:val:2", device="cpu")
    (tmp_path / "notes.png").write_text("not an image")
    buf = io.BytesIO()
    Image.effect_noise((300, 200), 64).convert("RGB").save(buf, format="PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[:2000])
    Image.new("1", (19000, 19000)).save(tmp_path / "huge.png")  # 361 M pixels: past PIL's decompression-bomb limit
    (tmp_path / "empty.png").write_bytes(b"")
    cases = {
        "notes.png": "is not in an image format Pillow reads (PNG, JPEG, GIF, WebP, BMP, TIFF...): convert it to PNG or JPEG",
        "cut.png": "(image file is truncated); the file may be damaged or cut short",
        "huge.png": "huge.png is 361,000,000 pixels, over the limit of 89,478,485 pixels (Pillow's",  # pixel_limit's words
        "empty.png": "is empty (0 bytes): check the file",
    }
    for name, said in cases.items():
        e.path.value = str(tmp_path / name)
        out = html.unescape(e.output.value)
        named = f"{tmp_path / name} is" if name == "huge.png" else f"'{tmp_path / name}'"
        assert named in out and said in out and "Compare still uses the image shown" in out, out
        assert e.image_source.value == "example"
