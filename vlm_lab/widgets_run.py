"""The explorer's Compare in a background thread: start it, stop it at the next safe point, wait for it.

A Compare with real checkpoints loads models and generates for minutes. Run in the kernel's own
thread it would block every other cell, and the only way out would be interrupting the kernel. Run
here, the kernel stays free (a Stop click is a message the kernel must be free to read), and:

- ``stop()`` ends the run at the next safe point: before the next checkpoint, or inside
  ``model.generate`` before its next forward pass (one token), through a forward pre-hook that
  raises ``RunStopped`` in the run's own thread only. A model that is loading finishes its load first
  (``from_pretrained`` cannot be cut short); one waiting in the model cache (for room another cell's
  model holds, or for another thread's load of it) stops waiting at once (``stop_event`` is the cache's
  ``cancel``), and one the cache has not begun to load never loads. The cache tells which through its
  ``on_wait`` and ``on_load`` hooks, and ``waiting_status`` says what a wait is for.
- ``wait()`` joins the run, so a script, papermill and nbval get finished outputs; an exception the
  run did not turn into a row is re-raised there, and an interrupt while waiting stops the run.
- Runs are one at a time in the process (``ONE_AT_A_TIME``). Not for correctness: the model cache is
  thread-safe (each checkpoint answers inside ``ModelCache.use``) and sampling draws from a generator
  of its own, not torch's global one. For speed and memory: on CPU each ``generate`` already uses
  every core, so two runs at once only share them; on a GPU the cache's budget counts weights only,
  and two generations' activations at once may not fit; and with a budget for one model, two runs
  over the same checkpoints would evict each other's models in turn, loading each more than once.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from vlm_lab.checkpoints import CheckpointRef
    from vlm_lab.model_cache_waits import CacheWait, Holder

RUN_THREAD = "vlm-lab-explorer-compare"  # the name of every explorer's run thread
ONE_AT_A_TIME = threading.Lock()  # held by the explorer run that is generating, whichever explorer it belongs to
_HOLDER: list[BackgroundRun] = []  # the run holding ONE_AT_A_TIME, for stop_running()


def stop_running() -> bool:
    """Stop the Compare running in this kernel, whichever explorer started it; False when none runs.

    For a run whose explorer is no longer on screen (its cell was run again, so its Stop button is
    gone): an explorer waiting for it then goes on.
    """
    holder = list(_HOLDER)
    for run in holder:
        run.stop()
    return bool(holder)


class RunStopped(Exception):
    """Stop was asked during a checkpoint's turn: raised from its forward pass (``"while answering"``),
    once its load ended (``"after loading"``) or from a wait in the model cache (``stopped_waiting``); the message says which."""


def stopped_note(todo: list[tuple[CheckpointRef, str]], rows: list, stopped_in: str | None, *, started: bool) -> str:
    """What a stopped run finished, which checkpoint was cut off (``stopped_in``: how), and which never ran."""
    if not started:
        return "Stopped before it started (it was waiting for another explorer's Compare to finish)."
    names = [name for _, name in todo]
    rest = names[len(rows) + (stopped_in is not None):]
    parts = [f"Stopped: {len(rows)} of {len(todo)} checkpoints finished"]
    if stopped_in is not None:
        parts.append(stopped_in)
    if rest:
        parts.append(f"not run: {', '.join(rest)}")
    return "; ".join(parts) + "."


def waiting_status(wait: CacheWait, name: str, step: str) -> str:
    """What the explorer says while ``name``'s turn waits in the model cache, from what the cache told ``on_wait``."""
    from vlm_lab.units import format_bytes

    if wait.reason == "build":  # one model is built at a time in a process (model_construction)
        return (f"Waiting to load {name} {step}: {_who(wait.loader)} is loading {wait.building}, and models load "
                "one at a time (Stop ends the wait).")
    if wait.reason == "load":
        return f"Waiting for {name} {step}: {_who(wait.loader)} is loading it, for this run too (Stop ends the wait)."
    held = "; ".join(_holder(h) for h in wait.holders)
    first = {0: "loads that came first wait", 1: "1 load that came first waits"}.get(
        wait.ahead, f"{wait.ahead} loads that came first wait")
    goes = "it goes" if wait.ahead == 1 else "they go"
    if wait.reason == "turn":
        held = f" held by {held}" if held else ""
        return f"Waiting for {name} {step}: it is loaded, but {first} for room{held}; {goes} first (Stop ends the wait)."
    need = f"it needs {format_bytes(wait.needed_bytes)} of the model cache's {format_bytes(wait.budget_bytes)} budget"
    if held:
        need += f", and the room is held by {held}"
    after = f"{first} for room too, and {goes} first" if wait.ahead else "it loads once that room is free"
    return f"Waiting for room for {name} {step}: {need}; {after} (Stop ends the wait)."


