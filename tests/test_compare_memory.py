"""compare and compare_one with a model cache budget for one model: a checkpoint is let go before the next loads.

Real tiny checkpoints and real loads. The cache's loader notes, as each load begins, the bytes of evicted models
still held (``ModelCache.retained_bytes``): memory the budget no longer counts but that is not freed, so the
model being loaded and the one before it are in memory together (on a T4: past the budget, out of memory).
"""

from __future__ import annotations

import pytest
import torch

from test_space_service_threads import IMAGE, COLOR, Loads
from vlm_lab.checkpoints import resolve
from vlm_lab.compare import compare, compare_one
from vlm_lab.config import CompareConfig, GenerationConfig
from vlm_lab.model_cache import ModelCache, estimate_nbytes

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cache(tiny_checkpoints):
    """Room for one tiny model, not two; its loader notes what each load found."""
    cache = ModelCache(budget_bytes=int(1.5 * estimate_nbytes(resolve(str(tiny_checkpoints[0]))[0], torch.float32)))
    cache.loads = Loads(cache)
    return cache


def test_compare_lets_each_checkpoint_go_before_the_next_one_loads(tiny_checkpoints, cache, tmp_path):
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[0]), str(tiny_checkpoints[-1])), data="shapes:val:4",
                           batch_size=2, device="cpu", output_dir=str(tmp_path / "out"))
    result = compare(config, progress=False, cache=cache)
    assert [s["checkpoint"] for s in result.summary] == ["checkpoint-0", "checkpoint-1000"]
    # checkpoint-0 was evicted for checkpoint-1000, and nothing held it any more: it was freed before the load
    assert cache.loads.seen == [("checkpoint-0", [], 0), ("checkpoint-1000", [], 0)]
    assert cache.loaded == ["checkpoint-1000"] and cache.retained_bytes == 0


def test_compare_one_lets_each_checkpoint_go_before_the_next_one_loads(tiny_checkpoints, cache):
    rows = compare_one(cache, [str(tiny_checkpoints[0]), str(tiny_checkpoints[-1])], IMAGE, COLOR,
                       GenerationConfig(max_new_tokens=4), device="cpu")
    assert [(r["checkpoint"], r["text"]) for r in rows][1] == ("checkpoint-1000", "red")
    assert cache.loads.seen == [("checkpoint-0", [], 0), ("checkpoint-1000", [], 0)]
    assert cache.loaded == ["checkpoint-1000"] and cache.retained_bytes == 0
