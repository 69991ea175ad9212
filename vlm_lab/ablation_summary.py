"""A sweep's runs, one row each: what a run folder holds (its comparison's ``summary.json``, its ``status.json``,
its ``wandb.json``) and the ``summary.csv`` / ``summary.md`` that ``vlm_lab.sweep`` writes after each run
(``write_summary``). ``vlm_lab.ablation`` reads them back into the ablation report. A notebook parameter named like
one of the report's own columns (``state``, ``error``, ``run_id``, ...) is shown as ``params.<name>``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable

from vlm_lab.data import atomic_write_text
from vlm_lab.spreadsheet_csv import to_csv
from vlm_lab.sweep_plan import grid_order

STATUS_FILE = "status.json"  # a run's state (vlm_lab.sweep)
RESULT_FILE = "summary.json"  # a comparison's per-checkpoint summary (vlm_lab.results)
METRICS = ("accuracy", "ci_low", "ci_high", "mean_latency_s", "tokens_per_s", "peak_memory_bytes")
BEST_METRICS = ("accuracy", "ci_low", "ci_high", "tokens_per_s")  # a run's best checkpoint's, in summary.csv
# The report's own columns (summary.csv, results, failures, W&B runs, accuracy_by): a notebook parameter of one of
# these names is shown as ``params.<name>`` beside it, never in its place.
PARAMETER_PREFIX = "params."
REPORT_COLUMNS = frozenset({
    "run_id", "state", "duration_s", "error", "best_checkpoint", *(f"best_{m}" for m in BEST_METRICS), "wandb",
    "checkpoint", "step", *METRICS, "n_scored", "wandb_run", "uploaded", "sync_command",
})  # fmt: skip


def parameter_column(name: str) -> str:
    """The column of notebook parameter ``name`` in the report's tables: ``name``, or ``params.<name>`` where
    that is one of the report's own columns (``state``, ``error``, ``run_id``, ``checkpoint``, ...)."""
    clashes = name in REPORT_COLUMNS or name.startswith(PARAMETER_PREFIX) or name.endswith("/accuracy")
    return PARAMETER_PREFIX + name if clashes else name


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _checkpoint_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Per-checkpoint rows of the comparison a run wrote, or [] when it wrote none."""
    meta = _read_json(run_dir / RESULT_FILE)
    if not isinstance(meta, dict):
        return []
    return [
        {"checkpoint": s.get("checkpoint"), "step": s.get("step"), **{m: s.get(m) for m in METRICS}}
        for s in meta.get("summary", [])
    ]


def _best(rows: list[dict[str, Any]], metric: str = "accuracy") -> dict[str, Any] | None:
    scored = [r for r in rows if isinstance(r.get(metric), (int, float)) and not math.isnan(r[metric])]
    return max(scored, key=lambda r: r[metric]) if scored else None


def write_summary(
    sweep_dir: str | os.PathLike[str], runs: Iterable[Any], *, abandoned: Iterable[str] = (), in_progress: bool = False,
    overview: Callable[[Path], Iterable[str]] | None = None,
) -> Path:
    """Write ``summary.csv`` and ``summary.md`` for ``runs`` (``vlm_lab.sweep.RunSpec``); returns the CSV path.

    ``abandoned``: ids of runs this process is leaving mid-way (it is being stopped): ``interrupted``,
    though their locks are still held for the moment. ``in_progress``: written while the sweep runs; summary.md
    says so with the time, as a sweep killed outright (a reboot, SIGKILL) leaves this one behind as its last.
    ``overview``: called with the CSV just written, returns the lines summary.md shows under its counts (the
    sweep's coverage of the grid); summary.md is written once, with them, so no kill leaves it without them.
    """
    import pandas as pd

    sweep_dir, abandoned = Path(sweep_dir), set(abandoned)
    records, parameter_columns, partial = [], {}, 0
    for run in sorted(runs, key=grid_order):
        state = "interrupted" if run.run_id in abandoned and run.status().get("state") == "running" else run.state()
        parameters = {parameter_column(k): v for k, v in run.parameters.items()}
        parameter_columns.update(dict.fromkeys(parameters))
        record = {"run_id": run.run_id, **parameters, **run_fields(run.dir, state)}
        partial += state != "completed" and bool(_checkpoint_rows(run.dir))
        records.append(record)
    frame = pd.DataFrame.from_records(records)
    csv_path = sweep_dir / "summary.csv"
    atomic_write_text(csv_path, to_csv(frame))  # for spreadsheets: formula-like text quoted
    title = f"Sweep {sweep_dir.name}"
    from vlm_lab.sweep_locks import now

    written = now() if in_progress else ""
    above = list(overview(csv_path)) if overview is not None else []
    text = _markdown(frame, title=title, parameters=list(parameter_columns), partial=partial, written=written, above=above)
    if not in_progress:
        text += _verdict(sweep_dir)
    atomic_write_text(sweep_dir / "summary.md", text)
    return csv_path


def _verdict(sweep_dir: Path) -> str:
    """The line notebook 04 opens with (``Ablation.describe_best``): the best variant and whether it is clearly ahead
    or within noise of other runs, so a sweep's final summary.md answers that without running the notebook."""
    from vlm_lab.ablation import Ablation
    from vlm_lab.errors import VlmLabError

    if not (sweep_dir / "sweep.json").is_file():  # write_summary called on a folder no sweep made: no report to read
        return ""
    try:
        line = Ablation.load(sweep_dir).describe_best()
    except (VlmLabError, OSError) as e:  # a run folder unreadable now: the table above stands without the line
        line = f"no best variant: the report could not read the sweep ({e}); notebook 04 says more"
    return "\n" + line[:1].upper() + line[1:] + "\n"


def run_fields(run_dir: Path, state: str) -> dict[str, Any]:
    """A run's columns in summary.csv after its parameters: ``state``, ``duration_s``, ``error``, its best checkpoint
    and metrics, ``wandb``, and each checkpoint's accuracy (``<checkpoint>/accuracy``).

    Numbers only for a completed run: a notebook that failed (or was killed) after it wrote its summary.json left
    numbers that are not the run's result, and a reader (or a ranking) would take them for one."""
    from vlm_lab.sweep import describe_error
    from vlm_lab.tracking import describe_record, read_record

    status = _read_json(run_dir / STATUS_FILE)
    status = status if isinstance(status, dict) else {}
    rows = _checkpoint_rows(run_dir) if state == "completed" else []
    best = _best(rows) or {}
    fields: dict[str, Any] = {"state": state, "duration_s": status.get("duration_s")}
    fields["error"] = describe_error(status["error"]) if status.get("error") else ""
    fields["best_checkpoint"] = best.get("checkpoint")
    fields.update({f"best_{metric}": best.get(metric) for metric in BEST_METRICS})
    # What the run's W&B step did (notebook 02's wandb.json): a failure shows here, not only in its notebook.
    fields["wandb"] = describe_record(read_record(run_dir))
    fields.update({f"{r['checkpoint']}/accuracy": r["accuracy"] for r in rows})
    return fields


def _markdown(
    frame: Any, *, title: str, parameters: list[str], partial: int = 0, written: str = "", above: list[str] | None = None
) -> str:
    """summary.md, for reading: the parameters every run shares on one line, then per run the varied ones, its state,
    accuracies as percentages (the best with its 95% CI), W&B, error, and its id last. ``partial``: how many runs
    that did not complete left numbers in their folder (not shown: said in one line). ``written``: the time of a
    summary written while the sweep ran (said under the counts). ``above``: a paragraph right under the counts."""

    def cell(value: Any, percent: bool = False) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        text = f"{value:.1%}" if percent else f"{value:.4g}" if isinstance(value, float) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")

    states = frame["state"].value_counts().to_dict() if len(frame) else {}
    head = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no runs"
    fixed = [c for c in parameters if len(frame) and frame[c].astype(str).nunique() == 1]
    lines = [f"# {title}", "", head, ""] + ([*above, ""] if above else [])
    if written:
        lines += [f"Written at {written} while the sweep was running. If it is not running now, it was killed before it "
                  "could write its last summary: `vlm-lab sweep SWEEP.yaml --dry-run` and notebook 04 read each run's state "
                  "now (a run shown running or pending there may be interrupted or completed).", ""]  # fmt: skip
    if partial:
        lines += [f"Numbers only for completed runs: {partial} run(s) that did not complete wrote partial ones "
                  "(summary.json in their folder), not shown here.", ""]  # fmt: skip
    if fixed:
        lines += ["Every run: " + ", ".join(f"{c}={cell(frame[c].iloc[0])}" for c in fixed), ""]
    rows = [dict(zip(frame.columns, values)) for values in frame.itertuples(index=False)]
    for row in rows:  # one cell "68.8% [55–81]" for the three best_ columns
        acc, low, high = (row.pop(f"best_{m}", None) for m in ("accuracy", "ci_low", "ci_high"))
        ci = f" [{low * 100:.0f}–{high * 100:.0f}]" if cell(low) and cell(high) else ""
        row["best_accuracy"] = cell(acc, percent=True) + ci if cell(acc) else ""
    order = [c for c in frame.columns if c not in fixed and c != "run_id" and c not in ("best_ci_low", "best_ci_high")] + ["run_id"]
    names = {"best_accuracy": "best accuracy (95% CI)"}
    lines.append("| " + " | ".join(names.get(c, c) for c in order) + " |")
    lines.append("|" + "---|" * len(order))
    for row in rows:
        lines.append("| " + " | ".join(row[c] if c == "best_accuracy" else cell(row[c], percent=c.endswith("/accuracy")) for c in order) + " |")
    return "\n".join(lines) + "\n"
