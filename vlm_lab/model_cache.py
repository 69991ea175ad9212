"""The one explicit model cache: loaded checkpoints, LRU-evicted to stay under a byte budget.

The budget is in bytes, not a number of models: "a T4 holds at most two 7 GB models" is what a 16 GB budget
and those models' sizes work out to, never a hard-coded 2. Before loading, a checkpoint's size is *estimated*
(``size_fn``, by default ``model_size.estimate_nbytes``, from its safetensors headers: parameter counts times
the bytes of the dtype it is loaded in) and that much of the budget is reserved, so a model is loaded only
once room is made for it; when loading it would go over the budget, the least recently used models are evicted
first and their memory freed (``gc.collect`` plus ``torch.cuda.empty_cache`` on GPU). After loading, an entry
is charged ``max(estimate, measured parameter + buffer bytes)``.

The budget counts weights only. Activations, the KV cache and the CUDA context need headroom on top: on a
16 GB T4, two 7 GB models fit a 16 GB budget but leave ~2 GB to generate with. Keep one cache per device.

Entries are keyed by what is loaded, not by how it was written: a local folder by its resolved path
(``runs/x`` and ``/abs/runs/x`` are one model; files changed in place reload it), a hub reference by repo,
commit and subfolder (``org/run``, ``org/run@main`` and ``org/run@<that commit>`` are one model, loaded once
and charged once; when ``main`` moves on, the copy of its old commit is dropped: ``model_cache_identity``).

Threads (the Space serves several visitors at once, the explorer compares in the background): no lock is held
while a model loads, its size is estimated or its files hashed, so a model already loaded is served at once
whatever else is loading. Two gets of one model load it once: the second waits for the first and gets its
model, or its error (a failed load is not remembered: the next get tries again). Loads of different models
reserve their estimated size before loading, so together they stay within the budget; one that finds no room
waits for the loads in flight to finish (they always do) and then evicts. Models used inside ``with
cache.use(ref) as loaded:`` are never evicted to make room: a load that needs their room waits until they are
left, whichever thread's blocks they are, as long as those threads can still go on (``model_cache_waits``).
A wait that could never end raises ``MemoryBudgetError`` instead, naming the blocks that hold the room: this
thread's own, or another thread's that waits for this one (for room this thread's blocks hold, or for a model
it loads). Of two threads that would wait for each other, the one that comes to wait second stops; the other
goes on once that one's block is left.

Waits are fair and can be cancelled. Loads waiting for room are served in the order they came, and while one
waits, a ``use`` of a model already loaded (from a thread with no ``use`` block open) waits behind it:
requests that keep re-using a model would otherwise keep it in use for ever, and the load waiting for its room
would never run. A thread with a block open never waits behind others (they may be waiting for its model).
``get``/``use`` with ``cancel=`` (a ``threading.Event``) raise ``WaitCancelled`` once the event is set and
``cache.wake()`` called, holding and reserving nothing (the explorer's Stop, while another cell's model holds
the room). An interrupt (Ctrl-C, or what a signal handler raises) in a ``get``, or as a ``use`` block starts or
waits, leaves nothing behind: no model in use, no load in flight, no wait that others count. One that lands as
a ``use`` block ends keeps the model in use until its traceback is let go (its frame holds the block), as with
any context manager.

Callers can follow their call: ``on_wait(CacheWait)`` is called when a ``get``/``use`` starts waiting (for room,
for another thread's load of its model, or behind the loads waiting for room) with what it needs and which
models and threads hold it, and again whenever that changes; ``on_load(ref)`` when it begins loading, its room
reserved (the explorer's status says which, and what its Stop will do). Models are built one at a time in a process
(``model_construction``): a load whose build waits for another thread's is told so (``"build"``: which checkpoint, by
which thread), ``cancel`` ends that wait too, before its own ``from_pretrained`` begins, and ``on_load`` is called
again once its turn comes. Both run in the calling thread with no
lock held; what they raise ends the call, holding and reserving nothing, as a cancel does (a get waiting for
that load then loads the model itself).

A model evicted while a caller still holds it (``get``, then evicted by another thread or by
``evict``/``clear``) keeps working for that caller and is freed when the caller lets go; until then
``retained_bytes`` counts it (the budget no longer does).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import threading
import weakref
from typing import Callable, ContextManager

import torch

from vlm_lab.checkpoints import CheckpointRef
from vlm_lab.config import parse_bytes
from vlm_lab.errors import ConfigError, MemoryBudgetError
from vlm_lab.hub_refs import hub_fingerprint
from vlm_lab.model_budget import GB, _budget_for, budget_as, default_budget, format_bytes, max_resident
from vlm_lab.model_cache_entries import _Entry, _InUse, _Load, _Pin
from vlm_lab.model_cache_identity import CacheIdentity, _as_ref
from vlm_lab.model_cache_waits import CacheWait, Holder, Waiting, _Asked, build_hooks, held_by, never_go_on, thread_names
from vlm_lab.model_construction import watching
from vlm_lab.model_size import estimate_nbytes
from vlm_lab.models import LoadedModel, load_model, model_nbytes, resolve_device, resolve_dtype

__all__ = ["GB", "CacheWait", "Holder", "ModelCache", "WaitCancelled", "budget_as", "default_budget", "estimate_nbytes",
           "format_bytes", "max_resident"]

SizeFn = Callable[[CheckpointRef, torch.dtype], "int | None"]
# Only code that opens `use` blocks itself meets these (compare and the Space hold one block per thread at a time)
_AFTER_BLOCK = "load it outside those `with cache.use(...)` blocks, or raise the budget (ModelCache(budget_bytes=...))"


class WaitCancelled(Exception):
    """A ``get`` or ``use`` given ``cancel=`` stopped waiting (for room, or for another thread's load) once it was set."""


class _Interrupted(Exception):
    """The load a get waited for was interrupted in its own thread (KeyboardInterrupt): the waiting get loads it."""


class ModelCache(CacheIdentity):
    """Loaded models, least recently used first out, within ``budget_bytes``.

    Args:
        budget_bytes: the most bytes of weights held at once (an int, or a string
            such as ``"16GB"``); None: 90% of the GPU's memory on CUDA, half the RAM on CPU (of a
            container's memory limit where that is less).
        size_fn: ``(ref, torch_dtype) -> bytes | None``, the estimate made before loading;
            swap in a better one (e.g. a meta-device estimate) without touching the cache.
            None: unknown, nothing is reserved and the measured size is charged after loading.
        loader: ``(ref, dtype=, device=) -> LoadedModel``; ``models.load_model`` by default.
        hub_refresh_s: how long the commit a hub revision (``org/name@main``) resolved to is
            trusted before the hub is asked again; a long-running Space then picks up new
            weights pushed to ``main`` within this time. A 40-hex commit revision never moves.

    Thread-safe, and no lock is held through a load (see the module docstring).
    """

    def __init__(self, budget_bytes: int | str | None = None, *, size_fn: SizeFn = estimate_nbytes,
                 loader: Callable[..., LoadedModel] = load_model, hub_refresh_s: float = 300.0) -> None:
        self._budget = None if budget_bytes is None else parse_bytes(budget_bytes)
        if self._budget is not None and self._budget <= 0:
            raise ConfigError(f"budget_bytes must be > 0, got {budget_bytes!r}")
        if not hub_refresh_s >= 0:
            raise ConfigError(f"hub_refresh_s must be >= 0 seconds, got {hub_refresh_s!r}")
        self.size_fn = size_fn
        self.loader = loader
        self._entries: collections.OrderedDict[tuple, _Entry] = collections.OrderedDict()  # LRU first
        self._loading: dict[tuple, _Load] = {}  # key -> the load in flight
        self._retired: list[tuple[weakref.ref, int]] = []  # evicted models (weakly) and their charge
        self._fingerprints: dict[str, str] = {}  # file-hash memo for checkpoints.fingerprint
        self._hub: dict[str, tuple[str, float]] = {}  # repo@revision -> (commit, monotonic time resolved)
        self.hub_refresh_s = hub_refresh_s
        self._lock = threading.RLock()  # held only for bookkeeping, never through a load, a hash or a request
        self._cond = threading.Condition(self._lock)  # notified when a load ends or a ``use`` block is left
        self._waiting: dict[int, Waiting] = {}  # thread id -> what it waits for (model_cache_waits)
        self._queue: list[object] = []  # loads waiting for room, in the order they came: served in that order
        self.stats = {"hits": 0, "loads": 0, "evictions": 0, "waits": 0}

    # -- introspection -------------------------------------------------------------
    @property
    def budget_bytes(self) -> int | None:
        """The budget; None until the first load picks the device default."""
        return self._budget

    @property
    def used_bytes(self) -> int:
        """Bytes charged: the loaded models, plus what is reserved for the loads in flight."""
        with self._lock:
            return sum(e.nbytes for e in self._entries.values()) + sum(load.reserved for load in self._loading.values())

    @property
    def retained_bytes(self) -> int:
        """Bytes of evicted models that a caller still holds (not freed yet, and no longer in ``used_bytes``)."""
        gc.collect()  # a model dropped by its last holder but still in a reference cycle is not held
        with self._lock:
            self._retired = [(model, nbytes) for model, nbytes in self._retired if model() is not None]
            return sum(nbytes for _, nbytes in self._retired)

    @property
    def loaded(self) -> list[str]:
        """Names of the loaded checkpoints, least recently used first."""
        with self._lock:
            return [e.loaded.ref.name for e in self._entries.values()]

    def resident(self, device: str | torch.device | None = None) -> list[tuple[CheckpointRef, int]]:
        """``(reference, bytes charged)`` of each loaded model, least recently used first; only those on
        ``device`` when given (``"cuda"`` is ``cuda:0``)."""
        want = None if device is None else resolve_device(str(device))
        with self._lock:
            return [(e.loaded.ref, e.nbytes) for e in self._entries.values()
                    if want is None or (e.loaded.device.type, e.loaded.device.index or 0) == (want.type, want.index or 0)]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, ref: CheckpointRef | str) -> bool:
        rid = self._loaded_identity(ref)
        with self._lock:
            return any(key[0] == rid for key in self._entries)


    def __repr__(self) -> str:
        return f"ModelCache({len(self)} loaded, {format_bytes(self.used_bytes)} of {format_bytes(self._budget)})"


    # -- the cache -----------------------------------------------------------------
    def get(self, ref: CheckpointRef | str, *, dtype: str = "auto", device: str = "auto",
            cancel: threading.Event | None = None, on_wait: Callable[[CacheWait], object] | None = None,
            on_load: Callable[[CheckpointRef], object] | None = None) -> LoadedModel:
        """The loaded model for ``ref``, loading it (and evicting LRU models) when needed.

        A checkpoint re-saved with different files at the same path is reloaded. The model may be
        evicted by a later load (of this or another thread) while the caller still uses it: it keeps
        working, and is freed when the caller lets go. Use ``use`` to keep it loaded meanwhile.
        ``cancel``: set it, then call ``wake()``, to end a wait (for room, or for this model's load
        in another thread) with ``WaitCancelled``; a load under way is not cut short.
        ``on_wait(wait)``: called as this call starts waiting, and again when what it waits for changes
        (``CacheWait``: for room, for another thread's load, or for its turn; what it needs; who holds it).
        ``on_load(ref)``: called once its room is reserved, just before it loads ``ref`` (not on a hit, nor
        when another thread loads it). Both run in this thread with no lock held (they may read the cache,
        or wait for a thread that does); what they raise ends the call, holding and reserving nothing.

        Raises:
            MemoryBudgetError: the model alone is bigger than the budget, or the rest of the budget
                is held by ``use`` blocks that cannot end while this waits: this thread's, or those of a
                thread that waits for this one.
            CheckpointNotFoundError, DeviceError: from loading (also to a get that waited for that load).
            WaitCancelled: ``cancel`` was set while it waited.
        """
        return self._get(ref, dtype, device, pin=None, asked=_Asked(cancel, on_wait, on_load)).loaded

    def use(self, ref: CheckpointRef | str, *, dtype: str = "auto", device: str = "auto",
            cancel: threading.Event | None = None, on_wait: Callable[[CacheWait], object] | None = None,
            on_load: Callable[[CheckpointRef], object] | None = None) -> ContextManager[LoadedModel]:
        """``get``, and the model is not evicted to make room for another until the block is left.

        A load that needs its room meanwhile waits for the block to end (in another thread), or
        raises ``MemoryBudgetError`` (in this one). ``evict`` and ``clear`` still drop it, as asked.
        The block may be entered again while it is open (nested, or by other threads): each entry is a block of
        its own, and the model stays in use until the last of them is left.
        """
        return _InUse(lambda pin: self._get(ref, dtype, device, pin=pin, asked=_Asked(cancel, on_wait, on_load)),
                      self._unpin)

    def wake(self) -> None:
        """Wake the threads waiting in this cache, so that one whose ``cancel`` event was just set stops waiting."""
        with self._cond:
            self._cond.notify_all()

    def _get(self, ref: CheckpointRef | str, dtype: str, device: str, *, pin: _Pin | None, asked: _Asked) -> _Entry:
        """``ref``'s entry, a hit or loaded by this thread; a load it takes on is ended whatever ends the call."""
        taken: list[tuple[tuple, _Load]] = []  # the load this thread took on, noted before other threads can see it
        try:
            found = self._find(_as_ref(ref), dtype, device, pin, asked, taken)
            return found if isinstance(found, _Entry) else self._load(*found, dtype, device, pin, asked)
        except BaseException:
            if taken:  # an interrupt before its load began; else already ended (or landed), and this does nothing
                self._end_load(*taken[0], _Interrupted())
            raise

    def _find(self, ref: CheckpointRef, dtype: str, device: str, pin: _Pin | None, asked: _Asked,
              taken: list) -> _Entry | tuple:
        """A hit (pinned), or what this thread is to load: ``(key, load, ref, torch_dtype)``, its load in ``taken``."""
        me = threading.get_ident()
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        while True:
            if ref.path is None:  # load the very commit the fingerprint names, not wherever the branch is by then
                commit = self._commit(ref)
                fp, want = hub_fingerprint(ref, commit), dataclasses.replace(ref, revision=commit)
            else:
                fp, want = self.fingerprint(ref), ref
            key = (self._identity(want), str(torch_dtype), str(dev))
            stale = []
            with self._lock:
                if pin and not self._holds(me) and key in self._entries and self._queue:
                    ahead = list(self._queue)  # loads waiting for room came first: pinning now could starve them
                    self.stats["waits"] += 1
                    self._wait(lambda: not any(turn in self._queue for turn in ahead), asked, ref, "for the loads before it",
                               lambda: CacheWait(ref.name, "turn", budget_bytes=self._budget, holders=self._holders(),
                                                 ahead=sum(turn in self._queue for turn in ahead)))
                entry = self._entries.get(key)
                if entry is not None and entry.fingerprint == fp:
                    self._entries.move_to_end(key)
                    self.stats["hits"] += 1
                    return self._pin(entry, pin)
                load = self._loading.get(key)
                if load is None:  # this thread loads it
                    if entry is not None:  # same path, different files: the old weights are stale
                        stale.append(self._drop(key))
                    if self._budget is None:
                        self._budget = default_budget(dev)
                    load = _Load(fp, name=ref.name)
                    taken.append((key, load))
                    self._loading[key] = load
                    break
                try:  # another thread is loading it: its model, or its error, is this get's too
                    # recorded inside the try: an interrupt at any point leaves no wait behind for others to count
                    self._waiting[me] = Waiting(loader=load.thread)
                    if me in (stuck := self._never_go_on()):  # that load waits for room this thread's blocks hold
                        raise MemoryBudgetError(
                            f"{ref.name} is being loaded by another thread that waits for room held by models in use "
                            f"({self._held_by(me, stuck, load.thread)}); waiting for it would never end: {_AFTER_BLOCK}")
                    self.stats["waits"] += 1
                    if self._holds(me):
                        load.pinned_waiters.add(me)
                    self._cond.notify_all()  # a load waiting for room must not wait in line behind others now
                    self._wait(load.future.done, asked, ref, "for its load in another thread",
                               lambda: CacheWait(ref.name, "load", loader=thread_names([load.thread])[0]))
                finally:
                    load.pinned_waiters.discard(me)
                    self._waiting.pop(me, None)
            with contextlib.suppress(_Interrupted):  # interrupted: look again, and this thread loads it
                load.future.result()
            # look again: a hit now (pinned under the lock), or loaded again if evicted or re-saved meanwhile
        self._free(stale)
        return key, load, want, torch_dtype

    def _load(self, key: tuple, load: _Load, ref: CheckpointRef, torch_dtype: torch.dtype, dtype: str, device: str,
              pin: _Pin | None, asked: _Asked) -> _Entry:
        """Reserve room for ``ref``, load it (no lock held), and add it; whatever happens, ``load`` ends."""
        dev = torch.device(key[2])
        no_room = False  # this thread's wait for room ended it (no room, cancelled) or its caller's hook raised
        stopped: list[bool] = []  # this thread's wait for its build turn ended it, or a hook raised
        try:
            estimate = self.size_fn(ref, torch_dtype) or 0
            self._check_fits(ref, estimate, torch_dtype)
            try:
                self._reserve(load, ref, estimate, asked)
                if asked.on_load is not None:
                    asked.on_load(ref)
            except BaseException:
                no_room = True
                raise

            def check_cancel(what: str) -> None:
                with self._lock:
                    self._check_cancel(asked.cancel, ref, what)

            with watching(**build_hooks(ref, asked, stopped, check_cancel)):
                loaded = self.loader(ref, dtype=dtype, device=device)
            nbytes = max(model_nbytes(loaded.model), estimate)
            try:
                self._check_fits(ref, nbytes, torch_dtype)
            except MemoryBudgetError:
                del loaded
                self._free([dev])
                raise
            with self._cond:
                # no waiting here: a load holding a reservation never waits, so loads never wait on each other
                evicted = self._evict_lru(nbytes - load.reserved)  # the estimate was low (or unknown)
                entry = self._entries[key] = _Entry(loaded, load.fingerprint, nbytes)
                self._pin(entry, pin)
                self.stats["loads"] += 1
                del self._loading[key]
                load.future.set_result(None)  # under the lock: the gets waiting for it wait on the condition
                self._cond.notify_all()
        except BaseException as e:
            # interrupted, cancelled or out of room in this thread only: the gets waiting look again and load it
            mine = no_room or bool(stopped) or not isinstance(e, Exception) or isinstance(e, WaitCancelled)
            self._end_load(key, load, _Interrupted() if mine else e)
            raise
        self._free(evicted)
        return entry

    def _end_load(self, key: tuple, load: _Load, error: BaseException) -> None:
        """Forget ``load``, which did not land, and give its waiting gets ``error``; once (a second call does nothing)."""
        with self._cond:
            if self._loading.get(key) is load:
                del self._loading[key]
            if not load.future.done():  # (an interrupt just after it was settled)
                load.future.set_exception(error)
            self._cond.notify_all()

    def _reserve(self, load: _Load, ref: CheckpointRef, nbytes: int, asked: _Asked) -> None:
        """Hold ``nbytes`` of the budget for ``load``: evict LRU models not in use, else wait for room.

        Waits for loads in flight (they always end) and for ``use`` blocks of threads that can go on; a wait
        that no release could end (the room is held by this thread's blocks, or by those of threads waiting
        for this one) is an error naming them (``model_cache_waits``). Loads that wait are served in the order
        they came (``_queue``), but for those with blocks open (in this thread or a waiting get's): others may
        be waiting for those blocks, so they never wait in line.
        """
        evicted, turn, waited, me = [], object(), False, threading.get_ident()
        try:
            with self._cond:
                try:
                    while True:
                        exempt = self._holds(me) or bool(load.pinned_waiters)
                        if exempt or self._queue[:1] in ([], [turn]):  # this load's turn
                            evicted += self._evict_lru(nbytes)
                            if self._charged() + nbytes <= self._budget:
                                load.reserved = nbytes
                                return
                        self._waiting[me] = Waiting(nbytes=nbytes)
                        if me in (stuck := self._never_go_on()):
                            raise MemoryBudgetError(
                                f"{ref.name} needs {format_bytes(nbytes)} but {format_bytes(self._charged())} of the "
                                f"model cache budget of {format_bytes(self._budget)} is held by models in use "
                                f"({self._held_by(me, stuck)}); waiting would never end: {_AFTER_BLOCK}")
                        self.stats["waits"] += not waited
                        waited = True
                        if not exempt and turn not in self._queue:
                            self._queue.append(turn)
                        if self._tell(asked, lambda: CacheWait(
                                ref.name, "room", needed_bytes=nbytes, budget_bytes=self._budget, holders=self._holders(),
                                ahead=self._queue.index(turn) if turn in self._queue else 0)):
                            continue  # the lock was let go meanwhile: look again before waiting
                        self._check_cancel(asked.cancel, ref, f"for {format_bytes(nbytes)} of room")
                        self._cond.wait()  # for a load to end, a ``use`` block to be left, or the loads before this one
                finally:
                    asked.told = None
                    self._waiting.pop(me, None)
                    if turn in self._queue:
                        self._queue.remove(turn)
                        self._cond.notify_all()  # the next in line
        finally:
            self._free(evicted)  # outside the lock, also when it raises

    def _wait(self, ready: Callable[[], bool], asked: _Asked, ref: CheckpointRef, what: str,
              wait: Callable[[], CacheWait]) -> None:
        """Wait on the condition (lock held) until ``ready()``; ``WaitCancelled`` once ``cancel`` is set."""
        try:
            while not ready():
                if self._tell(asked, wait):
                    continue  # the lock was let go meanwhile: look again before waiting
                self._check_cancel(asked.cancel, ref, what)
                self._cond.wait()
        finally:
            asked.told = None

    def _tell(self, asked: _Asked, wait: Callable[[], CacheWait]) -> bool:
        """Call ``on_wait`` with what the call waits for, when that changed; with the lock (held once) let go, so
        that the hook may take locks of its own or read the cache. True when it was called."""
        if asked.on_wait is None or (now := wait()) == asked.told:
            return False
        asked.told = now
        me = threading.get_ident()  # before the try: nothing in the finally may be cut short before the lock is back
        try:  # let go inside: an interrupt just after it still takes the lock back
            self._lock.release()
            asked.on_wait(now)
        finally:
            # As Condition.wait takes its lock back: it waits without running signal handlers, so a Ctrl-C lands once
            # the lock is back. No public call does: acquire() runs them while another thread holds the lock and gives
            # up when one raises; acquire() again on an interrupt cannot tell one that came just after it succeeded (this
            # RLock would then be held twice, for ever); signal.pthread_sigmask is Unix-only and holds back only the
            # signals it names. (Private, but Condition relies on it: the C and the pure-Python RLock both have it.)
            self._lock._acquire_restore((1, me))  # type: ignore[attr-defined]
        return True

    def _holders(self) -> tuple[Holder, ...]:
        """What holds room now: the models in ``use`` blocks, then the loads in flight (their reserved estimates)."""
        in_use = [Holder(e.loaded.ref.name, e.nbytes, False, thread_names(e.pins.values()))
                  for e in self._entries.values() if e.pins]
        loading = [Holder(load.name, load.reserved, True, thread_names([load.thread]))
                   for load in self._loading.values() if load.reserved]
        return (*in_use, *loading)

    def _check_cancel(self, cancel: threading.Event | None, ref: CheckpointRef, what: str) -> None:
        """Raise ``WaitCancelled`` when ``cancel`` is set (checked at each wake-up: ``wake()`` makes one)."""
        if cancel is not None and cancel.is_set():
            in_use = ", ".join(e.loaded.ref.name for e in self._entries.values() if e.pins) or "none"
            raise WaitCancelled(f"{ref.name} stopped waiting {what} in the model cache (models in use: {in_use})")

    def evict(self, ref: CheckpointRef | str | None = None) -> list[str]:
        """Evict ``ref`` (every dtype/device it is loaded in), or the LRU model when None.

        Models in use (``use`` blocks) are evicted too, as asked: they are freed when their users let go.

        Returns the names evicted.
        """
        with self._lock:
            if ref is None:
                keys = list(self._entries)[:1]
            else:
                rid = self._loaded_identity(ref)
                keys = [k for k in self._entries if k[0] == rid]
            names = [self._entries[k].loaded.ref.name for k in keys]
            devices = [self._drop(key) for key in keys]
        self._free(devices)
        return names

    def clear(self) -> None:
        """Evict everything loaded and free the memory (loads in flight land after)."""
        with self._lock:
            devices = [self._drop(key) for key in list(self._entries)]
        self._free(devices)

    # -- internals (called with the lock held, but _free) ----------------------------
    def _charged(self) -> int:
        return sum(e.nbytes for e in self._entries.values()) + sum(load.reserved for load in self._loading.values())

    def _unpin(self, pin: _Pin) -> None:
        """Let go of ``pin``'s model, if it took one (once: a second call finds nothing to let go of)."""
        with self._cond:
            if pin.entry is not None:
                pin.entry.pins.pop(pin, None)
                pin.entry = None
            self._cond.notify_all()

    def _pin(self, entry: _Entry, pin: _Pin | None) -> _Entry:
        if pin is not None:
            pin.entry = entry  # first: an interrupt between the two lines leaves nothing to let go of
            entry.pins[pin] = threading.get_ident()
        return entry

    def _holds(self, thread: int) -> bool:
        """Whether ``thread`` has a ``use`` block open on a model charged to the budget."""
        return any(thread in e.pins.values() for e in self._entries.values())

    def _never_go_on(self) -> set[int]:
        pinned = [(e.nbytes, set(e.pins.values())) for e in self._entries.values() if e.pins]
        return never_go_on(self._waiting, pinned, self._budget)

    def _held_by(self, me: int, stuck: set[int], loader: int | None = None) -> str:
        named = [(e.loaded.ref.name, set(e.pins.values())) for e in self._entries.values() if e.pins]
        return held_by(me, stuck, named, loader=loader)

    def _check_fits(self, ref: CheckpointRef, nbytes: int, torch_dtype: torch.dtype) -> None:
        assert self._budget is not None
        if nbytes > self._budget:
            # float16 only where it makes the model fit: not for one in 16 bits already, nor one still over the budget in it
            smaller = torch_dtype.itemsize > 2 and (self.size_fn(ref, torch.float16) or nbytes // 2) <= self._budget
            raise MemoryBudgetError(
                f"{ref.name} needs {format_bytes(nbytes)} but the model cache budget is {format_bytes(self._budget)}; "
                # the cache's argument and dtype= as compare(cache=...) and the explorer pass them; compare() says its
                # memory_budget= (budget_as), vlm-lab compare its flags (flags_in_config_errors), the Space its variables
                f"raise the budget (ModelCache(budget_bytes='{_budget_for(nbytes)}'))"
                + (" or load in a smaller dtype (dtype='float16')" if smaller else "")
            )

    def _evict_lru(self, nbytes: int) -> list[torch.device]:
        """Evict least recently used models not in use until ``nbytes`` more fit; the devices to free."""
        assert self._budget is not None
        devices = []
        for key in [k for k, e in self._entries.items() if not e.pins]:
            if self._charged() + nbytes <= self._budget:
                break
            devices.append(self._drop(key))
        return devices

    def _drop(self, key: tuple) -> torch.device:
        """Forget ``key``'s model (it is freed once no caller holds it); its device, for ``_free``."""
        entry = self._entries.pop(key)
        self.stats["evictions"] += 1
        self._retired = [(model, n) for model, n in self._retired if model() is not None]
        self._retired.append((weakref.ref(entry.loaded.model), entry.nbytes))
        self._cond.notify_all()  # room for a load waiting (evict and clear make room too)
        return entry.loaded.device

    @staticmethod
    def _free(devices: list[torch.device]) -> None:
        """Give back the memory of models just dropped (outside the lock: a collection takes a while)."""
        if not devices:
            return
        gc.collect()
        if any(device.type == "cuda" for device in devices):
            torch.cuda.empty_cache()
