"""The explorer widget driven from Python: real checkpoints, real generation, no browser."""

from __future__ import annotations

import datetime
import html
import io
import json
import random
import re
import shutil

import pytest

from vlm_lab import shapes
from vlm_lab.errors import CheckpointNotFoundError, DataError
from vlm_lab.widgets import STRATEGIES, explore


def _upload(name: str, content: bytes) -> tuple[dict, ...]:
    """What ipywidgets' FileUpload holds after the browser sends one file."""
    return ({"name": name, "type": "", "size": len(content), "content": memoryview(content),
             "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


@pytest.fixture(scope="module")
def explorer(tiny_dir):
    return explore(str(tiny_dir), "shapes:val:6", device="cpu")


def test_lists_checkpoints_in_step_order_and_preselects_first_and_last(explorer):
    names = [ref.name for ref in explorer.refs]
    assert names == ["checkpoint-0", "checkpoint-250", "checkpoint-500", "checkpoint-750", "checkpoint-1000"]
    assert [names[i] for i in explorer.checkpoints.value] == ["checkpoint-0", "checkpoint-1000"]
    assert len(explorer.example.options) == 6
    assert explorer.preview.value[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_shows_every_selected_checkpoint_side_by_side(explorer):
    explorer.image_source.value = "example"
    explorer.example.value = 1  # "What shape is it?"
    sample = explorer.samples[1]
    assert explorer.prompt.value == sample.prompt and explorer.reference == sample.reference
    explorer.checkpoints.value = (0, 4)
    explorer.button.click()  # the same path as a click in the browser
    explorer.wait()
    rows = explorer.rows
    assert [r["checkpoint"] for r in rows] == ["checkpoint-0", "checkpoint-1000"]
    assert rows[1]["text"] == sample.reference  # the trained checkpoint gets it right
    assert all(r["latency_s"] > 0 and r["memory_bytes"] > 0 and r["new_tokens"] >= 1 for r in rows)
    out = explorer.output.value
    assert "checkpoint-0" in out and "checkpoint-1000" in out and f"<b>{sample.reference}</b>" in out
    assert out.count("<tr class='vlm-lab-row vlm-lab-ok'>") == 1  # the right answer is green
    assert not explorer.button.disabled


def test_an_example_with_several_references_shows_them_all(tiny_dir, tmp_path):
    """A VQA-style data set gives a list of acceptable answers: Compare crashed on it ('list' has no 'replace')."""
    from vlm_lab.data import load_samples, write_jsonl

    path = write_jsonl(load_samples("shapes:val:1"), tmp_path)
    line = json.loads(path.read_text())
    line["reference"] = ["crimson", line["reference"], line["reference"]]
    path.write_text(json.dumps(line) + "\n")
    explorer = explore(str(tiny_dir), str(path), device="cpu")
    explorer.checkpoints.value = (len(explorer.refs) - 1,)
    explorer.button.click()
    explorer.wait()
    out = explorer.output.value
    assert f"reference: <b>crimson | {html.escape(line['reference'][1])} ×2</b>" in out, out
    assert "<tr class='vlm-lab-row vlm-lab-ok'>" in out  # checkpoint-1000 gives one of them: green


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_runs(explorer, strategy):
    name, _, arg = strategy.partition("(")
    explorer.checkpoints.value = (4,)
    explorer.strategy.value = name
    assert explorer.strategy_text == strategy  # each strategy's default argument
    explorer.max_new_tokens.value = 4
    rows = explorer.run()
    assert len(rows) == 1 and rows[0]["new_tokens"] <= 4 and explorer.config.strategy == strategy
    assert "checkpoint-1000" in explorer.output.value
    explorer.strategy.value, explorer.max_new_tokens.value = "greedy", 8


@pytest.mark.parametrize(("name", "arg", "expected"), [("nucleus", 0.5, "nucleus(0.5)"), ("temperature", 1.5, "temperature(1.5)"),
                                                        ("beam", 2, "beam(2)")])  # fmt: skip
def test_a_strategy_takes_its_argument_from_the_ui(explorer, name, arg, expected):
    explorer.strategy.value = name
    assert explorer.strategy_arg.layout.display != "none"
    explorer.strategy_arg.value = arg
    explorer.checkpoints.value = (4,)
    assert explorer.run() and explorer.config.strategy == expected
    explorer.strategy.value = "greedy"
    assert explorer.strategy_arg.layout.display == "none" and explorer.strategy_text == "greedy"


def test_sampling_repeats_for_a_seed_and_changes_with_it(explorer):
    explorer.checkpoints.value = (0,)  # untrained: its answers are spread over the vocabulary
    explorer.strategy.value, explorer.strategy_arg.value = "temperature", 5.0
    explorer.max_new_tokens.value = 6
    answers = {}
    for seed in (0, 0, 1, 2):
        explorer.seed.value = seed
        answers.setdefault(seed, set()).add(explorer.run()[0]["text"])
    assert len(answers[0]) == 1, "the same seed gave different answers"
    assert len({*answers[0], *answers[1], *answers[2]}) > 1, "the seed does not reach the sampler"
    explorer.strategy.value, explorer.max_new_tokens.value, explorer.seed.value = "greedy", 8, 0


def test_an_unreadable_upload_says_why(explorer):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (19000, 19000)).save(buf, format="PNG")  # 361 M pixels: past PIL's decompression-bomb limit
    explorer.image_source.value = "example"
    explorer.upload.value = _upload("huge.png", buf.getvalue())
    said = html.unescape(explorer.output.value)  # pixel_limit's words, as the CLI and data sets say it
    assert "'huge.png': the image is 361,000,000 pixels, over the limit of 89,478,485 pixels" in said, said
    assert "downscale it" in said and "VLM_LAB_MAX_IMAGE_PIXELS=361000000" in said
    photo = io.BytesIO()
    Image.effect_noise((300, 200), 64).convert("RGB").save(photo, format="JPEG")
    explorer.upload.value = _upload("cut.jpg", photo.getvalue()[:2000])
    out = html.unescape(explorer.output.value)
    assert "Cannot read 'cut.jpg' as an image (" in out and "truncated" in out and "Compare still uses the image shown" in out
    assert explorer.image_source.value == "example"


def test_a_large_upload_previews_small_with_its_aspect(explorer):
    from PIL import Image

    photo = io.BytesIO()
    Image.effect_noise((3000, 1500), 64).convert("RGB").save(photo, format="JPEG")
    explorer.upload.value = _upload("wide.jpg", photo.getvalue())
    assert explorer.image.size == (3000, 1500)  # the model gets the full image
    assert Image.open(io.BytesIO(explorer.preview.value)).size == (128, 64)  # the browser a thumbnail
    assert (explorer.preview.width, explorer.preview.height) == ("128", "64")  # shown at that size
    explorer.image_source.value = "example"


def test_bad_upload_is_a_message_not_a_traceback(explorer):
    explorer.image_source.value = "example"
    explorer.upload.value = _upload("notes.txt", b"this is not an image")
    assert "'notes.txt' is not in an image format Pillow reads" in html.unescape(explorer.output.value)
    assert explorer.image_source.value == "example"  # still on the example
    assert explorer.run()  # and Compare still works


def test_uploaded_image_is_used(explorer):
    image = shapes.draw_shape("blue", "circle", random.Random(3))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    explorer.upload.value = _upload("blue.png", buf.getvalue())
    assert explorer.image_source.value == "upload" and explorer.reference is None
    explorer.checkpoints.value = (4,)
    explorer.prompt.value = "What color is the shape?"
    assert explorer.run()[0]["text"] == "blue"
    explorer.example.value = 1 - explorer.example.value  # picking an example switches back to it (another: the module's
    # explorer may hold 0 or 1, and picking the one it holds changes nothing)
    assert explorer.image_source.value == "example"


def test_nothing_selected_or_no_prompt_says_what_to_do(explorer):
    explorer.checkpoints.value = ()
    assert explorer.run() == [] and "Select at least one checkpoint" in explorer.output.value
    explorer.checkpoints.value = (4,)
    explorer.prompt.value = "  "
    assert explorer.run() == [] and "Type a prompt" in explorer.output.value
    explorer.prompt.value = explorer.samples[0].prompt


def test_log_checkbox_is_off_by_default(explorer):
    assert explorer.log.value is False


def test_bad_references_fail_early_with_the_fix(tiny_dir, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="checkpoint-1000"):
        explore(str(tiny_dir / "checkpoint-999"), "shapes:val:2")
    with pytest.raises(DataError, match="JSONL"):
        explore(str(tiny_dir), str(tmp_path / "missing.jsonl"))


def test_a_list_of_model_folders_and_a_jsonl(tiny_checkpoints, tmp_path):
    from vlm_lab.data import write_jsonl

    jsonl = write_jsonl(shapes.make_samples("val", 3), tmp_path)
    e = explore([str(tiny_checkpoints[2]), str(tiny_checkpoints[4])], str(jsonl))
    assert [r.name for r in e.refs] == ["checkpoint-500", "checkpoint-1000"]
    assert [s.prompt for s in e.samples] == [s.prompt for s in shapes.make_samples("val", 3)]


def test_log_checkbox_logs_an_offline_wandb_run(explorer, tmp_path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert not explorer.log.disabled  # vlm_lab.tracking is there
    explorer.image_source.value = "example"
    explorer.checkpoints.value = (0, 4)
    explorer.log.value = True
    try:
        explorer.run()
    finally:
        explorer.log.value = False
    assert "W&amp;B offline run" in explorer.output.value
    assert list((tmp_path / "wandb_dir").rglob("offline-run-*"))


def test_float16_overflow_is_marked_in_the_table(tiny_checkpoints, overflowing_checkpoint):
    e = explore([str(tiny_checkpoints[-1]), str(overflowing_checkpoint)], "shapes:val:2", dtype="float16", device="cpu")
    e.checkpoints.value = (0, 1)
    e.button.click()
    e.wait()
    assert [r["nonfinite"] for r in e.rows] == [False, True]
    out = html.unescape(e.output.value)
    # beside the broken checkpoint's answer only, with the advice for the dtype it runs in
    # the argument as explore() takes it, quoted (it said dtype=float32); no flag: the explorer has no command line
    assert out.count("NaN/inf: ") == 1 and out.count("overflows float16's range: use dtype='float32', or dtype='bfloat16' on") == 1
    assert "--dtype" not in out
    assert e.rows[1]["dtype"] == "float16"


def test_nan_weights_in_float32_get_check_the_checkpoint_not_use_float32(tiny_checkpoints, tmp_path):
    import torch

    from vlm_lab import models

    loaded = models.load_model(tiny_checkpoints[-1], device="cpu", dtype="float32")
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight.fill_(float("nan"))
    loaded.model.save_pretrained(tmp_path / "nan")
    loaded.processor.save_pretrained(tmp_path / "nan")
    e = explore([str(tmp_path / "nan")], "shapes:val:2", dtype="float32", device="cpu")
    e.checkpoints.value = (0,)
    e.button.click()
    e.wait()
    out = html.unescape(e.output.value)
    assert e.rows[0]["nonfinite"] and "in float32" in out and "check the checkpoint" in out and "use dtype=" not in out


def test_a_broken_checkpoint_fails_only_its_own_row(tiny_checkpoints, mismatched_checkpoint, tmp_path):
    # mismatched_checkpoint (conftest): loads, then transformers raises a plain ValueError inside generate
    corrupted = tmp_path / "corrupted" / "checkpoint-1000"
    shutil.copytree(tiny_checkpoints[-1], corrupted)
    (corrupted / "model.safetensors").write_bytes(b"not safetensors")
    e = explore([str(tiny_checkpoints[-1]), str(mismatched_checkpoint), str(corrupted)], "shapes:val:2", device="cpu")
    e.checkpoints.value = (0, 1, 2)
    e.prompt.value = "What color is the shape?"
    e.button.click()
    e.wait()
    good, broken, corrupt = e.rows
    assert good["text"] and "error" not in good
    assert broken["error"].startswith("mismatched/checkpoint-1000 failed while answering (ValueError: Image features")  # three checkpoint-1000s
    assert corrupt["error"] and "text" not in corrupt
    out = html.unescape(e.output.value)
    assert out.count("<tr class='vlm-lab-row") == 3 and f"<b>{good['text']}</b>" in out and "ValueError" in out
    assert not e.button.disabled


def test_progress_says_which_checkpoint_loads_and_memory_has_a_unit(tiny_checkpoints):
    from vlm_lab.model_cache import ModelCache, format_bytes

    # a cache of its own: the explorers of the process share one, in which other tests loaded these
    e = explore([str(tiny_checkpoints[0]), str(tiny_checkpoints[-1])], "shapes:val:2", device="cpu", cache=ModelCache())
    e.checkpoints.value = (0, 1)
    shown, disabled = [], []
    e.output.observe(lambda c: (shown.append(c["new"]), disabled.append(e.button.disabled)), names="value")
    e.button.click()
    e.wait()
    said = [re.search(r"(Starting|(Opening|Loading|Running) checkpoint-\d+ \(\d/2\))…", html.unescape(s)) for s in shown]
    # opening: its files are read before the cache says whether it loads or waits
    assert [m and m.group(0) for m in said] == ["Starting…", "Opening checkpoint-0 (1/2)…", "Loading checkpoint-0 (1/2)…",
                                               "Running checkpoint-0 (1/2)…", "Opening checkpoint-1000 (2/2)…",
                                               "Loading checkpoint-1000 (2/2)…", "Running checkpoint-1000 (2/2)…", None]  # fmt: skip
    assert all(disabled[:-1])  # the button is off while anything runs
    shown.clear()
    e.button.click()  # both are cached now
    e.wait()
    assert "Running checkpoint-0 (1/2)" in shown[1] and "Loading" not in "".join(shown)
    assert f"{format_bytes(e.rows[0]['memory_bytes'])} weights" in e.output.value


def test_an_answer_cut_off_at_max_tokens_is_marked(tiny_checkpoints):
    e = explore([str(tiny_checkpoints[-1])], "shapes:val:3", device="cpu")
    e.checkpoints.value = (0,)
    e.prompt.value = "Describe the image."  # "a <color> <shape>" + the end token: 4 tokens
    e.max_new_tokens.value = 3
    e.button.click()
    e.wait()
    assert [r["truncated"] for r in e.rows] == [True] and e.output.value.count("cut off at max new tokens") == 1
    e.max_new_tokens.value = 4
    e.button.click()
    e.wait()
    now, earlier = e.output.value.split("Earlier runs")
    assert [r["truncated"] for r in e.rows] == [False] and "cut off" not in now and "cut off at max new tokens" in earlier


def test_an_upload_is_seen_as_the_space_sees_it(explorer, tmp_path):
    # a phone photo stored sideways (EXIF orientation 6) and a PNG with transparent pixels: the model
    # gets the pixels the Space gives it for the same file (upright; transparency on white, not black)
    import numpy as np
    from PIL import Image

    from vlm_lab.space_images import read_image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (64, 32), "red").save(tmp_path / "phone.jpg", exif=exif.tobytes())
    clear = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    clear.paste((255, 0, 0, 255), (4, 4, 12, 12))
    clear.save(tmp_path / "clear.png")
    for name, size in (("phone.jpg", (32, 64)), ("clear.png", (16, 16))):
        explorer.upload.value = _upload(name, (tmp_path / name).read_bytes())
        assert explorer.image_source.value == "upload" and explorer.image.size == size, name
        shown = read_image(str(tmp_path / name), max_pixels=10_000)
        assert np.array_equal(np.asarray(explorer.image), np.asarray(shown)), name
    assert explorer.image.getpixel((0, 0)) == (255, 255, 255)
    explorer.image_source.value = "example"


def test_a_reference_that_cannot_be_listed_does_not_hide_the_others(tiny_checkpoints, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from vlm_lab.widgets import CheckpointsNotListedWarning

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))  # offline: org/never-downloaded is nowhere
    specs = [str(tiny_checkpoints[0]), "org/never-downloaded", str(tiny_checkpoints[-1]), str(tmp_path / "typo")]
    with pytest.warns(CheckpointsNotListedWarning) as caught:
        e = explore(specs, "shapes:val:2", device="cpu")
    assert [r.name for r in e.refs] == ["checkpoint-0", "checkpoint-1000"]
    assert list(e.unlisted) == ["org/never-downloaded", str(tmp_path / "typo")]
    assert [str(w.message).split(":")[0] for w in caught] == [f"the explorer does not list {s!r}" for s in e.unlisted]
    assert "hub model 'org/never-downloaded' is not in the local Hugging Face cache" in str(caught[0].message)
    text = html.unescape(e.output.value)
    assert "Not listed: 'org/never-downloaded': CheckpointNotFoundError: cannot load 'org/never-downloaded'" in text
    assert f"Not listed: '{tmp_path / 'typo'}': CheckpointNotFoundError: no checkpoint at " in text
    assert "Pick checkpoints and an image, then click Compare" in text
    rows = e.run()
    assert [r["checkpoint"] for r in rows] == ["checkpoint-0", "checkpoint-1000"] and not any(r.get("error") for r in rows)
    assert "Not listed: 'org/never-downloaded'" in html.unescape(e.output.value)  # still said beside the answers
    with pytest.raises(CheckpointNotFoundError, match="never-downloaded"):  # nothing to show: the first error
        explore(["org/never-downloaded", str(tmp_path / "typo")], "shapes:val:2")


def test_the_same_step_of_two_runs_is_told_apart(tiny_checkpoints, tmp_path):
    for run, source in (("run-a", tiny_checkpoints[0]), ("run-b", tiny_checkpoints[-1])):
        shutil.copytree(source, tmp_path / run / "checkpoint-1000")
    e = explore([str(tmp_path / "run-a"), str(tmp_path / "run-b")], "shapes:val:2", device="cpu")
    assert [label for label, _ in e.checkpoints.options] == ["run-a/checkpoint-1000", "run-b/checkpoint-1000"]
    rows = e.run()
    assert [r["checkpoint"] for r in rows] == ["run-a/checkpoint-1000", "run-b/checkpoint-1000"]
    assert rows[0]["text"] != rows[1]["text"]  # checkpoint-0's weights against checkpoint-1000's: each its own row
    text = html.unescape(re.sub(r"<[^>]+>", "", e.output.value))  # as read (the name may wrap after its '/')
    assert "run-a/checkpoint-1000" in text and "run-b/checkpoint-1000" in text


def test_an_answer_stopped_where_the_checkpoint_reads_no_further_says_so(tiny_checkpoints):
    """The shapes checkpoints read 128 tokens, ~73 of them the image and prompt: checkpoint-0 (which never
    ends) asked for 200 stops at the context, and 'raise max new tokens' would be the wrong advice."""
    e = explore([str(tiny_checkpoints[0])], "shapes:val:3", device="cpu")
    e.checkpoints.value = (0,)
    e.max_new_tokens.value = 200
    e.button.click()
    e.wait()
    (row,) = e.rows
    assert row["truncated"] and row["at_context"] and row["new_tokens"] < 60
    assert "cut off: the checkpoint reads no further" in e.output.value and "raise it" not in e.output.value


def test_an_uploaded_strip_is_refused_with_the_fix_before_the_processor_sees_it(explorer):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (30000, 1), "red").save(buf, format="PNG")  # a few hundred bytes; +1.1 GB in the processor
    explorer.image_source.value = "example"
    explorer.upload.value = _upload("strip.png", buf.getvalue())
    out = html.unescape(explorer.output.value)
    assert "'strip.png': the image is 30000x1, 30,000 times as wide as it is tall; images are taken up to 50:1" in out
    assert "crop it, or pad it toward a square" in out and "Cannot read" not in out
    assert explorer.image_source.value == "example" and explorer.run()  # Compare still uses the example