def stopping_status(phase: str, name: str) -> str:
    """What a Stop does to ``name``'s turn in the model cache: ``phase`` is what the cache's hooks last said."""
    return {"preparing": f"Stopping: {name} stops before it loads.",
            "waiting": f"Stopping: {name} stops waiting in the model cache now.",
            "loading": f"Stopping once {name} has loaded: a load cannot be cut short."}[phase]  # a minute for a large one  # fmt: skip


def _holder(holder: Holder) -> str:
    from vlm_lab.units import format_bytes

    how = "loading in" if holder.loading else "in use in"
    return f"{holder.name} ({format_bytes(holder.nbytes)}) {how} {', '.join(map(_who, holder.threads))}"


def _who(thread: str) -> str:
    """A thread by what it is to a notebook's user: the kernel runs cells in its main thread."""
    if thread == "MainThread":
        return "the kernel's main thread (a running cell)"
    if thread == RUN_THREAD:
        return "an explorer's Compare"
    return f"thread {thread!r}"


def stopped_waiting(cancelled: Exception, ref: CheckpointRef) -> RunStopped:
    """The ``RunStopped`` for a wait in the model cache that Stop ended, saying what it waited for and which models hold it.

    ``cancelled`` is the cache's ``WaitCancelled``: "NAME stopped waiting for 1.2 MB of room in the model cache (models in use: ...)".
    """
    said, mine = str(cancelled), f"{ref.name} stopped "
    return RunStopped(f"while {said[len(mine):]}" if said.startswith(mine) else f"while waiting in the model cache ({said})")


class BackgroundRun:
    """One Compare at a time for one explorer, in a daemon thread.

    ``error`` is what the last run raised that was not a checkpoint's own failure (a bug, a
    widget that went away), kept for ``wait()`` to raise; the explorer also shows it in its output.
    """

    def __init__(self, *, on_stop: Callable[[], None] = lambda: None) -> None:
        self.on_stop = on_stop  # called once when a stop is asked (by stop() or an interrupt in wait())
        # set when the run's body has ended; waited on instead of Thread.join, which an interrupt can
        # break in Python 3.11 (bpo-45274's fix marks a thread still running as stopped)
        self._done = threading.Event()
        self._done.set()
        self._stop = threading.Event()
        self.error: BaseException | None = None

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    @property
    def stop_event(self) -> threading.Event:
        """Set when a stop is asked: the ``cancel`` of the run's waits in the model cache (``on_stop`` wakes them)."""
        return self._stop

    def start(self, target: Callable[[], Any], *, name: str) -> None:
        """Run ``target`` in a new thread; the caller has checked that none is running."""
        if self.running:
            raise RuntimeError("a Compare is already running: wait() for it or stop() it first")
        self._stop.clear()
        self.error = None
        self._done.clear()

        def body() -> None:
            try:
                target()
            except BaseException as e:  # noqa: BLE001 - kept for wait(); a thread's traceback would land in no cell
                self.error = e
            finally:
                self._done.set()

        threading.Thread(target=body, name=name, daemon=True).start()

    def stop(self) -> None:
        """Ask the run to end at its next safe point (a no-op when none is running or one was asked)."""
        if self.running and not self._stop.is_set():
            self._stop.set()
            self.on_stop()

    def wait(self, timeout: float | None = None, *, raise_error: bool = True) -> bool:
        """Wait for the run to end; True when it has (or none was running).

        An interrupt while waiting (the kernel's stop button, Ctrl-C in a script) asks the run to
        stop, waits for it to reach its safe point, then propagates. Re-raises what the run raised
        (once), unless ``raise_error`` is False.
        """
        try:
            done = self._done.wait(timeout)
        except KeyboardInterrupt:
            self.stop()
            self._done.wait()  # a second interrupt leaves it to stop by itself
            raise
        if not done:
            return False
        if self.error is not None and raise_error:
            error, self.error = self.error, None  # raised once, not by every later wait()
            raise error
        return True

    @contextlib.contextmanager
    def turn(self, waiting: Callable[[], None]) -> Iterator[bool]:
        """Hold ``ONE_AT_A_TIME`` for the body; ``waiting()`` is called once if another run holds it.

        Yields False (and runs nothing) when Stop comes while waiting.
        """
        if not ONE_AT_A_TIME.acquire(blocking=False):
            waiting()
            while not ONE_AT_A_TIME.acquire(timeout=0.1):  # 0.1 s: how soon a Stop while waiting is seen
                if self._stop.is_set():
                    yield False
                    return
        _HOLDER.append(self)
        try:
            yield True
        finally:
            _HOLDER.remove(self)
            ONE_AT_A_TIME.release()

    @contextlib.contextmanager
    def stoppable(self, model) -> Iterator[None]:
        """While the body runs, a Stop raises ``RunStopped`` at ``model``'s next forward pass.

        Only in this run's thread: other code in the kernel using the same cached model is not touched.
        """
        me = threading.get_ident()

        def check(_module, _args) -> None:
            if self._stop.is_set() and threading.get_ident() == me:
                raise RunStopped("while answering")

        handle = model.register_forward_pre_hook(check)
        try:
            yield
        finally:
            handle.remove()
