"""Who waits for whom in the model cache, and which waits would never end.

Threads wait in ``ModelCache`` for room (held by models other threads use in ``with cache.use(...)``
blocks, or by loads in flight) or for another thread's load of the model they asked for. A thread may
wait for another thread's block as long as that thread can still go on: it is running (its block ends
when its work does), or it waits for something that will come. What a thread waits for is recorded
(``Waiting``) before it waits, and ``never_go_on`` tells the waits that no release could end: the
thread about to wait checks itself, so the thread whose wait would close a cycle (A waits for B's
block, B then for room A's block holds, or for A's load) is the one that stops, and the other goes on.

The check is Holt's deadlock detection on a single resource, the budget: a waiting thread can go on
when the room it needs is not held by the blocks of threads that cannot; those that can go on will in
time leave their blocks too, which may let others go on. Running threads (not waiting in the cache),
loads in flight (a load holding room never waits) and models in no block all count as freeable.

``CacheWait`` is what a ``get``/``use`` given ``on_wait=`` is told as it starts waiting: what for, and what holds it;
``_Asked`` what its caller gave for its waits, ``thread_names`` how a wait names threads, ``build_hooks`` how a load
waiting for its build turn (``model_construction``) is told and stopped (all moved, unchanged, from ``model_cache``).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING, Callable, Collection, Literal, Mapping, Sequence

if TYPE_CHECKING:
    from vlm_lab.checkpoints import CheckpointRef


@dataclasses.dataclass(frozen=True)
class Waiting:
    """What one thread waits for in the cache: ``nbytes`` of room, or the load by the thread ``loader``."""

    nbytes: int = 0
    loader: int | None = None


@dataclasses.dataclass(frozen=True)
class Holder:
    """Room of the budget that a wait needs, and who holds it: a loaded model in ``use`` blocks, or a load in flight."""

    name: str  # the checkpoint
    nbytes: int  # what the budget charges it (a load in flight: its estimate, reserved)
    loading: bool  # a load in flight (it ends by itself); else a loaded model, held until its blocks are left
    threads: tuple[str, ...]  # the names of the threads whose blocks use it, or of the thread loading it


@dataclasses.dataclass(frozen=True)
class CacheWait:
    """Why a ``get``/``use`` waits, given to its ``on_wait`` when it starts waiting and again whenever that changes.

    ``reason``: ``"room"``: loading ``name`` needs ``needed_bytes`` of ``budget_bytes``, and ``holders`` hold the
    rest (``ahead`` loads that came first wait for room too, and go first); ``"load"``: the thread named
    ``loader`` is loading ``name``, and its model (or its error) is this call's; ``"turn"``: ``name`` is loaded,
    but ``ahead`` loads that came first wait for room that ``holders`` hold, and a new ``use`` of a model goes
    after them (repeated uses could otherwise keep them waiting for ever); ``"build"``: its room is reserved and
    its load began (``on_load``), but the thread named ``loader`` is building ``building`` (one model is built at a
    time in a process: ``model_construction``), and this load's own build waits for it.
    """

    name: str
    reason: Literal["room", "load", "turn", "build"]
    needed_bytes: int = 0
    budget_bytes: int = 0
    holders: tuple[Holder, ...] = ()
    ahead: int = 0
    loader: str = ""
    building: str = ""


def never_go_on(waiting: Mapping[int, Waiting], pinned: Sequence[tuple[int, Collection[int]]], budget: int) -> set[int]:
    """The waiting threads that no release could ever let go on.

    Args:
        waiting: thread id -> what it waits for.
        pinned: for each model charged to the budget and in use, its bytes and the ids of the threads
            whose blocks use it (it is freed only once all of them have left).
        budget: the cache's budget in bytes.
    """
    goes_on: set[int] = set()
    progress = True
    while progress:
        progress = False
        held = sum(nbytes for nbytes, users in pinned if any(t in waiting and t not in goes_on for t in users))
        for thread, wait in waiting.items():
            if thread in goes_on:
                continue
            if wait.loader is not None:  # a load ends once its thread can go on (it is running, or will be)
                ok = wait.loader not in waiting or wait.loader in goes_on
            else:  # room: whatever is not held by the blocks of threads stuck with it can be made free
                ok = held + wait.nbytes <= budget
            if ok:
                goes_on.add(thread)
                progress = True
    return set(waiting) - goes_on


def held_by(me: int, stuck: Collection[int], named: Sequence[tuple[str, Collection[int]]], *,
            loader: int | None = None) -> str:
    """``checkpoint-0 by this thread; checkpoint-250 by another thread that waits for this one``: the models in
    use (``named``: name and the threads using it) whose blocks cannot end while ``me`` waits; ``loader``: the
    thread whose load ``me`` would wait for, named as such."""
    mine = [name for name, users in named if me in users]
    loaders = [name for name, users in named if me not in users and loader in users]
    theirs = [(name, {t for t in users if t in stuck}) for name, users in named if me not in users and loader not in users]
    theirs = [(name, users) for name, users in theirs if users]
    parts = [f"{', '.join(mine)} by this thread"] if mine else []
    if loaders:
        parts.append(f"{', '.join(loaders)} by the thread loading it")
    if theirs:
        many = len(set().union(*(users for _, users in theirs))) > 1
        who = "other threads that wait" if many else "another thread that waits"
        parts.append(f"{', '.join(name for name, _ in theirs)} by {who} for this one")
    return "; ".join(parts)


def thread_names(idents) -> tuple[str, ...]:
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    return tuple(names.get(ident, f"thread {ident}") for ident in dict.fromkeys(idents))


@dataclasses.dataclass
class _Asked:
    """What the caller of one ``get``/``use`` gave for its waits and its load, and what ``on_wait`` was last told."""

    cancel: threading.Event | None = None
    on_wait: Callable[[CacheWait], object] | None = None
    on_load: Callable[[CheckpointRef], object] | None = None
    told: CacheWait | None = None


def build_hooks(ref, asked: _Asked, stopped: list, check_cancel: Callable[[str], None]) -> dict:
    """``model_construction.watching``'s hooks for ``ref``'s load: ``waiting`` while its build waits for its turn
    (another thread's build holds it; called with no lock held, at least every ``POLL_S``) tells ``on_wait`` whose
    and stops on ``cancel`` (``check_cancel(what)``); ``began``, when the turn came after a wait, calls ``on_load``
    again (its status said it waited). A hook that raises appends to ``stopped`` (the load ended in this thread)."""

    def waiting(building) -> None:
        try:
            if building is not None and asked.on_wait is not None:
                now = CacheWait(ref.name, "build", loader=building.thread, building=building.name)
                if now != asked.told:
                    asked.told = now
                    asked.on_wait(now)
            check_cancel(f"for {building.name}'s load in thread {building.thread!r}" if building else "for its turn to build")
        except BaseException:
            stopped.append(True)
            raise

    def began() -> None:
        asked.told = None
        try:
            if asked.on_load is not None:
                asked.on_load(ref)
        except BaseException:
            stopped.append(True)
            raise

    return {"waiting": waiting, "began": began}
