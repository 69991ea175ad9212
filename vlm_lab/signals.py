"""Signals: the name of one that ended a process (for messages that say how it ended), and SIGTERM as an exception."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["Terminated", "signal_name", "terminate_raises"]


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
