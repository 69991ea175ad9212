"""vlm_lab.space_settings: the process environment, settings from the Space variables, the serving plan."""

from __future__ import annotations

import os
import re

import pytest

from vlm_lab import space_settings as ss
from vlm_lab.errors import CheckpointNotFoundError, ConfigError


def test_prepare_environment_uses_persistent_storage_and_turns_analytics_off(tmp_path):
    env: dict[str, str] = {}
    notes = ss.prepare_environment(env, data_dir=str(tmp_path))
    assert env == {"GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_RESET_EXAMPLES_CACHE": "True",
                   "HF_HOME": str(tmp_path / ".huggingface")}
    assert len(notes) == 3
    mine = {"HF_HOME": "/mine", "GRADIO_ANALYTICS_ENABLED": "True", "GRADIO_RESET_EXAMPLES_CACHE": "False"}
    env = dict(mine)  # what the user set wins
    ss.prepare_environment(env, data_dir=str(tmp_path))
    assert env == mine
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


def test_app_py_run_from_the_repository_finds_the_project_checkpoints(tmp_path):
    """`python space/app.py` (or `gradio space/app.py`) from a checkout, without `make space`'s VLM_LAB_ROOT,
    said to build the checkpoints (`make checkpoints`) that were there all along."""
    repo = tmp_path / "vlm_lab-checkout"
    for folder in ("space", "vlm_lab", "checkpoints/shapes"):
        (repo / folder).mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\nname = 'vlm_lab'\n")
    assert ss.SpaceSettings.from_env({}, app_dir=repo / "space").checkpoints == (str(repo / "checkpoints" / "shapes"),)
    (repo / "pyproject.toml").unlink()  # not the repository (the Space's parent folder): not looked in
    with pytest.raises(CheckpointNotFoundError, match="no embedded checkpoints"):
        ss.SpaceSettings.from_env({}, app_dir=repo / "space")


def test_settings_errors_name_the_fix(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="run `make checkpoints`.*or set VLM_LAB_CHECKPOINTS"):
        ss.SpaceSettings.from_env({}, app_dir=tmp_path)
    with pytest.raises(ConfigError, match="VLM_LAB_QUEUE_SIZE='lots' is not a whole number"):
        ss.SpaceSettings.from_env({"VLM_LAB_CHECKPOINTS": "a/b", "VLM_LAB_QUEUE_SIZE": "lots"}, app_dir=tmp_path)
    with pytest.raises(ConfigError, match="queue_size must be a positive integer"):
        ss.SpaceSettings(checkpoints=("a/b",), queue_size=0)
    for name, value in [("VLM_LAB_UPLOAD_TTL_S", "0"), ("VLM_LAB_QUEUE_SIZE", "-3"), ("VLM_LAB_MAX_BATCH_SIZE", "-1")]:
        with pytest.raises(ConfigError, match=rf"{name}='{value}' must be at least \d; set it to e.g. \d+"):
            ss.SpaceSettings.from_env({"VLM_LAB_CHECKPOINTS": "a/b", name: value}, app_dir=tmp_path)
    short = ss.SpaceSettings.from_env({"VLM_LAB_CHECKPOINTS": "a/b", "VLM_LAB_MAX_NEW_TOKENS": "8"}, app_dir=tmp_path)
    assert (short.max_new_tokens, short.default_max_new_tokens) == (8, 8)  # a short limit, not a start-up error
    assert ss.SpaceSettings.from_env({"VLM_LAB_CHECKPOINTS": "a/b", "VLM_LAB_UPLOAD_TTL_S": "600"},
                                     app_dir=tmp_path).upload_ttl_s == 600
    with pytest.raises(ConfigError, match="unknown SpaceSettings field"):
        ss.SpaceSettings.from_dict({"checkpoints": ("a/b",), "queue": 3})


