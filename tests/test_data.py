"""vlm_lab.data: the bring-your-own-data JSONL path (file-backed, lazily decoded samples)."""

import json

import numpy as np
import pytest
from PIL import Image

from vlm_lab import data
from vlm_lab.errors import DataError
from vlm_lab.result_cache import sample_key


def _image(path, color, size=(32, 24), **save):
    img = Image.new("RGB", size, color)
    img.save(path, **save)
    return img


def _jsonl(folder, *records, name="d.jsonl"):
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_file_backed_samples_hold_the_path_and_decode_on_each_access(tmp_path):
    _image(tmp_path / "a.png", "red")
    (sample,) = data.read_jsonl(_jsonl(tmp_path, {"image": "a.png", "prompt": "Color?"}))
    assert sample.source_file == tmp_path / "a.png"
    first = sample.image
    assert first.mode == "RGB" and first.getpixel((0, 0)) == (255, 0, 0)
    assert sample.image is not first  # decoded afresh, not kept on the sample
    _image(tmp_path / "a.png", "blue")  # the sample held no pixels: it sees the file as it is now
    assert sample.image.getpixel((0, 0)) == (0, 0, 255)


def test_in_memory_samples_keep_their_image(tmp_path):
    img = Image.new("RGB", (8, 8), "green")
    sample = data.Sample(id="x", image=img, prompt="Color?", image_path=str(tmp_path / "elsewhere.png"))
    assert sample.image is img and sample.source_file is None
    with pytest.raises(DataError, match="neither an image nor an image_path"):
        data.Sample(id="y", image=None, prompt="Color?")


def test_write_jsonl_writes_each_image_file_once(tmp_path):
    _image(tmp_path / "a.png", "red")
    _image(tmp_path / "b.jpg", "blue")
    rows = [{"image": "a.png", "prompt": p} for p in ("Color?", "Shape?", "Describe.")] + [{"image": "b.jpg", "prompt": "Color?"}]
    samples = data.read_jsonl(_jsonl(tmp_path, *rows))
    back = data.read_jsonl(data.write_jsonl(samples, tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["d-1.png", "d-4.png"]
    assert [s.source_file.name for s in back] == ["d-1.png"] * 3 + ["d-4.png"]
    assert all((np.asarray(s.image) == np.asarray(t.image)).all() for s, t in zip(samples, back))


def _truncated_png(path):
    Image.effect_noise((64, 64), 50).convert("RGB").save(path)
    path.write_bytes(path.read_bytes()[:400])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, r"d\.jsonl:2: image not found: .*x\.png"),
        (lambda p: p.write_bytes(b"not an image"), r"d\.jsonl:2: cannot read image .*x\.png"),
        (_truncated_png, r"d\.jsonl:2: cannot read image .*x\.png"),
        # PostScript named .png: PIL would run Ghostscript on it (where installed) to decode it
        (lambda p: Image.new("RGB", (8, 8), "red").save(p, "EPS"), r"d\.jsonl:2: .*x\.png is EPS, which vlm_lab does not open"),
    ],
)
def test_images_are_checked_up_front_naming_file_and_line(tmp_path, make, message):
    _image(tmp_path / "ok.png", "red")
    make(tmp_path / "x.png")
    path = _jsonl(tmp_path, {"image": "ok.png", "prompt": "hi"}, {"image": "x.png", "prompt": "hi"})
    with pytest.raises(DataError, match=message):
        data.read_jsonl(path)


def test_reading_and_keying_decode_no_pixels(tmp_path):
    # a JPEG cut short in its pixel data has a valid header: only decoding it fails
    Image.effect_noise((64, 64), 50).convert("RGB").save(tmp_path / "a.jpg", quality=95)
    (tmp_path / "a.jpg").write_bytes((tmp_path / "a.jpg").read_bytes()[:-200])
    (sample,) = data.read_jsonl(_jsonl(tmp_path, {"image": "a.jpg", "prompt": "hi"}))
    assert len(sample_key(sample)) == 24
    # decoded when its batch runs, mid-comparison: the error names the data line, as those found up front do
    with pytest.raises(DataError, match=r"d\.jsonl:1: cannot read image .*a\.jpg: .*truncated.*; re-save the image, or leave that line out"):
        sample.image


