"""W&B logging for comparisons, ablation runs and single interactions.

Offline by default: with no ``WANDB_API_KEY`` and no ``WANDB_MODE`` a run is
written under ``$WANDB_DIR/wandb/offline-run-*`` and can be uploaded later with
``wandb sync`` (``vlm-lab runs`` lists them and prints the command). A key in the
environment makes runs online; when online fails (no key configured, no network) the
run is logged offline instead, with one warning naming why and the ``wandb sync``
command. ``mode="disabled"`` (or ``WANDB_MODE=disabled``) turns logging off without
importing wandb. Tags longer than W&B's 64 characters are shortened (start + hash).

Logging never breaks an experiment: any W&B failure becomes one
``TrackingWarning`` and the function returns ``None`` (``log_comparison``: a falsy
``NotLogged`` that says why, so a notebook can print what happened); the results
on disk are untouched. The API key is never printed or logged (it is redacted
from warnings and reasons).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

MODES = ("online", "offline", "disabled")
DEFAULT_PROJECT = "vlm-lab"
MAX_TAG = 64  # W&B refuses a run whose tag is longer (the whole wandb.init fails)
RECORD_FILE = "wandb.json"  # log_comparison's outcome, beside the results it logged (never a key)
# Columns of a comparison's per-sample frame that hold an image path.
_IMAGE_COLUMN = re.compile(r"(^|[_/])image(_path)?$")


class TrackingWarning(UserWarning):
    """W&B logging failed; the experiment and its files on disk are unaffected."""


@dataclasses.dataclass(frozen=True)
class TrackedRun:
    """Where a logged W&B run went."""

    id: str
    mode: str  # online | offline
    dir: Path | None  # the offline-run-* / run-* folder
    url: str | None  # online only
    online_error: str = ""  # online was asked for and failed (key redacted): why this run is offline

    @property
    def sync_command(self) -> str | None:
        """``wandb sync DIR`` for an offline run, else None."""
        return f"wandb sync {self.dir}" if self.mode == "offline" and self.dir else None

    def __str__(self) -> str:
        if self.mode == "online":
            return f"W&B run {self.id}: {self.url}"
        why = f" (online failed: {self.online_error})" if self.online_error else ""
        return f"W&B offline run {self.id} in {self.dir}{why}; upload it with: {self.sync_command}"


@dataclasses.dataclass(frozen=True)
class NotLogged:
    """Why a comparison was not logged: W&B is disabled, or it failed (also warned as a ``TrackingWarning``).

    Falsy, so ``if tracked:`` still means "logged"; printing it says what happened.
    """

    reason: str  # API key redacted
    attempted: bool  # True: a run was asked for and W&B failed; False: W&B is disabled

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        if self.attempted:
            return f"W&B logging was attempted and skipped: {self.reason}"
        return f"not logged to W&B: {self.reason}"


def resolve_mode(mode: str | None = None) -> str:
    """The W&B mode to use, read from the environment at call time.

    An explicit ``mode`` wins; then ``WANDB_MODE`` (``dryrun`` means offline) or
    ``WANDB_DISABLED=true``; then online when ``WANDB_API_KEY`` is set, else offline.
    """
    from vlm_lab.errors import ConfigError

    if mode is None:
        env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
        if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
            env_mode = "disabled"
        mode = {"dryrun": "offline", "run": "online"}.get(env_mode, env_mode)
        if not mode:
            mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    if mode not in MODES:
        raise ConfigError(f"W&B mode {mode!r} is not one of {', '.join(MODES)} (set WANDB_MODE or pass mode=)")
    return mode


def local_env(root: str | os.PathLike[str]) -> dict[str, str]:
    """Env vars that keep every W&B file (runs, staged media, cache, settings) under ``root``."""
    root = Path(root)
    return {
        "WANDB_DIR": str(root),
        "WANDB_DATA_DIR": str(root / "data"),
        "WANDB_CACHE_DIR": str(root / "cache"),
        "WANDB_CONFIG_DIR": str(root / "config"),
    }


def variant_tags(varied: Mapping[str, Any]) -> str:
    """``"key=value,..."`` tags of a variant, for a notebook's ``wandb_tags`` parameter (split on
    commas): a comma inside a value (``checkpoints: "a,b"``) becomes ``+``, keeping one tag per key."""
    return ",".join(f"{k}={v}".replace(",", "+") for k, v in sorted(varied.items()))


def _tag(text: str) -> str:
    """``text`` within W&B's 64-character limit; a longer tag keeps its start plus a hash of all of it."""
    if len(text) <= MAX_TAG:
        return text
    return f"{text[: MAX_TAG - 9]}~{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _redact(text: str) -> str:
    """Remove the API key from a message before it is shown anywhere."""
    key = os.environ.get("WANDB_API_KEY", "")
    return text.replace(key, "***") if len(key) >= 8 else text


