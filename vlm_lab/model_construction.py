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

A thread *generating* with a model already loaded (visitor A while visitor B's checkpoint loads, the
explorer's background runs) takes no turn, and the default dtype a build swaps in is the process's.
Checked with transformers 5.23 (a TorchDispatchMode recording every op whose output had the swapped-in
dtype, while ``generate_batch`` ran under a bfloat16 or float16 default with float32 models):
- LLaVA (CLIP + Llama), PaliGemma, Gemma 3: one op, beam search's ``(~just_finished) * -1.0e9`` (a bool
  times a float: default dtype); the penalty rounds to -0.998e9 (bfloat16) or -inf (float16), and only
  decides which placeholder fills a slot no finished beam takes: the answers are the same (checked).
- Idefics3 (SmolVLM): its vision embeddings bucket patch positions with ``torch.arange(1 / n, 1.0, 1 / n)``
  and ``1.0 / n_patches`` in the default dtype; under float16 a full tile of Idefics3-8B's 26 x 26
  patches gets other position ids, and a tiny float32 Idefics3 of that geometry answers differently.
  Mllama's ``1.0 - cross_attention_mask`` too (0 and 1: exact); Kosmos-2 and the like make their
  sinusoidal positions in it. The sampling warpers' ``EtaLogitsWarper`` keeps ``epsilon`` in it.
So a generation must not run inside a swap: ``generation.generate_batch`` runs in ``generating()``
(a reader) and transformers' ``modeling_utils.local_torch_dtype``, its one place that swaps the
default dtype (around the model's construction only, not the reading of its weights), is wrapped
to be a writer (``dtype_swaps``): a swap waits for the batches in flight, a batch asked for
meanwhile waits for the swap. A visitor waits for another's model construction on the meta device (and for the batches
in flight before it), not for its whole load. The wrapper is installed by the first build or generation in the process.
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
        _hook_dtype_swaps()  # before the first build: a generation in another thread may be running
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


class DtypeSwaps:
    """Generations (readers) never run while a build has torch's default dtype swapped (writers); see the module docstring.

    Writers go first: a generation that asks while a swap waits, waits too, so a stream of batches cannot starve a
    build. Both are re-entrant per thread; a generation's own thread cannot start a swap (it would wait for itself).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers: dict[int, int] = {}  # thread ident -> depth
        self._writer: int | None = None
        self._depth = 0
        self._waiting = 0  # writers waiting for the generations in flight

    @contextlib.contextmanager
    def generating(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if me not in self._readers and self._writer != me:
                self._cond.wait_for(lambda: self._writer is None and not self._waiting)
            self._readers[me] = self._readers.get(me, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._readers[me] -= 1
                if not self._readers[me]:
                    del self._readers[me]
                    self._cond.notify_all()

    @contextlib.contextmanager
    def swapping(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer != me:
                if me in self._readers:
                    raise RuntimeError("a model is being built inside a generation in the same thread: build it before "
                                       "generating (the build would wait for this thread's own generation to end)")
                self._waiting += 1
                try:
                    self._cond.wait_for(lambda: self._writer is None and not self._readers)
                finally:
                    self._waiting -= 1
                    self._cond.notify_all()  # a swap stopped while waiting (an interrupt) must not leave batches waiting for it
                self._writer = me
            self._depth += 1
        try:
            yield
        finally:
            with self._cond:
                self._depth -= 1
                if not self._depth:
                    self._writer = None
                    self._cond.notify_all()


dtype_swaps = DtypeSwaps()
_hooking = threading.Lock()


def _hook_dtype_swaps() -> None:
    """Make transformers' ``local_torch_dtype`` (the only place it swaps the default dtype) a writer, once per process."""
    from transformers import modeling_utils

    with _hooking:
        swap = modeling_utils.local_torch_dtype
        if getattr(swap, "vlm_lab_waits_for_generations", False):
            return

        @contextlib.contextmanager
        def local_torch_dtype(*args, **kwargs):
            with dtype_swaps.swapping(), swap(*args, **kwargs):
                yield

        local_torch_dtype.vlm_lab_waits_for_generations = True  # type: ignore[attr-defined]
        modeling_utils.local_torch_dtype = local_torch_dtype


@contextlib.contextmanager
def generating() -> Iterator[None]:
    """Run a model (``generate``, a forward) in this block: no build swaps the process's default dtype meanwhile."""
    _hook_dtype_swaps()
    with dtype_swaps.generating():
        yield
