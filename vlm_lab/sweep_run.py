"""One run of a sweep: its notebook executed with papermill into its folder, and the status it ends with."""

from __future__ import annotations

import errno
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from vlm_lab.config import SweepConfig
from vlm_lab.data import atomic_write_text
from vlm_lab import sweep_papermill as papermill_run
from vlm_lab.sweep_coverage import TIMED_OUT
from vlm_lab.sweep_locks import now as _now
from vlm_lab.sweep_plan import PARAMS_FILE, STATUS_FILE, RunSpec

KERNEL_LOG = "kernel.log"  # <run-id>/kernel.log: the kernel process's own output (not the sweep's log)
# What a full disk looks like: no run can succeed until someone frees space, so the sweep stops.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
WANDB_ID_LENGTH = 16  # hex digits of a run's W&B id (64 bits)
BEFORE_CELLS = "before the first cell"  # a run's error.stage when no cell started (the kernel did not start)
RUN_TIMEOUT_FROM_FILE = "run_timeout: in the sweep file"  # what a timed-out run says to raise, unless told another


def _write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def execute_run(
    run: RunSpec, config: SweepConfig, declared: dict[str, str], fingerprint: str = "", source: Path | None = None,
    *, run_timeout_from: str = RUN_TIMEOUT_FROM_FILE, kernel_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Execute one run with papermill; returns its final status (never raises for a failing notebook).

    ``source``: the notebook to execute (the invocation's snapshot of ``config.notebook``, whose
    ``fingerprint`` is in the run id); default ``config.notebook``. ``run_timeout_from``: what set
    ``config.run_timeout``, which a timed-out run says to raise (``--run-timeout`` when a flag did).
    ``kernel_env``: variables the kernel gets where the environment leaves them unset (``kernel_threads.kernel_env``).

    The status records the notebook (path, ``fingerprint``, kernel) and what the run's W&B step did
    (``wandb``: the ``wandb.json`` notebook 02 writes through ``vlm_lab.tracking``; absent when the
    run did not get that far or its notebook writes none)."""
    import papermill

    from vlm_lab.tracking import RECORD_FILE, read_record, variant_tags

    run.dir.mkdir(parents=True, exist_ok=True)
    (run.dir / RECORD_FILE).unlink(missing_ok=True)  # an earlier execution's: not this one's W&B outcome
    kernel_log = run.dir / KERNEL_LOG
    kernel_log.unlink(missing_ok=True)  # likewise
    # Kept across executions (a re-run after a kill or a failure, on whichever machine): one W&B run.
    # Random, not derived from the folder's path: shards on machines that mount runs/ at other
    # paths must agree. Lowercase hex: W&B refuses ids holding any of / \\ # ? % : ; , '
    wandb_id = run.status().get("wandb_id") or secrets.token_hex(WANDB_ID_LENGTH // 2)
    parameters = dict(run.parameters)
    extras = {
        "output_dir": str(run.dir.resolve()),
        "wandb_group": config.name,
        "wandb_tags": variant_tags(run.varied),
        "wandb_id": wandb_id,
        # The notebook version (its code and kernel) for a W&B tag or config key: the runs of an edited notebook
        # have new ids but the same group and names (the variant), so W&B told them apart by nothing else.
        "wandb_notebook": fingerprint[:8],
    }
    parameters.update({k: v for k, v in extras.items() if k in declared})
    _write_json(run.dir / PARAMS_FILE, parameters)
    notebook_out = run.dir / Path(config.notebook).name
    partial = run.dir / f".partial.{notebook_out.name}"  # renamed into place when papermill is done
    status: dict[str, Any] = {
        "run_id": run.run_id, "state": "running", "varied": run.varied, "started_at": _now(),
        "wandb_id": wandb_id, "pid": os.getpid(),
        "source_notebook": config.notebook, "notebook_fingerprint": fingerprint, "kernel": config.kernel,
    }  # fmt: skip
    _write_json(run.dir / STATUS_FILE, status)
    started = time.perf_counter()
    try:
        papermill_run.execute(
            Path(source or config.notebook).resolve(), partial.resolve(), parameters=parameters,
            kernel_name=config.kernel or None, progress_bar=False, log_output=False,
            execution_timeout=config.execution_timeout or None, kernel_log=kernel_log.resolve(),
            run_timeout=config.run_timeout, kernel_env=kernel_env,
        )  # fmt: skip
        status.update(state="completed")
    except papermill_run.RunTimedOut as e:
        limit, elapsed = (papermill_run.describe_duration(s) for s in e.args)
        evalue = (f"still running at its run_timeout ({limit}): its kernel was killed after {elapsed}; "
                  f"raise {run_timeout_from} if the run needs longer")
        where = papermill_run.last_started_cell(partial) or {"stage": BEFORE_CELLS}
        error = {"cell_index": None, "exec_count": None, "ename": "RunTimeout", "evalue": evalue}
        status.update(state=TIMED_OUT, error=error | where, run_timeout_s=config.run_timeout)
    except papermill.PapermillExecutionError as e:
        error = {"cell_index": e.cell_index, "exec_count": e.exec_count, "ename": e.ename, "evalue": e.evalue}
        status.update(state="failed", error=error)
    except Exception as e:  # noqa: BLE001 - a dead kernel or timeout fails this run, not the sweep
        if isinstance(e, OSError) and e.errno in _DISK_ERRNOS:  # writing the notebook: no run can succeed now
            raise
        # nbclient's message spans lines (a timeout quotes the whole cell): its first line, and the
        # cell from the notebook (papermill marks no cell failed here; the last one it started is it).
        first_line = next((line for line in str(e).splitlines() if line.strip()), "")
        error = {"cell_index": None, "exec_count": None, "ename": type(e).__name__, "evalue": first_line}
        # No cell started: the kernel never did (a kernelspec whose Python lost ipykernel), not "a cell".
        where = papermill_run.last_started_cell(partial) or {"stage": BEFORE_CELLS}
        said, ended = _last_words(kernel_log)
        if "stage" in where and said:  # why the kernel did not start
            error["evalue"] = f"{error['evalue']}; the kernel said: {said} (all it said: {kernel_log})"
        elif ended:  # a kernel that died in a cell: how (the OOM killer?)
            error["evalue"] = f"{error['evalue']}: {ended} (all it said: {kernel_log})"
        status.update(state="failed", error=error | where)
    if partial.exists():  # papermill writes the notebook even when a cell fails
        os.replace(partial, notebook_out)
        status["notebook"] = str(notebook_out)
    if (record := read_record(run.dir)) is not None:
        status["wandb"] = record
    if kernel_log.exists() and not kernel_log.stat().st_size:
        kernel_log.unlink()
    status.update(finished_at=_now(), duration_s=round(time.perf_counter() - started, 3))
    _write_json(run.dir / STATUS_FILE, status)
    return status


def _last_words(kernel_log: Path) -> tuple[str, str]:
    """The last non-blank line the kernel printed, and how its process ended when it died by itself
    (``sweep_papermill.KERNEL_ENDED``'s line, without the ``vlm-lab:``); "" for each when there is none."""
    try:
        lines = [line.strip() for line in kernel_log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return "", ""
    ended = next((line for line in lines if line.startswith(papermill_run.KERNEL_ENDED)), "")
    said = next((line for line in reversed(lines) if line and not line.startswith(papermill_run.KERNEL_ENDED)), "")
    return said, ended.removeprefix("vlm-lab: ")
