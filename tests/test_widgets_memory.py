"""The explorer's Compare and another cell sharing one model cache with a budget for one model.

The Compare runs in a background thread while the kernel runs other cells (a ``vlm_lab.compare`` over the same
``shared_cache``): a cell's load must wait for the room of the model the explorer answers with, not evict it
while it answers (evicted, it stays in memory beside the cell's model: on a GPU, out of memory). And the explorer
says what its checkpoint's turn is doing in the cache, as the cache's hooks tell it: waiting (for room, or for
another thread's load: Stop ends it), loading (Stop waits for the load), or not begun (Stop loads nothing). Real
tiny checkpoints, real threads; the run is held at a known point by a widget observer (it runs in the run's
thread), a loader or an estimate that waits for the test.
"""

from __future__ import annotations

import html
import threading

import pytest
import torch

from test_model_cache_threads import Run, until
from test_space_service_threads import Loads
from vlm_lab.checkpoints import resolve
from vlm_lab.model_cache import CacheWait, Holder, ModelCache, estimate_nbytes
from vlm_lab.models import load_model
from vlm_lab.widgets import explore
from vlm_lab.widgets_run import waiting_status

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


class Held:
    """``fn`` (the real loader or estimate), held on its first call until ``release`` is set; ``calls`` counts them."""

    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, 0
        self.reached, self.release = threading.Event(), threading.Event()

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if not self.reached.is_set():
            self.reached.set()
            assert self.release.wait(120), "the test never released it"
        return self.fn(*args, **kwargs)


def _said(e) -> list[str]:
    shown: list[str] = []
    e.output.observe(lambda c: shown.append(html.unescape(c["new"])), names="value")
    return shown


def test_a_load_that_evicts_an_unused_model_says_only_that_it_loads_and_stop_waits_for_the_load(tiny_checkpoints):
    """It guessed from the cache's numbers: 'It needs ... held by checkpoint-250 ... it waits for their room', and
    Stop said it stopped at once if waiting, for a load that never waited (checkpoint-250 was in no one's use)."""
    last = resolve(str(tiny_checkpoints[-1]))[0]
    loader = Held(load_model)
    cache = ModelCache(budget_bytes=int(1.5 * estimate_nbytes(last, torch.float32)), loader=loader)
    loader.release.set()
    cache.get(str(tiny_checkpoints[1]), device="cpu")  # another cell's, left loaded
    loader.reached.clear(), loader.release.clear()
    e = explore([str(tiny_checkpoints[-1])], "shapes:val:2", device="cpu", cache=cache)
    e.checkpoints.value = (0,)
    shown = _said(e)
    try:
        e.button.click()
        assert loader.reached.wait(120)
        assert "Loading checkpoint-1000 (1/1)…</div>" in shown[-1] and "Waiting" not in "".join(shown)
        e.stop()
        assert "Stopping once checkpoint-1000 has loaded: a load cannot be cut short." in html.unescape(e.output.value)
    finally:
        loader.release.set()
    assert e.wait() == [] and e.history[0].note.endswith("checkpoint-1000 was stopped after loading.")
    assert cache.loaded == ["checkpoint-1000"]


def test_a_run_waiting_for_another_threads_load_of_its_checkpoint_says_so_and_stop_ends_the_wait(tiny_checkpoints):
    """It said 'Loading checkpoint-1000', and Stop 'once it has loaded', while it only waited for a cell's load."""
    loader = Held(load_model)
    cache = ModelCache(loader=loader)
    cell = Run(lambda: cache.get(str(tiny_checkpoints[-1]), device="cpu"))
    assert loader.reached.wait(120)
    e = explore([str(tiny_checkpoints[-1])], "shapes:val:2", device="cpu", cache=cache)
    e.checkpoints.value = (0,)
    shown = _said(e)
    try:
        e.button.click()
        until(lambda: shown and "Waiting for checkpoint-1000" in shown[-1])
        assert f"Waiting for checkpoint-1000 (1/1): thread {cell.name!r} is loading it, for this run too (Stop ends the wait)." in shown[-1]
        e.stop()
        assert "Stopping: checkpoint-1000 stops waiting in the model cache now." in "".join(shown)
        assert e.wait() == []  # at once, the cell's load still held
        assert e.history[0].note.endswith("checkpoint-1000 was stopped while waiting for its load in another thread in the "
                                          "model cache (models in use: none).")
        assert cell.is_alive() and loader.calls == 1
    finally:
        loader.release.set()
    cell.join()
    assert cell.error is None and cache.loaded == ["checkpoint-1000"] and loader.calls == 1


def test_stop_before_the_cache_begins_the_load_loads_nothing(tiny_checkpoints):
    """Stop while the cache reads the checkpoint (its estimate, a hash: seconds for a large one) loaded it anyway."""
    size = Held(estimate_nbytes)
    loader = Held(load_model)
    loader.release.set()
    cache = ModelCache(size_fn=size, loader=loader)
    e = explore([str(tiny_checkpoints[-1])], "shapes:val:2", device="cpu", cache=cache)
    e.checkpoints.value = (0,)
    try:
        e.button.click()
        assert size.reached.wait(120)
        assert "Opening checkpoint-1000 (1/1)…" in html.unescape(e.output.value)  # not loading yet
        e.stop()
        assert "Stopping: checkpoint-1000 stops before it loads." in html.unescape(e.output.value)
    finally:
        size.release.set()
    assert e.wait() == [] and e.history[0].note.endswith("checkpoint-1000 was stopped before loading.")
    assert loader.calls == 0 and len(cache) == 0 and cache.used_bytes == 0


@pytest.mark.parametrize("wait, said", [
    (CacheWait("checkpoint-1000", "room", 2000, 5000, (Holder("checkpoint-250", 2500, True, ("vlm-lab-explorer-compare",)),), ahead=2),
     "Waiting for room for checkpoint-1000 (1/2): it needs 2.00 kB of the model cache's 5.00 kB budget, and the room is held by "
     "checkpoint-250 (2.50 kB) loading in an explorer's Compare; 2 loads that came first wait for room too, and they go first"),
    (CacheWait("checkpoint-1000", "room", 2000, 5000, (), ahead=1),
     "it needs 2.00 kB of the model cache's 5.00 kB budget; 1 load that came first waits for room too, and it goes first"),
    (CacheWait("checkpoint-1000", "turn", budget_bytes=5000, holders=(Holder("checkpoint-0", 3000, False, ("MainThread", "Thread-9")),), ahead=1),
     "Waiting for checkpoint-1000 (1/2): it is loaded, but 1 load that came first waits for room held by checkpoint-0 (3.00 kB) in use "
     "in the kernel's main thread (a running cell), thread 'Thread-9'; it goes first"),
], ids=["room-behind-two", "room-behind-one", "turn"])  # fmt: skip
def test_what_a_wait_in_the_cache_is_for_is_said_in_words(wait, said):
    """The wait that the cache's on_wait reports (the tests above see it happen), as the status says it."""
    assert f"{said} (Stop ends the wait)." in waiting_status(wait, "checkpoint-1000", "(1/2)")
