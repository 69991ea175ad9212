"""The name of the signal that ended a process, for messages that say how it ended."""

from __future__ import annotations

import signal

__all__ = ["signal_name"]


def signal_name(number: int, *, if_sigkill: str = "") -> str:
    """``'SIGSEGV'``; ``'signal 40'`` for a real-time signal (valid, but not in ``signal.Signals``);
    for SIGKILL (what the kernel's out-of-memory killer sends) ``if_sigkill`` follows in parentheses."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    return f"{name} ({if_sigkill})" if number == signal.SIGKILL and if_sigkill else name
