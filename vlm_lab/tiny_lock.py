"""The tiny build's lock: one build at a time into a folder, and which build holds it now.

The lock is an flock on ``OUT/.build.lock``. On a filesystem without file locks it is the
existence of ``OUT/.build.lock.soft`` instead, a marker naming the builder's pid and host
(filelock's ``SoftFileLock``, where huggingface_hub falls back too): not building unlocked,
because two builds into one folder replace each other's checkpoints mid-save.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from vlm_lab.errors import OutputPathError

LOCK_FILE = ".build.lock"
SOFT_LOCK_FILE = ".build.lock.soft"
# flock's answers where the filesystem keeps no locks: NFS without lockd (ENOLCK), Lustre mounted
# without -o flock (ENOSYS), some FUSE and SMB mounts (EOPNOTSUPP, EINVAL)
_NO_FILE_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL}


class Holder(NamedTuple):
    """The build holding a folder's lock: ``host`` is ``None`` for this host (or one that cannot be named)."""

    pid: int | None = None
    host: str | None = None


@contextlib.contextmanager
def build_lock(out: Path) -> Iterator[None]:
    """Hold ``out``'s build lock; while another build holds it, say so and wait.

    A marker a build killed on this host left is taken over (filelock proves its builder gone);
    one from another host stays, and the waiting message names that host and says to delete it.

    Raises:
        OutputPathError: the lock file cannot be opened (another user's, unreadable), or the lock
            failed for another reason (an I/O error).
    """
    with _open_lock_file(out) as lock:
        if _flock(lock, out):
            yield
            return
    from filelock import SoftFileLock, Timeout

    marker = out / SOFT_LOCK_FILE
    soft = SoftFileLock(marker)
    try:
        soft.acquire(blocking=False)
    except Timeout:
        holder = marker_holder(marker)
        held = f", held by a build on {holder.host} (pid {holder.pid})" if holder and holder.host else ""
        _say_waiting(out, f"{out} has no file locks, so its marker {marker} stands for the lock{held}: "
                          "if no build is running there, delete it")
        soft.acquire()
    try:
        yield
    finally:
        soft.release()


def build_holder(out: Path) -> Holder | None:
    """The build holding ``out``'s lock now; ``None`` when none does (none ran, or the one that did stopped or was killed)."""
    try:
        lock = open(out / LOCK_FILE, "rb")
    except OSError:
        return None
    with lock:  # closing it lets go of the probe's own lock, held a moment
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return Holder()
        except OSError as e:
            return marker_holder(out / SOFT_LOCK_FILE) if e.errno in _NO_FILE_LOCKS else None
    return None


def marker_holder(marker: Path) -> Holder | None:
    """The build a soft-lock marker names, while it may still run; ``None`` for no marker, or one whose builder is gone.

    A build killed (kill -9, a crash, a reboot) leaves its marker: filelock's own test says
    whether the pid it names still runs the process that wrote it (pid reuse and pid namespaces
    included). A builder on another host cannot be probed from here, so it counts as running.
    """
    # filelock (pinned) keeps these helpers private: the same test its SoftFileLock runs before taking a marker over
    from filelock._identity import host_name, owner_is_stale
    from filelock._soft import parse_lock_holder, read_lock_file

    try:
        content, _ = read_lock_file(str(marker))
    except FileNotFoundError:
        return None
    except OSError:  # unreadable: nothing proves its builder gone
        return Holder()
    holder = parse_lock_holder(content)
    if holder is None:  # being written, or an older filelock's empty marker: held while it exists
        return Holder()
    if owner_is_stale(*holder):
        return None
    return Holder(pid=holder.pid, host=None if holder.hostname == host_name() else holder.hostname)


def _open_lock_file(out: Path):
    """``out/.build.lock``, opened to lock; read-only when it is another user's (the lock needs no writes)."""
    path = out / LOCK_FILE
    try:
        return open(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "rb")
    except PermissionError as e:  # another user's build made it, with that user's umask
        try:
            return open(path, "rb")
        except OSError:
            raise _lock_file_refused(path, out, e) from e


def _lock_file_refused(path: Path, out: Path, e: OSError) -> OutputPathError:
    owner = _owner(path)
    return OutputPathError(
        f"cannot open the build lock {path} ({e.strerror}{owner}), which keeps two builds out of one folder; "
        f"let every user of {out} read and write it (chmod a+rw {path}), or, when no build is running there, "
        "delete it (it holds no data); or build into another folder"
    )


def _owner(path: Path) -> str:
    """``"; it belongs to USER"``, or "" when that cannot be told."""
    import pwd

    try:
        uid = path.stat().st_uid
    except OSError:
        return ""
    try:
        return f"; it belongs to {pwd.getpwuid(uid).pw_name}"
    except KeyError:
        return f"; it belongs to uid {uid}"


def _flock(lock, out: Path) -> bool:
    """Take the flock on ``lock``, waiting for another build; ``False`` where the filesystem has no locks."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        _say_waiting(out, f"it holds {out / LOCK_FILE}")
        fcntl.flock(lock, fcntl.LOCK_EX)
    except OSError as e:
        if e.errno in _NO_FILE_LOCKS:
            return False
        if e.errno == errno.EBADF and os.O_ACCMODE & fcntl.fcntl(lock, fcntl.F_GETFL) == os.O_RDONLY:
            # NFS locks through fcntl, which wants a file open for writing: ours is another user's, opened read-only
            raise _lock_file_refused(out / LOCK_FILE, out, PermissionError(errno.EACCES, os.strerror(errno.EACCES))) from e
        raise OutputPathError(f"cannot lock {out / LOCK_FILE} ({e.strerror}, errno {e.errno}), which keeps two "
                              "builds out of one folder; build into another folder") from e
    return True


def _say_waiting(out: Path, why: str) -> None:
    print(f"waiting for another build into {out} to finish ({why})", file=sys.stderr, flush=True)
