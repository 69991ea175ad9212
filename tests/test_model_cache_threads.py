"""ModelCache under threads: the Space's visitors served at once, the explorer's Compare in the background.

Real tiny checkpoints, real loads and real threads. A load is held open by a gate in the loader (an Event the
test sets) and the tests wait on Events or on the cache's own counters, never by sleeping. A cache that
deadlocks makes its test fail by pytest-timeout.
"""

from __future__ import annotations

import gc
import threading

import pytest
import torch
from model_cache_refs import refs  # noqa: F401 - a fixture

from vlm_lab.config import GenerationConfig
from vlm_lab.errors import CheckpointNotFoundError, MemoryBudgetError
from vlm_lab.generation import generate_batch
from vlm_lab.model_cache import ModelCache, estimate_nbytes, format_bytes
from vlm_lab.models import LoadedModel, load_model
from vlm_lab.shapes import make_samples

pytestmark = pytest.mark.timeout(180)  # a deadlock fails here instead of hanging the run


@pytest.fixture(scope="module")
def one(refs):
    """A budget with room for one tiny model, not two."""
    return int(1.5 * estimate_nbytes(refs[0], torch.float32))


class Gate:
    """The real loader, stopped inside the loads of the checkpoints named in ``hold`` until ``go(name)``.

    ``fail[name]``: raised (once) by that load after the gate opens, instead of loading. ``seen``: for
    each load, its name and what the cache held (loaded models, bytes charged) as it began.
    """

    def __init__(self, cache: ModelCache, hold: tuple[str, ...] = ()) -> None:
        self.cache = cache
        self.started = {name: threading.Event() for name in hold}
        self.release = {name: threading.Event() for name in hold}
        self.fail: dict[str, BaseException] = {}
        self.seen: list[tuple[str, list[str], int]] = []
        cache.loader = self

    def __call__(self, ref, **kwargs) -> LoadedModel:
        self.seen.append((ref.name, self.cache.loaded, self.cache.used_bytes))
        if ref.name in self.started:
            self.started[ref.name].set()
            self.release[ref.name].wait()
        if ref.name in self.fail:
            raise self.fail.pop(ref.name)
        return load_model(ref, **kwargs)

    def go(self, name: str) -> None:
        self.release[name].set()


class Run(threading.Thread):
    """``fn()`` in a thread of its own; ``.value`` or ``.error`` (any BaseException) after ``join``."""

    def __init__(self, fn) -> None:
        super().__init__(daemon=True)
        self.fn, self.value, self.error = fn, None, None
        self.start()

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as e:  # noqa: BLE001 - KeyboardInterrupt included: the test reads it
            self.error = e


def until(condition) -> None:
    """Spin until ``condition()`` (another thread gets there without this one sleeping)."""
    while not condition():
        threading.Event().wait(0)  # yields the GIL; a zero wait, not a sleep


def load_and_wait(cache: ModelCache, gate: Gate, ref, then) -> tuple[Run, Run]:
    """A get of ``ref`` held open by ``gate``, and ``then()`` in another thread once it waits on the cache."""
    first = Run(lambda: cache.get(ref, device="cpu"))
    gate.started[ref.name].wait()
    second = Run(then)
    until(lambda: cache.stats["waits"] == 1)
    return first, second


def answer(loaded: LoadedModel) -> str:
    (out,) = generate_batch(loaded, make_samples("val", 1), GenerationConfig(max_new_tokens=4))
    return out.text


def test_a_loaded_model_is_served_while_another_model_loads(refs):
    cache = ModelCache(budget_bytes="1GB")
    first = cache.get(refs[0], device="cpu")
    gate = Gate(cache, hold=(refs[1].name,))
    loading = Run(lambda: cache.get(refs[1], device="cpu"))
    gate.started[refs[1].name].wait()
    # while checkpoint-250 loads: a hit, the cache's state, an eviction and a clear answer at once
    assert cache.get(refs[0], device="cpu") is first and refs[0] in cache and cache.loaded == ["checkpoint-0"]
    assert "1 loaded" in repr(cache)
    assert cache.evict(refs[0]) == ["checkpoint-0"]
    cache.clear()
    gate.go(refs[1].name)
    loading.join()
    assert loading.error is None and loading.value.ref.name == "checkpoint-250"
    assert cache.loaded == ["checkpoint-250"]


