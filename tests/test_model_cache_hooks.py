"""ModelCache's ``on_wait`` and ``on_load``: a caller is told exactly when its call waits, for what, and who holds it,
and when it begins loading (the explorer's status and its Stop depend on which).

Real tiny checkpoints, real loads and real threads; the tests wait on Events and on the hooks' own calls, never
by sleeping, and a deadlock (a hook called with the cache's lock held) fails by pytest-timeout.
"""

from __future__ import annotations

import threading

import pytest
import torch
from model_cache_refs import refs  # noqa: F401 - a fixture
from test_model_cache_threads import Gate, Run, hold_in_use, one, until  # noqa: F401 - one is a fixture

from vlm_lab.model_cache import CacheWait, Holder, ModelCache, estimate_nbytes

pytestmark = pytest.mark.timeout(180)  # a deadlock fails here instead of hanging the run


class Told:
    """Records what the hooks were called with, each call with what the cache held then."""

    def __init__(self, cache: ModelCache) -> None:
        self.cache, self.waits, self.loads = cache, [], []
        self.called = threading.Event()

    def on_wait(self, wait: CacheWait) -> None:
        self.waits.append(wait)
        self.called.set()

    def on_load(self, ref) -> None:
        self.loads.append((ref.name, self.cache.loaded, len(self.cache.loader.seen)))
        self.called.set()


def test_a_use_waiting_for_room_is_told_what_it_needs_and_who_holds_it_then_when_it_loads(refs, one):
    cache = ModelCache(budget_bytes=one)
    gate = Gate(cache)
    cell, leave = hold_in_use(cache, refs[0])
    held = cache.used_bytes
    told = Told(cache)
    asking = Run(lambda: cache.get(refs[1], device="cpu", on_wait=told.on_wait, on_load=told.on_load).ref.name)
    until(lambda: told.waits)
    need = estimate_nbytes(refs[1], torch.float32)
    assert told.waits == [CacheWait("checkpoint-250", "room", needed_bytes=need, budget_bytes=one,
                                    holders=(Holder("checkpoint-0", held, loading=False, threads=(cell.name,)),))]
    assert told.loads == [] and [name for name, *_ in gate.seen] == ["checkpoint-0"]  # waiting: not loading yet
    leave.set()
    asking.join()
    assert asking.value == "checkpoint-250" and len(told.waits) == 1
    # told once its room was made (checkpoint-0 evicted) and before the loader began
    assert told.loads == [("checkpoint-250", [], 1)] and [name for name, *_ in gate.seen] == ["checkpoint-0", "checkpoint-250"]
    cell.join()


def test_a_hit_is_told_nothing_and_a_load_with_room_only_that_it_loads(refs):
    cache = ModelCache(budget_bytes="1GB")
    Gate(cache)
    told = Told(cache)
    with cache.use(refs[0], device="cpu", on_wait=told.on_wait, on_load=told.on_load):
        pass
    assert told.waits == [] and told.loads == [("checkpoint-0", [], 0)]
    cache.get(refs[0], device="cpu", on_wait=told.on_wait, on_load=told.on_load)
    assert told.waits == [] and len(told.loads) == 1


def test_a_get_waiting_for_another_threads_load_is_told_which_thread_loads_it_and_never_that_it_loads(refs):
    cache = ModelCache(budget_bytes="1GB")
    gate = Gate(cache, hold=(refs[1].name,))
    loading = Run(lambda: cache.get(refs[1], device="cpu"))
    gate.started[refs[1].name].wait()
    told = Told(cache)
    waiting = Run(lambda: cache.get(refs[1], device="cpu", on_wait=told.on_wait, on_load=told.on_load))
    until(lambda: told.waits)
    assert told.waits == [CacheWait("checkpoint-250", "load", loader=loading.name)]
    gate.go(refs[1].name)
    loading.join(), waiting.join()
    assert waiting.value is loading.value and told.loads == [] and len(told.waits) == 1


