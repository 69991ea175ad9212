"""Signals: the name of one that ended a process (for messages that say how it ended), and SIGTERM as an exception."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Terminated", "signal_name", "signals_after_block", "terminate_raises"]


def signal_name(number: int, *, if_sigkill: str = "") -> str:
    """``'SIGSEGV'``; ``'signal 40'`` for a real-time signal (valid, but not in ``signal.Signals``);
    for SIGKILL (what the kernel's out-of-memory killer sends) ``if_sigkill`` follows in parentheses."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    return f"{name} ({if_sigkill})" if number == signal.SIGKILL and if_sigkill else name


class Terminated(KeyboardInterrupt):
    """SIGTERM (``timeout``, ``docker stop``, ``systemctl stop``, a cancelled CI or Slurm job) raised where the
    process is, as Ctrl-C raises ``KeyboardInterrupt``: a subclass, so every ``except KeyboardInterrupt`` that
    cleans up or keeps finished work (a temp file removed, the batches done, the rows measured) does so for
    it too. Left to its default, SIGTERM ended the process on the spot, saying nothing. ``args[0]``: the signal."""

    @property
    def exit_code(self) -> int:
        return 128 + self.args[0]  # what a shell reports for a process the signal ended: 143


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises ``Terminated`` in the main thread. A SIGTERM already ignored stays
    ignored; off the main thread (which alone can set handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        yield
        return

    def terminated(signum: int, _frame: object) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_after_block() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP arriving inside the block are handled (by the handler they had) when it ends.

    For a step that must not be cut in two: a Ctrl-C between the sweep's ``pool.submit`` returning and the run
    being noted in ``futures`` left a run executing that ``_stop`` neither counted nor waited for; a SIGTERM
    inside ``Popen`` starting a kernel lost its process id, so nothing could stop the kernel. Signals with no
    Python handler (ignored, or SIG_DFL) are left as they are; off the main thread nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, Any]] = []
    names = ("SIGINT", "SIGTERM", "SIGHUP")
    handlers = {s: signal.getsignal(s) for s in (getattr(signal, n) for n in names if hasattr(signal, n))}
    deferred = {s: h for s, h in handlers.items() if callable(h)}
    for signum in deferred:
        signal.signal(signum, lambda number, frame: caught.append((number, frame)))
    try:
        yield
    finally:
        for signum, handler in deferred.items():
            signal.signal(signum, handler)
        if caught:  # the first one, as it would have been handled: KeyboardInterrupt, Terminated, SweepTerminated
            number, frame = caught[0]
            deferred[number](number, frame)
