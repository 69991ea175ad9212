"""The same floating-point results on every x86 CPU with AVX2: torch's CPU kernels pinned to one code path.

torch picks its CPU kernels by the machine's instruction set (AVX-512 on one server, AVX2 on
another) and MKL its matrix products likewise. Each sums in another order, so training the tiny
checkpoints from one seed gave other weights on another CPU (a thousand steps turn the last bit
into other answers: notebook 02's checked accuracies differed between two x86 machines). Pinned
here: ATen's vectorised kernels to AVX2 (``ATEN_CPU_CAPABILITY``), which every x86 server and
laptop of the last decade has and which computes the same on Intel and AMD; MKL's conditional
numerical reproducibility branch (``MKL_CBWR``) to ``COMPATIBLE``, the only branch MKL keeps on
non-Intel CPUs (on an AMD EPYC ``AVX2`` silently falls back to ``AUTO``, and trained other weights
than an Intel Xeon); and oneDNN's instruction set (``ONEDNN_MAX_CPU_ISA``). The build also turns
oneDNN off (``tiny.train``): its convolution's blocking follows the cache sizes.

torch reads these once, at the first operation a process runs: ``pin_cpu_kernels`` must come
before it (``vlm-lab checkpoints build`` and the test suite call it first thing; ``make demo`` and
``make test`` export the same values, so notebooks and sweeps they start inherit them). Not pinned
elsewhere: on a real model AVX-512 and MKL's own branch are faster, and a last-bit difference in
inference rarely changes an answer.
"""

from __future__ import annotations

import os
import platform

__all__ = ["REPRODUCIBLE_ENV", "pin_cpu_kernels", "reproducible_env"]

REPRODUCIBLE_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def reproducible_env(cpuinfo: str = "/proc/cpuinfo") -> dict[str, str]:
    """``REPRODUCIBLE_ENV`` on an x86 CPU with AVX2 and FMA; else ``{}`` (another CPU keeps its own kernels)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return {}
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return {}
    return dict(REPRODUCIBLE_ENV) if {"avx2", "fma"} <= set(flags) else {}


def pin_cpu_kernels() -> dict[str, str]:
    """Set ``reproducible_env()`` in ``os.environ`` where the user has not set the variable; returns what is set.

    Takes effect only before the process's first torch operation, and in the processes it starts.
    """
    pinned = {}
    for name, value in reproducible_env().items():
        pinned[name] = os.environ.setdefault(name, value)
    return pinned
