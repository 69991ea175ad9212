"""Notebook 02's accuracy plot: each checkpoint's accuracy with its 95% CI bars against training step (or by
checkpoint, named on the axis), overall or one line per value of a meta key; a message where nothing is scored."""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING

from vlm_lab.scoring import METRIC_LABELS
from vlm_lab.short_labels import list_labels

if TYPE_CHECKING:
    from vlm_lab.results import ComparisonResult

TICK_CHARS = 28  # a tick label's length: five whole paths (60+ characters) ran over each other and off the figure
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # lines told apart by shape too, not by colour alone


def tick_labels(names: list[str]) -> list[str]:
    """The checkpoints' names on the axis: a path's last part where those differ (``lr3e-5-step250``, not
    ``/data/experiments/lr3e-5-step250``), shortened to ``TICK_CHARS`` keeping the start and the end."""
    tails = [n.rstrip("/").rpartition("/")[2] or n for n in names]
    return list_labels(tails if len(set(tails)) == len(set(names)) else list(names), width=TICK_CHARS)


def plot_accuracy(result: ComparisonResult, ax=None, *, by: str | None = None):
    """``ComparisonResult.plot_accuracy``: see there."""
    n = len(result.checkpoints)
    steps, finals = final_steps(result)
    use_steps = n > 1 and all(s is not None for s in steps)  # one checkpoint: its name, not a step axis 480..520
    if ax is None:
        import matplotlib.pyplot as plt

        slanted = n > 1 and not use_steps  # the checkpoints' names below the axis take an inch of their own
        _, ax = plt.subplots(figsize=(6, 4.5 if slanted else 3.5), layout="constrained")
    xs = steps if use_steps else list(range(n))
    acc = [math.nan if s["accuracy"] is None else float(s["accuracy"]) for s in result.summary]
    if all(math.isnan(a) for a in acc):
        return _nothing_scored(result, ax)
    if by is None:
        low = [a - _nan(s["ci_low"]) for a, s in zip(acc, result.summary)]
        high = [_nan(s["ci_high"]) - a for a, s in zip(acc, result.summary)]
        order = sorted(range(n), key=lambda i: xs[i])  # along the axis: a final model placed at an earlier step
        ax.errorbar([xs[i] for i in order], [acc[i] for i in order], yerr=[[low[i] for i in order], [high[i] for i in order]],
                    marker="o", capsize=4, label="accuracy (95% CI)")  # fmt: skip
    else:
        from vlm_lab.breakdown import plot_by

        plot_by(result, by, ax, xs)
    for i, label in finals.items() if use_steps else ():
        if by is None:  # a star apart from the checkpoint-N circle at the same step (other weights there: both show)
            ax.plot([xs[i]], [acc[i]], marker="*", markersize=12, linestyle="none", color="black", zorder=3)
            ax.annotate(label, (xs[i], acc[i]), xytext=(6, 6), textcoords="offset points", fontsize="small")
        else:  # one point per value there: the step marked across the plot, named at its top
            ax.axvline(xs[i], linestyle=":", color="grey", linewidth=1)
            ax.annotate(label, (xs[i], 1.0), xytext=(3, -3), textcoords="offset points", fontsize="small", va="top")
    ax.set_xlabel("training step" if use_steps else "checkpoint")
    if not use_steps:
        ax.set_xticks(xs, tick_labels(result.checkpoints), rotation=30 if n > 1 else 0, ha="right" if n > 1 else "center",
                      rotation_mode="anchor")  # fmt: skip
        if n == 1:
            ax.set_xlim(-1, 1)
    metric = result.config.get("metric", "exact")
    ax.set_ylabel("VQA accuracy" if metric == "vqa" else f"{METRIC_LABELS.get(metric, metric)} accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(f"accuracy by checkpoint ({_scored(result)})" if by is None else f"accuracy by checkpoint and {by}")
    return ax


def final_steps(result: ComparisonResult) -> tuple[list[int | None], dict[int, str]]:
    """Each checkpoint's training step, and the label of each run's final model (Trainer.save_model() at the run's
    root: no checkpoint-N name) that ``compare`` found the step of (``final_step``: its trainer_state.json's
    ``global_step``).

    A final model with the weights of a checkpoint in the comparison (saved from the last one, the usual case, or
    from the best one under ``load_best_model_at_end``, though training went on) stands at that checkpoint's step,
    labelled ``final (= checkpoint-500)``: at global_step it would show checkpoint-500's accuracy as step 1000's.
    Other weights stand at global_step, labelled ``final (step 1000)`` (beside a checkpoint-1000 with other weights:
    a star, not its circle). Without a final_step (no root trainer_state.json, a result saved before it was
    recorded) its step is None, as before: the plot names the checkpoints."""
    steps: list[int | None] = [r.get("step") for r in result.refs]
    stepped = {r.get("fingerprint"): (r.get("step"), name) for r, name in zip(result.refs, result.checkpoints)
               if r.get("step") is not None and r.get("fingerprint")}  # fmt: skip
    finals = {}
    for i, ref in enumerate(result.refs):
        if steps[i] is None and isinstance(ref.get("final_step"), int):
            same = stepped.get(ref.get("fingerprint"))
            steps[i], finals[i] = (same[0], f"final (= {same[1]})") if same else (ref["final_step"], f"final (step {ref['final_step']})")
    return steps, finals


def _scored(result: ComparisonResult) -> str:
    """How many samples the accuracies rest on: ``n=96``, or ``8 of 12 samples scored`` where some have no
    reference (n=12 read as if the CIs rested on all 12)."""
    total = len(result.rows)
    scored = sorted({s.get("n_scored", total) for s in result.summary if s.get("accuracy") is not None})
    if not scored or scored == [total]:
        return f"n={total}"
    counts = str(scored[0]) if len(scored) == 1 else f"{scored[0]}-{scored[-1]}"
    return f"{counts} of {total} samples scored"


def _nothing_scored(result: ComparisonResult, ax):
    """No checkpoint has an accuracy: why, in words, where an empty axis (-0.04..0.04) stood."""
    from vlm_lab.results_html import NO_REFERENCES, has_references

    why = ("every checkpoint scored 0 samples (n_scored: see summary_table)" if has_references(result) else NO_REFERENCES)
    ax.axis("off")
    ax.text(0.5, 0.5, textwrap.fill(f"no accuracy to plot: {why}", 70), ha="center", va="center", transform=ax.transAxes,
            wrap=True)  # fmt: skip
    ax.set_title(f"accuracy by checkpoint (n={len(result.rows)})")
    return ax


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)