def test_sample_key_of_a_file_is_its_bytes_and_the_prompt(tmp_path):
    _image(tmp_path / "a.png", "red", compress_level=9)
    (tmp_path / "copy.png").write_bytes((tmp_path / "a.png").read_bytes())
    _image(tmp_path / "recoded.png", "red", compress_level=0)  # same pixels, other bytes
    rows = [{"image": "a.png", "prompt": "hi"}, {"image": "copy.png", "prompt": "hi"},
            {"image": "recoded.png", "prompt": "hi"}, {"image": "a.png", "prompt": "other"}]
    a, copy, recoded, other_prompt = map(sample_key, data.read_jsonl(_jsonl(tmp_path, *rows)))
    assert a == copy
    assert len({a, recoded, other_prompt}) == 3


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"image": "a.png", "prompt": "hi"}\n{"image": "a.png", "prompt": "café"}\n'.encode("latin-1"),
         r"d\.jsonl:2: not UTF-8 text \(byte 0xe9 at column 34\); save the file as UTF-8"),
        ('{"image": "a.png", "prompt": "hi"}\n'.encode("utf-16"), r"d\.jsonl is UTF-16 text; save it as UTF-8"),
    ],
)
def test_jsonl_that_is_not_utf8_is_a_data_error_with_the_fix(tmp_path, content, message):
    _image(tmp_path / "a.png", "red")
    (tmp_path / "d.jsonl").write_bytes(content)
    with pytest.raises(DataError, match=message):
        data.read_jsonl(tmp_path / "d.jsonl")


@pytest.mark.parametrize(
    "text, prompts",
    [
        ('\ufeff{"image": "a.png", "prompt": "hi"}\n', ["hi"]),  # a UTF-8 BOM, as Notepad writes
        ('{"image": "a.png", "prompt": "caf\u00e9 \u2028 next"}\r\n', ["caf\u00e9 \u2028 next"]),  # U+2028 is no line break
    ],
)
def test_utf8_jsonl_is_read(tmp_path, text, prompts):
    _image(tmp_path / "a.png", "red")
    (tmp_path / "d.jsonl").write_bytes(text.encode("utf-8"))
    assert [s.prompt for s in data.read_jsonl(tmp_path / "d.jsonl")] == prompts


def test_whitespace_prompt_is_missing_like_an_empty_one(tmp_path):
    _image(tmp_path / "a.png", "red")
    for prompt in ("", "   ", "\t\n"):
        with pytest.raises(DataError, match=r"d\.jsonl:1: missing prompt"):
            data.read_jsonl(_jsonl(tmp_path, {"image": "a.png", "prompt": prompt}))


def test_blank_reference_means_none(tmp_path):
    _image(tmp_path / "a.png", "red")
    references = ["", "  ", None, 0, " red "]
    rows = [{"id": i, "image": "a.png", "prompt": "hi", "reference": r} for i, r in enumerate(references)]
    assert [s.reference for s in data.read_jsonl(_jsonl(tmp_path, *rows))] == [None, None, None, "0", " red "]


def test_a_list_of_references_keeps_its_answers_and_drops_blank_ones(tmp_path):
    _image(tmp_path / "a.png", "red")
    references = [["two", "2", "two"], ["", " red ", None, "  "], [2, "two"], [], ["", "  ", None], "one"]
    rows = [{"id": i, "image": "a.png", "prompt": "hi", "reference": r} for i, r in enumerate(references)]
    samples = data.read_jsonl(_jsonl(tmp_path, *rows))
    # blank entries are no answer (as a blank single reference is none); nothing left, or [], means no reference
    assert [s.reference for s in samples] == [["two", "2", "two"], [" red "], ["2", "two"], None, None, "one"]
    again = data.read_jsonl(data.write_jsonl(samples, tmp_path / "copy"))  # the list travels through write_jsonl
    assert [s.reference for s in again] == [s.reference for s in samples]


