"""An ablation's accuracy per value of a meta key: which setting helps which kind of question.

Each completed run of a sweep saved a comparison (``ComparisonResult``) whose samples may carry
``meta`` values (the shapes set: ``question_type`` = color, shape, describe). ``accuracy_by`` reads
each run's comparison back and takes one checkpoint of it (the run's best by overall accuracy, as
``summary.csv``'s ``best_checkpoint``, or a named one): its accuracy with a 95% bootstrap CI per value.
A run with no numbers (failed, pending, no comparison, no such key or checkpoint) gets a note saying
why, shown beside the others in the wide view and the description, never silently left out.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from vlm_lab.ablation_paired import load_comparison, versus_best
from vlm_lab.breakdown import COLUMNS, MISSING, percent_ci
from vlm_lab.breakdown import value_column as breakdown_column
from vlm_lab.errors import ConfigError, DataError

if TYPE_CHECKING:
    from vlm_lab.ablation import Ablation

COMPARISON_FILES = ("summary.json", "results.jsonl")  # what ComparisonResult.load reads
MAX_ANNOTATED_RUNS = 40  # heatmap cells carry their numbers up to this many runs (rows); beyond, colour only


def value_column(ablation: Ablation, key: str) -> str:
    """The column holding ``meta[key]``'s value: ``key``, or ``meta.<key>`` where that names another column."""
    taken = {"run_id", *ablation.columns(), *COLUMNS}
    return f"meta.{key}" if key in taken else key


def accuracy_by(ablation: Ablation, key: str, *, checkpoint: str | int | None = None) -> tuple[Any, dict[str, str]]:
    """The long frame (``run_id``, the grid's parameter columns, ``COLUMNS`` and the value column) and,
    per run without numbers, the note saying why.

    Raises:
        ConfigError: ``key`` is empty.
    """
    import pandas as pd

    from vlm_lab.ablation import _best

    if not str(key).strip():
        raise ConfigError("give the meta key to break accuracy down by, e.g. accuracy_by('question_type')")
    column, params = value_column(ablation, key), ablation.columns()
    records: list[dict[str, Any]] = []
    notes: dict[str, str] = {}
    for run in ablation.runs.to_dict(orient="records"):
        rid = run["run_id"]
        if run["state"] != "completed":
            notes[rid] = f"{run['state']}: {run['error']}" if run.get("error") else str(run["state"])
            continue
        folder = ablation.sweep_dir / rid
        if not all((folder / name).is_file() for name in COMPARISON_FILES):  # a notebook that saves none, an old layout
            notes[rid] = f"completed without a comparison in its folder (needs {' and '.join(COMPARISON_FILES)})"
            continue
        try:
            result = load_comparison(ablation.sweep_dir, rid, ablation.comparisons)  # read once, shared with the paired judgements
            frame = result.accuracy_by(key)
        except (DataError, ConfigError) as e:  # a damaged comparison, no references, no such key
            notes[rid] = str(e).replace(str(folder), folder.name)
            continue
        if checkpoint is None:
            best = _best(result.summary)
            if best is None:
                notes[rid] = "no checkpoint of its comparison has an accuracy"
                continue
            chosen = frame[frame["checkpoint"] == best["checkpoint"]]
        else:
            step = pd.to_numeric(pd.Series([checkpoint]), errors="coerce").iloc[0]  # 500 or "500"; steps read as floats beside a hub id
            chosen = frame[(frame["checkpoint"] == str(checkpoint)) | (pd.to_numeric(frame["step"], errors="coerce") == step)]
            if chosen.empty:
                notes[rid] = f"its comparison has no checkpoint {checkpoint!r} (it has: {', '.join(result.checkpoints)})"
                continue
        values = {c: run.get(c) for c in params}
        for row in chosen.rename(columns={breakdown_column(key): column}).to_dict(orient="records"):
            records.append({"run_id": rid, **values, **row})
    return pd.DataFrame.from_records(records, columns=["run_id", *params, *COLUMNS, column]), notes


def wide(ablation: Ablation, frame: Any, notes: dict[str, str], key: str) -> Any:
    """One row per run (its varied parameters, or its id when nothing varied), the checkpoint taken, one
    column per value (``"62% [25–100]"``; the header carries the sample count when every run has the same),
    and a ``note`` for the runs without numbers."""
    import pandas as pd

    column = value_column(ablation, key)
    labels = ablation.columns(ablation.varied) or ["run_id"]
    order = list(dict.fromkeys(frame[column]))
    counts = frame.groupby(column, sort=False)["n_scored"].agg(lambda n: set(n))
    headers = {v: f"{v} (n={next(iter(counts[v]))})" if len(counts[v]) == 1 else v for v in order}
    rows = []
    for run in ablation.runs.to_dict(orient="records"):
        row = {c: run.get(c) for c in labels}
        part = frame[frame["run_id"] == run["run_id"]]
        row["checkpoint"] = part["checkpoint"].iloc[0] if len(part) else ""
        cells = {r[column]: r for r in part.to_dict(orient="records")}
        for value in order:
            r = cells.get(value)
            text = "" if r is None else percent_ci(r["accuracy"], r["ci_low"], r["ci_high"], r["n_scored"])
            row[headers[value]] = text if r is None or len(counts[value]) == 1 else f"{text} n={r['n_scored']}"
        row["note"] = notes.get(run["run_id"], "")
        rows.append(row)
    return pd.DataFrame.from_records(rows, columns=[*labels, "checkpoint", *headers.values(), "note"])


