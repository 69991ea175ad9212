"""The folders that hold a kernel's unix sockets, and the ones killed sweeps left behind.

Each kernel a sweep (or ``scripts/run_notebook.py``) starts gets a folder of its own,
``vlm-lab-kernel-XXXXXXXX`` in the temp folder (``$TMPDIR``, else ``/tmp``), removed when its run
ends (``sweep_papermill.kernel_transport``). A process killed outright (SIGKILL: the out-of-memory
killer choosing the sweep, a CI job past its limit, ``kill -9``) runs no cleanup, and its folder
stayed for ever. ``remove_leftovers``, at the start of each sweep, removes them.

Why the temp folder, not the sweep's run folder (which a killed sweep's next invocation finds
anyway): a unix socket's path holds at most ~107 bytes, and ``runs_dir: $SCRATCH/...`` plus a
sweep and run id passes that; ``runs/`` may be on NFS or Lustre, where sockets are no use, and is
shared by the machines of a sharded sweep, each with its own kernels.

Whose folder is it: the process using a folder holds an ``flock`` on its ``owner.lock`` for as
long as the folder exists. The lock is taken before the file gets that name (made under another
name, locked, renamed), so a live folder's ``owner.lock`` is always held. ``remove_leftovers``
removes a folder only when it can take that lock itself: its owner is gone, whatever the pid
namespace (a container sharing ``/tmp`` with the host: a pid check would take a live process there
for a dead one). Folders of other users are never touched. A folder without ``owner.lock`` (made by
an earlier vlm_lab, or being made right now) is removed only when it holds sockets and nothing
listens on any of them (a kernel that is gone).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

PREFIX = "vlm-lab-kernel-"
OWNER = "owner.lock"  # held (flock) by the process using the folder
_OWN: set[Path] = set()  # this process's folders, for remove_own


@contextlib.contextmanager
def kernel_dir() -> Iterator[Path]:
    """A new folder for one kernel's sockets, in the temp folder, owned (locked) by this process and
    removed on leaving; a short path (unix socket paths are limited to ~107 bytes)."""
    import fcntl

    folder = Path(tempfile.mkdtemp(prefix=PREFIX))
    fd = -1
    try:
        fd, name = tempfile.mkstemp(prefix=".owner-", dir=folder)  # O_CLOEXEC: the kernel does not inherit it
        fcntl.flock(fd, fcntl.LOCK_EX)  # nobody else knows this name yet: never waits
        os.rename(name, folder / OWNER)  # the lock goes with the file: no moment shows an unheld owner.lock
        _OWN.add(folder)
        yield folder
    finally:
        _OWN.discard(folder)
        shutil.rmtree(folder, ignore_errors=True)  # while still holding the lock
        if fd >= 0:
            os.close(fd)


def remove_own() -> None:
    """Remove this process's kernel folders now, for a process about to end without unwinding (``os._exit``:
    the sweep abandoning its runs); kill their kernels first (``sweep_papermill.kill_kernels``)."""
    for folder in list(_OWN):
        shutil.rmtree(folder, ignore_errors=True)


def remove_leftovers(folder: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove this user's kernel folders in ``folder`` (default: the temp folder) whose owner is gone;
    returns those removed. Never raises for a folder it cannot read or remove (it is left)."""
    removed = []
    where = Path(folder if folder is not None else tempfile.gettempdir())
    try:
        candidates = sorted(where.glob(PREFIX + "*"))
    except OSError:
        return []
    for candidate in candidates:
        try:
            info = candidate.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            continue  # another user's (or not a folder): not ours to judge
        with contextlib.suppress(OSError):
            if _remove_if_abandoned(candidate):
                removed.append(candidate)
    return removed


def _remove_if_abandoned(folder: Path) -> bool:
    import fcntl

    try:
        handle = open(folder / OWNER, "rb")
    except FileNotFoundError:
        if not _dead_sockets(folder):
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return False  # its owner is alive
            raise
        shutil.rmtree(folder, ignore_errors=True)  # holding its lock: nobody can be using it
    return True


def _dead_sockets(folder: Path) -> bool:
    """Whether ``folder`` holds unix sockets only, at least one, and nothing listens on any of them."""
    entries = list(folder.iterdir())
    if not entries:
        return False  # being made now, or a kernel that never bound: cannot tell
    for entry in entries:
        if not stat.S_ISSOCK(entry.lstat().st_mode):
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(entry))
            except ConnectionRefusedError:
                continue  # its file stays after its process died
            except OSError:
                return False
            return False  # something listens: a live kernel
    return True