@pytest.mark.parametrize("reference, message", [
    (["red", ["crimson"]], r"d\.jsonl:2: reference\[1\] is a list \(\[\"crimson\"\]\); a list of references holds the acceptable answers as strings"),
    ([{"answer": "red"}], r"d\.jsonl:2: reference\[0\] is a dict .*e\.g\. \"reference\": \[\"two\", \"2\"\]"),
    ([True], r"d\.jsonl:2: reference\[0\] is a bool"),
    ({"answers": ["red"]}, r"d\.jsonl:2: reference is a dict; .*reference a string or number or a list of them"),
])  # fmt: skip
def test_a_reference_that_is_not_answers_names_the_line_and_the_fix(tmp_path, reference, message):
    _image(tmp_path / "a.png", "red")
    path = _jsonl(tmp_path, {"image": "a.png", "prompt": "hi", "reference": "red"}, {"image": "a.png", "prompt": "hi", "reference": reference})
    with pytest.raises(DataError, match=message):
        data.read_jsonl(path)


@pytest.mark.parametrize(
    "spec, num_samples",
    [("shapes:val:99999999999", None), (f"shapes:test:{data.MAX_SHAPES_SAMPLES + 1}", None), ("shapes:val", 10**9)],
)
def test_shapes_count_has_a_limit(spec, num_samples):
    with pytest.raises(DataError, match=f"at most {data.MAX_SHAPES_SAMPLES}"):
        data.load_samples(spec, num_samples)


