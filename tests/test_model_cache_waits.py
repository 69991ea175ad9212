"""ModelCache waits between threads that each have a model in use: who waits, who stops, and no deadlock.

The explorer's background run answers inside ``cache.use`` while a notebook cell or a second Space visitor
does too; each may then ask for a model that needs the room the other one's block holds. A thread waits for
another thread's block when that thread can still go on; the thread whose wait would close a cycle (each
waiting for the other) stops with ``MemoryBudgetError`` naming whose blocks hold the room, and the other goes
on. Real tiny checkpoints and real threads; the tests wait on Events, hooks and the cache's own counters,
never by sleeping, and a deadlock fails by pytest-timeout (the joins have no timeout of their own).
"""

from __future__ import annotations

import contextlib
import sys
import threading

import pytest
import torch
from model_cache_refs import tiny_refs
from test_model_cache_threads import Gate, Run, hold_in_use, one, until  # noqa: F401 - one is a fixture

from vlm_lab.checkpoints import resolve
from vlm_lab.errors import MemoryBudgetError
from vlm_lab.model_cache import ModelCache, estimate_nbytes
from vlm_lab.model_cache_waits import Waiting, never_go_on

pytestmark = pytest.mark.timeout(180)  # a deadlock fails here instead of hanging the run


@pytest.fixture(scope="module")
def refs(tiny_checkpoints):
    """checkpoint-0, -250, -500 and -750 (``one`` is sized by the first): one more than the other files'."""
    return tiny_refs(tiny_checkpoints, 4)


@pytest.fixture(scope="module")
def two(refs):
    """A budget with room for two tiny models, not three."""
    return int(2.5 * estimate_nbytes(refs[0], torch.float32))


class Asking:
    """A thread inside ``cache.use(held)`` that, once told, asks for ``wanted`` inside that block and then leaves it."""

    def __init__(self, cache: ModelCache, held, wanted) -> None:
        self.inside, self.ask = threading.Event(), threading.Event()

        def visitor():
            with cache.use(held, device="cpu"):
                self.inside.set()
                self.ask.wait()
                return cache.get(wanted, device="cpu").ref.name

        self.run = Run(visitor)
        self.inside.wait()


def test_a_thread_with_a_model_in_use_waits_for_room_that_another_threads_block_holds(refs, two):
    """Before, it raised at once, saying the room was held 'by the thread that asked for it' and naming the other
    thread's model among its own; that block ends on its own, so waiting for it is safe."""
    cache = ModelCache(budget_bytes=two)
    Gate(cache)
    visitor, leave = hold_in_use(cache, refs[1])  # another visitor answers with checkpoint-250
    explorer = Asking(cache, refs[0], refs[2])  # the explorer, inside checkpoint-0's block, asks for checkpoint-500
    explorer.ask.set()
    until(lambda: cache.stats["waits"] == 1 or not explorer.run.is_alive())
    assert explorer.run.error is None, explorer.run.error
    assert sorted(cache.loaded) == ["checkpoint-0", "checkpoint-250"]  # nothing loaded beside them
    leave.set()
    visitor.join(), explorer.run.join()
    assert explorer.run.error is None and explorer.run.value == "checkpoint-500"
    assert cache.loaded == ["checkpoint-0", "checkpoint-500"] and cache.used_bytes <= two


@pytest.mark.parametrize("first", [0, 1])
def test_of_two_threads_waiting_for_each_others_room_the_second_to_ask_stops_and_the_first_goes_on(refs, two, first):
    """checkpoint-0's block asks for checkpoint-500 and checkpoint-250's for checkpoint-750, in either order: each
    needs the room the other's block holds. Whichever asks second stops, naming both blocks; its block ends and
    the first one loads."""
    cache = ModelCache(budget_bytes=two)
    Gate(cache)
    threads = [Asking(cache, refs[0], refs[2]), Asking(cache, refs[1], refs[3])]
    waiting, stopping = threads[first], threads[1 - first]
    waiting.ask.set()
    until(lambda: cache.stats["waits"] == 1 or not waiting.run.is_alive())
    stopping.ask.set()
    waiting.run.join(), stopping.run.join()
    mine, theirs = (("checkpoint-250", "checkpoint-0"), ("checkpoint-0", "checkpoint-250"))[first]
    wanted, got = (("checkpoint-750", "checkpoint-500"), ("checkpoint-500", "checkpoint-750"))[first]
    assert isinstance(stopping.run.error, MemoryBudgetError)
    assert str(stopping.run.error).startswith(f"{wanted} needs ")
    assert f"held by models in use ({mine} by this thread; {theirs} by another thread that waits for this one)" \
        in str(stopping.run.error)
    assert waiting.run.error is None and waiting.run.value == got
    assert got in cache.loaded and cache.used_bytes <= two


