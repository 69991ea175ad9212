"""The model cache's budget: its default for a device, how many models fit it, and bytes in words.

Moved out of ``model_cache`` (which re-exports these names).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vlm_lab.cgroup_memory import CGROUP_ROOT, PROC_SELF_CGROUP, memory_limit

__all__ = ["GB", "default_budget", "format_bytes", "max_resident"]

GB = 10**9


def format_bytes(n: float | None) -> str:
    if n is None or n != n:
        return "-"
    for unit, size in (("GB", GB), ("MB", 10**6), ("kB", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def max_resident(budget_bytes: int, sizes: list[int]) -> int:
    """How many of the models of ``sizes`` (loaded in this order) fit the budget together."""
    used = count = 0
    for size in sizes:
        if used + size > budget_bytes:
            break
        used += size
        count += 1
    return count


def default_budget(device: torch.device, *, cgroup_root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """90% of the GPU's memory on CUDA; on CPU half the RAM this process may use: the machine's, or its
    container's memory limit where that is less (a Jupyter or Space container of 16 GB on a 256 GB host
    reads the host's 256 GB in /proc/meminfo, and a 128 GB budget never evicted before the kernel killed it)."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * 0.9)
    import psutil

    total = psutil.virtual_memory().total
    limit = memory_limit(cgroup_root=cgroup_root, proc_self_cgroup=proc_self_cgroup)
    return min(total, limit or total) // 2
