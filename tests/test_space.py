"""The Space end to end: the real space/app.py in a subprocess, driven with gradio_client.

One app per module (startup is the expensive part), on the tiny checkpoints. Every bad
input gets its own message, and the app answers the next request after each.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import threading
import time
import tomllib
import zlib
from pathlib import Path

import pytest
from PIL import Image
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import QueueError

from space_server import ROOT, running_space

SPACE = ROOT / "space"
EXAMPLE = SPACE / "examples" / "red-circle.png"  # checkpoint-1000 answers "red" / "circle"
QUEUE_SIZE = 24


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.fixture(scope="module")
def space(tiny_dir, tmp_path_factory):
    """``(url, log_path)`` of the app serving the tiny checkpoints."""
    env = {"VLM_LAB_CHECKPOINTS": str(tiny_dir), "VLM_LAB_QUEUE_SIZE": str(QUEUE_SIZE),
           "VLM_LAB_MAX_NEW_TOKEN": "8"}  # a typo, for test_a_mistyped_variable_is_named_in_the_log
    with running_space(env, workdir=tmp_path_factory.mktemp("space")) as running:
        yield running


@pytest.fixture(scope="module")
def client(space):
    return Client(space[0], verbose=False, analytics_enabled=False)


def compare(client, image, prompt="What color is the shape?", ckpts=("checkpoint-0", "checkpoint-1000", "(none)"),
            strategy="greedy", max_new_tokens=8):
    out = client.predict(image, prompt, *ckpts, strategy, max_new_tokens, api_name="/compare")
    # (answer, stats) per slot; answers arrive as updates carrying the checkpoint's name as label
    return [(out[i]["label"], out[i]["value"], out[i + 1]["value"]) for i in range(0, len(out), 2) if out[i]["visible"]]


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    text = folder / "notes.png"
    text.write_text("not an image, just text with a .png name")
    data = EXAMPLE.read_bytes()
    truncated = folder / "truncated.png"
    truncated.write_bytes(data[: len(data) // 2])
    # a 20000x20000 RGB PNG header over a few bytes of data: 400M pixels if anything decoded it
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    bomb = folder / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))
    large = folder / "large.png"  # over the Space's limit (16.7M) but under twice it: PIL only warns
    Image.new("RGB", (5000, 5000), "red").save(large)
    return {"text": text, "truncated": truncated, "bomb": bomb, "large": large}


def test_compare_answers_side_by_side(client):
    answers = compare(client, handle_file(EXAMPLE))
    assert [name for name, _, _ in answers] == ["checkpoint-0", "checkpoint-1000"]
    assert answers[1][1] == "red"
    for _, _, stats in answers:
        assert re.search(r"latency\*\* \d+ ms · \*\*tokens\*\* \d+ · \*\*memory\*\* [\d.]+ MB", stats), stats


@pytest.mark.parametrize("strategy", ["greedy", "nucleus (top-p 0.9)", "temperature 0.7"])
def test_every_decoding_strategy_answers(client, strategy):
    answers = compare(client, handle_file(EXAMPLE), "What shape is it?", ("checkpoint-1000", "(none)", "(none)"), strategy)
    assert len(answers) == 1 and answers[0][1]  # sampling on a trained checkpoint still says something


def test_batched_endpoint_answers_and_batches_concurrent_calls(client, space):
    answer, new_tokens, latency, error = client.predict(
        handle_file(EXAMPLE), "What shape is it?", "checkpoint-1000", api_name="/compare_batch")
    assert (answer, error) == ("circle", "") and new_tokens >= 1 and latency > 0
    prompts = ["What color is the shape?", "What shape is it?", "Describe the image."] * 4
    jobs = [client.submit(handle_file(EXAMPLE), p, "checkpoint-1000", api_name="/compare_batch") for p in prompts]
    answers = [job.result(timeout=60)[0] for job in jobs]
    assert answers == ["red", "circle", "a red circle"] * 4
    sizes = [int(n) for n in re.findall(r"batch start \((\d+) request", space[1].read_text())]
    assert max(sizes) > 1, f"concurrent calls were never batched: {sizes}"


def test_batched_endpoint_reports_a_lone_bad_request(client, bad_files):
    with pytest.raises(AppError, match="not an image"):
        client.predict(handle_file(bad_files["text"]), "What shape is it?", "checkpoint-1000", api_name="/compare_batch")
    with pytest.raises(AppError, match=r"unknown checkpoint 'nope'; choose one of checkpoint-0, "):
        client.predict(handle_file(EXAMPLE), "What shape is it?", "nope", api_name="/compare_batch")


def test_batched_callers_see_only_their_own_errors(client, tmp_path):
    files = []
    for i in range(12):
        files.append(tmp_path / f"private-{i}.png")
        files[-1].write_text("not an image")
    jobs = [client.submit(handle_file(f), "What shape is it?", "checkpoint-1000", api_name="/compare_batch") for f in files]
    batched = 0
    for f, job in zip(files, jobs):
        try:
            message = job.result(timeout=60)[3]
            batched += 1  # an error returned, not raised: it shared its batch with others
        except AppError as e:  # alone in its batch
            message = str(e)
        assert f"'{f.name}' is not an image" in message and len(re.findall(r"private-\d+", message)) == 1, message
    assert batched, "the calls were never batched, so this test could not fail"


BAD_INPUTS = {
    "missing image": (None, "What color is the shape?", "no image: upload an image"),
    "missing prompt": ("example", "  ", "no question: type a question"),
    # a first visit's Compare on the empty form: both named at once, not one per try
    "missing image and prompt": (None, "", "no image and no question: upload an image (PNG, JPEG or WebP) or pick one "
                                 "of the examples, and type a question about it, e.g. 'What color is the shape?'"),
    "non-image file": ("text", "What color is the shape?", "'notes.png' is not an image this app can read; upload a PNG"),
    "truncated png": ("truncated", "What color is the shape?", "'truncated.png' is truncated or corrupt"),
    "decompression bomb": ("bomb", "What color is the shape?", "the file 'bomb.png' is 400,000,000 pixels, over this "
                           "Space's limit of 16,777,216 pixels; resize it (e.g. to 1024x1024) and upload it again"),
    "over the pixel limit": ("large", "What color is the shape?", "the file 'large.png' is 5000x5000 = 25,000,000 pixels, "
                             "over this Space's limit of 16,777,216 pixels; resize it"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_its_message_and_the_app_keeps_serving(client, bad_files, case):
    which, prompt, message = BAD_INPUTS[case]
    image = None if which is None else handle_file(EXAMPLE if which == "example" else bad_files[which])
    with pytest.raises(AppError, match=re.escape(message)):
        compare(client, image, prompt)
    assert compare(client, handle_file(EXAMPLE))[1][1] == "red"


@pytest.mark.parametrize("ckpts, message", [
    (("checkpoint-999", "(none)", "(none)"), "unknown checkpoint 'checkpoint-999'; choose one of checkpoint-0, checkpoint-250"),
    (("(none)", "(none)", "(none)"), "no checkpoint selected"),
])
def test_bad_checkpoint_choice_gets_its_message(client, ckpts, message):
    with pytest.raises(AppError, match=re.escape(message)):
        compare(client, handle_file(EXAMPLE), ckpts=ckpts)
    assert compare(client, handle_file(EXAMPLE))[1][1] == "red"


def test_a_boolean_max_new_tokens_is_refused_on_both_endpoints(client):
    """JSON true is an int to Python (True == 1): it was taken as 1 new token, silently."""
    message = "max new tokens must be a whole number between 1 and 64, got True"
    with pytest.raises(AppError, match=re.escape(message)):
        compare(client, handle_file(EXAMPLE), max_new_tokens=True)
    with pytest.raises(AppError, match=re.escape(message)):
        client.predict(handle_file(EXAMPLE), "What shape is it?", "checkpoint-1000", True, api_name="/compare_batch")
    assert compare(client, handle_file(EXAMPLE))[1][1] == "red"


def test_sixteen_concurrent_clients_all_get_answers(space):
    results: dict[int, object] = {}

    def ask(i: int) -> None:
        try:
            c = Client(space[0], verbose=False, analytics_enabled=False)
            results[i] = compare(c, handle_file(EXAMPLE), ckpts=("checkpoint-500", "checkpoint-1000", "(none)"))[1][1]
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = e

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results == {i: "red" for i in range(16)}


def test_a_full_queue_says_busy_and_the_app_recovers(client, space):
    # three checkpoints, untrained ones that always write 64 tokens: slow enough that 80 requests overflow the queue
    jobs = [client.submit(handle_file(EXAMPLE), "What color is the shape?", "checkpoint-0", "checkpoint-250",
                          "checkpoint-500", "greedy", 64, api_name="/compare") for _ in range(80)]
    outcomes = []
    for job in jobs:
        try:
            job.result(timeout=120)
            outcomes.append("ok")
        except QueueError as e:
            assert "Queue is full! Please try again" in str(e)
            outcomes.append("busy")
    assert "busy" in outcomes and "ok" in outcomes, outcomes
    assert compare(client, handle_file(EXAMPLE))[1][1] == "red"


def test_a_mistyped_variable_is_named_in_the_log(space):
    """A typo in a Space variable was ignored without a word: the owner wondered why the limit did not change."""
    assert ("WARNING vlm_lab.space: VLM_LAB_MAX_NEW_TOKEN (did you mean VLM_LAB_MAX_NEW_TOKENS?): not a variable "
            "this app reads") in space[1].read_text()


def test_a_refused_request_is_one_line_in_the_log(client, space, bad_files):
    """The owner saw nothing of what visitors were told (or two lines of PIL's DecompressionBombWarning); a refused
    batched call also logged a 'batch start (1 request(s) in 0 group(s))' and a 'batch done' for nothing generated."""
    before = len(space[1].read_text())
    with pytest.raises(AppError):
        compare(client, handle_file(bad_files["large"]))
    with pytest.raises(AppError):
        client.predict(handle_file(bad_files["text"]), "What shape is it?", "checkpoint-1000", api_name="/compare_batch")
    log = space[1].read_text()[before:]
    assert "INFO vlm_lab.space: request failed: the file 'large.png' is 5000x5000 = 25,000,000 pixels" in log
    assert "INFO vlm_lab.space: request failed: the file 'notes.png' is not an image" in log
    assert "DecompressionBombWarning" not in log and "Traceback" not in log
    assert len(log.splitlines()) == 2, log


def test_log_shows_memory_before_and_after_each_request(client, space):
    compare(client, handle_file(EXAMPLE))
    log = space[1].read_text()
    assert re.search(r"compare start \(2 checkpoint\(s\), greedy, 8 tokens\): rss=\d+MB", log)
    assert re.search(r"compare done in [\d.]+s: rss=\d+MB", log)
    assert "Traceback" not in log  # bad inputs are messages, not crashes


def test_a_broken_default_checkpoint_and_an_old_examples_cache_do_not_stop_the_space(tiny_checkpoints, space, tmp_path):
    """One checkpoint of three cannot load (its config.json no longer matches its weights; weights cut
    short are skipped before, as a checkpoint a trainer is still writing), and the examples cache left by
    the module's app (five other checkpoints, a healthy checkpoint-500 among them) is reused: the app
    starts, leaves the broken one out of its defaults and examples, and answers with the others."""
    folder = tmp_path / "run"
    for n in (0, 500, 1000):
        shutil.copytree(tiny_checkpoints[0].parent / f"checkpoint-{n}", folder / f"checkpoint-{n}")
    config_path = folder / "checkpoint-500" / "config.json"
    config = json.loads(config_path.read_text())
    config["text_config"]["intermediate_size"] = 96
    config_path.write_text(json.dumps(config))
    old_cache = space[1].parent / "examples-cache"
    assert "checkpoint-500" in "".join(p.read_text() for p in old_cache.glob("*/log.csv"))
    env = {"VLM_LAB_CHECKPOINTS": str(folder), "GRADIO_EXAMPLES_CACHE": str(old_cache)}
    with running_space(env, workdir=tmp_path / "app") as (url, log_path):
        cached = "".join(p.read_text() for p in old_cache.glob("*/log.csv"))
        assert "checkpoint-1000" in cached and "checkpoint-500" not in cached  # answered afresh, without the broken one
        log = log_path.read_text()
        assert re.search(r"checkpoint-500 left out of the defaults and examples: .*the weights do not match config.json", log)
        client = Client(url, verbose=False, analytics_enabled=False)
        assert compare(client, handle_file(EXAMPLE), ckpts=("checkpoint-0", "checkpoint-1000", "(none)"))[1][1] == "red"
        healthy, broken = compare(client, handle_file(EXAMPLE), ckpts=("checkpoint-1000", "checkpoint-500", "(none)"))
        assert healthy == ("checkpoint-1000", "red", healthy[2]) and "latency" in healthy[2]
        assert broken[:2] == ("checkpoint-500", "") and broken[2].startswith("**could not answer:** ")
        with pytest.raises(AppError, match="checkpoint-500'?: the weights do not match config.json"):
            compare(client, handle_file(EXAMPLE), ckpts=("checkpoint-500", "(none)", "(none)"))


def test_examples_that_cannot_be_answered_do_not_stop_the_space(tiny_dir, tmp_path):
    """A pixel limit below the shipped examples' 64x64: each cached example says why, and the app serves."""
    env = {"VLM_LAB_CHECKPOINTS": str(tiny_dir), "VLM_LAB_MAX_PIXELS": "3000"}
    with running_space(env, workdir=tmp_path / "app") as (url, log_path):
        assert re.search(r"an example could not be answered: the file '[\w-]+\.png' is 64x64 = 4,096 pixels, over "
                         r"this Space's limit of 3,000 pixels", log_path.read_text())
        cached = "".join(p.read_text() for p in (tmp_path / "app" / "examples-cache").glob("*/log.csv"))
        assert len(re.findall(r"could not answer: the file '[\w-]+\.png' is 64x64", cached)) == len(
            list((SPACE / "examples").glob("*.png")))
        small = tmp_path / "small.png"
        Image.open(EXAMPLE).resize((32, 32)).save(small)
        client = Client(url, verbose=False, analytics_enabled=False)
        assert compare(client, handle_file(small), ckpts=("checkpoint-1000", "(none)", "(none)"))[0][0] == "checkpoint-1000"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("variable, value, message", [
    ("VLM_LAB_DTYPE", "fp16", "cannot start: VLM_LAB_DTYPE='fp16': use one of auto, float32, float16, bfloat16"),
    ("VLM_LAB_TARGET", "t4", "cannot start: VLM_LAB_TARGET='t4': unknown target 't4'; use one of cpu-basic, t4-small"),
    ("VLM_LAB_QUEUE_SIZE", "0", "cannot start: VLM_LAB_QUEUE_SIZE='0' must be at least 1"),
    ("VLM_LAB_MAX_FILE_SIZE", "20MiB", "cannot start: VLM_LAB_MAX_FILE_SIZE='20MiB': not a file size Gradio reads"),
    pytest.param("VLM_LAB_DEVICE", "cuda", "cannot start: VLM_LAB_DEVICE=cuda but CUDA is not available here; use "
                 "VLM_LAB_DEVICE=cpu (or VLM_LAB_DEVICE=auto)", marks=pytest.mark.skipif(_has_cuda(), reason="needs no CUDA")),
])
def test_a_setting_the_space_cannot_start_with_is_one_line_in_its_log(tiny_dir, tmp_path, variable, value, message):
    with pytest.raises(RuntimeError, match="exited with 2"):
        with running_space({"VLM_LAB_CHECKPOINTS": str(tiny_dir), variable: value}, workdir=tmp_path):
            pass
    log = (tmp_path / "space.log").read_text()
    assert message in log and "Traceback" not in log


def _call_with_server_path(url: str, path: str) -> str:
    """``/compare`` over plain HTTP with a file already on the server, as a page open for hours sends it."""
    import json
    import urllib.request

    body = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, "What color is the shape?",
                     "checkpoint-1000", "(none)", "(none)", "greedy", 8]}
    req = urllib.request.Request(url + "/gradio_api/call/compare", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        event = json.load(r)["event_id"]
    with urllib.request.urlopen(f"{url}/gradio_api/call/compare/{event}") as r:
        return r.read().decode()


def test_old_uploads_are_deleted_and_a_late_compare_says_upload_again(tiny_dir, tmp_path):
    uploads = tmp_path / "uploads"
    env = {"VLM_LAB_CHECKPOINTS": str(tiny_dir), "VLM_LAB_UPLOAD_TTL_S": "1", "GRADIO_TEMP_DIR": str(uploads)}
    photo = tmp_path / "visitor.png"
    img = Image.open(EXAMPLE).convert("RGB")
    img.putpixel((0, 0), (1, 2, 3))  # not an example's bytes: Gradio keeps the examples' files
    img.save(photo)
    with running_space(env, workdir=tmp_path / "app") as (url, _):
        client = Client(url, verbose=False, analytics_enabled=False)
        assert compare(client, handle_file(photo))[1][1] == "red"
        (stored,) = uploads.glob("*/visitor.png")
        deadline = time.monotonic() + 60  # deleted every second once a second old; generous for a loaded machine
        while stored.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not stored.exists(), "uploads are never deleted: a long-running Space fills its disk"
        assert "the uploaded image is gone from the server; upload it again" in _call_with_server_path(url, str(stored))
        assert compare(client, handle_file(photo))[1][1] == "red"  # uploading again works


def test_front_matter_parses_and_pins_the_gradio_it_runs():
    from huggingface_hub import SpaceCard, SpaceCardData

    card = SpaceCard.load(SPACE / "README.md")
    data = card.data
    assert isinstance(data, SpaceCardData)
    assert (data.sdk, data.app_file, data.suggested_hardware) == ("gradio", "app.py", "t4-small")
    assert data.title and data.emoji and data.colorFrom and data.colorTo
    assert 0 < len(data.short_description) <= 60
    assert str(data.python_version) == "3.11"
    pins = dict(line.split("==") for line in (SPACE / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert data.sdk_version == pins["gradio"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    project_pins = dict(dep.split("==") for dep in project)
    for name, version in pins.items():
        assert project_pins.get(name) == version, f"space/requirements.txt pins {name}=={version}, pyproject.toml {project_pins.get(name)}"
    assert "-e" not in (SPACE / "requirements.txt").read_text()
    assert len(list((SPACE / "examples").glob("*.png"))) >= 3


def test_the_limits_an_owner_sets_reach_the_running_space(tiny_dir, tmp_path):
    """VLM_LAB_MAX_FILE_SIZE, VLM_LAB_MAX_PROMPT_CHARS and VLM_LAB_DEFAULT_MAX_NEW_TOKENS were not read (the log called
    them typos): an owner could change the upload size, the question length and the slider's start only in Python."""
    env = {"VLM_LAB_CHECKPOINTS": str(tiny_dir / "checkpoint-1000"), "VLM_LAB_MAX_FILE_SIZE": "200b",
           "VLM_LAB_MAX_PROMPT_CHARS": "30", "VLM_LAB_DEFAULT_MAX_NEW_TOKENS": "1"}
    small, big = SPACE / "examples" / "blue-square.png", EXAMPLE  # 166 and 311 bytes
    assert small.stat().st_size <= 200 < big.stat().st_size
    with running_space(env, workdir=tmp_path) as (url, log_path):
        client = Client(url, verbose=False, analytics_enabled=False)
        assert compare(client, handle_file(small), ckpts=("checkpoint-1000", "(none)", "(none)"))[0][1] == "blue"
        with pytest.raises(ValueError, match="red-circle.png exceeds the maximum file size of 200 bytes"):  # Gradio's
            compare(client, handle_file(big), ckpts=("checkpoint-1000", "(none)", "(none)"))
        with pytest.raises(AppError, match="the question is 31 characters; this Space takes at most 30: shorten it"):
            compare(client, handle_file(small), "x" * 31, ckpts=("checkpoint-1000", "(none)", "(none)"))
        # the batched API's default: one new token ("blue" and no end token: cut off there)
        answer, new_tokens, _, error = client.predict(handle_file(small), "What color is the shape?", "checkpoint-1000",
                                                      api_name="/compare_batch")
        assert (answer, new_tokens, error) == ("blue", 1, "")
        log = log_path.read_text()
    assert "not a variable this app reads" not in log
    assert "rows counted for questions of up to 30 characters" in log
    assert re.search(r"INFO vlm_lab.space: settings: .*max_prompt_chars=30, .*default_max_new_tokens=1, .*"
                     r"max_file_size=200b", log), log