def _skip(what: str, error: BaseException) -> NotLogged:
    """Warn once that logging was skipped, and say why in the returned ``NotLogged``."""
    detail = _redact(f"{type(error).__name__}: {error}; results on disk are unaffected")
    warnings.warn(TrackingWarning(f"W&B logging skipped ({what}): {detail}"), stacklevel=3)
    return NotLogged(reason=f"{what}: {detail}", attempted=True)


def _disabled(mode: str | None) -> NotLogged:
    """What turned W&B off: the caller's ``mode`` or the environment."""
    if mode is not None:
        source = f"mode={mode!r} was passed"
    elif os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        source = "WANDB_DISABLED is set; unset it to log"
    else:
        source = f"WANDB_MODE={os.environ.get('WANDB_MODE', '').strip()} is set; unset it to log"
    return NotLogged(reason=f"W&B is disabled ({source})", attempted=False)


def _check_writable(directory: str | os.PathLike[str]) -> Path:
    """wandb silently falls back to /tmp when its folder is unwritable; we refuse instead."""
    from vlm_lab.errors import OutputPathError

    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".vlm-lab-probe-"):
            pass
    except OSError as e:
        raise OutputPathError(
            f"W&B directory {str(path)!r} is not writable ({e.strerror or e}); set WANDB_DIR to a writable folder"
        ) from e
    return path


def start_run(
    config: Mapping[str, Any] | Any | None = None,
    *,
    project: str | None = None,
    entity: str | None = None,
    group: str | None = None,
    job_type: str = "compare",
    tags: Iterable[str] | str = (),
    name: str | None = None,
    mode: str | None = None,
    dir: str | os.PathLike[str] | None = None,
    id: str | None = None,
    resume: str | None = None,
) -> Any:
    """Start a W&B run (or return None when disabled). Raises on failure; see ``log_comparison``.

    ``config`` is a typed config (logged as ``config.to_dict()``, unchanged) or a mapping.
    ``project`` defaults to ``WANDB_PROJECT``, else ``vlm-lab`` (read at call time).
    ``entity`` is the team workspace (default: ``WANDB_ENTITY`` or the key's user); ``group`` the
    sweep or ablation; ``tags`` the variant (an iterable, or one comma-separated string).
    ``id`` and ``resume`` go to ``wandb.init``: ``id=..., resume="allow"`` continues that run when it
    exists (a sweep point re-run after a kill). Offline, each start writes another
    ``offline-run-*-<id>`` folder: ``offline_runs.latest_runs`` shows them as one run, and one
    ``wandb sync`` of all of them uploads them into that one W&B run, in start order.
    """
    mode = resolve_mode(mode)
    if mode == "disabled":
        return None
    run_dir = _check_writable(dir or os.environ.get("WANDB_DIR") or Path.cwd())
    import wandb

    if isinstance(tags, str):  # "strategy=greedy,max_new_tokens=4" from a notebook parameter
        tags = tags.split(",")
    if config is not None and hasattr(config, "to_dict"):
        config = config.to_dict()
    # Without a key wandb.init prompts on a terminal (a hang under nohup) or fails with no fix named.
    if mode == "online" and wandb.run is None and not wandb.login(prompt=False, verify=False):
        from vlm_lab.errors import ConfigError

        raise ConfigError(
            f"W&B mode is online ({_online_source()}) but no W&B API key is configured: "
            "set WANDB_API_KEY or run `wandb login` (or set WANDB_MODE=offline)"
        )
    return wandb.init(
        # wandb reads WANDB_PROJECT only when no project is passed: passing our default would hide it
        project=project or os.environ.get("WANDB_PROJECT", "").strip() or DEFAULT_PROJECT,
        entity=entity or None,
        group=group or None,
        job_type=job_type,
        tags=[_tag(str(t).strip()) for t in tags if str(t).strip()],
        name=name or None,
        config=dict(config) if config is not None else None,
        id=id or None,
        resume=resume or None,
        mode=mode,
        dir=str(run_dir),
        reinit="create_new",  # never hijack or finish a run the user has open
        settings=wandb.Settings(console="off", x_disable_stats=True, disable_git=True),
    )


def _online_source() -> str:
    env_mode = os.environ.get("WANDB_MODE", "").strip()
    return f"WANDB_MODE={env_mode}" if env_mode.lower() in ("online", "run") else "mode='online' was passed"