def test_two_gets_of_one_model_load_it_once(refs):
    cache = ModelCache(budget_bytes="1GB")
    gate = Gate(cache, hold=(refs[1].name,))
    # the second get waits for the first's load
    first, second = load_and_wait(cache, gate, refs[1], lambda: cache.get(refs[1], device="cpu"))
    gate.go(refs[1].name)
    first.join(), second.join()
    assert first.error is None and second.error is None
    assert second.value is first.value
    assert [name for name, *_ in gate.seen] == ["checkpoint-250"] and cache.stats["loads"] == 1


def test_a_failed_load_fails_the_gets_waiting_for_it_and_is_not_remembered(refs):
    cache = ModelCache(budget_bytes="1GB")
    gate = Gate(cache, hold=(refs[1].name,))
    gate.fail[refs[1].name] = CheckpointNotFoundError("cannot load 'checkpoint-250': the download was cut off")
    first, second = load_and_wait(cache, gate, refs[1], lambda: cache.get(refs[1], device="cpu"))
    gate.go(refs[1].name)
    first.join(), second.join()
    for run in (first, second):
        assert isinstance(run.error, CheckpointNotFoundError) and "download was cut off" in str(run.error)
    assert len(cache) == 0 and cache.used_bytes == 0
    assert cache.get(refs[1], device="cpu").ref.name == "checkpoint-250"  # tried again, not the error remembered
    assert [name for name, *_ in gate.seen] == ["checkpoint-250"] * 2 and cache.stats["loads"] == 1


def test_an_interrupted_load_gives_back_its_room_and_the_waiting_get_loads_the_model_itself(refs, one):
    cache = ModelCache(budget_bytes=one)
    gate = Gate(cache, hold=(refs[1].name,))
    gate.fail[refs[1].name] = KeyboardInterrupt()
    interrupted, waiting = load_and_wait(cache, gate, refs[1], lambda: cache.get(refs[1], device="cpu"))
    gate.go(refs[1].name)
    interrupted.join(), waiting.join()
    assert isinstance(interrupted.error, KeyboardInterrupt)  # the interrupt stays with the thread it was for
    assert waiting.error is None and waiting.value.ref.name == "checkpoint-250"
    assert cache.loaded == ["checkpoint-250"] and waiting.value.nbytes <= cache.used_bytes <= one
    assert cache.get(refs[0], device="cpu").ref.name == "checkpoint-0"  # its room was given back: nothing stuck


def test_loads_of_different_models_at_once_stay_within_the_budget(refs, one):
    cache = ModelCache(budget_bytes=one)  # room for one model, also while loading
    gate = Gate(cache, hold=(refs[1].name,))
    # no room while checkpoint-250 loads: the load of checkpoint-500 waits, it does not start
    first, second = load_and_wait(cache, gate, refs[1], lambda: cache.get(refs[2], device="cpu"))
    assert [name for name, *_ in gate.seen] == ["checkpoint-250"]
    gate.go(refs[1].name)
    first.join(), second.join()
    assert first.error is None and second.error is None
    (_, _, charged_first), (name, resident, charged) = gate.seen
    assert name == "checkpoint-500" and resident == [] and charged <= one and charged_first <= one
    assert cache.loaded == ["checkpoint-500"] and cache.used_bytes <= one
    # checkpoint-250 was evicted while its caller still holds it: counted as retained until let go
    assert cache.retained_bytes == first.value.nbytes
    first.value = None
    assert cache.retained_bytes == 0


def test_a_model_in_use_is_not_evicted_until_its_block_is_left(refs, one):
    cache = ModelCache(budget_bytes=one)
    gate = Gate(cache)
    inside, leave = threading.Event(), threading.Event()

    def visitor():
        with cache.use(refs[0], device="cpu") as loaded:
            inside.set()
            leave.wait()
            return answer(loaded)

    using = Run(visitor)
    inside.wait()
    other = Run(lambda: cache.get(refs[1], device="cpu"))
    until(lambda: cache.stats["waits"] == 1)  # checkpoint-0 is in use: the load waits for it
    assert cache.loaded == ["checkpoint-0"]
    leave.set()
    using.join(), other.join()
    assert using.error is None and isinstance(using.value, str)
    assert other.error is None and cache.loaded == ["checkpoint-250"]
    assert gate.seen[-1][:2] == ("checkpoint-250", [])  # loaded only after checkpoint-0 was evicted


