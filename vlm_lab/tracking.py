"""W&B logging for comparisons, ablation runs and single interactions.

Offline by default: with no ``WANDB_API_KEY`` and no ``WANDB_MODE`` a run is
written under ``$WANDB_DIR/wandb/offline-run-*`` and can be uploaded later with
``wandb sync`` (``vlm-lab runs`` lists them and prints the command). A key in the
environment makes runs online; when online fails (no key configured, a refused key, no
network) the run is logged offline instead, with one warning naming why and the ``wandb sync``
command. ``mode="disabled"`` (or ``WANDB_MODE=disabled``) turns logging off without
importing wandb. Tags longer than W&B's 64 characters are shortened (start + hash).

Logging never breaks an experiment: any W&B failure becomes one
``TrackingWarning`` and the function returns ``None`` (``log_comparison``: a falsy
``NotLogged`` that says why, so a notebook can print what happened); the results
on disk are untouched. The API key is never printed or logged (it is redacted
from warnings and reasons).

Starting and finishing runs lives in ``vlm_lab.tracking_runs``, the ``wandb.json`` outcome record in
``vlm_lab.tracking_record``; their public names are importable from here.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from vlm_lab.tracking_record import RECORD_FILE, describe_record, read_record, write_record
from vlm_lab.tracking_runs import (
    DEFAULT_PROJECT,
    MAX_TAG,
    MODES,
    NotLogged,
    TrackedRun,
    TrackingWarning,
    _disabled,
    _finish,
    _finish_quietly,
    _run_mode,
    _skip,
    _start_or_offline,
    _tracked,
    finish_run,
    local_env,
    resolve_mode,
    start_run,
    variant_tags,
)

__all__ = [
    "DEFAULT_PROJECT", "MAX_TAG", "MODES", "RECORD_FILE", "NotLogged", "TrackedRun", "TrackingWarning",
    "comparison_summary", "describe_record", "finish_run", "local_env", "log_comparison", "log_interaction",
    "read_record", "resolve_mode", "start_run", "variant_tags", "write_record",
]  # fmt: skip

# Columns of a comparison's per-sample frame that hold an image path.
_IMAGE_COLUMN = re.compile(r"(^|[_/])image(_path)?$")
# Per checkpoint, drawn along training in the run's W&B charts (``eval/<metric>`` against ``eval/step``).
CHART_METRICS = ("accuracy", "ci_low", "ci_high", "mean_latency_s", "tokens_per_s", "peak_memory_bytes")
# The eval/steps a run has drawn, in its summary (hidden: "_"): wandb restores an online run's summary on resume.
EVAL_STEPS_KEY = "_vlm_lab/eval_steps"

def _number(value: Any) -> float | int | None:
    """A finite Python number, or None (W&B summaries want plain JSON numbers)."""
    if isinstance(value, (bool, int)) or getattr(getattr(value, "dtype", None), "kind", "") in ("b", "i", "u"):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def comparison_summary(result: Any) -> dict[str, Any]:
    """Flat ``{"<checkpoint>/<metric>": number}`` from ``result.summary_frame()``.

    Every numeric column of the per-checkpoint summary is kept (accuracy, its CI,
    latency, tokens/s, peak memory, ...) with ``memory_kind`` (what the memory number is), plus ``best/*`` for
    the most accurate checkpoint.
    """
    frame = result.summary_frame()
    key_col = "checkpoint" if "checkpoint" in frame.columns else frame.columns[0]
    summary: dict[str, Any] = {}
    for row in frame.to_dict(orient="records"):
        label = str(row[key_col])
        for col, value in row.items():
            number = _number(value)
            if col != key_col and number is not None:
                summary[f"{label}/{col}"] = number
        if isinstance(row.get("memory_kind"), str):  # what peak_memory_bytes is: a GPU's peak, or the weights on CPU
            summary[f"{label}/memory_kind"] = row["memory_kind"]
    accuracy = frame["accuracy"].astype(float) if "accuracy" in frame.columns else None
    if accuracy is not None and accuracy.notna().any():  # no references: nothing scored
        best = frame.loc[accuracy.idxmax()]
        summary["best/checkpoint"] = str(best[key_col])
        summary["best/accuracy"] = float(best["accuracy"])
        from vlm_lab.breakdown import value_column

        for key in _meta_keys(result):  # the best checkpoint's accuracy per value: "best/accuracy/question_type=shape"
            by = result.accuracy_by(key)
            mine = by[by["checkpoint"] == best[key_col]]
            values = mine[value_column(key)]  # meta.<key> for a key named like a column (step)
            summary.update({f"best/accuracy/{key}={value}": float(acc) for value, acc in zip(values, mine["accuracy"])})
    return summary


def _log_along_training(run: Any, result: Any) -> None:
    """One history row per checkpoint, in training-step order, so W&B's charts draw ``eval/accuracy`` (its CI, latency,
    tokens/s, peak memory) along training with no panel to build. Only when every checkpoint has a step: a line
    through hub models in the order they were named means nothing. Kept out of the summary (``summary="none"``),
    where the last row's value would read as the run's accuracy; the summary has the per-checkpoint keys.

    A run logged into again with its id (a sweep point run again after a kill) draws only the steps it has not
    drawn (``_logged_steps``): W&B keeps every row, so each start drew each checkpoint once more. A step drawn
    before keeps its first point even if this comparison's numbers differ; the summary has this one's."""
    frame = result.summary_frame()
    steps = [_number(step) for step in frame["step"]] if "step" in frame.columns else []
    if not steps or any(step is None for step in steps):
        return
    drawn = _logged_steps(run)
    run.define_metric("eval/step", hidden=True, summary="none")
    run.define_metric("eval/*", step_metric="eval/step", summary="none")
    for step, row in sorted(zip(steps, frame.to_dict(orient="records")), key=lambda pair: pair[0]):
        if step in drawn:
            continue
        values = {f"eval/{m}": _number(row.get(m)) for m in CHART_METRICS}
        run.log({"eval/step": step, **{k: v for k, v in values.items() if v is not None}})
    run.summary[EVAL_STEPS_KEY] = sorted(drawn.union(steps))


def _logged_steps(run: Any) -> set[int | float]:
    """The ``eval/step`` values ``run`` has drawn in earlier starts (same id, ``resume="allow"``). Online, from
    the summary wandb restores on resume (``EVAL_STEPS_KEY``). Offline each start is its own ``offline-run-*``
    folder and restores nothing: from the history of the earlier starts beside this one, which also covers runs
    logged before the key existed."""
    steps = {s for s in run.summary.get(EVAL_STEPS_KEY) or () if _number(s) is not None}
    sync_dir = getattr(run.settings, "sync_dir", None)
    if sync_dir and _run_mode(run) == "offline":
        from vlm_lab.offline_runs import starts_beside

        for start in starts_beside(sync_dir, run.id, project=run.project, entity=run.entity or "", exclude=sync_dir):
            steps.update(row["eval/step"] for row in start.eval_rows())
    return steps


def _meta_keys(result: Any) -> list[str]:
    """The keys ``result`` breaks accuracy down by (``ComparisonResult.meta_keys``); none for other results."""
    return list(result.meta_keys()) if callable(getattr(result, "meta_keys", None)) else []


def _table(frame: Any, *, max_rows: int | None) -> Any:
    """A wandb.Table of per-sample rows; image-path columns become wandb.Image."""
    import wandb

    if max_rows is not None:
        frame = frame.head(max_rows)
    columns = [str(c) for c in frame.columns]
    image_cols = {c for c in columns if _IMAGE_COLUMN.search(c.lower())}
    mixed = _mixed_columns(frame, columns, skip=image_cols)
    table = wandb.Table(columns=[c.removesuffix("_path") if c in image_cols else c for c in columns])
    for row in frame.itertuples(index=False):
        values = []
        for col, value in zip(columns, row):
            if col in image_cols and isinstance(value, str) and value and Path(value).is_file():
                value = wandb.Image(value)
            elif col in mixed:
                value = None if _kind(value) is None else str(value)
            elif hasattr(value, "item"):  # numpy scalar -> Python
                value = value.item()
            values.append(value)
        table.add_data(*values)
    return table


def _samples_frame(result: Any) -> Any:
    """``result.to_dataframe()`` with a ``disagree`` column after ``reference``: whether the checkpoints' outputs
    differ (``ComparisonResult.disagreements``), so W&B's table filters to them with one click, not an
    expression over every checkpoint's output column."""
    frame = result.to_dataframe()
    if not callable(getattr(result, "disagreements", None)) or len(getattr(result, "checkpoints", ())) < 2:
        return frame
    name = "disagree" if "disagree" not in frame.columns else "checkpoints_disagree"  # a meta key may be called that
    differ = {id(row) for row in result.disagreements()}
    at = list(frame.columns).index("reference") + 1 if "reference" in frame.columns else len(frame.columns)
    frame.insert(at, name, [id(row) in differ for row in result.rows])
    return frame


def _kind(value: Any) -> str | None:
    """What wandb.Table types a cell as: None for a missing value (None, NaN), which any column takes."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool) or getattr(getattr(value, "dtype", None), "kind", "") == "b":
        return "bool"
    if isinstance(value, (int, float)) or getattr(getattr(value, "dtype", None), "kind", "") in ("i", "u", "f"):
        return "number"
    return type(value).__name__


def _mixed_columns(frame: Any, columns: list[str], *, skip: set[str]) -> set[str]:
    """The columns holding values of more than one kind: a meta key that is a number on some samples and text on
    others (``difficulty``: 1, 2, "hard"). wandb.Table types a column by its first value and refuses a row of
    another kind, which lost the whole comparison's log; these columns are logged as text instead."""
    return {
        name for col, name in zip(frame.columns, columns)
        if name not in skip and frame[col].dtype == object and len({_kind(v) for v in frame[col]} - {None}) > 1
    }  # fmt: skip


def log_comparison(
    result: Any,
    config: Any = None,
    *,
    project: str | None = None,
    entity: str | None = None,
    group: str | None = None,
    tags: Iterable[str] | str = (),
    name: str | None = None,
    job_type: str = "compare",
    mode: str | None = None,
    dir: str | os.PathLike[str] | None = None,
    max_table_rows: int | None = None,
    id: str | None = None,
    resume: str | None = None,
    notebook: str = "",
) -> TrackedRun | NotLogged:
    """Log a checkpoint comparison as one W&B run; never raises for W&B failures.

    Logs ``config`` (default ``result.config``) unchanged, per-checkpoint summary metrics, the same drawn
    along training (``eval/accuracy`` ... against ``eval/step``), a ``samples`` table (image, prompt,
    reference, whether the checkpoints disagree, each checkpoint's output and score) and the comparison's files in ``result.output_dir``
    (``_result_files``) as a ``comparison`` artifact.
    Without a ``name``, a run in a ``group`` is named by its ``tags`` (a sweep's
    variant, ``max_new_tokens=4,strategy=greedy``) rather than W&B's random words.
    ``id``/``resume`` (``resume="allow"``): log into the W&B run with that id, e.g. the one a
    sweep gives each grid point, so a point run again after a kill is still one W&B run.
    ``notebook``: the version of the notebook that made the comparison (a sweep's ``wandb_notebook``, 8 hex
    digits of its code's fingerprint), logged as a ``notebook=<it>`` tag and the config key ``wandb_notebook``.
    The runs of an edited notebook are new W&B runs with the variant's group and name: this is what tells
    them apart from the earlier notebook's; the name and group stay the variant's.

    The outcome is also written to ``<result.output_dir>/wandb.json`` (``RECORD_FILE``: logged or not,
    mode, run id, why not; never a key), so whoever reads the results later (a sweep's summary, a
    cron job's morning reader) sees a W&B failure that only this call's warning told.

    Returns:
        Where the run went, or a falsy ``NotLogged`` saying why not: W&B is
        disabled, or it failed (then also one ``TrackingWarning``).
    """
    output_dir = getattr(result, "output_dir", None)
    output_dir = output_dir if output_dir and Path(output_dir).is_dir() else None
    started: list[Any] = []  # the run, once _log_comparison has one
    try:
        outcome = _log_comparison(
            result, config, project=project, entity=entity, group=group, tags=tags, name=name, job_type=job_type,
            mode=mode, dir=dir, max_table_rows=max_table_rows, id=id, resume=resume, started=started,
            notebook=notebook.strip(),
        )  # fmt: skip
    except BaseException as e:  # Ctrl-C while logging: the record must not keep an earlier execution's "logged"
        if output_dir:
            closed = "the W&B run was closed as failed" if started else "no W&B run had started"
            why = f"interrupted ({type(e).__name__}) while logging; {closed}"
            write_record(output_dir, NotLogged(reason=why, attempted=True), mode=mode)
        raise
    if output_dir:
        write_record(output_dir, outcome, mode=mode)
    return outcome


def _log_comparison(
    result: Any, config: Any, *, project: str | None, entity: str | None, group: str | None,
    tags: Iterable[str] | str, name: str | None, job_type: str, mode: str | None,
    dir: str | os.PathLike[str] | None, max_table_rows: int | None, id: str | None, resume: str | None, started: list[Any],
    notebook: str,
) -> TrackedRun | NotLogged:
    if config is None:
        config = getattr(result, "config", None)
    if not name and group and tags:
        name = tags if isinstance(tags, str) else ",".join(str(t) for t in tags)
    if notebook:  # after the name: the name stays the variant's, the same for every version of the notebook
        tags = [*(tags.split(",") if isinstance(tags, str) else tags), f"notebook={notebook}"]
        fields = config.to_dict() if hasattr(config, "to_dict") else dict(config or {})
        config = {**fields, "wandb_notebook": notebook}
    try:
        run, resolved, online_error = _start_or_offline(
            config, project=project, entity=entity, group=group, job_type=job_type,
            tags=tags, name=name, mode=mode, dir=dir, id=id, resume=resume,
        )
    except Exception as e:  # noqa: BLE001 - logging must never break the experiment
        return _skip("could not start the run", e)
    if run is None:
        return _disabled(mode)
    started.append(run)
    try:
        run.summary.update(comparison_summary(result))
        _log_along_training(run, result)
        run.log({"samples": _table(_samples_frame(result), max_rows=max_table_rows)})
        for key in _meta_keys(result):  # accuracy per question type (or any meta value the samples carry)
            run.log({f"accuracy_by/{key}": _table(result.accuracy_by(key), max_rows=None)})
        output_dir = getattr(result, "output_dir", None)
        if output_dir and Path(output_dir).is_dir():
            import wandb

            artifact = wandb.Artifact(_artifact_name(group, name, run.id), type="comparison")
            for relative in _result_files(result, Path(output_dir)):
                artifact.add_file(str(Path(output_dir) / relative), name=relative)
            run.log_artifact(artifact)
        return _finish(run, _tracked(run, resolved, online_error))
    except Exception as e:  # noqa: BLE001
        skipped = _skip("could not log the comparison", e)
        _finish_quietly(run)
        return skipped
    except BaseException:  # Ctrl-C in a notebook: close the run (as failed) instead of leaving it open in the kernel
        _finish_quietly(run)
        raise


def log_interaction(
    *,
    image: Any,
    prompt: str,
    outputs: Mapping[str, str],
    latency_s: Mapping[str, float] | None = None,
    memory_mb: Mapping[str, float] | float | None = None,
    config: Mapping[str, Any] | Any | None = None,
    run: Any = None,
    project: str | None = None,
    entity: str | None = None,
    group: str | None = None,
    tags: Iterable[str] = ("interaction",),
    mode: str | None = None,
    dir: str | os.PathLike[str] | None = None,
) -> TrackedRun | None:
    """Log one interactive question (the Space, the explore notebook); never raises for W&B failures.

    Args:
        image: PIL image, array or path shown to every checkpoint.
        prompt: the question.
        outputs: ``{checkpoint: answer}``.
        latency_s: ``{checkpoint: seconds}`` for the answer.
        memory_mb: ``{checkpoint: peak MB}`` or one number for the whole call.
        run: an open run from ``start_run`` to append to (it stays open); by
            default a fresh ``job_type="interaction"`` run is started and finished.

    Returns:
        Where the run went, or None when disabled or when W&B failed.
    """
    own_run = run is None
    online_error = ""
    try:
        if own_run:
            run, resolved, online_error = _start_or_offline(
                config, project=project, entity=entity, group=group, job_type="interaction",
                tags=tags, mode=mode, dir=dir,
            )
        if run is None:
            return None
    except Exception as e:  # noqa: BLE001
        _skip("could not start the run", e)
        return None
    try:
        import wandb

        latency_s = latency_s or {}
        per_ckpt_mem = memory_mb if isinstance(memory_mb, Mapping) else {}
        table = wandb.Table(columns=["image", "prompt", "checkpoint", "output", "latency_s", "memory_mb"])
        picture = wandb.Image(str(image) if isinstance(image, os.PathLike) else image)
        for ckpt, text in outputs.items():
            mem = per_ckpt_mem.get(ckpt) if per_ckpt_mem else memory_mb
            table.add_data(picture, prompt, ckpt, text, _number(latency_s.get(ckpt)), _number(mem))
        metrics: dict[str, Any] = {"interaction": table}
        metrics.update({f"{ckpt}/latency_s": _number(v) for ckpt, v in latency_s.items()})
        if per_ckpt_mem:
            metrics.update({f"{ckpt}/memory_mb": _number(v) for ckpt, v in per_ckpt_mem.items()})
        elif memory_mb is not None:
            metrics["memory_mb"] = _number(memory_mb)
        run.log(metrics)
        if own_run:
            return _finish(run, _tracked(run, resolved, online_error))
        return _tracked(run, _run_mode(run))
    except Exception as e:  # noqa: BLE001
        _skip("could not log the interaction", e)
        if own_run:
            _finish_quietly(run)
        return None
    except BaseException:  # Ctrl-C: close the run this call started; a caller's own run stays theirs
        if own_run:
            _finish_quietly(run)
        raise


RESULT_FILES = ("results.jsonl", "results.csv", "summary.json", "comparison.html")  # what ComparisonResult.save writes
PLOT_SUFFIXES = (".png", ".svg", ".pdf", ".html")  # a notebook's plots saved beside them (notebook 02: accuracy.png)


def _result_files(result: Any, folder: Path) -> list[str]:
    """The comparison's own files in ``folder``, as artifact names: ``RESULT_FILES``, the images its rows name, and
    the plots saved at the top of the folder. Not what else shares it: a sweep run's bookkeeping (status.json,
    params.json, an earlier execution's notebook), a training run's checkpoints, caches (hidden)."""
    top = [p.name for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")]
    names = [n for n in top if n in RESULT_FILES or n.lower().endswith(PLOT_SUFFIXES)]
    images = sorted({str(row["image"]) for row in getattr(result, "rows", None) or [] if row.get("image")})
    return names + [i for i in images if not Path(i).is_absolute() and (folder / i).is_file() and i not in names]


def _artifact_name(group: str | None, name: str | None, run_id: str) -> str:
    # Artifact names allow letters, digits, '-', '_' and '.'.
    base = "-".join(p for p in (group, name) if p) or "comparison"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{base}-{run_id}")[:128]
