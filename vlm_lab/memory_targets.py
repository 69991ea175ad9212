"""Where a model can run: the Hugging Face Space hardware table, in one place.

``GPU_TARGETS`` is the single source of each target's memory and hourly price;
the memory profiler, the model cache, the Space and the publisher all read it.
Prices are the ones Hugging Face lists for Spaces hardware (USD per hour).
``memory_bytes`` is what the device reports as its total (``nvidia-smi``), not the
marketing size: a "16 GB" T4 shows 15360 MiB.

Importing this module is cheap (no torch), so configs can validate target names.
"""

from __future__ import annotations

import dataclasses

from vlm_lab.errors import ConfigError

MIB = 1024**2
GIB = 1024**3

# Kept free on every target for what the estimate cannot see: allocator
# fragmentation, a second process, the driver's own growth.
SAFETY_FRACTION = 0.05
# On a CPU target the Space's own process shares the RAM with the models it loads: Python with torch,
# transformers and gradio imported, the server up, before its first model. Measured here (torch 2.13 CPU,
# transformers 5.23, gradio 6.31): space/app.py serving, at its first request before any model loaded, held
# 470 MiB resident (the imports alone 323 MiB). A constant, not this process's RSS: the verdict is about the
# Space's process, not the CLI's or a notebook's. On a GPU target it lives in host RAM, not the GPU's memory.
SPACE_PROCESS_BYTES = 470 * MIB


@dataclasses.dataclass(frozen=True)
class GpuTarget:
    """One Space hardware flavour."""

    name: str  # the Space hardware id, e.g. "t4-small"
    label: str  # what a person calls it
    device: str  # "cuda" or "cpu"
    memory_bytes: int  # device memory (GPU) or RAM (CPU) the process can use
    price_per_hour: float  # USD, as Hugging Face lists it
    native_bfloat16: bool  # False on Turing (T4, compute capability 7.5): bf16 is emulated, slowly
    compute_capability: str | None = None

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB


GPU_TARGETS: dict[str, GpuTarget] = {
    t.name: t
    for t in (
        GpuTarget("cpu-basic", "CPU basic (2 vCPU, 16 GB RAM)", "cpu", 16 * 10**9, 0.0, True),
        GpuTarget("t4-small", "NVIDIA T4 small (16 GB)", "cuda", 15360 * MIB, 0.40, False, "7.5"),
        GpuTarget("l4x1", "NVIDIA L4 x1 (24 GB)", "cuda", 23034 * MIB, 0.80, True, "8.9"),
        GpuTarget("a10g-small", "NVIDIA A10G small (24 GB)", "cuda", 23028 * MIB, 1.00, True, "8.6"),
        GpuTarget("a100-large", "NVIDIA A100 large (80 GB)", "cuda", 81920 * MIB, 2.50, True, "8.0"),
    )
}
DEFAULT_TARGET = "t4-small"


def get_target(target: str | GpuTarget) -> GpuTarget:
    """Look a target up by name; an unknown name raises ``ConfigError`` listing the known ones."""
    if isinstance(target, GpuTarget):
        return target
    try:
        return GPU_TARGETS[target]
    except KeyError:
        raise ConfigError(f"unknown target {target!r}; use one of {', '.join(GPU_TARGETS)}") from None


def budget_bytes(target: str | GpuTarget = DEFAULT_TARGET) -> int:
    """Bytes the models may plan to use on ``target``: its memory less a 5% safety margin and, on CPU,
    the Space's own process (``process_bytes``).

    The CUDA context is *not* subtracted here; estimates carry it as overhead.
    """
    t = get_target(target)
    return int(t.memory_bytes * (1 - SAFETY_FRACTION)) - process_bytes(t)


def process_bytes(target: str | GpuTarget = DEFAULT_TARGET) -> int:
    """What the Space's own process holds of ``target``'s memory before any model: ``SPACE_PROCESS_BYTES`` on CPU, 0 on a GPU."""
    return SPACE_PROCESS_BYTES if get_target(target).device == "cpu" else 0


def recommended_dtype(target: str | GpuTarget = DEFAULT_TARGET) -> str:
    """float32 on CPU; bfloat16 where the GPU has it natively; float16 on a T4."""
    t = get_target(target)
    if t.device == "cpu":
        return "float32"
    return "bfloat16" if t.native_bfloat16 else "float16"


def check_dtype_on_target(dtype: str, target: str | GpuTarget) -> None:
    """Refuse bfloat16 on a GPU without native support (a T4) with the fix in the message."""
    t = get_target(target)
    if dtype == "bfloat16" and not t.native_bfloat16:
        raise ConfigError(
            f"dtype='bfloat16' on {t.name} ({t.label}, compute capability {t.compute_capability}): "
            "no native bfloat16, PyTorch emulates it slowly; use dtype='float16' (or dtype='auto')"
        )