def test_a_prompt_that_leaves_no_room_says_so_in_its_row(tiny_checkpoints):
    e = explore([str(tiny_checkpoints[-1])], "shapes:val:3", device="cpu")
    e.checkpoints.value = (0,)
    e.prompt.value = " ".join(["What color is the shape?"] * 12)
    e.button.click()
    e.wait()
    (row,) = e.rows
    assert re.fullmatch(r"ContextOverflowError: the image and prompt take \d+ tokens, and checkpoint-1000 reads at most 128 "
                        r"\(the answer included\); shorten the prompt", row["error"])


def test_long_checkpoint_names_are_told_apart_in_the_list(tmp_path, tiny_dir):
    """Two runs with long names: the list (about 40 characters wide) showed each run's two checkpoints as the same
    'lr3e-4-bs32-warmup500-vision-frozen-long-exp', their checkpoint-N cut off; the table keeps the full names."""
    runs = ["lr3e-4-bs32-warmup500-vision-frozen-long-experiment", "lr1e-4-bs64-warmup100-vision-unfrozen-long-experiment"]
    for run in runs:
        for step in (250, 1000):
            shutil.copytree(tiny_dir / f"checkpoint-{step}", tmp_path / run / f"checkpoint-{step}")
    e = explore([str(tmp_path / run) for run in runs] + [str(tiny_dir / "checkpoint-500")], "shapes:val:1", device="cpu")
    labels = [label for label, _ in e.checkpoints.options]
    assert len(set(labels)) == 5 and all(len(label) <= 40 for label in labels), labels
    assert [label.rsplit("/", 1)[-1] for label in labels] == [f"checkpoint-{s}" for s in (250, 1000, 250, 1000, 500)], labels
    assert labels[0].startswith("lr3e-4-bs32") and labels[2].startswith("lr1e-4-bs64"), labels  # which run: its name's start
    assert e.names[0] == f"{runs[0]}/checkpoint-250"  # the table and the runs' labels say it in full


