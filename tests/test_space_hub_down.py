"""A Space whose hub is down when it starts: the real ``space/app.py`` with hub checkpoints, ``HF_ENDPOINT`` a closed
port or the hub emulator answering 503 to everything, and the local Hugging Face cache holding some of them.

huggingface_hub retries every file it cannot find in the cache (1 + 2 + 4 + 8 + 8 s) when the hub fails, and the memory
plan looked for each checkpoint's optional processor files three times: minutes before the Space served anything. Now the
hub is asked once (``check_hub_config``); the cached checkpoints are planned and served from the cache, and the log names
each checkpoint that could not be planned, and why.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from space_server import running_space
from test_checkpoint_refs import add_snapshot, hf_cache  # noqa: F401 - a fixture
from test_hub_online import hub  # noqa: F401 - a fixture: org/run, checkpoint-0 to checkpoint-1000
from test_hub_unreachable import closed_endpoint  # noqa: F401 - a fixture

pytestmark = pytest.mark.slow

CACHED = ("org/run:checkpoint-0", "org/run:checkpoint-1000")
NOT_CACHED = "org/gone:checkpoint-5"


def start(endpoint: str, hf_cache: Path, tiny_checkpoints, tmp_path: Path):
    """The Space started against ``endpoint`` with two cached checkpoints of org/run and one of a repo never downloaded."""
    add_snapshot(hf_cache, "org/run", None, folders={"checkpoint-0": tiny_checkpoints[0], "checkpoint-1000": tiny_checkpoints[-1]})
    env = {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(hf_cache.parent), "HF_HUB_DISABLE_TELEMETRY": "1",
           "VLM_LAB_CHECKPOINTS": ",".join((*CACHED, NOT_CACHED))}
    return running_space(env, workdir=tmp_path / "app", drop_env=("HF_", "HUGGING"))


def check_start_log(log: str, endpoint: str) -> None:
    assert "Retrying in" not in log  # huggingface_hub's backoff, 23 s for each file looked up
    for spec in CACHED:  # planned from the cache
        assert f"memory verdict on cpu-basic: {spec} (float32, batch 1) fits" in log, log
    (gone,) = [line for line in log.splitlines() if "memory verdict" in line and NOT_CACHED in line]
    assert f"{NOT_CACHED}: no estimate (CheckpointNotFoundError: " in gone
    assert f"the hub at {endpoint} could not be reached" in gone or "could not be reached" in gone, gone
    assert "HubUnreachableWarning" in log and f"the hub at {endpoint} could not be reached" in log


def test_a_space_whose_hub_port_is_closed_starts_from_the_cache_and_names_what_it_cannot_plan(
        hf_cache, closed_endpoint, tiny_checkpoints, tmp_path):
    with start(closed_endpoint, hf_cache, tiny_checkpoints, tmp_path) as (url, log_path):
        log = log_path.read_text()
    check_start_log(log, closed_endpoint)
    assert "left out of the defaults" in log and NOT_CACHED in log  # the other two answer the examples


def test_a_space_whose_hub_answers_503_asks_it_once_not_per_checkpoint_and_file(hub, hf_cache, tiny_checkpoints, tmp_path):
    hub.force_status[""] = 503  # every route
    with start(hub.endpoint, hf_cache, tiny_checkpoints, tmp_path) as (url, log_path):
        log = log_path.read_text()
    check_start_log(log, hub.endpoint)
    asked = [(q["method"], q["path"]) for q in hub.requests]
    assert asked == [("HEAD", "/org/run/resolve/main/checkpoint-0/config.json")]  # once, not per checkpoint and file
