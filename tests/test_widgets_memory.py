"""The explorer's Compare and another cell sharing one model cache with a budget for one model.

The Compare runs in a background thread while the kernel runs other cells (a ``vlm_lab.compare`` over the same
``shared_cache``): a cell's load must wait for the room of the model the explorer answers with, not evict it
while it answers (evicted, it stays in memory beside the cell's model: on a GPU, out of memory). Real tiny
checkpoints, real threads; the run is held at a known point by a widget observer (it runs in the run's thread).
"""

from __future__ import annotations

import threading

import pytest
import torch

from test_model_cache_threads import Run, until
from test_space_service_threads import Loads
from vlm_lab.checkpoints import resolve
from vlm_lab.model_cache import ModelCache, estimate_nbytes
from vlm_lab.widgets import explore

pytestmark = pytest.mark.timeout(180)


def test_a_cells_load_waits_for_the_room_of_the_model_the_explorer_answers_with(tiny_checkpoints):
    last, other = (resolve(str(p))[0] for p in (tiny_checkpoints[-1], tiny_checkpoints[1]))
    cache = ModelCache(budget_bytes=int(1.5 * estimate_nbytes(last, torch.float32)))
    e = explore([str(tiny_checkpoints[-1])], "shapes:val:2", device="cpu", cache=cache)
    e.checkpoints.value = (0,)
    reached, release = threading.Event(), threading.Event()

    def hold(change) -> None:  # the run's thread, its model loaded, about to answer
        if "Running checkpoint-1000" in change["new"] and not reached.is_set():
            reached.set()
            release.wait()

    e.output.observe(hold, names="value")
    loads = Loads(cache)
    try:
        e.button.click()
        reached.wait()
        cell = Run(lambda: cache.get(other, device="cpu"))
        until(lambda: len(loads.seen) == 2 or cache.stats["waits"] >= 1)
        assert [name for name, *_ in loads.seen] == ["checkpoint-1000"], "the cell's load evicted the explorer's model"
    finally:
        release.set()
    (row,) = e.wait()
    cell.join()
    assert row["checkpoint"] == "checkpoint-1000" and row["text"] and not row.get("error")
    assert cell.error is None and cache.loaded == ["checkpoint-250"]
    assert [name for name, *_ in loads.seen] == ["checkpoint-1000", "checkpoint-250"]  # the explorer's, loaded once
    assert cache.retained_bytes == 0
