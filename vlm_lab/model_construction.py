"""One model built at a time in this process: transformers' loading swaps process-wide state.

``from_pretrained`` (transformers 5.23) builds the model inside contexts that change what
every thread sees, and put back what they found on the way out:

- ``local_torch_dtype``: ``torch.set_default_dtype(dtype)`` (one default per process);
- ``init.no_tie_weights``: ``PreTrainedModel.tie_weights`` replaced by a no-op on the class;
- ``init.meta_device_safe_creation_ops`` (remote code): ``torch.linspace`` replaced.

Two loads in two threads (the Space's visitors, the model cache's parallel loads, a
notebook's background compare) interleave as: A saves the real value and swaps it, B saves
*A's swap*, A restores, B restores A's swap, for good. Seen with two bfloat16 loads of the
shapes checkpoints released together: the process left at bfloat16 in 4 of 10 pairs (every
later ``torch.randn`` in bfloat16), and loads whose ``tie_weights`` ran while the other's
no-op was in place left ``lm_head`` on the meta device ("Cannot copy out of meta tensor").
A load's own ``tie_weights`` runs after its contexts close, so the whole load is one
critical section, not just the build.

Every model construction vlm_lab starts takes this turn (re-entrant: a build inside a build
is one thread's). Loads wait for each other's turn: two loads that overlapped now take one
after the other (not measured here: the shapes checkpoints load in well under a second).
Correct weights first; the waiting thread is told whose load it waits for and can stop
(below). A hub reference's weights are downloaded before its turn (``hub_weights``
says what is left to the turn): a load waits for another's reading of its weights and its
build, not for its download.

A thread waiting for its turn can be told whose build it waits for, and be stopped, before
its own build begins (the model cache's ``on_wait`` and ``cancel``): ``watching(waiting=,
began=)`` around a load has ``waiting(Building)`` called as it waits (every ``POLL_S``: what
it raises ends the wait, holding nothing) and ``began()`` once its turn comes after a wait.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import threading
from typing import Callable, Iterator

POLL_S = 0.1  # how soon a wait sees a stop, or a new build it waits for


@dataclasses.dataclass(frozen=True)
class Building:
    """The model being built now: ``name`` (its checkpoint, or what builds it) by the thread named ``thread``."""

    name: str
    thread: str
    ident: int


@dataclasses.dataclass(frozen=True)
class _Watch:
    waiting: Callable[[Building | None], object]
    began: Callable[[], object]


_watch: contextvars.ContextVar[_Watch | None] = contextvars.ContextVar("vlm_lab_build_watch", default=None)


@contextlib.contextmanager
def watching(*, waiting: Callable[[Building | None], object], began: Callable[[], object]) -> Iterator[None]:
    """In this thread, while the block runs: ``waiting(building)`` as a build waits for its turn (``building``:
    whose build it waits for, None when that build just ended), ``began()`` once the turn came after a wait."""
    token = _watch.set(_Watch(waiting, began))
    try:
        yield
    finally:
        _watch.reset(token)


class BuildTurns:
    """One model built at a time: ``with building_models("checkpoint-0"):`` (the name a thread waiting for it is told)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._building: Building | None = None  # set and cleared only by the thread holding the turn

    @property
    def building(self) -> Building | None:
        """The build that holds the turn now, if any."""
        return self._building

    def __call__(self, name: str) -> contextlib.AbstractContextManager[None]:
        """The turn for building ``name`` (the name a thread waiting for it is told)."""
        return self._turn(name)

    @contextlib.contextmanager
    def _turn(self, name: str) -> Iterator[None]:
        outer = self._take(name)
        try:
            yield
        finally:
            self._give(outer)

    def _take(self, name: str) -> bool:
        """Take the turn (waiting as ``watching`` says); True when this thread did not hold it already."""
        me = threading.current_thread()
        held = self._building
        if held is not None and held.ident == me.ident:  # a build inside this thread's build
            self._lock.acquire()
            return False
        watch, got, waited = _watch.get(), False, False
        try:
            if watch is None:
                got = self._lock.acquire()
            else:
                while not (got := self._lock.acquire(timeout=POLL_S)):
                    waited = True
                    watch.waiting(self._building)  # each time: it checks for a stop
            self._building = Building(name, me.name, me.ident)
            if waited:
                watch.began()
        except BaseException:
            if got:  # an interrupt, or began() raised, once the turn was taken: give it back
                self._give(True)
            raise
        return True

    def _give(self, outer: bool) -> None:
        try:
            if outer:
                self._building = None
        finally:
            self._lock.release()


building_models = BuildTurns()