def test_a_second_load_in_line_is_told_again_when_what_it_waits_for_changes(refs, one):
    """checkpoint-250 and then checkpoint-500 wait for checkpoint-0's room: the second is told that one load goes
    first; once that load has the room and loads, that the room is held by it, loading in its thread."""
    cache = ModelCache(budget_bytes=one)
    gate = Gate(cache, hold=(refs[1].name,))
    cell, leave = hold_in_use(cache, refs[0])
    first = Run(lambda: cache.get(refs[1], device="cpu"))
    until(lambda: cache.stats["waits"] == 1)
    told = Told(cache)
    second = Run(lambda: cache.get(refs[2], device="cpu", on_wait=told.on_wait, on_load=told.on_load))
    until(lambda: told.waits)
    (ahead,) = told.waits
    assert (ahead.reason, ahead.ahead, ahead.holders) == ("room", 1, (Holder("checkpoint-0", cache.used_bytes, False, (cell.name,)),))
    leave.set()
    gate.started[refs[1].name].wait()  # checkpoint-250 has the room and loads
    until(lambda: any(wait.ahead == 0 for wait in told.waits))  # (it may be told of the moments between too)
    reserved = estimate_nbytes(refs[1], torch.float32)
    assert next(wait for wait in told.waits if wait.ahead == 0) == CacheWait("checkpoint-500", "room", needed_bytes=estimate_nbytes(refs[2], torch.float32),
                                      budget_bytes=one, holders=(Holder("checkpoint-250", reserved, True, (first.name,)),))
    assert told.loads == []
    gate.go(refs[1].name)
    cell.join(), first.join(), second.join()
    assert second.error is None and told.loads == [("checkpoint-500", [], 2)] and cache.loaded == ["checkpoint-500"]


def test_a_use_of_a_loaded_model_behind_a_load_waiting_for_its_room_is_told_it_waits_its_turn(refs, one):
    cache = ModelCache(budget_bytes=one)
    Gate(cache)
    first, leave = hold_in_use(cache, refs[0])
    loading = Run(lambda: cache.get(refs[1], device="cpu"))
    until(lambda: cache.stats["waits"] == 1)
    told = Told(cache)
    again = Run(lambda: cache.use(refs[0], device="cpu", on_wait=told.on_wait, on_load=told.on_load).__enter__().ref.name)
    until(lambda: told.waits)
    assert told.waits == [CacheWait("checkpoint-0", "turn", budget_bytes=one, ahead=1,
                                    holders=(Holder("checkpoint-0", cache.used_bytes, False, (first.name,)),))]
    leave.set()
    first.join(), loading.join(), again.join()
    assert again.value == "checkpoint-0" and told.loads == [("checkpoint-0", [], 2)]  # evicted for checkpoint-250: loaded again


def test_hooks_run_without_the_cache_lock_so_they_may_wait_for_a_thread_that_asks_the_cache(refs, one):
    """The explorer's hooks write its output, which the kernel's thread also writes while it asks the cache."""
    cache = ModelCache(budget_bytes=one)
    Gate(cache)
    cell, leave = hold_in_use(cache, refs[0])
    asked, answered = threading.Event(), threading.Event()

    def on_wait(_wait) -> None:
        asked.set()
        assert answered.wait(120), "the other thread could not ask the cache while the hook ran"

    waiting = Run(lambda: cache.get(refs[1], device="cpu", on_wait=on_wait))
    assert asked.wait(120)
    assert cache.loaded == ["checkpoint-0"] and "1 loaded" in repr(cache)  # the lock is free while the hook runs
    answered.set()
    leave.set()
    cell.join(), waiting.join()
    assert waiting.error is None and cache.loaded == ["checkpoint-250"]


class Refused(Exception):
    pass


def test_a_hook_that_raises_ends_its_call_holding_nothing_and_a_get_waiting_for_that_load_loads_it(refs):
    """What on_load raises (the explorer's Stop before a load) is that call's: the other get of the model loads it."""
    cache = ModelCache(budget_bytes="1GB")
    gate = Gate(cache)
    entered, go_on = threading.Event(), threading.Event()

    def refuse(_ref) -> None:
        entered.set()
        assert go_on.wait(120)
        raise Refused("stop before loading")

    refused = Run(lambda: cache.get(refs[1], device="cpu", on_load=refuse))
    assert entered.wait(120)
    other = Run(lambda: cache.get(refs[1], device="cpu"))
    until(lambda: cache.stats["waits"] == 1)  # for the load the refused get began
    go_on.set()
    refused.join(), other.join()
    assert isinstance(refused.error, Refused) and other.error is None and other.value.ref.name == "checkpoint-250"
    assert [name for name, *_ in gate.seen] == ["checkpoint-250"] and cache.stats["loads"] == 1
    held = cache.used_bytes

    def refuse_at_once(ref) -> None:
        raise Refused(ref.name)

    with pytest.raises(Refused):
        with cache.use(refs[0], device="cpu", on_load=refuse_at_once):
            pass
    assert cache.loaded == ["checkpoint-250"] and cache.used_bytes == held  # nothing reserved, nothing pinned
    assert cache.get(refs[0], device="cpu").ref.name == "checkpoint-0"  # and nothing left behind: it loads