def _user_images(folder):
    """Files as users bring them: a phone photo stored sideways, and images with transparent pixels."""
    # a phone photo: stored 64 wide x 32 high, left half red, with EXIF orientation 6 (turn 90 degrees clockwise)
    photo = Image.new("RGB", (64, 32), "blue")
    photo.paste((255, 0, 0), (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.save(folder / "phone.jpg", quality=95, exif=exif.tobytes())
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # transparent black around an opaque red square
    clear.paste((255, 0, 0, 255), (4, 4, 12, 12))
    clear.save(folder / "clear.png")
    clear.save(folder / "clear.webp", lossless=True)
    clear.convert("LA").save(folder / "gray.png")
    palette = clear.convert("P")  # palette index of the transparent pixels marked transparent
    palette.save(folder / "palette.png", transparency=palette.getpixel((0, 0)))
    palette.save(folder / "palette.gif", transparency=palette.getpixel((0, 0)))
    return ["phone.jpg", "clear.png", "clear.webp", "gray.png", "palette.png", "palette.gif"]


def test_jsonl_images_are_the_pixels_the_space_sees(tmp_path):
    # the CLI, notebooks and widgets read a dataset through load_samples; the Space reads uploads through
    # read_image: the same file must give the model the same pixels on every path
    from vlm_lab.space_images import read_image

    names = _user_images(tmp_path)
    samples = data.load_samples(str(_jsonl(tmp_path, *({"id": n, "image": n, "prompt": "Color?"} for n in names))))
    images = {s.id: s.image for s in samples}
    for name in names:
        shown = read_image(str(tmp_path / name), max_pixels=10_000)
        assert images[name].mode == "RGB" and np.array_equal(np.asarray(images[name]), np.asarray(shown)), name
    # upright: 32 wide x 64 high, the red half (the stored left) now on top
    phone = images["phone.jpg"]
    assert phone.size == (32, 64)
    assert [max(abs(a - b) for a, b in zip(phone.getpixel(xy), want)) < 40 for xy, want in (((16, 8), (255, 0, 0)), ((16, 56), (0, 0, 255)))] == [True, True]
    # transparent pixels on white (as the browser shows them), opaque ones as they are
    for name in names[1:]:
        assert images[name].getpixel((0, 0)) == (255, 255, 255), name
    assert images["clear.png"].getpixel((8, 8)) == (255, 0, 0)


def test_open_image_of_an_in_memory_file_is_upright_too(tmp_path):
    # the widget's upload arrives as bytes, not a path
    import io

    _user_images(tmp_path)
    img = data.open_image(io.BytesIO((tmp_path / "phone.jpg").read_bytes()))
    assert img.size == (32, 64) and img.mode == "RGB"


def test_an_upload_in_a_format_decoded_by_another_program_is_refused_not_run():
    """The explorer's uploads go through ``open_image`` too: an EPS is named, never handed to Ghostscript."""
    import io

    content = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(content, "EPS")
    with pytest.raises(DataError, match="the image is EPS, which vlm_lab does not open .*convert it to PNG or JPEG"):
        data.open_image(io.BytesIO(content.getvalue()))


def test_a_missing_data_file_names_its_absolute_path_and_what_is_there(tmp_path, monkeypatch):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "mine.jsonl").write_text('{"image": "a.png", "prompt": "hi"}\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as e:
        data.load_samples("ds/mine.json")
    assert str(tmp_path / "ds" / "mine.json") in str(e.value)
    assert f"found in {tmp_path / 'ds'}: mine.jsonl" in str(e.value)


def test_a_data_folder_names_the_jsonl_in_it(tmp_path):
    """Notebook 02 with data= the folder write_jsonl made (data.jsonl + images/) said 'no data file at <folder>'."""
    from vlm_lab import shapes

    folder = data.write_jsonl(shapes.make_samples("val", 2), tmp_path / "mydata").parent
    with pytest.raises(DataError) as e:
        data.load_samples(str(folder))
    assert str(e.value).startswith(f"{folder} is a folder; pass the JSONL in it: data={str(folder / 'data.jsonl')!r}"), str(e.value)


@pytest.mark.parametrize("dtype, top, suffix", [(np.uint16, 65535, ".png"), (np.float32, 1.0, ".tif"), (np.int32, 65535, ".tif")])
def test_deep_grey_images_are_scaled_to_what_a_viewer_shows(tmp_path, dtype, top, suffix):
    """Depth maps and scans: a 16-bit, 32-bit or 0..1 float gradient keeps its mid-grey; Pillow's
    own convert clipped the 16-bit one to white and the float one to black."""
    path = tmp_path / f"gradient{suffix}"
    Image.fromarray((np.linspace(0, 1, 64 * 256).reshape(64, 256) * top).astype(dtype)).save(path)
    shown = np.asarray(data.open_image(path))
    assert shown.shape == (64, 256, 3)
    assert abs(shown.mean() - 127.5) < 2 and shown.min() == 0 and shown.max() == 255
    eight_bit = Image.fromarray((np.linspace(0, 255, 64 * 256).reshape(64, 256)).astype(np.int32))  # mode I within 0..255
    assert np.array_equal(np.asarray(data.as_shown(eight_bit))[..., 0], np.asarray(eight_bit).astype(np.uint8))


def test_results_of_a_deep_grey_file_from_before_its_scaling_are_not_served(tmp_path):
    """Its pixels changed (clipped before, scaled now), so its sample key did; an 8-bit file's did not."""
    import hashlib

    deep, flat = tmp_path / "depth.png", tmp_path / "photo.png"
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(deep)
    Image.new("RGB", (8, 8), (200, 0, 0)).save(flat)

    def unscaled_key(path) -> str:  # the key of a file as is: its sha256 under the as-shown marker, the prompt
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return hashlib.sha256(f"file-as-shown:{digest}".encode() + b"\0" + b"p").hexdigest()[:24]

    deep_key, flat_key = (sample_key(data.Sample(id=p.stem, image=None, prompt="p", image_path=str(p))) for p in (deep, flat))
    assert deep_key != unscaled_key(deep) and flat_key == unscaled_key(flat)


def test_strips_the_processor_would_blow_up_are_refused_all_at_once(tmp_path):
    """Processors scale an image's short side up to their size: a 30000x1 PNG of a few hundred bytes took
    +1.1 GB on the embedded checkpoints (and would take tens of GB for LLaVA's 336 px), killing the run
    mid-way. Every such line is named up front, with the limit the Space uses and the fix."""
    from vlm_lab.data import MAX_ASPECT

    _image(tmp_path / "ok.png", "red")
    _image(tmp_path / "edge.png", "red", size=(MAX_ASPECT * 2, 2))  # exactly at the limit: fine
    _image(tmp_path / "wide.png", "red", size=(30000, 1))
    _image(tmp_path / "tall.png", "red", size=(3, 600))
    path = _jsonl(tmp_path, *({"image": name, "prompt": "hi"} for name in ("ok.png", "wide.png", "edge.png", "tall.png")))
    with pytest.raises(DataError) as caught:
        data.read_jsonl(path)
    said = str(caught.value)
    assert "d.jsonl:2: wide.png is 30000x1, 30,000 times as wide as it is tall" in said
    assert "d.jsonl:4: tall.png is 3x600, 200 times as tall as it is wide" in said
    assert f"up to {MAX_ASPECT}:1" in said and "crop" in said and "edge.png" not in said and said.count("\n") == 0
    assert len(data.read_jsonl(path, limit=1)) == 1  # lines past --num-samples are not read, so not refused
    with pytest.raises(DataError, match=r"30000x1, 30,000 times as wide"):  # an explorer upload, compare_one's path
        data.open_image(tmp_path / "wide.png")


@pytest.mark.parametrize("image, message", [
    ("https://example.com/cat.jpg", r"d\.jsonl:1: image 'https://example\.com/cat\.jpg' is a URL; images are read from disk: download"),
    ("hf://datasets/org/set/a.png", r"d\.jsonl:1: image 'hf://datasets/org/set/a\.png' is a URL"),
    ("sub\\a.png", r"d\.jsonl:1: image not found: .*sub\\a\.png \(a Windows path\? write it with '/': 'sub/a\.png'\)"),
])  # fmt: skip
def test_an_image_given_as_a_url_or_a_windows_path_says_how_to_give_it(tmp_path, image, message):
    (tmp_path / "sub").mkdir()
    _image(tmp_path / "sub" / "a.png", "red")
    with pytest.raises(DataError, match=message):
        data.read_jsonl(_jsonl(tmp_path, {"image": image, "prompt": "hi"}))


def test_duplicate_ids_name_their_lines(tmp_path):
    """5 and "5" are one id once read (ids are strings): which lines clash is what the user must find."""
    _image(tmp_path / "a.png", "red")
    rows = [{"id": 5, "image": "a.png", "prompt": "a"}, {"id": "x", "image": "a.png", "prompt": "b"},
            {"id": "5", "image": "a.png", "prompt": "c"}, {"id": "x", "image": "a.png", "prompt": "d"}]  # fmt: skip
    with pytest.raises(DataError, match=r"d\.jsonl: duplicate sample ids: 5 \(lines 1, 3\), x \(lines 2, 4\); ids must be unique"):
        data.read_jsonl(_jsonl(tmp_path, *rows))


def test_an_id_of_0_is_kept(tmp_path):
    """0 is an id like any other (a VQA export numbering from 0); only a missing or blank id is made up."""
    _image(tmp_path / "a.png", "red")
    rows = [{"id": 0, "image": "a.png", "prompt": "a"}, {"id": "", "image": "a.png", "prompt": "b"}]
    assert [s.id for s in data.read_jsonl(_jsonl(tmp_path, *rows))] == ["0", "d-2"]


def test_every_image_that_cannot_be_read_is_named_at_once(tmp_path):
    """A data set with a few missing files is fixed in one pass, not one run per file."""
    _image(tmp_path / "ok.png", "red")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    names = ["ok.png", "gone1.png", "bad.png", *(f"gone{i}.png" for i in range(2, 8))]
    with pytest.raises(DataError) as caught:
        data.read_jsonl(_jsonl(tmp_path, *({"image": n, "prompt": "hi"} for n in names)))
    said = str(caught.value)
    assert said.startswith("8 images in ") and "d.jsonl cannot be read:" in said
    assert "d.jsonl:2: image not found: " in said and "d.jsonl:3: cannot read image " in said
    assert "(and 3 more)" in said and "gone7.png" not in said and said.count("\n") == 0
    assert f"image paths are relative to the JSONL file's folder, {tmp_path}" in said and "leave those lines out" in said


@pytest.mark.parametrize("name, text, message", [
    ("d.json", '[{"image": "a.png", "prompt": "hi"}]\n',
     r"d\.json is one JSON document \(an array\), not JSONL.*one object per line.*jq -c '\.\[\]' .*d\.json > .*d\.jsonl"),
    ("d.json", '[\n  {\n    "image": "a.png",\n    "prompt": "hi"\n  }\n]\n', r"d\.json is one JSON document \(an array\), not JSONL"),
    ("d.jsonl", '{\n  "image": "a.png",\n  "prompt": "hi"\n}\n',
     r"d\.jsonl is one JSON document \(an object over 4 lines\), not JSONL.*jq -c \. "),
    ("d.csv", "image,prompt,reference\na.png,What color?,red\n",
     r"d\.csv is CSV, not JSONL.*pd\.read_csv\(.*d\.csv.*to_json\(.*d\.jsonl.*orient='records', lines=True"),
    ("d.tsv", "image\tprompt\na.png\tWhat color?\n", r"d\.tsv is TSV, not JSONL.*sep='\\t'"),
])  # fmt: skip
def test_a_json_array_or_csv_is_named_with_the_command_that_converts_it(tmp_path, name, text, message):
    _image(tmp_path / "a.png", "red")
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        data.read_jsonl(tmp_path / name)


def test_nan_is_missing_not_the_answer_nan(tmp_path):
    """json.dumps writes a pandas export's missing values as NaN, which json reads back as a float: it became the
    reference "nan" (scored, and always wrong) and a "nan" group in the breakdown."""
    _image(tmp_path / "a.png", "red")
    path = tmp_path / "d.jsonl"
    path.write_text('{"id": NaN, "image": "a.png", "prompt": "a", "reference": NaN, "meta": {"type": NaN, "src": "x"}}\n'
                    '{"image": "a.png", "prompt": "b", "reference": ["red", NaN]}\n')  # fmt: skip
    first, second = data.read_jsonl(path)
    assert (first.id, first.reference, first.meta) == ("d-1", None, {"src": "x"})
    assert second.reference == ["red"]


def test_reading_a_large_data_file_shows_a_bar_on_stderr_unless_progress_is_off(tmp_path, capsys):
    """Every image is checked as the file is read (a 3.8 MB PNG is read whole: ~2.4 ms): 10k photos on a slow disk
    ran tens of seconds with nothing on screen before compare's own bar."""
    for i in range(4):
        _image(tmp_path / f"{i}.png", (60 * i, 0, 0))
    n = data.READ_PROGRESS_LINES
    big = _jsonl(tmp_path, *({"image": f"{i % 4}.png", "prompt": f"q{i}"} for i in range(n)))
    assert len(data.load_samples(str(big), progress=True)) == n
    said = capsys.readouterr()
    assert said.out == "" and "reading d.jsonl" in said.err and f"{n}/{n}" in said.err
    assert len(data.load_samples(str(big), progress=False)) == n
    assert capsys.readouterr().err == ""
    data.load_samples(str(big), n - 1, progress=True)  # a cap below the threshold reads as a small file
    small = _jsonl(tmp_path, {"image": "0.png", "prompt": "q"}, name="small.jsonl")
    data.load_samples(str(small), progress=True)
    assert capsys.readouterr().err == ""


def test_home_relative_paths_are_expanded_for_the_file_and_its_images(tmp_path, monkeypatch):
    # "~/…" from a notebook parameter or a sweep file reaches here unexpanded (no shell in between)
    home = tmp_path / "home"
    (home / "pics").mkdir(parents=True)
    _image(home / "pics" / "a.png", "red")
    monkeypatch.setenv("HOME", str(home))
    _jsonl(home, {"image": "~/pics/a.png", "prompt": "Color?"})
    (sample,) = data.read_jsonl("~/d.jsonl")
    assert sample.source_file == home / "pics" / "a.png"
    assert sample.image.getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, r"d\.jsonl:1: image not found: .*x\.png; image paths are relative to the JSONL file's folder, .*: "
                         r"fix it, or leave that line out"),
        (lambda p: p.write_bytes(b""), r"d\.jsonl:1: cannot read image .*x\.png: .*; .*fix it, or leave that line out"),
    ],
)
def test_one_unreadable_image_is_named_with_the_fix_as_several_are(tmp_path, make, message):
    make(tmp_path / "x.png")
    with pytest.raises(DataError, match=message):
        data.read_jsonl(_jsonl(tmp_path, {"image": "x.png", "prompt": "hi"}))


