"""Accuracy broken down by a value the samples carry in ``meta``: a question type, an answer type, a source.

A JSONL line's ``"meta": {"answer_type": "number"}`` travels into the comparison's rows;
``accuracy_by(result, "answer_type")`` gives each checkpoint's accuracy, with a 95% bootstrap CI,
on each value's samples (the shapes set carries ``question_type``: color, shape, describe). A
checkpoint that learned colours before shapes shows it here, not in the overall accuracy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlm_lab.errors import ConfigError, DataError
from vlm_lab.scoring import bootstrap_accuracy

if TYPE_CHECKING:
    from vlm_lab.results import ComparisonResult

MISSING = "(none)"  # the group of samples whose meta lacks the key
MAX_VALUES = 50  # a key with more distinct values is broken down only when asked for by name (accuracy_by, --by)
COLUMNS = ("checkpoint", "step", "accuracy", "ci_low", "ci_high", "n_scored")


def meta_keys(rows: list[dict], *, max_values: int | None = MAX_VALUES) -> list[str]:
    """The ``meta`` keys the scored rows (those with a reference) carry, in the order they first appear:
    the keys accuracy can be broken down by (none when nothing is scored). ``max_values``: only keys with at
    most this many distinct values (None: all); a per-sample key (VQA's ``question_id``) would make a
    table, a plot line or a W&B summary key per sample."""
    keys = list(dict.fromkeys(k for row in rows if row["reference"] is not None for k in row.get("meta") or {}))
    if max_values is None:
        return keys
    return [k for k in keys if len(groups(rows, k)) <= max_values]


def groups(rows: list[dict], key: str) -> dict[str, list[dict]]:
    """The scored rows (those with a reference) by their ``meta[key]`` as text, in order of first appearance;
    rows without the key go to ``MISSING``."""
    out: dict[str, list[dict]] = {}
    for row in rows:
        if row["reference"] is not None:
            value = (row.get("meta") or {}).get(key)
            out.setdefault(MISSING if value is None else str(value), []).append(row)
    return out


def value_column(key: str) -> str:
    """The column of ``accuracy_by``'s frame holding ``meta[key]``'s values: ``key``, or ``meta.<key>`` where ``key``
    is one of ``COLUMNS`` (a sample's meta ``step`` is not the checkpoint's training step)."""
    return f"meta.{key}" if key in COLUMNS else key


def accuracy_by(result: ComparisonResult, key: str, *, seed: int | None = None):
    """Long DataFrame: per value of ``meta[key]`` and checkpoint, the accuracy with its 95% bootstrap CI.

    Columns: ``value_column(key)`` (``key``, or ``meta.<key>`` for a key named like a column), then ``COLUMNS``.
    Seeded with the comparison's seed, like the summary.

    Raises:
        ConfigError: no sample carries ``key`` (names the keys they do carry).
        DataError: no sample has a reference, so nothing is scored.
    """
    import pandas as pd

    if all(row["reference"] is None for row in result.rows):
        raise DataError(f"no sample has a reference, so nothing is scored to break down by {key!r} (add 'reference' to the data)")
    have = meta_keys(result.rows, max_values=None)
    if key not in have:
        carried = f"they carry: {', '.join(have)}" if have else 'they carry none (give each JSONL line a "meta": {...})'
        raise ConfigError(f"no sample carries meta key {key!r} to break accuracy down by; {carried}")
    by_value = groups(result.rows, key)
    seed = result.config.get("seed", 0) if seed is None else seed
    column, records = value_column(key), []
    for value, rows in by_value.items():
        for name, ref in zip(result.checkpoints, result.refs):
            acc = bootstrap_accuracy([row["outputs"][name]["score"] for row in rows], seed=seed)
            records.append({column: value, "checkpoint": name, "step": ref.get("step"), "accuracy": acc.value,
                            "ci_low": acc.ci_low, "ci_high": acc.ci_high, "n_scored": acc.n})  # fmt: skip
    return pd.DataFrame.from_records(records, columns=[column, *COLUMNS])


def wide_table(frame, key: str):
    """``accuracy_by``'s frame for reading: one row per value (with its sample count), one column per
    checkpoint, each cell ``"69% [55–81]"`` (``percent_ci``)."""
    import pandas as pd

    key = value_column(key)
    cell = [percent_ci(a, lo, hi, n) for a, lo, hi, n in zip(frame["accuracy"], frame["ci_low"], frame["ci_high"], frame["n_scored"])]
    frame = frame.assign(cell=cell)
    table = frame.pivot(index=key, columns="checkpoint", values="cell")
    table = table.reindex(index=list(dict.fromkeys(frame[key])), columns=list(dict.fromkeys(frame["checkpoint"])))
    table.insert(0, "n", frame.groupby(key, sort=False)["n_scored"].first().reindex(table.index))
    table.columns.name = None
    return pd.DataFrame(table)


def percent_ci(value: float, low: float, high: float, n: int) -> str:
    """``"69% [55–81]"``; with 500 or more samples, where a tenth of a percent can be told apart, ``"68.8% [66.3–71.2]"``."""
    digits = 1 if n >= 500 else 0
    return f"{value * 100:.{digits}f}% [{low * 100:.{digits}f}–{high * 100:.{digits}f}]"


def plot_by(result: ComparisonResult, key: str, ax, xs: list) -> None:
    """One line per value of ``meta[key]`` at the checkpoints' positions ``xs``, with 95% CI bars, on ``ax``."""
    frame = result.accuracy_by(key)
    parts = list(frame.groupby(value_column(key), sort=False))
    from vlm_lab.results_plot import MARKERS

    span = (max(xs) - min(xs)) or 2  # a checkpoint alone is drawn on (-1, 1)
    for i, (value, part) in enumerate(parts):
        dodge = (i - (len(parts) - 1) / 2) * span * 0.012  # the values' CI bars side by side, not on top of each other
        order = sorted(range(len(xs)), key=lambda j: xs[j])  # along the axis: a run's final model may stand at an earlier step
        acc = part["accuracy"].to_numpy()[order]
        errors = [acc - part["ci_low"].to_numpy()[order], part["ci_high"].to_numpy()[order] - acc]
        ax.errorbar([xs[j] + dodge for j in order], acc, yerr=errors, marker=MARKERS[i % len(MARKERS)], capsize=3,
                    label=f"{value} (n={part['n_scored'].iloc[0]})")  # fmt: skip
    # beside the axes: inside, it hid the CI bars at the curves' top right, where accuracy ends up
    ax.legend(title=key, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