def test_a_thread_asking_for_the_model_a_thread_waiting_for_its_room_loads_stops_and_the_load_goes_on(refs, two):
    """checkpoint-0's block loads checkpoint-500 and waits for the room checkpoint-250's block holds; that block
    then asks for checkpoint-500 too. Waiting for that load would never end: it stops, and the load goes on."""
    cache = ModelCache(budget_bytes=two)
    gate = Gate(cache)
    loading, asking = Asking(cache, refs[0], refs[2]), Asking(cache, refs[1], refs[2])
    loading.ask.set()
    until(lambda: cache.stats["waits"] == 1 or not loading.run.is_alive())
    asking.ask.set()
    loading.run.join(), asking.run.join()
    assert isinstance(asking.run.error, MemoryBudgetError)
    assert str(asking.run.error).startswith(
        "checkpoint-500 is being loaded by another thread that waits for room held by models in use "
        "(checkpoint-250 by this thread; checkpoint-0 by the thread loading it); waiting for it would never end")
    assert loading.run.error is None and loading.run.value == "checkpoint-500"
    assert [name for name, *_ in gate.seen] == ["checkpoint-0", "checkpoint-250", "checkpoint-500"]  # loaded once


def test_a_load_that_finds_its_room_held_by_a_thread_waiting_for_it_stops_and_that_thread_loads_it(refs, two):
    """The other order: checkpoint-250's block waits for checkpoint-0's block's load of checkpoint-500 (held
    before it reserves, by the size estimate), and that load then needs checkpoint-250's room. The load stops,
    naming checkpoint-250 as the other thread's; the waiting thread looks again and loads it once the room is free.
    Before, the load's error was passed on to the waiting thread, and both failed."""
    sizing, go_on = threading.Event(), threading.Event()

    def size(ref, dtype):
        if ref.name == "checkpoint-500" and not go_on.is_set():
            sizing.set()
            go_on.wait()
        return estimate_nbytes(ref, dtype)

    cache = ModelCache(budget_bytes=two, size_fn=size)
    gate = Gate(cache)
    loading, asking = Asking(cache, refs[0], refs[2]), Asking(cache, refs[1], refs[2])
    loading.ask.set()
    sizing.wait()  # checkpoint-0's thread loads checkpoint-500: it sizes it before reserving room
    asking.ask.set()
    until(lambda: cache.stats["waits"] == 1 or not asking.run.is_alive())  # it waits for that load
    go_on.set()
    loading.run.join(), asking.run.join()
    assert isinstance(loading.run.error, MemoryBudgetError)
    assert "held by models in use (checkpoint-0 by this thread; checkpoint-250 by another thread that waits for " \
           "this one)" in str(loading.run.error)
    assert asking.run.error is None and asking.run.value == "checkpoint-500"
    assert [name for name, *_ in gate.seen] == ["checkpoint-0", "checkpoint-250", "checkpoint-500"]


def test_with_three_threads_a_load_waits_for_a_third_threads_block_and_a_get_waits_for_that_load(refs, two):
    """The reviewer's case: a visitor holds checkpoint-0 in use (its block ends on its own); the explorer, inside
    checkpoint-250's block, loads checkpoint-500, which needs checkpoint-0's room; a second visitor, inside
    checkpoint-750's block, asks for checkpoint-500 too. Neither holds the room: both wait, none raises, and the
    model is loaded once, once the first visitor's block ends."""
    cache = ModelCache(budget_bytes=int(3.5 * estimate_nbytes(refs[0], torch.float32)))  # three, not four
    gate = Gate(cache)
    visitor, leave = hold_in_use(cache, refs[0])
    loading, asking = Asking(cache, refs[1], refs[2]), Asking(cache, refs[3], refs[2])
    loading.ask.set()
    until(lambda: cache.stats["waits"] == 1 or not loading.run.is_alive())  # for checkpoint-0's room
    asking.ask.set()
    until(lambda: cache.stats["waits"] == 2 or not asking.run.is_alive())  # for that load
    assert loading.run.error is None and asking.run.error is None, (loading.run.error, asking.run.error)
    leave.set()
    visitor.join(), loading.run.join(), asking.run.join()
    assert loading.run.error is None and loading.run.value == "checkpoint-500"
    assert asking.run.error is None and asking.run.value == "checkpoint-500"
    assert [name for name, *_ in gate.seen].count("checkpoint-500") == 1 and cache.used_bytes <= cache.budget_bytes


