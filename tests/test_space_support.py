"""vlm_lab.space_support in process: settings from the environment, image checks, plans, the service."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from PIL import Image

from vlm_lab import space_support as ss
from vlm_lab.errors import CheckpointNotFoundError, ConfigError, DataError

EXAMPLES = Path(__file__).resolve().parents[1] / "space" / "examples"


@pytest.fixture(scope="module")
def service(tiny_dir):
    return ss.ComparisonService(ss.SpaceSettings(checkpoints=(str(tiny_dir),), device="cpu"))


def test_prepare_environment_uses_persistent_storage_and_turns_analytics_off(tmp_path):
    env: dict[str, str] = {}
    notes = ss.prepare_environment(env, data_dir=str(tmp_path))
    assert env == {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HOME": str(tmp_path / ".huggingface")}
    assert len(notes) == 2
    env = {"HF_HOME": "/mine", "GRADIO_ANALYTICS_ENABLED": "True"}  # what the user set wins
    ss.prepare_environment(env, data_dir=str(tmp_path))
    assert env == {"HF_HOME": "/mine", "GRADIO_ANALYTICS_ENABLED": "True"}
    env = {}
    ss.prepare_environment(env, data_dir=str(tmp_path / "no-such-volume"))
    assert "HF_HOME" not in env


def test_settings_from_env_prefers_the_variable_then_next_to_app_then_project_root(tmp_path, tiny_dir):
    app = tmp_path / "app"
    root = tmp_path / "repo"
    (root / "checkpoints" / "shapes").mkdir(parents=True)
    app.mkdir()
    env = {"VLM_LAB_ROOT": str(root)}
    assert ss.SpaceSettings.from_env(env, app_dir=app).checkpoints == (str(root / "checkpoints" / "shapes"),)
    (app / "checkpoints" / "shapes").mkdir(parents=True)  # as the publisher stages them
    assert ss.SpaceSettings.from_env(env, app_dir=app).checkpoints == (str(app / "checkpoints" / "shapes"),)
    env["VLM_LAB_CHECKPOINTS"] = f" {tiny_dir} , org/model@v1:checkpoint-9, checkpoints/shapes "
    settings = ss.SpaceSettings.from_env(env, app_dir=app)
    # hub ids stay as written; a path inside the Space becomes absolute
    assert settings.checkpoints == (str(tiny_dir), "org/model@v1:checkpoint-9", str(app / "checkpoints" / "shapes"))


def test_settings_errors_name_the_fix(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="run `make checkpoints`.*or set VLM_LAB_CHECKPOINTS"):
        ss.SpaceSettings.from_env({}, app_dir=tmp_path)
    with pytest.raises(ConfigError, match="VLM_LAB_QUEUE_SIZE='lots' is not a whole number"):
        ss.SpaceSettings.from_env({"VLM_LAB_CHECKPOINTS": "a/b", "VLM_LAB_QUEUE_SIZE": "lots"}, app_dir=tmp_path)
    with pytest.raises(ConfigError, match="queue_size must be a positive integer"):
        ss.SpaceSettings(checkpoints=("a/b",), queue_size=0)
    with pytest.raises(ConfigError, match="unknown SpaceSettings field"):
        ss.SpaceSettings.from_dict({"checkpoints": ("a/b",), "queue": 3})


def test_read_image_accepts_paths_payloads_and_pil_images_as_rgb(tmp_path):
    path = EXAMPLES / "red-circle.png"
    for value in (str(path), {"path": str(path), "meta": {"_type": "gradio.FileData"}}, Image.open(path)):
        img = ss.read_image(value, max_pixels=10_000)
        assert img.mode == "RGB" and img.size == (64, 64)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 128)).save(rgba)
    assert ss.read_image(str(rgba), max_pixels=100).mode == "RGB"


@pytest.mark.parametrize("value, message", [
    (None, "no image: upload an image"),
    ("", "no image: upload an image"),
    ({"path": None}, "no image"),
    ("/no/such/upload.png", "gone from the server; upload it again"),
])
def test_read_image_says_what_is_missing(value, message):
    with pytest.raises(DataError, match=message):
        ss.read_image(value, max_pixels=10_000)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (200, 100)).save(big)
    with pytest.raises(DataError, match=r"200x100 = 20,000 pixels, over this Space's limit of 10,000; resize it"):
        ss.read_image(str(big), max_pixels=10_000)
    with pytest.raises(DataError, match="over this Space's limit"):
        ss.read_image(Image.new("RGB", (200, 100)), max_pixels=10_000)


def test_serving_plan_on_cpu_keeps_generations_times_threads_near_the_cores():
    plan = ss.plan_serving(ss.SpaceSettings(checkpoints=("a/b",), device="cpu", queue_size=7), verdict_batch_size=12)
    cores = os.cpu_count() or 1
    assert plan.device == "cpu" and plan.queue_size == 7 and plan.max_batch_size == 12
    assert 1 <= plan.generate_limit <= 4 and plan.generate_limit * plan.torch_threads <= max(cores, 1)
    assert (plan.batch_limit, plan.batch_group) == (1, "batch")
    assert plan.cheap_limit > plan.generate_limit and plan.max_threads >= plan.generate_limit + plan.cheap_limit
    explicit = ss.plan_serving(ss.SpaceSettings(checkpoints=("a/b",), device="cpu", max_batch_size=3), verdict_batch_size=12)
    assert explicit.max_batch_size == 3  # VLM_LAB_MAX_BATCH_SIZE wins over the verdict


def test_memory_plan_from_the_verdicts(service):
    plan = service.memory
    assert plan.target == "cpu-basic" and len(plan.notes) == len(service.labels)
    assert 1 <= plan.max_batch_size <= 64 and plan.co_resident >= len(service.labels)
    assert 0 < plan.cache_budget_bytes < 16 * 10**9
    assert service.cache.budget_bytes == plan.cache_budget_bytes
    unknown = ss.plan_memory([service.refs["checkpoint-0"], "nobody/nothing"], device="cpu")
    assert any("nobody/nothing: no estimate" in n for n in unknown.notes) and unknown.max_batch_size is not None


def test_choices_default_to_first_middle_last(service):
    assert service.labels == [f"checkpoint-{n}" for n in (0, 250, 500, 750, 1000)]
    assert service.default_selection() == ["checkpoint-0", "checkpoint-500", "checkpoint-1000"]


@pytest.mark.parametrize("strategy, tokens, message", [
    ("beam(0)", 8, "beam needs a whole number"),
    ("greedy", 0, "max new tokens must be between 1 and 64"),
    ("greedy", 65, "max new tokens must be between 1 and 64"),
    ("greedy", "many", "max new tokens must be a whole number"),
])
def test_generation_choices_are_validated(service, strategy, tokens, message):
    with pytest.raises(ConfigError, match=message):
        service.generation_config(strategy, tokens)


def test_compare_runs_each_selected_checkpoint_once_in_order(service):
    image = str(EXAMPLES / "green-triangle.png")
    answers = service.compare(image, "What shape is it?", ["checkpoint-1000", "checkpoint-1000", ss.NONE_CHOICE], "greedy", 8)
    assert [(a.checkpoint, a.text, a.memory_kind) for a in answers] == [("checkpoint-1000", "triangle", "weights")]
    with pytest.raises(ConfigError, match="compare at most 3"):
        service.compare(image, "What shape is it?", ["checkpoint-0", "checkpoint-250", "checkpoint-500", "checkpoint-750"])


def test_batch_answers_good_requests_and_flags_bad_ones(service, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("no pixels here")
    green, purple = str(EXAMPLES / "green-triangle.png"), str(EXAMPLES / "purple-diamond.png")
    answers = service.answer_batch(
        [green, str(bad), purple, purple, green],
        ["What color is the shape?", "What color is the shape?", "Describe the image.", "", "What shape is it?"],
        ["checkpoint-1000", "checkpoint-1000", "checkpoint-1000", "checkpoint-1000", "checkpoint-0"],
        [8, None, 8, 8, 999],
    )
    assert [a.text for a in answers[:3:2]] == ["green", "a purple diamond"]
    assert answers[0].error == answers[2].error == ""
    assert "not an image" in answers[1].error
    assert "no question" in answers[3].error
    assert "between 1 and 64" in answers[4].error


def test_out_of_memory_empties_the_cache_and_says_what_to_lower(service):
    import torch

    from vlm_lab.errors import MemoryBudgetError

    service.compare(str(EXAMPLES / "red-circle.png"), "What color is the shape?", ["checkpoint-0", "checkpoint-1000"])
    assert len(service.cache) >= 2
    with pytest.raises(MemoryBudgetError, match="cache was emptied. Compare fewer checkpoints at once or lower 'max new tokens'"):
        with service.out_of_memory_guard("checkpoint-1000"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")  # what torch raises on a full GPU
    assert len(service.cache) == 0
    again = service.compare(str(EXAMPLES / "red-circle.png"), "What color is the shape?", ["checkpoint-1000"])
    assert again[0].text == "red"  # reloaded, still serving


def test_interactions_go_to_wandb_only_with_a_key(tiny_dir, tmp_path, monkeypatch, caplog):
    assert not ss.InteractionLog({}).enabled
    monkeypatch.setenv("WANDB_MODE", "offline")  # a key makes it on; offline keeps the test off the network
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    interactions = ss.InteractionLog({"WANDB_API_KEY": "0" * 40}, config={"space": "test"})
    assert interactions.enabled
    service = ss.ComparisonService(ss.SpaceSettings(checkpoints=(str(tiny_dir),), device="cpu"), interactions=interactions)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        service.compare(str(EXAMPLES / "blue-square.png"), "What shape is it?", ["checkpoint-1000"])
        interactions.close()
    runs = list((tmp_path / "wandb_dir" / "wandb").glob("offline-run-*/run-*.wandb"))
    problems = [str(w.message) for w in caught if "W&B" in str(w.message)] + [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert len(runs) == 1, (runs, problems)
    assert b"checkpoint-1000/latency_s" in runs[0].read_bytes(), problems  # the interaction was logged, not just the run
