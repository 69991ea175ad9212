"""What a training run's checkpoints say about themselves: step, epoch, loss, size, resumability.

Read from each ``checkpoint-N/trainer_state.json`` as the HF Trainer writes it (and as
``vlm-lab checkpoints build`` writes it), so any Trainer output folder lists the same way:
``vlm-lab checkpoints list runs/x`` is the loss curve at checkpoint granularity, without
loading a model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zipfile
from pathlib import Path

from vlm_lab.checkpoints import CheckpointRef, discover_checkpoints, resolve


@dataclasses.dataclass(frozen=True)
class CheckpointSummary:
    """One checkpoint of a run. ``None`` where its folder does not say (no trainer_state.json, a hub ref)."""

    name: str  # checkpoint-N, or the spec for a final model or hub id
    path: str | None
    step: int | None
    epoch: float | None
    loss: float | None  # mean training loss of the steps logged since the checkpoint before
    eval_loss: float | None  # the last eval_loss logged since the checkpoint before
    weights_bytes: int | None
    resumable: bool  # optimizer.pt and scheduler.pt are there and whole, as Trainer(resume_from_checkpoint=) needs


def summarize(spec: str) -> list[CheckpointSummary]:
    """One ``CheckpointSummary`` per checkpoint ``spec`` resolves to, in step order (``vlm_lab.checkpoints.resolve``).

    Raises:
        CheckpointNotFoundError: nothing loadable at ``spec`` (the message lists what is there).
    """
    out: list[CheckpointSummary] = []
    previous_step: int | None = None  # the first checkpoint's window is one save interval, as in the full list
    for ref in resolve(spec):
        summary = _summarize_one(ref, after=previous_step)
        previous_step = summary.step if summary.step is not None else previous_step
        out.append(summary)
    return out


def trainer_state(checkpoint: str | Path) -> dict:
    """A checkpoint's ``trainer_state.json``, or ``{}`` when it has none (or an unreadable one)."""
    try:
        saved = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return saved if isinstance(saved, dict) else {}


def final_step(ref: CheckpointRef) -> int | None:
    """The training step of a run's final model, saved at its root (``Trainer.save_model()``; a folder that also holds
    checkpoint-N folders): its ``trainer_state.json``'s ``global_step`` (``Trainer.save_state()`` writes it there).
    None for a checkpoint-N (its N is its step), a plain model folder, a hub id, or a root without one."""
    if ref.path is None or ref.step is not None or not discover_checkpoints(ref.path):
        return None
    step = _number(trainer_state(ref.path).get("global_step"))
    return int(step) if step is not None and step == int(step) else None


def log_history(checkpoint: str | Path) -> list[dict]:
    """The per-step rows (step, epoch, loss, grad_norm, learning_rate, ...) of a checkpoint's
    ``trainer_state.json``; ``[]`` when it has none."""
    rows = trainer_state(checkpoint).get("log_history")
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _summarize_one(ref: CheckpointRef, *, after: int | None) -> CheckpointSummary:
    from vlm_lab.memory_checkpoint import weight_paths

    if ref.path is None:  # a hub id: nothing local to read without downloading
        return CheckpointSummary(ref.name, None, ref.step, None, None, None, None, False)
    folder = Path(ref.path)
    state = trainer_state(folder)
    step = ref.step if ref.step is not None else _number(state.get("global_step"))
    rows = log_history(folder)
    if after is None:
        interval = _number(state.get("save_steps"))
        after = max(0, step - interval) if step is not None and interval and interval >= 1 else 0
    window = [r["loss"] for r in rows if _in(r, after, step) and _finite(r.get("loss"))]
    evals = [r["eval_loss"] for r in rows if _in(r, after, step) and _finite(r.get("eval_loss"))]
    return CheckpointSummary(
        name=ref.name,
        path=ref.path,
        step=None if step is None else int(step),
        epoch=_number(state.get("epoch")),
        loss=sum(window) / len(window) if window else None,
        eval_loss=evals[-1] if evals else None,
        weights_bytes=sum(p.stat().st_size for p in weight_paths(folder)) or None,
        resumable=resumable(folder),
    )


def resumable(checkpoint: str | Path) -> bool:
    """Whether ``optimizer.pt`` and ``scheduler.pt`` are there, whole, as ``Trainer(resume_from_checkpoint=)`` and a
    resumed ``vlm-lab checkpoints build`` need them. ``torch.save`` writes zip archives: one cut short (a power loss,
    a copy cut short) has no central directory at its end, and loading it fails."""
    return all(zipfile.is_zipfile(Path(checkpoint) / name) for name in ("optimizer.pt", "scheduler.pt"))


def _in(row: dict, after: float, upto: float | None) -> bool:
    step = _number(row.get("step"))
    return step is not None and step > after and (upto is None or step <= upto)


def _number(value: object) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _finite(value: object) -> bool:
    return _number(value) is not None