def _start_or_offline(config: Any, *, mode: str | None, **options: Any) -> tuple[Any, str, str]:
    """``start_run``; when online fails (no key, no network), the run is logged offline instead so
    nothing is lost. Returns (run or None when disabled, the mode used, why online failed or "")."""
    from vlm_lab.errors import VlmLabError

    resolved = resolve_mode(mode)
    try:
        return start_run(config, mode=resolved, **options), resolved, ""
    except Exception as e:  # noqa: BLE001 - online trouble is not a reason to lose the run
        if resolved != "online":
            raise
        why = " ".join(_redact(f"{e}" if isinstance(e, VlmLabError) else f"{type(e).__name__}: {e}").split())  # one line
    run = start_run(config, mode="offline", **options)
    sync_dir = getattr(run.settings, "sync_dir", None)
    warnings.warn(
        TrackingWarning(f"{why}; logged offline instead: upload it later with `wandb sync {sync_dir}`"), stacklevel=3
    )
    return run, "offline", why


def finish_run(run: Any) -> TrackedRun | None:
    """Finish a run from ``start_run``; offline, return only once its log is complete on disk."""
    if run is None:
        return None
    return _finish(run, _tracked(run, _run_mode(run)))


def _finish(run: Any, tracked: TrackedRun) -> TrackedRun:
    """Finish the run; offline, return only once its log is on disk (wandb-core writes it asynchronously)."""
    run.finish()
    if tracked.mode == "offline" and tracked.dir is not None:
        from vlm_lab.offline_runs import wait_until_written

        wait_until_written(tracked.dir)
    return tracked


