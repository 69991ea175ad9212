"""One object that ``ModelCache.use(...)`` returned, entered again while it is open: nested in one thread (a helper
that enters the block it is given, a notebook re-running a stored block), or by several threads at once (a Space's
module-level block). Each entry is a block of its own: the model stays in use until the last of them is left.

Real tiny checkpoints and real threads, ordered by Events and the cache's counters. An interrupt in a block entered
again: test_model_cache_interrupts (after each call of the block's ``__enter__``/``__exit__``).
"""

from __future__ import annotations

import threading

import pytest
from model_cache_refs import refs  # noqa: F401 - a fixture
from test_model_cache_threads import Run, answer, one, until  # noqa: F401 - one is a fixture

from vlm_lab.errors import MemoryBudgetError
from vlm_lab.model_cache import ModelCache

pytestmark = pytest.mark.timeout(180)  # a wait that never ends fails here instead of hanging the run


def assert_in_use_here(cache: ModelCache, refs) -> None:
    """checkpoint-0 is in use by this thread: loading checkpoint-250 in its room is refused, not evicting it."""
    with pytest.raises(MemoryBudgetError, match=r"\(checkpoint-0 by this thread\)"):
        cache.get(refs[1], device="cpu")
    assert cache.loaded == ["checkpoint-0"]


def assert_out_of_use(cache: ModelCache, refs) -> None:
    """Nothing holds checkpoint-0's room: checkpoint-250 loads in it (and is evicted again for the next check)."""
    assert cache.get(refs[1], device="cpu").ref.name == "checkpoint-250"
    assert cache.loaded == ["checkpoint-250"]
    cache.clear()


def test_a_block_entered_again_inside_itself_keeps_its_model_in_use_until_the_outer_block_is_left(refs, one):
    """The inner block's end let go of the model while the outer block still used it: a load in another thread
    evicted it (and in this one, loading another model in its room was not refused)."""
    cache = ModelCache(budget_bytes=one)
    block = cache.use(refs[0], device="cpu")
    with block as outer:
        with block as inner:
            assert inner is outer
        loading = Run(lambda: cache.get(refs[1], device="cpu").ref.name)
        until(lambda: cache.stats["waits"] == 1 or not loading.is_alive())
        assert loading.is_alive() and loading.error is None, loading.error  # it waits for the outer block's room
        assert cache.loaded == ["checkpoint-0"]
        answer(outer)  # the outer block's model still generates
    loading.join()
    assert loading.error is None and loading.value == "checkpoint-250"
    assert cache.loaded == ["checkpoint-250"]


def test_a_block_left_and_entered_again_works_as_a_new_block(refs, one):
    """A notebook re-running the cell of a block it stored: each run is a block of its own (a guard)."""
    cache = ModelCache(budget_bytes=one)
    block = cache.use(refs[0], device="cpu")
    for _ in range(2):
        with block:
            assert_in_use_here(cache, refs)
        assert_out_of_use(cache, refs)


@pytest.mark.parametrize("left_first", ["this thread", "the other thread"])
def test_one_block_entered_by_two_threads_keeps_its_model_in_use_until_both_have_left(refs, one, left_first):
    """A Space's module-level ``block = cache.use(...)`` entered by two visitors at once: the first to leave let go of
    the model (the block had one hold on it, which the second entry took over), so it was evicted under the other."""
    cache = ModelCache(budget_bytes=one)
    block = cache.use(refs[0], device="cpu")
    inside, leave = threading.Event(), threading.Event()

    def visitor():
        with block:
            inside.set()
            leave.wait()

    with block:
        visiting = Run(visitor)
        inside.wait()
        if left_first == "the other thread":
            leave.set()
            visiting.join()
            assert visiting.error is None, visiting.error
            assert_in_use_here(cache, refs)
    if left_first == "this thread":  # the visitor is still inside: a load here waits for it to leave
        loading = Run(lambda: cache.get(refs[1], device="cpu").ref.name)
        until(lambda: cache.stats["waits"] == 1 or not loading.is_alive())
        assert loading.is_alive() and cache.loaded == ["checkpoint-0"], loading.error
        leave.set()
        visiting.join(), loading.join()
        assert visiting.error is None and loading.error is None and loading.value == "checkpoint-250"
        cache.clear()
    assert_out_of_use(cache, refs)
