"""Memory around the Space's requests: the memory plan for the offered checkpoints on the Space's
hardware, memory snapshots logged around each request, and freeing memory after an out-of-memory error.

Moved out of ``space_service`` (which re-exports these names). torch is imported only inside the
functions that use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import time
from typing import Any, Iterator, Mapping, Sequence

log = logging.getLogger("vlm_lab.space")


# -- memory around a request ------------------------------------------------------------------


def memory_snapshot(device: str = "cpu") -> dict[str, float]:
    """Process memory in MB: RSS always, CUDA allocated/reserved/peak on a GPU."""
    import psutil

    snap = {"rss_mb": psutil.Process().memory_info().rss / 2**20}
    if device == "cuda":
        import torch

        snap["cuda_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
        snap["cuda_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
    return snap


def format_snapshot(snap: Mapping[str, float]) -> str:
    return " ".join(f"{k.removesuffix('_mb')}={v:.0f}MB" for k, v in snap.items())


def free_memory(cache: Any, device: str, *, only: Sequence[Any] | None = None) -> None:
    """Empty the model cache (or evict ``only`` those checkpoints) and give freed memory back (after an out-of-memory error)."""
    if only is None:
        cache.clear()
    for ref in only or ():
        cache.evict(ref)
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


@contextlib.contextmanager
def logged_request(what: str, detail: str) -> Iterator[None]:
    """Log memory before and after a request (RSS; CUDA memory on a GPU), and how long it took."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    log.info("%s start (%s): %s", what, detail, format_snapshot(memory_snapshot(device)))
    outcome = "failed"
    try:
        yield
        outcome = "done"
    finally:
        took = time.perf_counter() - start
        log.info("%s %s in %.2fs: %s", what, outcome, took, format_snapshot(memory_snapshot(device)))


# -- memory plan ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """What the memory verdicts say for the offered checkpoints on the Space's hardware target."""

    target: str  # a vlm_lab.memory_targets.GPU_TARGETS name
    max_batch_size: int | None  # the smallest max batch over the checkpoints; None when none could be estimated
    cache_budget_bytes: int | None  # weights the model cache may hold: the budget less room to generate
    co_resident: int | None  # how many of the largest checkpoint fit at once
    notes: tuple[str, ...]  # one line per checkpoint, for the log


def plan_memory(refs: Sequence[Any], *, device: str, target: str = "", max_new_tokens: int = 16,
                batch_cap: int = 64) -> MemoryPlan:
    """Estimate every offered checkpoint (config only, nothing loaded) against the hardware target.

    ``target`` defaults to the largest Space GPU that fits in this GPU's memory (t4-small, the
    Space's suggested hardware, when none does) and to cpu-basic on CPU.
    A checkpoint that cannot be estimated (a hub id not downloaded yet) is skipped and noted.
    """
    from vlm_lab import memory
    from vlm_lab.memory_targets import budget_bytes, get_target

    t = get_target(target or _detect_target(device))
    notes, batches, working, residents = [], [], [], []
    for ref in refs:
        try:
            est = memory.estimate(ref, device=t.device, target=t, max_new_tokens=max_new_tokens)
            v = memory.verdict(est, t)
        except Exception as e:  # noqa: BLE001 - an estimate is advice; loading will tell for sure
            notes.append(f"{getattr(ref, 'name', ref)}: no estimate ({type(e).__name__}: {e})")
            continue
        batch = max(1, min(batch_cap, v.max_batch_size))
        batches.append(batch)
        working.append(batch * est.per_sample_bytes + est.overhead_bytes(t.device))
        residents.append(memory.co_resident(est, t, batch_size=batch))
        notes.append(v.message())
    if not batches:
        return MemoryPlan(t.name, None, None, None, tuple(notes))
    return MemoryPlan(t.name, min(batches), max(1, budget_bytes(t) - max(working)), min(residents), tuple(notes))


def _detect_target(device: str) -> str:
    if device != "cuda":
        return "cpu-basic"
    import torch

    from vlm_lab.memory_targets import GPU_TARGETS

    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    fitting = [t for t in GPU_TARGETS.values() if t.device == "cuda" and t.memory_bytes <= total * 1.02]
    return max(fitting, key=lambda t: t.memory_bytes).name if fitting else "t4-small"