def test_a_thread_whose_own_model_in_use_blocks_a_load_gets_an_error_not_a_hang(refs, one):
    cache = ModelCache(budget_bytes=one)
    with cache.use(refs[0], device="cpu"):
        with pytest.raises(MemoryBudgetError, match=r"checkpoint-250 needs .* held by models in use \(checkpoint-0 by "
                                                    r"this thread\); waiting would never end: load it outside those"):
            cache.get(refs[1], device="cpu")
        assert cache.loaded == ["checkpoint-0"] and cache.used_bytes <= one
    assert cache.get(refs[1], device="cpu").ref.name == "checkpoint-250"  # the block left: room is made


def test_a_model_evicted_while_another_thread_generates_with_it_keeps_working_and_is_counted(refs):
    cache = ModelCache(budget_bytes="1GB")
    got, evicted = threading.Event(), threading.Event()

    def visitor():
        loaded = cache.get(refs[0], device="cpu")
        got.set()
        evicted.wait()
        return answer(loaded)

    using = Run(visitor)
    got.wait()
    nbytes = cache.used_bytes
    cache.clear()  # e.g. the Space's out-of-memory recovery, for another visitor
    assert cache.used_bytes == 0 and cache.retained_bytes == nbytes  # not freed under the visitor
    evicted.set()
    using.join()
    assert using.error is None and using.value == answer(load_model(refs[0], device="cpu"))
    del using
    gc.collect()
    assert cache.retained_bytes == 0


def test_a_thread_asking_for_a_load_that_waits_for_its_room_stops_instead_of_hanging_and_the_load_goes_on(refs, one):
    """A request using checkpoint-0 asks for checkpoint-250, which another request is loading and which needs the
    room checkpoint-0 holds: each would wait for the other for ever. The one that came to wait second stops (before,
    both failed); its block ends, and the load goes on."""
    cache = ModelCache(budget_bytes=one)
    inside, asked = threading.Event(), threading.Event()

    def visitor():
        with cache.use(refs[0], device="cpu"):
            inside.set()
            asked.wait()
            return cache.get(refs[1], device="cpu")

    using = Run(visitor)
    inside.wait()
    loading = Run(lambda: cache.get(refs[1], device="cpu"))
    until(lambda: cache.stats["waits"] == 1)  # waits for checkpoint-0's block to end
    asked.set()
    using.join(), loading.join()
    assert isinstance(using.error, MemoryBudgetError)
    assert "held by models in use (checkpoint-0 by this thread); waiting for it would never end" in str(using.error)
    assert loading.error is None and cache.loaded == ["checkpoint-250"]


def test_evicting_the_model_in_use_that_a_load_waits_for_lets_the_load_go_on_at_once(refs, one):
    cache = ModelCache(budget_bytes=one)
    inside, leave = threading.Event(), threading.Event()

    def visitor():
        with cache.use(refs[0], device="cpu"):
            inside.set()
            leave.wait()

    using = Run(visitor)
    inside.wait()
    waiting = Run(lambda: cache.get(refs[1], device="cpu"))
    until(lambda: cache.stats["waits"] == 1)
    assert cache.evict(refs[0]) == ["checkpoint-0"]  # asked for: its room is the waiting load's now
    waiting.join()  # before the block is left
    assert waiting.error is None and cache.loaded == ["checkpoint-250"]
    leave.set()
    using.join()


def hold_in_use(cache: ModelCache, ref) -> tuple[Run, threading.Event]:
    """A thread inside ``cache.use(ref)`` (returned once it is inside) until the Event is set."""
    inside, leave = threading.Event(), threading.Event()

    def visitor():
        with cache.use(ref, device="cpu"):
            inside.set()
            leave.wait()

    using = Run(visitor)
    inside.wait()
    return using, leave