def test_serving_plan_on_cpu_keeps_generations_times_threads_near_the_cores():
    plan = ss.plan_serving(ss.SpaceSettings(checkpoints=("a/b",), device="cpu", queue_size=7), verdict_batch_size=12)
    cores = os.cpu_count() or 1
    assert plan.device == "cpu" and plan.queue_size == 7 and plan.max_batch_size == 12
    assert 1 <= plan.generate_limit <= 4 and plan.generate_limit * plan.torch_threads <= max(cores, 1)
    assert (plan.batch_limit, plan.batch_group) == (1, "batch")
    assert plan.cheap_limit > plan.generate_limit and plan.max_threads >= plan.generate_limit + plan.cheap_limit
    explicit = ss.plan_serving(ss.SpaceSettings(checkpoints=("a/b",), device="cpu", max_batch_size=3), verdict_batch_size=12)
    assert explicit.max_batch_size == 3  # VLM_LAB_MAX_BATCH_SIZE wins over the verdict


@pytest.mark.parametrize("variables, message", [
    ({"VLM_LAB_MAX_NEW_TOKENS": "abc"}, "--var VLM_LAB_MAX_NEW_TOKENS='abc' is not a whole number; set it to e.g. 64; "
                                        "the Space would not start with it"),
    ({"VLM_LAB_MAX_NEW_TOKEN": "8"}, "--var VLM_LAB_MAX_NEW_TOKEN (did you mean VLM_LAB_MAX_NEW_TOKENS?): not a variable"),
    ({"vlm_lab_dtype": "float16"}, "--var vlm_lab_dtype (did you mean VLM_LAB_DTYPE?)"),
    ({"VLM_LAB_DTYPE": "fp16"}, "--var VLM_LAB_DTYPE='fp16': use one of auto, float32, float16, bfloat16"),
    ({"VLM_LAB_DEVICE": "gpu"}, "--var VLM_LAB_DEVICE='gpu': use one of auto, cpu, cuda"),
    ({"VLM_LAB_TARGET": "t4"}, "--var VLM_LAB_TARGET='t4': unknown target 't4'; use one of cpu-basic, t4-small"),
    ({"VLM_LAB_CACHE_BUDGET": "lots"}, "--var VLM_LAB_CACHE_BUDGET='lots': cannot read a memory size"),
    ({"VLM_LAB_HUB_REFRESH_S": "-1"}, "--var VLM_LAB_HUB_REFRESH_S='-1' must be at least 0"),
    ({"VLM_LAB_MAX_PROMPT_CHARS": "0"}, "--var VLM_LAB_MAX_PROMPT_CHARS='0' must be at least 1; set it to e.g. 500"),
    ({"VLM_LAB_MAX_PROMPT_CHARS": "1k"}, "--var VLM_LAB_MAX_PROMPT_CHARS='1k' is not a whole number; set it to e.g. 500"),
    # Gradio's launch(max_file_size=) takes a whole number and b, kb, mb, gb or tb; it raises at launch on anything else
    ({"VLM_LAB_MAX_FILE_SIZE": "1.5mb"}, "--var VLM_LAB_MAX_FILE_SIZE='1.5mb': not a file size Gradio reads; use a whole "
                                         "number and b, kb, mb, gb or tb (1 kb = 1024 bytes), e.g. 20mb"),
    ({"VLM_LAB_MAX_FILE_SIZE": "20 megabytes"}, "--var VLM_LAB_MAX_FILE_SIZE='20 megabytes': not a file size Gradio reads"),
    ({"VLM_LAB_MAX_FILE_SIZE": "0mb"}, "--var VLM_LAB_MAX_FILE_SIZE='0mb': every upload would be refused; use e.g. 20mb"),
    ({"VLM_LAB_DEFAULT_MAX_NEW_TOKENS": "100"}, "--var VLM_LAB_DEFAULT_MAX_NEW_TOKENS='100' exceeds VLM_LAB_MAX_NEW_TOKENS "
                                                "(64): set it to at most 64, or raise VLM_LAB_MAX_NEW_TOKENS"),
])
def test_space_variables_the_app_cannot_start_with_are_refused(tmp_path, variables, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ss.check_space_variables(variables, app_dir=tmp_path)


def test_space_variables_the_app_reads_pass(tmp_path):
    ss.check_space_variables({"VLM_LAB_MAX_NEW_TOKENS": "8", "VLM_LAB_DEVICE": "cuda:0", "VLM_LAB_DTYPE": "float16",
                              "VLM_LAB_TARGET": "l4x1", "VLM_LAB_CACHE_BUDGET": "12GB", "LOG_LEVEL": "info",
                              "VLM_LAB_CACHE": "/data/vlm-lab",  # the library's cache folder, not a typo
                              "VLM_LAB_CHECKPOINTS": ""},  # empty: the embedded ones, staged by the publish
                             app_dir=tmp_path)  # no checkpoints variable: the publish stages or points at them


def test_every_limit_a_visitor_meets_is_a_space_variable(tmp_path):
    """The question's length, the upload's size and the slider's start were Python-only: an owner had to edit the
    package to let visitors ask longer questions, upload bigger photos or get longer answers by default."""
    env = {"VLM_LAB_CHECKPOINTS": "a/b", "VLM_LAB_MAX_PROMPT_CHARS": "2000", "VLM_LAB_MAX_FILE_SIZE": " 50 MB ",
           "VLM_LAB_MAX_NEW_TOKENS": "256", "VLM_LAB_DEFAULT_MAX_NEW_TOKENS": "128"}
    settings = ss.SpaceSettings.from_env(env, app_dir=tmp_path)
    assert (settings.max_prompt_chars, settings.max_file_size, settings.default_max_new_tokens) == (2000, "50mb", 128)
    with pytest.raises(ConfigError, match=re.escape("VLM_LAB_MAX_FILE_SIZE='20': not a file size Gradio reads")):
        ss.SpaceSettings.from_env({**env, "VLM_LAB_MAX_FILE_SIZE": "20"}, app_dir=tmp_path)  # 20 bytes, or 20 MB?
    with pytest.raises(ConfigError, match=re.escape("max_file_size='20 MiB': not a file size Gradio reads")):
        ss.SpaceSettings(checkpoints=("a/b",), max_file_size="20 MiB")  # from Python too: Gradio would raise at launch


def test_the_space_card_and_the_app_list_every_space_variable():
    """An owner reads space/README.md (the Space's card) and app.py's docstring to know what to set."""
    from space_server import ROOT

    card = (ROOT / "space" / "README.md").read_text()
    app = (ROOT / "space" / "app.py").read_text()
    assert [name for name in ss.SPACE_VARIABLES if f"`{name}`" not in card] == []
    assert [name for name in ss.SPACE_VARIABLES if name not in app.split('"""')[1]] == []


def test_every_space_variable_is_read_by_the_settings():
    """SPACE_VARIABLES is the list a typo is checked against: each name in it must be one from_env reads."""
    import inspect

    source = inspect.getsource(ss.SpaceSettings.from_env)
    assert [name for name in ss.SPACE_VARIABLES if f'"{name}"' not in source] == []
    assert sorted(set(re.findall(r'"(VLM_LAB_[A-Z_]+)"', source))) == sorted(ss.SPACE_VARIABLES)


@pytest.mark.parametrize("hardware, slots", [
    (ss.Hardware(device="cuda", cores=4, gpu_memory=15360 * 2**20, gpu_name="Tesla T4"), (1, 1, True)),
    (ss.Hardware(device="cuda", cores=8, gpu_memory=81920 * 2**20, gpu_name="A100"), (2, 2, True)),
    (ss.Hardware(device="cpu", cores=2), (2, 1, False)),
    (ss.Hardware(device="cpu", cores=16), (4, 1, False)),
])
def test_generations_at_once_follow_the_hardware(hardware, slots):
    """The serving plan and the memory plan (which counts them all) take them from one place."""
    assert ss.generation_slots(hardware) == ss.Slots(compare=slots[0], batch=slots[1], shared=slots[2])
    plan = ss.plan_serving(ss.SpaceSettings(checkpoints=("a/b",)), hardware=hardware)
    assert (plan.generate_limit, plan.batch_limit, plan.batch_group) == (slots[0], slots[1], ("batch", "generate")[slots[2]])