def _tracked(run: Any, mode: str, online_error: str = "") -> TrackedRun:
    sync_dir = getattr(run.settings, "sync_dir", None)
    url = getattr(run, "url", None) if mode == "online" else None
    return TrackedRun(id=run.id, mode=mode, dir=Path(sync_dir) if sync_dir else None, url=url, online_error=online_error)


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
    latency, tokens/s, peak memory, ...), plus ``best/*`` for the most accurate checkpoint.
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
    accuracy = frame["accuracy"].astype(float) if "accuracy" in frame.columns else None
    if accuracy is not None and accuracy.notna().any():  # no references: nothing scored
        best = frame.loc[accuracy.idxmax()]
        summary["best/checkpoint"] = str(best[key_col])
        summary["best/accuracy"] = float(best["accuracy"])
    return summary


def _table(frame: Any, *, max_rows: int | None) -> Any:
    """A wandb.Table of per-sample rows; image-path columns become wandb.Image."""
    import wandb

    if max_rows is not None:
        frame = frame.head(max_rows)
    columns = [str(c) for c in frame.columns]
    image_cols = {c for c in columns if _IMAGE_COLUMN.search(c.lower())}
    table = wandb.Table(columns=[c.removesuffix("_path") if c in image_cols else c for c in columns])
    for row in frame.itertuples(index=False):
        values = []
        for col, value in zip(columns, row):
            if col in image_cols and isinstance(value, str) and value and Path(value).is_file():
                value = wandb.Image(value)
            elif hasattr(value, "item"):  # numpy scalar -> Python
                value = value.item()
            values.append(value)
        table.add_data(*values)
    return table


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
) -> TrackedRun | NotLogged:
    """Log a checkpoint comparison as one W&B run; never raises for W&B failures.

    Logs ``config`` (default ``result.config``) unchanged, per-checkpoint summary
    metrics, a ``samples`` table (image, prompt, reference, each checkpoint's
    output and score) and ``result.output_dir`` as a ``comparison`` artifact.
    Without a ``name``, a run in a ``group`` is named by its ``tags`` (a sweep's
    variant, ``max_new_tokens=4,strategy=greedy``) rather than W&B's random words.
    ``id``/``resume`` (``resume="allow"``): log into the W&B run with that id, e.g. the one a
    sweep gives each grid point, so a point run again after a kill is still one W&B run.

    The outcome is also written to ``<result.output_dir>/wandb.json`` (``RECORD_FILE``: logged or not,
    mode, run id, why not; never a key), so whoever reads the results later (a sweep's summary, a
    cron job's morning reader) sees a W&B failure that only this call's warning told.

    Returns:
        Where the run went, or a falsy ``NotLogged`` saying why not: W&B is
        disabled, or it failed (then also one ``TrackingWarning``).
    """
    outcome = _log_comparison(
        result, config, project=project, entity=entity, group=group, tags=tags, name=name, job_type=job_type,
        mode=mode, dir=dir, max_table_rows=max_table_rows, id=id, resume=resume,
    )  # fmt: skip
    output_dir = getattr(result, "output_dir", None)
    if output_dir and Path(output_dir).is_dir():
        write_record(output_dir, outcome, mode=mode)
    return outcome


def _log_comparison(
    result: Any, config: Any, *, project: str | None, entity: str | None, group: str | None,
    tags: Iterable[str] | str, name: str | None, job_type: str, mode: str | None,
    dir: str | os.PathLike[str] | None, max_table_rows: int | None, id: str | None, resume: str | None,
) -> TrackedRun | NotLogged:
    if config is None:
        config = getattr(result, "config", None)
    if not name and group and tags:
        name = tags if isinstance(tags, str) else ",".join(str(t) for t in tags)
    try:
        run, resolved, online_error = _start_or_offline(
            config, project=project, entity=entity, group=group, job_type=job_type,
            tags=tags, name=name, mode=mode, dir=dir, id=id, resume=resume,
        )
    except Exception as e:  # noqa: BLE001 - logging must never break the experiment
        return _skip("could not start the run", e)
    if run is None:
        return _disabled(mode)
    try:
        run.summary.update(comparison_summary(result))
        run.log({"samples": _table(result.to_dataframe(), max_rows=max_table_rows)})
        output_dir = getattr(result, "output_dir", None)
        if output_dir and Path(output_dir).is_dir():
            import wandb

            artifact = wandb.Artifact(_artifact_name(group, name, run.id), type="comparison")
            for path in sorted(Path(output_dir).rglob("*")):
                relative = path.relative_to(output_dir)
                # hidden entries are caches and temp files (the per-sample result cache, .partial writes)
                if path.is_file() and not any(part.startswith(".") for part in relative.parts) and str(relative) != RECORD_FILE:
                    artifact.add_file(str(path), name=relative.as_posix())
            run.log_artifact(artifact)
        return _finish(run, _tracked(run, resolved, online_error))
    except Exception as e:  # noqa: BLE001
        skipped = _skip("could not log the comparison", e)
        _finish_quietly(run)
        return skipped


def write_record(folder: str | os.PathLike[str], outcome: TrackedRun | NotLogged, *, mode: str | None = None) -> None:
    """Write ``folder/wandb.json``: what ``log_comparison`` did (``read_record`` reads it back).
    Never raises: a folder that cannot take it costs one ``TrackingWarning``."""
    import datetime as dt
    import json

    from vlm_lab.data import atomic_write_text

    if isinstance(outcome, TrackedRun):
        record = {
            "logged": True, "mode": outcome.mode, "run_id": outcome.id, "reason": "",
            "online_error": outcome.online_error, "dir": str(outcome.dir) if outcome.dir else None,
            "url": outcome.url, "sync_command": outcome.sync_command,
        }  # fmt: skip
    else:
        try:
            wanted = resolve_mode(mode)
        except Exception:  # noqa: BLE001 - an invalid WANDB_MODE: the reason says so
            wanted = None
        record = {"logged": False, "mode": "disabled" if not outcome.attempted else wanted, "run_id": None,
                  "reason": outcome.reason, "attempted": outcome.attempted}  # fmt: skip
    record["at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    text = _redact(json.dumps(record, indent=2) + "\n")
    try:
        atomic_write_text(Path(folder) / RECORD_FILE, text)
    except OSError as e:
        warnings.warn(TrackingWarning(f"could not write {Path(folder) / RECORD_FILE}: {e.strerror or e}"), stacklevel=3)


def read_record(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``folder/wandb.json`` as ``write_record`` wrote it, or None (none there, or unreadable)."""
    import json

    try:
        record = json.loads((Path(folder) / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def describe_record(record: Mapping[str, Any] | None) -> str:
    """A record in a few words, for a table cell: ``offline``, ``online``, ``offline (online failed: ...)``,
    ``disabled``, ``NOT LOGGED: <why>``; "" for no record (the run never reached its W&B step)."""
    if not record:
        return ""
    if record.get("logged"):
        why = record.get("online_error")
        return f"{record.get('mode')} (online failed: {why})" if why else str(record.get("mode"))
    if not record.get("attempted", True):
        return "disabled"
    return f"NOT LOGGED: {record.get('reason') or 'no reason recorded'}"


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


def _run_mode(run: Any) -> str:
    return "offline" if getattr(run.settings, "_offline", False) or run.settings.mode == "offline" else "online"


def _artifact_name(group: str | None, name: str | None, run_id: str) -> str:
    # Artifact names allow letters, digits, '-', '_' and '.'.
    base = "-".join(p for p in (group, name) if p) or "comparison"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{base}-{run_id}")[:128]


def _finish_quietly(run: Any) -> None:
    try:
        run.finish(exit_code=1)
    except Exception:  # noqa: BLE001 - already warned once
        pass