def test_a_use_waiting_for_room_stops_when_cancelled_and_holds_nothing(refs, one):
    """The explorer's Stop while another cell's model holds the room: the wait ended only when that model was left."""
    cache = ModelCache(budget_bytes=one)
    gate = Gate(cache)
    using, leave = hold_in_use(cache, refs[0])
    held = cache.used_bytes
    stop = threading.Event()
    cancelled = Run(lambda: cache.use(refs[1], device="cpu", cancel=stop).__enter__())
    until(lambda: cache.stats["waits"] == 1)  # it loads checkpoint-250, waiting for checkpoint-0's room
    waiting = Run(lambda: cache.get(refs[1], device="cpu"))  # a get of the same model, not cancelled
    until(lambda: cache.stats["waits"] == 2)
    stop.set()
    cache.wake()
    cancelled.join()
    assert type(cancelled.error).__name__ == "WaitCancelled"
    assert str(cancelled.error) == f"checkpoint-250 stopped waiting for {format_bytes(estimate_nbytes(refs[1], torch.float32))} " \
                                   "of room in the model cache (models in use: checkpoint-0)"
    until(lambda: cache.stats["waits"] == 3)  # the get loads it in its place and waits for the room itself
    assert cache.used_bytes == held and cache.loaded == ["checkpoint-0"]  # nothing reserved, nothing pinned
    leave.set()
    using.join(), waiting.join()
    assert waiting.error is None and waiting.value.ref.name == "checkpoint-250" and cache.loaded == ["checkpoint-250"]
    assert [name for name, *_ in gate.seen] == ["checkpoint-0", "checkpoint-250"]
    with cache.use(refs[0], device="cpu"):  # no pin of the cancelled use was left behind: checkpoint-250 is evicted
        assert cache.loaded == ["checkpoint-0"]


def test_a_use_waiting_for_another_threads_load_stops_when_cancelled(refs):
    cache = ModelCache(budget_bytes="1GB")
    gate = Gate(cache, hold=(refs[1].name,))
    stop = threading.Event()
    loading, cancelled = load_and_wait(cache, gate, refs[1], lambda: cache.get(refs[1], device="cpu", cancel=stop))
    stop.set()
    cache.wake()
    cancelled.join()
    assert type(cancelled.error).__name__ == "WaitCancelled" and "for its load in another thread" in str(cancelled.error)
    gate.go(refs[1].name)
    loading.join()
    assert loading.error is None and cache.loaded == ["checkpoint-250"]


def test_a_load_waiting_for_room_is_not_starved_by_requests_that_keep_using_the_model_in_its_room(refs, one):
    """A CPU Space answering 3 requests at once: two visitors take turns using checkpoint-0, each entering before
    the other leaves, so it was never out of use and a third visitor's load of checkpoint-250 waited for ever."""
    cache = ModelCache(budget_bytes=one)
    gate = Gate(cache)
    first, leave_first = hold_in_use(cache, refs[0])
    loading = Run(lambda: cache.get(refs[1], device="cpu"))
    until(lambda: cache.stats["waits"] == 1)  # for checkpoint-0's room
    inside = threading.Event()

    def again():
        with cache.use(refs[0], device="cpu") as loaded:
            inside.set()
            return loaded.ref.name

    second = Run(again)  # checkpoint-0 is loaded, but the load waiting for its room came first
    until(lambda: inside.is_set() or cache.stats["waits"] == 2)
    assert not inside.is_set(), "a new use of checkpoint-0 went ahead of the load waiting for its room"
    leave_first.set()
    first.join(), loading.join(), second.join()
    assert loading.error is None and second.error is None and second.value == "checkpoint-0"
    assert [name for name, *_ in gate.seen] == ["checkpoint-0", "checkpoint-250", "checkpoint-0"]  # in the order asked


def test_a_thread_with_a_model_in_use_uses_it_again_while_a_load_waits_for_its_room(refs, one):
    """Fairness must not make a thread wait behind a load that waits for this very thread's block (a deadlock)."""
    cache = ModelCache(budget_bytes=one)
    inside, nested, leave = threading.Event(), threading.Event(), threading.Event()

    def visitor():
        with cache.use(refs[0], device="cpu"):
            inside.set()
            nested.wait()
            with cache.use(refs[0], device="cpu") as again:  # compare_one inside the explorer's block does this
                name = again.ref.name
            leave.wait()
            return name

    using = Run(visitor)
    inside.wait()
    loading = Run(lambda: cache.get(refs[1], device="cpu"))
    until(lambda: cache.stats["waits"] == 1)
    nested.set()
    until(lambda: cache.stats["hits"] == 1)  # the nested use was served at once
    leave.set()
    using.join(), loading.join()
    assert using.value == "checkpoint-0" and loading.error is None and cache.loaded == ["checkpoint-250"]