@pytest.mark.parametrize(
    "line, message",
    [
        ("# questions about shapes", r"d\.jsonl:1: '# questions about shapes' is a comment, which JSONL has no way to "
                                     r"write: delete the line"),
        ("// v2", r"d\.jsonl:1: '// v2' is a comment, which JSONL has no way to write"),
        ('{"image": "a.png", "prompt": "hi",}', r"d\.jsonl:1: not valid JSON \(Expecting property name enclosed in double "
                                                r"quotes at column 35: '\{\"image\".*\}'\); each line is one JSON object"),
    ],
)
def test_a_line_that_is_not_json_is_shown_with_the_fix(tmp_path, line, message):
    _image(tmp_path / "a.png", "red")
    path = tmp_path / "d.jsonl"
    path.write_text(line + '\n{"image": "a.png", "prompt": "hi"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=message):
        data.read_jsonl(path)


def test_an_id_made_for_a_line_without_one_that_another_line_gives_is_explained(tmp_path):
    # line 3 has no id: it is named d-3 after the file and line, which line 1 spells out; "duplicate d-3 (lines 1, 3)"
    # alone sent the user looking for an id that line 3 does not have
    _image(tmp_path / "a.png", "red")
    path = _jsonl(tmp_path, {"id": "d-3", "image": "a.png", "prompt": "hi"}, {"image": "a.png", "prompt": "hi"},
                  {"image": "a.png", "prompt": "hi"})
    with pytest.raises(DataError, match=r"d\.jsonl: duplicate sample id: d-3 \(lines 1, 3; line 3 has no id and is named "
                                        r"after the file and its line\); ids must be unique: give each line its own id"):
        data.read_jsonl(path)


def test_a_key_given_twice_on_a_line_is_refused(tmp_path):
    # json keeps the last of two "prompt"s silently: the sample would be asked a question the user may not have meant
    _image(tmp_path / "a.png", "red")
    path = tmp_path / "d.jsonl"
    path.write_text('{"image": "a.png", "prompt": "hi"}\n{"image": "a.png", "prompt": "What color?", "prompt": "What shape?"}\n',
                    encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.jsonl:2: key 'prompt' is given twice \('What color\?', 'What shape\?'\); keep one"):
        data.read_jsonl(path)


def test_an_image_path_that_cannot_be_resolved_is_named_not_a_traceback(tmp_path):
    # Path.resolve raised RuntimeError on a symlink loop and ValueError on a NUL in the path, past every check
    _image(tmp_path / "ok.png", "red")
    (tmp_path / "loop.png").symlink_to("loop.png")
    path = _jsonl(tmp_path, {"image": "ok.png", "prompt": "hi"}, {"image": "loop.png", "prompt": "hi"},
                  {"image": "ok.png\u0000x", "prompt": "hi"})
    with pytest.raises(DataError) as caught:
        data.read_jsonl(path)
    said = str(caught.value)
    assert said.startswith(f"2 images in {path} cannot be read: "), said
    assert f"d.jsonl:2: cannot read image {tmp_path / 'loop.png'}: a symbolic link that leads back to itself" in said, said
    assert "d.jsonl:3: image 'ok.png\\x00x' holds a NUL character" in said, said


def test_a_whole_number_written_as_a_float_reads_as_the_number(tmp_path):
    # pandas writes an integer column holding a missing value as floats: 2 became "2.0", which an answer "2" never
    # matched (normalized: "2 0"); the ids of such a column read "1.0"
    _image(tmp_path / "a.png", "red")
    path = _jsonl(tmp_path, {"id": 1.0, "image": "a.png", "prompt": "How many?", "reference": 2.0},
                  {"id": 2.5, "image": "a.png", "prompt": "How much?", "reference": [3.0, 0.5, "three"]})
    one, two = data.read_jsonl(path)
    assert (one.id, one.reference) == ("1", "2")
    assert (two.id, two.reference) == ("2.5", ["3", "0.5", "three"])



def test_a_number_json_cannot_hold_reads_as_written_and_nan_stays_missing(tmp_path):
    # json reads Infinity (and 1e400) as the float inf, which read "inf": an answer "Infinity" never matched it. NaN is
    # how pandas' to_json-by-json.dumps writes a missing value: still no reference
    _image(tmp_path / "a.png", "red")
    (tmp_path / "d.jsonl").write_text(
        '{"id": Infinity, "image": "a.png", "prompt": "Limit?", "reference": Infinity, "meta": {"bound": -Infinity}}\n'
        '{"id": -Infinity, "image": "a.png", "prompt": "Limit?", "reference": [-Infinity, 1e400, 2.0, NaN]}\n'
        '{"image": "a.png", "prompt": "Limit?", "reference": NaN}\n')
    one, two, three = data.read_jsonl(tmp_path / "d.jsonl")
    assert (one.id, one.reference) == ("Infinity", "Infinity")
    assert one.meta == {"bound": float("-inf")}  # a number still, to break accuracy down by
    assert (two.id, two.reference) == ("-Infinity", ["-Infinity", "1e400", "2"])
    assert three.reference is None

def test_files_joined_with_cat_read_whole_though_the_second_starts_with_a_bom(tmp_path):
    # `cat a.jsonl b.jsonl > all.jsonl`, b saved by a Windows editor: its BOM lands at the start of a line inside
    _image(tmp_path / "a.png", "red")
    (tmp_path / "d.jsonl").write_bytes(b'{"image": "a.png", "prompt": "one"}\n\xef\xbb\xbf{"image": "a.png", "prompt": "two"}\r\n')
    assert [s.prompt for s in data.read_jsonl(tmp_path / "d.jsonl")] == ["one", "two"]


def test_an_image_name_in_other_unicode_code_points_than_the_file_says_so(tmp_path):
    # macOS stores "café" decomposed and matches either spelling; on Linux the JSONL's composed name finds nothing
    _image(tmp_path / "cafe\u0301.png", "red")
    with pytest.raises(DataError, match=r"d\.jsonl:1: image not found: .*caf\u00e9\.png \(a file 'cafe\\u0301\.png' is there, "
                                        r"its name spelled with other Unicode code points \(NFD\): write the name as it is on disk"):
        data.read_jsonl(_jsonl(tmp_path, {"image": "caf\u00e9.png", "prompt": "hi"}))
