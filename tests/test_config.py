"""The typed configs: what ``from_dict`` and ``__post_init__`` refuse, and how they say it."""

from __future__ import annotations

import pytest

from vlm_lab.cli import main
from vlm_lab.config import CompareConfig, GenerationConfig, MemoryConfig, PublishConfig, SweepConfig, TrainConfig
from vlm_lab.errors import ConfigError
from vlm_lab.space_settings import SpaceSettings


@pytest.mark.parametrize(
    "cls, values, message",
    [
        (SweepConfig, {"notebook": "nb.ipynb"}, r"missing required SweepConfig field\(s\): name \(a SweepConfig needs name, notebook\); add it"),
        (SweepConfig, {"grid": {"a": [1]}}, r"field\(s\): name, notebook .*add them"),
        (PublishConfig, {"hardware": "cpu-basic"}, r"missing required PublishConfig field\(s\): space"),
        (SpaceSettings, {"device": "cpu"}, r"missing required SpaceSettings field\(s\): checkpoints"),
    ],
)
def test_missing_required_fields_are_named(cls, values, message):
    with pytest.raises(ConfigError, match=message):
        cls.from_dict(values)


@pytest.mark.parametrize(
    "cls, values, message",
    [
        (SweepConfig, {"name": "s", "notebook": "nb.ipynb", "jobs": "2"}, r"jobs must be a whole number, got '2' \(str\)"),
        (SweepConfig, {"name": 7, "notebook": "nb.ipynb"}, r"name must be text, got 7 \(int\)"),
        (SweepConfig, {"name": "s", "notebook": "nb.ipynb", "grid": [1]}, r"grid must be a mapping"),
        (CompareConfig, {"seed": 1.5}, r"seed must be a whole number, got 1.5"),
        (CompareConfig, {"use_cache": "yes"}, r"use_cache must be true or false"),
        (CompareConfig, {"checkpoints": ["a", 3]}, r"checkpoints must be a list of text"),
        (CompareConfig, {"max_new_tokens": True}, r"max_new_tokens must be a whole number, got True"),
        (TrainConfig, {"learning_rate": "fast"}, r"learning_rate must be a number"),
        (MemoryConfig, {"measure": 1}, r"measure must be true or false"),
        (PublishConfig, {"space": "a/b", "sleep_time": "1h"}, r"sleep_time must be a whole number or null"),
        (PublishConfig, {"space": "a/b", "timeout": "soon"}, r"timeout must be a number"),
        (SpaceSettings, {"checkpoints": "a/b", "queue_size": "8"}, r"queue_size must be a whole number"),
    ],
)
def test_wrong_types_are_named(cls, values, message):
    with pytest.raises(ConfigError, match=message):
        cls.from_dict(values)


def test_from_dict_takes_what_post_init_coerces():
    config = CompareConfig.from_dict({"checkpoints": "a,b", "num_samples": 3})
    assert config.checkpoints == ("a", "b")
    assert CompareConfig.from_dict({"checkpoints": ["a"]}).checkpoints == ("a",)  # a YAML list
    assert PublishConfig.from_dict({"space": "a/b", "timeout": 60, "sleep_time": None}).timeout == 60  # an int for a float


@pytest.mark.parametrize(
    "cls, values, message",
    [
        (CompareConfig, {"seed": -1}, r"seed must be a whole number from 0 to .*got -1; pick a seed >= 0"),
        (CompareConfig, {"seed": 2**64}, r"seed must be a whole number from 0"),
        (CompareConfig, {"num_samples": -1}, r"num_samples must be a whole number >= 0 \(0 = all\)"),
        (CompareConfig, {"batch_size": 0}, r"batch_size must be a positive integer"),
        (CompareConfig, {"memory_budget": "0GB"}, r"memory_budget='0GB' leaves no room"),
        (CompareConfig, {"memory_budget": "16G"}, r"memory_budget='16G' is ambiguous: write 16GB"),
        (CompareConfig, {"memory_budget": "lots"}, r"cannot read a memory size from memory_budget='lots'"),
        (CompareConfig, {"strategy": 4}, r"strategy must be text"),
        (GenerationConfig, {"seed": -5}, r"seed must be a whole number from 0"),
        (GenerationConfig, {"max_new_tokens": 0}, r"max_new_tokens must be a positive integer"),
        (TrainConfig, {"seed": -1}, r"seed must be a whole number from 0"),
        (TrainConfig, {"learning_rate": float("nan")}, r"learning_rate must be a finite number > 0"),
        (TrainConfig, {"learning_rate": float("inf")}, r"learning_rate must be a finite number > 0"),
        (TrainConfig, {"learning_rate": -0.1}, r"learning_rate must be a finite number > 0"),
        (TrainConfig, {"save_every": 0}, r"save_every must be a positive integer"),
        (SweepConfig, {"name": "s", "notebook": "nb.ipynb", "execution_timeout": -1}, r"execution_timeout must be a whole number >= 0 \(seconds; 0 = no limit\)"),
        (SweepConfig, {"name": "s", "notebook": "nb.ipynb", "shard_index": -1}, r"0-based"),
        (MemoryConfig, {"prompt_tokens": -1}, r"prompt_tokens must be a whole number >= 0"),
        (MemoryConfig, {"image_size": -8}, r"image_size must be a whole number >= 0 \(0 = the largest"),
    ],
)
def test_meaningless_numbers_are_refused_up_front(cls, values, message):
    with pytest.raises(ConfigError, match=message):
        cls(**values)


def test_cli_refuses_a_negative_seed_before_loading_anything(tmp_path, capsys):
    out = tmp_path / "compare"
    assert main(["compare", "--seed", "-1", "--num-samples", "2", "--device", "cpu", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ConfigError: --seed must be a whole number from 0") and err.count("\n") == 1
    assert not out.exists()  # refused before the comparison started