@pytest.mark.parametrize(("config_path", "limit"), [("notebooks/.jupyter", "256 MB"), (None, "10 MB")])
def test_the_upload_button_names_the_servers_message_limit(tiny_dir, tmp_path, monkeypatch, config_path, limit):
    # the kernel runs in the server's environment: `make lab` points JUPYTER_CONFIG_PATH at notebooks/.jupyter/
    from pathlib import Path

    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "user"))  # no user config of this machine
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")
    if config_path:
        monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(Path(__file__).parents[1] / config_path))
    else:
        monkeypatch.delenv("JUPYTER_CONFIG_PATH", raising=False)
    explorer = explore(str(tiny_dir), "shapes:val:2")
    assert explorer.upload.description == f"Upload image ≤ {limit}"
    assert limit in explorer.upload.tooltip and limit in explorer.path.tooltip


@pytest.mark.parametrize("typed", [
    '"{}"', "'{}'", "  {}  ", "file://{url}", "{escaped}",  # Windows' "Copy as path", a terminal's drop, a file manager's copy
])  # fmt: skip
def test_a_pasted_path_is_taken_as_the_file_it_names(explorer, tmp_path, typed):
    from urllib.parse import quote

    folder = tmp_path / "my photos"
    folder.mkdir()
    photo = folder / "cat (1).png"
    shapes.draw_shape("blue", "circle", random.Random(3)).save(photo)
    explorer.path.value = ""
    explorer.path.value = typed.format(photo, url=quote(str(photo)), escaped=re.sub(r"([ ()])", r"\\\1", str(photo)))
    assert "Using image" in explorer.output.value, explorer.output.value
    assert explorer.image_source.value == "upload" and explorer.uploaded.size == (64, 64)


