"""``wandb.json``: what ``tracking.log_comparison`` did, written beside the results it logged, so a
sweep's summary (read in the morning, away from the notebook that printed the warning) can say it too.
Never holds a key."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping

from vlm_lab.tracking_runs import NotLogged, TrackedRun, TrackingWarning, _redact, resolve_mode

RECORD_FILE = "wandb.json"  # log_comparison's outcome, beside the results it logged (never a key)


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
