"""The model cache's budget: its default for a device, how many models fit it, and bytes in words.

Moved out of ``model_cache`` (which re-exports these names; ``budget_as`` and ``_budget_for``, the budget its
errors name, too).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from vlm_lab.cgroup_memory import CGROUP_ROOT, PROC_SELF_CGROUP, memory_limit
from vlm_lab.units import format_bytes  # re-exported: its home is units (torch-free)

__all__ = ["GB", "budget_as", "default_budget", "format_bytes", "max_resident"]

GB = 10**9
_BUDGET_SAID = re.compile(r"ModelCache\(budget_bytes='([^']*)'\)")


def budget_as(message: str, setting: str) -> str:
    """``message`` with its ``ModelCache(budget_bytes='2GB')`` said as the setting its reader sizes that cache with:
    ``setting`` with ``{}`` for the size (compare's ``"memory_budget='{}'"``, the Space's ``"VLM_LAB_CACHE_BUDGET={}"``)."""
    return _BUDGET_SAID.sub(lambda m: setting.format(m[1]), message)


def _budget_for(nbytes: int) -> str:
    """The smallest whole GB (whole MB below 1 GB) that holds ``nbytes``, written as a budget is: ``"15GB"``."""
    unit, size = ("GB", GB) if nbytes >= GB else ("MB", 10**6)
    return f"{-(-nbytes // size)}{unit}"


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
