"""Memory this process may still use: the machine's, or less where a container's cgroup limits it.

``psutil.virtual_memory()`` reads /proc/meminfo, which tells the host's memory: in a Docker
container or a Space with a 16 GB limit on a 256 GB host it reports the host's, and a check
against it passes right before the kernel's out-of-memory killer ends the process. The limit
is in the cgroup files: ``memory.max`` (cgroup v2) or ``memory.limit_in_bytes`` (cgroup v1).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit number; anything past 2**60 is none
_NO_LIMIT = 1 << 60


@dataclasses.dataclass(frozen=True)
class AvailableMemory:
    """Bytes this process may still allocate, and the container limit that bounds it (``None``: the machine's)."""

    available: int
    limit: int | None = None


def available_memory(*, cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> AvailableMemory:
    """The machine's available memory, or the room left under this process's cgroup memory limit when that is less.

    Every cgroup from this process's own up to the root is read, as the kernel enforces each
    ancestor's limit too. Usage leaves out inactive file cache (as ``docker stats`` does): the
    kernel drops that before it kills anything.

    Args:
        cgroup_root: where the cgroup filesystem is mounted (tests point it at a folder of fake files).
        proc_self_cgroup: the file naming this process's cgroups.
    """
    import psutil

    host = psutil.virtual_memory().available
    rooms = [(limit, limit - used) for limit, used in _limits(cgroup_root, proc_self_cgroup)]
    if not rooms:
        return AvailableMemory(available=host)
    limit, room = min(rooms, key=lambda pair: pair[1])
    return AvailableMemory(available=max(0, room), limit=limit) if room < host else AvailableMemory(available=host)


def memory_limit(*, cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int | None:
    """The tightest cgroup memory limit over this process (``None``: none), however much the host has free now:
    ``available_memory`` names the limit only while it is the tighter bound, and a busy host hides it."""
    limits = [limit for limit, _ in _limits(cgroup_root, proc_self_cgroup)]
    return min(limits) if limits else None


def _limits(root: Path, proc_self_cgroup: Path) -> list[tuple[int, int]]:
    """``(limit, usage)`` of each limited cgroup this process is in, itself and its ancestors."""
    try:
        lines = proc_self_cgroup.read_text().splitlines()
    except OSError:  # not Linux, or /proc hidden: only the machine's memory is known
        return []
    found = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:  # cgroup v2: one tree, mounted at the root
            found += _walk(root, path, "memory.max", "memory.current", ("inactive_file",))
        elif "memory" in controllers.split(","):  # cgroup v1: the memory controller's own tree
            found += _walk(root / "memory", path, "memory.limit_in_bytes", "memory.usage_in_bytes",
                           ("total_inactive_file", "inactive_file"))
    return found


def _walk(base: Path, path: str, limit_file: str, usage_file: str, inactive: tuple[str, ...]) -> list[tuple[int, int]]:
    # A container with its own cgroup namespace sees its cgroup as "/"; one without it is told
    # "/docker/<id>" while its own cgroup is mounted at the base: walking up to the base finds both.
    found = []
    folder = base / path.strip("/")
    while True:
        limit = _read_int(folder / limit_file)
        if limit is not None and limit < _NO_LIMIT:
            used = _read_int(folder / usage_file) or 0
            found.append((limit, max(0, used - _stat(folder / "memory.stat", inactive))))
        if folder == base or folder == folder.parent:
            return found
        folder = folder.parent


def _read_int(path: Path) -> int | None:
    """The number in a cgroup file; ``None`` for "max" (no limit) or a file that is not there."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat(path: Path, keys: tuple[str, ...]) -> int:
    """The first of ``keys`` a cgroup's memory.stat holds; 0 when it holds none."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    counters = dict(line.partition(" ")[::2] for line in lines)
    value = next((counters[key].strip() for key in keys if key in counters), "")
    return int(value) if value.isdigit() else 0
