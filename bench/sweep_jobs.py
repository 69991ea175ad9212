"""Processes running torch side by side: torch's default threads in each vs the cores divided among them.

``vlm-lab sweep --jobs N`` runs N kernels at once. torch's CPU build starts one OpenMP thread per core in
each, and GNU OpenMP's idle threads spin on their core between operations, so N such kernels on the same
cores take them from each other. The sweep now gives each kernel OMP_NUM_THREADS (MKL_, OPENBLAS_) =
usable cores // N (``vlm_lab.kernel_threads``). Both sides, in one run:

- default: N processes at once, each comparing the 3 shapes checkpoints (250, 500, 1000) on SAMPLES samples
  (result cache off), as notebook 02 does in a sweep's kernel; each prints its compare() time. Side
  ``torch default``: the thread variables removed; ``divided``: what the sweep gives its kernels.
  ``--passive`` adds both again with OMP_WAIT_POLICY=PASSIVE.
- ``--sweep``: ``vlm-lab sweep sweeps/shapes-ablation.yaml --jobs N`` (notebook 02, 4 runs) into a fresh
  runs folder, timed whole: once with OMP_NUM_THREADS (MKL_, OPENBLAS_) set to torch's own default in the
  sweep's environment (a user's value is kept, so every kernel runs torch's default), once as it comes.

Prints each side's times, and the ratio torch default / divided (above 1: dividing is faster).
Other load on the machine moves the numbers: run it on an otherwise idle machine.

Usage: python bench/sweep_jobs.py [--jobs 2] [--samples 128] [--passive] [--sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS = (250, 500, 1000)


def child(samples: int) -> None:
    """One process's work: compare the 3 checkpoints on ``samples`` samples; prints its threads and seconds."""
    import torch

    from vlm_lab.compare import compare
    from vlm_lab.config import CompareConfig

    paths = [ROOT / "checkpoints" / "shapes" / f"checkpoint-{step}" for step in STEPS]  # main() built them
    with tempfile.TemporaryDirectory() as out:
        config = CompareConfig(checkpoints=",".join(map(str, paths)), data=f"shapes:val:{samples}", num_samples=0,
                               device="cpu", output_dir=out, use_cache=False)  # fmt: skip
        start = time.perf_counter()
        compare(config, progress=False)
        elapsed = time.perf_counter() - start
    print(json.dumps({"threads": torch.get_num_threads(), "seconds": elapsed}))


def base_env() -> dict[str, str]:
    """This environment without the thread variables (so torch picks its default) and offline."""
    from vlm_lab.kernel_threads import THREAD_VARS

    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS and k != "OMP_WAIT_POLICY"}
    return env | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}


def side_by_side(jobs: int, samples: int, env: dict[str, str]) -> tuple[int, list[float]]:
    """``jobs`` children at once under ``env``: (torch threads in each, each one's compare() seconds)."""
    cmd = [sys.executable, __file__, "--child", str(samples)]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(jobs)]
    said = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a child failed: exit {[p.returncode for p in procs]}")
    return said[0]["threads"], [s["seconds"] for s in said]


def timed_sweep(jobs: int, env: dict[str, str]) -> float:
    """Seconds ``vlm-lab sweep sweeps/shapes-ablation.yaml --jobs JOBS`` takes into a fresh runs folder."""
    with tempfile.TemporaryDirectory() as runs:
        cmd = [sys.executable, "-m", "vlm_lab.cli", "sweep", "sweeps/shapes-ablation.yaml", "--jobs", str(jobs),
               "--runs-dir", runs, "--quiet"]  # fmt: skip
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env | {"WANDB_DIR": runs}, cwd=ROOT, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"the sweep failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    return elapsed


def torch_default_threads(env: dict[str, str]) -> int:
    """torch.get_num_threads() in a fresh process without the thread variables."""
    code = "import torch; print(torch.get_num_threads())"
    return int(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="processes (sweep kernels) at once")
    parser.add_argument("--samples", type=int, default=128, help="samples per checkpoint in each process")
    parser.add_argument("--passive", action="store_true", help="also both sides with OMP_WAIT_POLICY=PASSIVE")
    parser.add_argument("--sweep", action="store_true", help="time the shapes sweep instead of compare processes")
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    sys.path.insert(0, str(ROOT))
    from vlm_lab.kernel_threads import kernel_env, usable_cores

    # As make checkpoints builds them (skipped when built): in a process of its own, which pins torch's CPU kernels.
    subprocess.run([sys.executable, "-m", "vlm_lab.cli", "checkpoints", "build"], cwd=ROOT, check=True)
    env = base_env()
    divided = env | kernel_env(args.jobs, environ=env)
    default = torch_default_threads(env)
    print(f"{usable_cores()} usable cores, {args.jobs} at once; torch's default: {default} threads, divided: "
          f"{divided['OMP_NUM_THREADS']}")  # fmt: skip
    if args.sweep:
        pinned = env | {name: str(default) for name in kernel_env(args.jobs, environ=env)}
        times = {"torch default": timed_sweep(args.jobs, pinned), "divided": timed_sweep(args.jobs, divided)}
        for side, seconds in times.items():
            print(f"  {side:>15}: the sweep took {seconds:7.1f} s")
        print(f"ratio torch default / divided: {times['torch default'] / times['divided']:.1f}x")
        return 0
    sides = {"torch default": env, "divided": divided}
    if args.passive:
        sides |= {f"{name} + PASSIVE": e | {"OMP_WAIT_POLICY": "PASSIVE"} for name, e in list(sides.items())}
    means = {}
    for side, side_env in sides.items():
        threads, seconds = side_by_side(args.jobs, args.samples, side_env)
        means[side] = statistics.mean(seconds)
        shown = ", ".join(f"{s:.1f}" for s in seconds)
        print(f"  {side:>23}: {threads} thread(s) each, compare() took {shown} s (mean {means[side]:.1f} s)")
    for side in means:
        if side != "divided":
            print(f"ratio {side} / divided: {means[side] / means['divided']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
