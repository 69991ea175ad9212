"""Checks of what a Space will run on, made before a publish writes anything.

A Space takes minutes to build; what cannot work on the chosen hardware is said now instead:
an app that ZeroGPU cannot give a GPU to, and checkpoints that cannot answer even one question
in the hardware's memory (``vlm_lab.memory``'s estimate from their config alone).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from vlm_lab.errors import ConfigError
from vlm_lab.units import human_bytes

_CHECKPOINT_DIR = re.compile(r"^checkpoint-\d+$")


def check_zero_gpu(hardware: str, app: Path) -> None:
    """ZeroGPU hardware lends a GPU only while a ``@spaces.GPU`` function runs: an app with none fails at start
    ("No @spaces.GPU function detected") or answers on CPU, after a publish that looked fine.

    Raises:
        ConfigError: ``hardware`` is a ZeroGPU flavor and ``app`` has no ``spaces.GPU`` function.
    """
    if not hardware.startswith("zero-") or "spaces.GPU" in app.read_text(encoding="utf-8", errors="replace"):
        return
    raise ConfigError(
        f"--hardware {hardware}: ZeroGPU gives a Space a GPU only inside functions decorated with "
        f"@spaces.GPU, and {app} has none: the Space would fail at start or answer on CPU. Choose a GPU of its own "
        "(--hardware t4-small, l4x1, a10g-small) or --hardware cpu-basic; nothing was uploaded"
    )


def memory_notes(hardware: str, config_files: Iterable[Path]) -> list[str]:
    """One line per checkpoint that cannot answer one question on ``hardware``, with the hardware that would hold it.

    Args:
        config_files: the staged ``checkpoint-N/config.json`` files; checkpoints of one run share a config,
            so each distinct one is estimated once (its last checkpoint named).
    """
    from vlm_lab import memory
    from vlm_lab.memory_targets import GPU_TARGETS, recommended_dtype

    target = GPU_TARGETS.get(hardware)
    if target is None:  # a flavor the memory table does not describe: nothing to say
        return []
    by_config: dict[bytes, Path] = {}
    for config in config_files:
        if _CHECKPOINT_DIR.match(config.parent.name):
            by_config[config.read_bytes()] = config.parent
    notes = []
    for folder in by_config.values():
        try:
            est = memory.estimate(folder, target=target)
        except Exception:  # noqa: BLE001 - an estimate is advice: an architecture it cannot build is left to the Space
            continue
        verdict = memory.verdict(est, target)
        if verdict.max_batch_size > 0:  # it answers; how many stay loaded at once is the app's model cache's call
            continue
        bigger = sorted((t for t in GPU_TARGETS.values() if t.device == "cuda" and t.memory_bytes > target.memory_bytes),
                        key=lambda t: t.price_per_hour)
        holds = next((t for t in bigger
                      if memory.verdict(est.with_dtype(recommended_dtype(t)).on_target(t), t).max_batch_size > 0), None)
        fix = (f"publish with --hardware {holds.name} (${holds.price_per_hour:.2f}/h)" if holds is not None
               else "no Space hardware holds it: publish smaller checkpoints")
        notes.append(f"{verdict.checkpoint} ({verdict.dtype}, batch 1) does NOT fit on {hardware}: it needs "
                     f"{human_bytes(verdict.required_bytes)} of a {human_bytes(verdict.budget_bytes)} "
                     f"budget, so the Space would run out of memory at start; {fix} ({folder})")
    return notes