def describe(ablation: Ablation, frame: Any, notes: dict[str, str], key: str, *, checkpoint: str | int | None = None) -> str:
    """Per value, the best run and the runs the sweep cannot tell from it (no clear winner then): judged on that value's
    samples both runs scored (``ablation_paired.versus_best``), by CI overlap where they cannot be paired; the runs
    without numbers."""
    column = value_column(ablation, key)
    where = "each run's best checkpoint" if checkpoint is None else f"checkpoint {checkpoint}"
    lines = [f"accuracy by {key} at {where}:"]
    if frame.empty:
        lines = [f"no accuracy by {key} at {where}: no run has numbers for it"]
    for value, part in frame.groupby(column, sort=False):
        scored = part[part["accuracy"].notna()].sort_values("accuracy", ascending=False, kind="stable")
        if scored.empty:
            lines.append(f"  {key}={value}: no run scored it")
            continue
        top = scored.iloc[0]
        head = f"  {key}={value}: best {ablation.label(top)} {percent_ci(top['accuracy'], top['ci_low'], top['ci_high'], top['n_scored'])}"
        if len(scored) == 1:
            lines.append(f"{head} (the only run scored)")
            continue
        others = scored.iloc[1:].to_dict(orient="records")
        judged = versus_best(ablation.sweep_dir, top.to_dict(), others, where=_with_value(key, value), results=ablation.comparisons)
        close = [o for o, j in zip(others, judged) if j["close"]]  # the sweep cannot tell these from the best
        paired = all(j["paired"] for j in judged)  # on the same samples; else (some) by CI overlap only
        if not close:
            nxt = others[0]
            how = "paired on the same samples" if paired else "95% CIs apart"
            lines.append(f"{head}, clearly above every other run ({how}; next: {ablation.label(nxt)} "
                         f"{percent_ci(nxt['accuracy'], nxt['ci_low'], nxt['ci_high'], nxt['n_scored'])})")  # fmt: skip
        else:
            named = "; ".join(f"{ablation.label(r)} {r['accuracy']:.0%}" for r in close[:3])
            more = f" and {len(close) - 3} more" if len(close) > 3 else ""
            how = "within noise of it on the same samples" if paired else "with an overlapping 95% CI"
            lines.append(f"{head}; no clear winner: {len(close)} other run(s) {how} ({named}{more})")
    if notes:
        lines.append(f"{len(notes)} of {len(ablation.runs)} run(s) without numbers (the note column):")
        by_note: dict[str, list[str]] = {}
        for run in ablation.runs.to_dict(orient="records"):
            if run["run_id"] in notes:
                by_note.setdefault(notes[run["run_id"]], []).append(ablation.label(run))
        for note, labels in by_note.items():  # a reason shared by many runs (an old sweep without meta) said once
            more = f" and {len(labels) - 3} more" if len(labels) > 3 else ""
            lines.append(f"  {note} ({'every run' if len(labels) == len(ablation.runs) else '; '.join(labels[:3]) + more})")
    return "\n".join(lines)


def _with_value(key: str, value: str):
    """Accepts the result rows whose ``meta[key]`` reads ``value`` (``breakdown.groups``' rule, ``MISSING`` included)."""
    def accepts(row: dict) -> bool:
        got = (row.get("meta") or {}).get(key)
        return (MISSING if got is None else str(got)) == value

    return accepts


def plot(ablation: Ablation, frame: Any, notes: dict[str, str], key: str, *, checkpoint: str | int | None = None):
    """A heatmap: one row per run, one column per value, coloured by accuracy, each cell with its accuracy and
    95% CI (up to ``MAX_ANNOTATED_RUNS`` rows); runs without numbers are grey rows. Returns the Figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    where = "each run's best checkpoint" if checkpoint is None else f"checkpoint {checkpoint}"
    if frame.empty:  # an old sweep (no meta), every run failed, a key no sample carries: say so, not an empty grid
        fig, ax = plt.subplots(figsize=(8, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"sweep {ablation.name}: no run has accuracy by {key} at {where}\n(the note column of "
                f"accuracy_by({key!r}, wide=True) says why)", ha="center", va="center")  # fmt: skip
        return fig
    column = value_column(ablation, key)
    runs = ablation.runs.to_dict(orient="records")
    values = list(dict.fromkeys(frame[column]))
    grid = np.full((len(runs), len(values)), np.nan)
    texts: dict[tuple[int, int], str] = {}
    for i, run in enumerate(runs):
        for r in frame[frame["run_id"] == run["run_id"]].to_dict(orient="records"):
            j = values.index(r[column])
            grid[i, j] = r["accuracy"]
            if not math.isnan(r["accuracy"]):
                texts[i, j] = f"{r['accuracy']:.0%}\n[{r['ci_low']:.0%}–{r['ci_high']:.0%}]"
    fig, ax = plt.subplots(figsize=(3 + 1.4 * len(values), 1.5 + 0.38 * len(runs)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")  # runs without numbers: grey rows
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    n = frame.groupby(column, sort=False)["n_scored"].max()
    ax.set_xticks(range(len(values)), [f"{v}\n(n={n[v]})" for v in values])
    labels = [ablation.label(run) + (" (no numbers)" if run["run_id"] in notes else "") for run in runs]
    ax.set_yticks(range(len(runs)), labels, fontsize="small" if len(runs) <= MAX_ANNOTATED_RUNS else "x-small")
    if len(runs) <= MAX_ANNOTATED_RUNS:
        for (i, j), text in texts.items():
            ax.text(j, i, text, ha="center", va="center", fontsize="x-small", color="white" if grid[i, j] < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="accuracy", fraction=0.05)
    ax.set_title(f"sweep {ablation.name}: accuracy by {key} at {where}")
    fig.tight_layout()
    return fig
