"""The locks of a sweep folder: one per invocation (per shard spec), one per run.

``runs/<sweep>/.lock`` (``.lock.<i>-of-<n>`` per shard) is held while an invocation runs, so a
second scheduled invocation of the same sweep reports and leaves; ``runs/<sweep>/.locks/<run-id>``
is held while a run executes, whoever executes it, so invocations with different shard specs
(or machines sharing the folder) never execute one run into one folder at once. Both are
``flock``\\ s: the kernel drops them when the holder dies, so a killed sweep leaves no stale lock.

Readers (``--dry-run``, summaries, notebook 04) ask whether a run's lock is held without taking it
(``run_is_running``): a run lock also carries an open-file-description lock (Linux's ``F_OFD_*``,
dropped with the flock), which ``F_OFD_GETLK`` tests and nothing else. A probe that took the lock,
even for an instant, made a sweep starting that run in that instant find it taken and leave it
to "another invocation" (exit 75, the run not run).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import errno
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Iterator

from vlm_lab.errors import SweepError

LOCKED_EXIT_CODE = 75  # EX_TEMPFAIL: another invocation holds the lock; try again later
RUN_LOCKS = ".locks"  # runs/<sweep>/.locks/<run-id>: held while a run executes, whoever runs it


class SweepLockedError(SweepError):
    """Another invocation of the same sweep (and shard) is running."""

    exit_code = LOCKED_EXIT_CODE


def now() -> str:
    """The UTC time as the sweep's files and log lines write it."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _try_flock(handle: Any, grace_s: float) -> bool:
    """Take an exclusive flock on ``handle``, retrying for ``grace_s``; False if another process holds it.

    The grace period: a just-killed sweep's child caught between fork and exec still shares
    the lock for a moment.
    """
    import fcntl

    deadline = time.monotonic() + grace_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


@contextlib.contextmanager
def sweep_lock(folder: Path, name: str, *, shard: tuple[int, int] = (0, 1), grace_s: float = 2.0) -> Iterator[Path]:
    """Hold ``folder/.lock`` (``.lock.<i>-of-<n>`` for shard i of n > 1) for sweep ``name``.

    Raises:
        SweepLockedError: another invocation holds it (the message names who, as it wrote itself).
        OSError: the folder or the lock file cannot be written.
    """
    index, count = shard
    path = folder / (".lock" if count == 1 else f".lock.{index}-of-{count}")
    folder.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:  # closing the file releases the lock
        if not _try_flock(handle, grace_s):
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SweepLockedError(
                f"sweep {name!r} is already running ({holder}; {path} is locked); "
                f"this invocation exits without running anything{_stuck(holder)}"
            )
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {now()}\n")
        handle.flush()
        yield path


STUCK_AFTER_H = 12  # a lock held this long is named as maybe hung: every later night exits 75 (a success to systemd)


def _stuck(holder: str) -> str:
    """A note when the holder (``pid N on HOST since TIME``, as ``sweep_lock`` writes it) has held the lock for
    ``STUCK_AFTER_H`` hours or more: a hung kernel with no ``run_timeout:`` or ``execution_timeout:`` holds it for ever."""
    found = re.fullmatch(r"pid (\d+) on (\S+) since (\S+)", holder)
    try:
        since = dt.datetime.fromisoformat(found.group(3)) if found else None
    except ValueError:
        since = None
    if since is None or since.tzinfo is None:
        return ""
    hours = (dt.datetime.now(dt.timezone.utc) - since).total_seconds() / 3600
    if hours < STUCK_AFTER_H:
        return ""
    took = f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.0f} hours"
    return (f". It has held the lock for {took}: if it is hung (a cell waiting for ever: the sweep file has no "
            f"run_timeout: or execution_timeout:), `kill {found.group(1)}` on {found.group(2)} stops it (its runs resume "
            "at the next invocation), and a run_timeout: (e.g. 2h) in the sweep file, or run_timeout='2h' as it is run, "
            "keeps it from happening again")


@contextlib.contextmanager
def run_lock(sweep_folder: Path, run_id: str, *, grace_s: float = 0.5) -> Iterator[bool]:
    """Hold the run's own lock (``sweep_folder/.locks/<run-id>``) while it executes; yields False,
    holding nothing, when another invocation is executing it.

    The sweep lock is per shard spec: ``--shard 0/2`` and a plain invocation (or ``0/3``) hold
    different ones, and without this lock would execute the same run into one folder at once.
    The flock excludes other runners (of any vlm_lab version); the OFD lock beside it is what
    ``run_is_running`` sees.
    """
    path = sweep_folder / RUN_LOCKS / run_id
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        held = _try_flock(handle, grace_s)
        if held:
            with contextlib.suppress(OSError):  # a filesystem without them: readers fall back to flock
                _ofd(handle, "F_OFD_SETLK", "F_WRLCK")
        yield held


def run_is_running(sweep_folder: Path, run_id: str) -> bool:
    """Whether an invocation (of this process or another, on any machine sharing the folder) holds
    the run's lock, asked without taking it, creating nothing (a folder this user may only read works).

    Where OFD locks are missing (not Linux, or the filesystem has none): a shared flock for an
    instant, which a runner starting then waits out (``run_lock``'s grace).
    """
    import fcntl

    try:
        handle = open(sweep_folder / RUN_LOCKS / run_id, "rb")
    except FileNotFoundError:  # no lock file: nobody ever locked it here (a copied or older folder)
        return False
    with handle:
        try:
            return _ofd(handle, "F_OFD_GETLK", "F_WRLCK").l_type != fcntl.F_UNLCK
        except OSError:
            pass
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            return True
        return False


class _Flock(ctypes.Structure):
    """``struct flock`` of 64-bit Linux (F_OFD_* take it with a 64-bit ``off_t`` everywhere)."""

    _fields_ = [("l_type", ctypes.c_short), ("l_whence", ctypes.c_short), ("l_start", ctypes.c_int64),
                ("l_len", ctypes.c_int64), ("l_pid", ctypes.c_int)]  # fmt: skip


def _ofd(handle: Any, command: str, kind: str) -> _Flock:
    """``fcntl(handle, F_OFD_<command>)`` over the whole file; OSError where there are no OFD locks."""
    import fcntl

    if not hasattr(fcntl, command) or ctypes.sizeof(ctypes.c_void_p) != 8:
        raise OSError(errno.ENOSYS, f"no {command} here")
    request = _Flock(l_type=getattr(fcntl, kind), l_whence=os.SEEK_SET, l_start=0, l_len=0, l_pid=0)
    return _Flock.from_buffer_copy(fcntl.fcntl(handle, getattr(fcntl, command), bytes(request)))
