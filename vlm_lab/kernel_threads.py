"""CPU threads for a sweep's kernels: the machine's cores divided among the kernels running at once.

torch (and MKL, OpenBLAS) start one thread per core in every process, and torch's CPU build uses GNU
OpenMP, whose idle threads spin on their core waiting for the next operation. Two kernels each running
torch with every core's thread (``vlm-lab sweep --jobs 2`` on 2 cores) take the cores from each other:
generating 384 answers on the tiny checkpoints took 50 s in each kernel, against 1.2 s with one thread
each (``bench/sweep_jobs.py`` measures it). So each kernel gets ``OMP_NUM_THREADS`` (and MKL's and
OpenBLAS's) = the usable cores // the kernels running at once, at least 1. A user who sets any of them
in the sweep's environment (or the kernelspec's ``env``) chose the threads: none is set then (torch takes
MKL_NUM_THREADS over OMP_NUM_THREADS, so a divided MKL_NUM_THREADS would override the user's OMP_NUM_THREADS).

Not set: ``OMP_WAIT_POLICY=PASSIVE`` (no spinning). Once the threads are divided it changed nothing measured
(2 cores, 2 kernels of 1 thread: 14.7 s each either way; torch's default threads: 63 s, or 15.4 s with
PASSIVE), as a single thread has no team to wait for. With several threads per kernel (a larger machine)
it was not measured; kernels inherit it from the sweep's environment for anyone who wants to try it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["THREAD_VARS", "describe_threads", "kernel_env", "threads_per_kernel", "usable_cores"]

# Read by torch's OpenMP (intra-op threads), MKL and OpenBLAS when the kernel starts them.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity: ``taskset``, a container's cpuset), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1


def threads_per_kernel(kernels: int, cores: int | None = None) -> int:
    """``cores`` (default the usable ones) // ``kernels`` running at once, at least 1."""
    return max(1, (usable_cores() if cores is None else cores) // max(1, kernels))


def kernel_env(kernels: int, environ: Mapping[str, str] | None = None, *, cores: int | None = None) -> dict[str, str]:
    """The thread variables for each of ``kernels`` kernels running at once on ``cores`` (default the usable
    ones); ``{}`` when ``environ`` (default ``os.environ``) sets any of them. A kernel gets them where its own
    environment does not set them either (a kernelspec's ``env``)."""
    if _users(environ):
        return {}
    threads = str(threads_per_kernel(kernels, cores))
    return dict.fromkeys(THREAD_VARS, threads)


def describe_threads(kernels: int, environ: Mapping[str, str] | None = None, *, cores: int | None = None) -> str:
    """``'1 torch thread each'``, or ``'OMP_NUM_THREADS=3 from the environment'`` when the user set it."""
    if users := _users(environ):
        return ", ".join(f"{name}={value}" for name, value in users.items()) + " from the environment"
    threads = threads_per_kernel(kernels, cores)
    return f"{threads} torch thread{'s' if threads > 1 else ''} {'each' if kernels > 1 else ''}".rstrip()


def _users(environ: Mapping[str, str] | None) -> dict[str, str]:
    """The thread variables ``environ`` (default ``os.environ``) sets."""
    environ = os.environ if environ is None else environ
    return {name: environ[name] for name in THREAD_VARS if name in environ}