def test_a_url_or_a_folder_in_the_path_box_says_what_to_give(explorer, tmp_path):
    explorer.path.value = "https://example.com/cat.png"
    assert "not downloaded" in html.unescape(explorer.output.value), explorer.output.value
    explorer.path.value = str(tmp_path)
    assert "is a folder" in html.unescape(explorer.output.value), explorer.output.value


def test_a_path_relative_to_the_notebooks_folder_is_found(explorer, tmp_path, monkeypatch):
    # JupyterLab's Copy Path is relative to the server's root (notebooks/ under `make lab`), while the notebook's
    # kernel works in the project root; JupyterLab names the notebook in JPY_SESSION_NAME
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "root").mkdir()
    shapes.draw_shape("blue", "circle", random.Random(3)).save(tmp_path / "notebooks" / "cat.png")
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "notebooks" / "01_explore.ipynb"))
    monkeypatch.chdir(tmp_path / "root")
    explorer.path.value = ""
    explorer.path.value = "cat.png"
    assert "Using image" in explorer.output.value and str(tmp_path / "notebooks" / "cat.png") in html.unescape(explorer.output.value)


def test_the_same_file_uploaded_again_is_used_again(tiny_dir):
    # the browser sends a chosen file only when it differs from the value its model holds, and the kernel's observers
    # hear only a changed value: after going back to an example, the same photo uploaded again left the example in
    # use without a word (test_widgets_browser -k 12_mb does it in Chromium)
    buf = io.BytesIO()
    shapes.draw_shape("blue", "circle", random.Random(3)).save(buf, format="PNG")
    sent = {"value": [{"name": "blue.png", "type": "image/png", "size": len(buf.getvalue()), "content": memoryview(buf.getvalue()),
                       "last_modified": 1_700_000_000_000}]}  # fmt: skip
    e = explore(str(tiny_dir), "shapes:val:3")
    e.upload.set_state(sent)  # as the frontend's message sets it
    assert e.image_source.value == "upload"
    e.example.value = 1
    assert e.image_source.value == "example" and e.upload.value == ()  # what the browser's model then holds too
    e.upload.set_state(sent)
    assert e.image_source.value == "upload" and "Using uploaded image 'blue.png'" in html.unescape(e.output.value)