def test_of_three_threads_the_one_whose_wait_closes_the_cycle_stops_naming_each_block_that_holds_the_room(
        refs, tiny_checkpoints):
    """checkpoint-0's and checkpoint-250's blocks each wait for room (the third block, checkpoint-500's, can end);
    then checkpoint-500's block asks for room too, and no block could end any more. It stops, naming its own block
    and the two others' (not as its own); once its block is left, both others load."""
    unit = estimate_nbytes(refs[0], torch.float32)
    cache = ModelCache(budget_bytes=int(3.4 * unit))  # three in float32 and not a fourth one in bfloat16
    Gate(cache)
    last = resolve(str(tiny_checkpoints[4]))[0]  # checkpoint-1000
    inside, ask = threading.Event(), threading.Event()

    def closing():  # checkpoint-750 again, in bfloat16: another model for the cache, in half the room
        with cache.use(refs[2], device="cpu"):
            inside.set()
            ask.wait()
            return cache.get(refs[3], dtype="bfloat16", device="cpu")

    stopping = Run(closing)
    inside.wait()
    first, second = Asking(cache, refs[0], refs[3]), Asking(cache, refs[1], last)
    first.ask.set()
    until(lambda: cache.stats["waits"] == 1 or not first.run.is_alive())
    second.ask.set()
    until(lambda: cache.stats["waits"] == 2 or not second.run.is_alive())
    assert first.run.error is None and second.run.error is None, (first.run.error, second.run.error)
    ask.set()
    stopping.join()
    assert isinstance(stopping.error, MemoryBudgetError), stopping.error
    assert str(stopping.error).startswith("checkpoint-750 needs ")
    assert "held by models in use (checkpoint-500 by this thread; checkpoint-0, checkpoint-250 by other threads " \
           "that wait for this one); waiting would never end" in str(stopping.error)
    first.run.join(), second.run.join()
    assert first.run.error is None and first.run.value == "checkpoint-750"
    assert second.run.error is None and second.run.value == "checkpoint-1000"


@pytest.mark.parametrize("waiting, pinned, stuck", [
    # 1 waits for room held by 2's block; 2 is running: its block ends
    ({1: Waiting(nbytes=5)}, [(5, {1}), (5, {2})], set()),
    # ... and only 1's own block holds it
    ({1: Waiting(nbytes=6)}, [(5, {1}), (4, {2})], {1}),
    # 1 and 2 each wait for the room the other's block holds
    ({1: Waiting(nbytes=5), 2: Waiting(nbytes=5)}, [(5, {1}), (5, {2})], {1, 2}),
    # 2 waits for a load by 3, which is running: 1's wait for 2's block ends too
    ({1: Waiting(nbytes=5), 2: Waiting(loader=3)}, [(5, {1}), (5, {2})], set()),
    # 2 waits for 1's load, and 1 for the room 2's block holds
    ({1: Waiting(nbytes=6), 2: Waiting(loader=1)}, [(5, {2})], {1, 2}),
    # a model two blocks use is freed only when both end: 2's does, 1's does not
    ({1: Waiting(nbytes=5)}, [(5, {1, 2}), (5, {3})], set()),
    ({1: Waiting(nbytes=8)}, [(5, {1, 2}), (5, {3})], {1}),
    # 1 waits for 2's block, 2 for 3's load, 3 for 4's block (4 is running): a chain, not a cycle
    ({1: Waiting(nbytes=5), 2: Waiting(loader=3), 3: Waiting(nbytes=5)}, [(5, {2}), (5, {4})], set()),
])
def test_which_waits_never_end(waiting, pinned, stuck):
    assert never_go_on(waiting, pinned, budget=10) == stuck


@contextlib.contextmanager
def interrupted_on_return(function):
    """A KeyboardInterrupt delivered in this thread as ``function`` returns (as Ctrl-C can arrive between two lines)."""

    def trace(frame, event, arg):
        if event == "call" and frame.f_code is function.__code__:
            def at_return(frame, event, arg):
                if event == "return":
                    raise KeyboardInterrupt
                return at_return
            return at_return
        return None

    with tracing(trace):
        yield


@contextlib.contextmanager
def tracing(trace):
    """``trace`` as this thread's trace function (``sys.settrace``) inside the block."""
    before = sys.gettrace()
    sys.settrace(trace)
    try:
        yield
    finally:
        sys.settrace(before)


@pytest.mark.parametrize("loaded_before", [False, True], ids=["load", "hit"])
@pytest.mark.parametrize("where", ["_pin", "_get"])
def test_an_interrupt_as_use_gets_its_model_leaves_the_model_out_of_use(refs, one, where, loaded_before):
    """``use`` pinned the model before its ``try``: an interrupt in between left it in use for ever, and every
    later load that needed its room raised (in this thread) or waited for ever (in another)."""
    cache = ModelCache(budget_bytes=one)
    if loaded_before:
        cache.get(refs[0], device="cpu")
    with pytest.raises(KeyboardInterrupt), interrupted_on_return(getattr(ModelCache, where)):
        with cache.use(refs[0], device="cpu"):
            pytest.fail("the block ran")
    assert cache.loaded == ["checkpoint-0"]
    assert cache.get(refs[1], device="cpu").ref.name == "checkpoint-250"  # its room is free: nothing holds it
    assert cache.loaded == ["checkpoint-250"]
