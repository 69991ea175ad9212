"""Papermill sweeps: one notebook run per grid point, resumable, locked, sharded.

Layout of ``runs/<sweep>/``::

    .lock                       held while a sweep runs (``.lock.<i>-of-<n>`` per shard)
    <run-id>/params.json        the notebook parameters of this run
    <run-id>/status.json        running | completed | failed (+ failing cell, error)
    <run-id>/<notebook>.ipynb   the executed notebook (also when a cell failed)
    <run-id>/...                whatever the notebook writes to its ``output_dir``
    summary.csv, summary.md     one row per run: parameters, status, headline metrics

The run id is the varied parameters, readable, plus a short hash of *all* the
parameters: stable across invocations, and a changed fixed parameter makes new runs
instead of resuming stale ones. Completed runs are skipped; a run left ``running`` by a
killed sweep is run again (the lock proves nobody else is running it).

Each run is one W&B run in the sweep's group: the sweep passes ``wandb_group`` (the
sweep name) and ``wandb_tags`` (``"key=value,..."`` of the varied parameters) to
notebooks that declare those parameters, and ``output_dir`` (the run folder).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime as dt
import errno
import hashlib
import itertools
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Iterator

from vlm_lab.config import SweepConfig
from vlm_lab.data import atomic_write_text
from vlm_lab.errors import ConfigError, SweepError

STATUS_FILE, PARAMS_FILE = "status.json", "params.json"
LOCKED_EXIT_CODE = 75  # EX_TEMPFAIL: another invocation holds the lock; try again later


class SweepLockedError(SweepError):
    """Another invocation of the same sweep (and shard) is running."""

    exit_code = LOCKED_EXIT_CODE


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One grid point: its id, folder, varied values and full notebook parameters."""

    run_id: str
    dir: Path
    varied: dict[str, Any]
    parameters: dict[str, Any]

    def status(self) -> dict[str, Any]:
        """The run's status.json, or ``{"state": "pending"}``."""
        try:
            return json.loads((self.dir / STATUS_FILE).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return {"state": "pending"}

    @property
    def completed(self) -> bool:
        return self.status().get("state") == "completed"


@dataclasses.dataclass(frozen=True)
class SweepReport:
    """What one invocation did; ``failures`` name the failing cell and error of each failed run."""

    sweep_dir: Path
    ran: tuple[str, ...]
    skipped: tuple[str, ...]
    failures: tuple[dict[str, Any], ...]
    summary_csv: Path | None

    @property
    def ok(self) -> bool:
        return not self.failures

    def describe(self) -> str:
        lines = [f"{self.sweep_dir}: {len(self.ran)} ran, {len(self.skipped)} skipped (already completed), {len(self.failures)} failed"]
        for f in self.failures:
            lines.append(f"  FAILED {f['run_id']}: {describe_error(f.get('error') or {})}  (notebook: {f.get('notebook')})")
        if self.summary_csv:
            lines.append(f"summary: {self.summary_csv} and {self.summary_csv.with_suffix('.md')}")
        return "\n".join(lines)


def describe_error(error: dict[str, Any]) -> str:
    cell = f"cell [{error['exec_count']}]" if error.get("exec_count") is not None else "a cell"
    return f"{cell}: {error.get('ename', 'Error')}: {error.get('evalue', '')}".rstrip(": ")


def load_sweep(path: str | os.PathLike[str], **overrides: Any) -> SweepConfig:
    """Read a sweep YAML file into a ``SweepConfig``; ``overrides`` (e.g. jobs=4) win over the file.

    Raises:
        SweepError: the file is missing, not YAML, or not a mapping.
        ConfigError: a key is unknown, missing or of the wrong type, or a value is invalid;
            the message starts with the file's path.
    """
    import yaml

    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise SweepError(f"no sweep file at {str(path)!r}; see sweeps/shapes-ablation.yaml for an example") from e
    except yaml.YAMLError as e:
        raise SweepError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(values, dict):
        raise SweepError(f"{path} must be a mapping with name, notebook, parameters and grid")
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return SweepConfig.from_dict(values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def _slug(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def run_id(varied: dict[str, Any], parameters: dict[str, Any]) -> str:
    """``max_new_tokens=4,strategy=nucleus-0.9,1a2b3c4d``: readable varied values + hash of all parameters."""
    digest = hashlib.sha256(json.dumps(parameters, sort_keys=True, default=str).encode()).hexdigest()[:8]
    readable = ",".join(f"{k}={_slug(v)}" for k, v in sorted(varied.items()))[:80] or "default"
    return f"{readable},{digest}"


def sweep_dir(config: SweepConfig) -> Path:
    return Path(config.runs_dir) / config.name


def plan(config: SweepConfig) -> list[RunSpec]:
    """Every grid point of the sweep, sorted by run id (the order shards are dealt from)."""
    keys = list(config.grid)
    runs = []
    for values in itertools.product(*(config.grid[k] for k in keys)):
        varied = dict(zip(keys, values))
        parameters = {**config.parameters, **varied}
        rid = run_id(varied, parameters)
        runs.append(RunSpec(run_id=rid, dir=sweep_dir(config) / rid, varied=varied, parameters=parameters))
    runs.sort(key=lambda r: r.run_id)
    if len({r.run_id for r in runs}) != len(runs):
        raise SweepError("two grid points map to the same run id; make the grid values distinct")
    return runs


def shard(runs: list[RunSpec], index: int, count: int) -> list[RunSpec]:
    """The runs of shard ``index`` of ``count`` (0-based): every run lands in exactly one shard."""
    ordered = sorted(runs, key=lambda r: r.run_id)
    return ordered[index::count]


def notebook_parameters(notebook: str | os.PathLike[str]) -> dict[str, str]:
    """``{name: default source}`` of the notebook's ``parameters`` cell.

    Python cells are parsed with ``ast``: papermill's ``inspect_notebook`` drops a parameter
    whose ``# help`` comment contains ``=`` (e.g. ``num_samples: int = 96  # 0 = all``).
    Other kernels' notebooks fall back to ``inspect_notebook``.
    """
    import ast

    import nbformat

    if not Path(notebook).is_file():
        raise SweepError(f"notebook {str(notebook)!r} not found (paths are relative to {os.getcwd()})")
    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise SweepError(f"{notebook} has no cell tagged `parameters`; tag the cell that holds its parameters")
    try:
        tree = ast.parse(cells[0].source)
    except SyntaxError:
        import papermill

        return {name: p["default"] for name, p in papermill.inspect_notebook(str(notebook)).items()}
    declared = {}
    for node in tree.body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        for target in targets:
            if isinstance(target, ast.Name):
                declared[target.id] = ast.get_source_segment(cells[0].source, node.value) if node.value else ""
    return declared


def check_parameters(config: SweepConfig) -> dict[str, str]:
    """Raise before anything runs when the sweep sets a parameter the notebook does not declare."""
    declared = notebook_parameters(config.notebook)
    unknown = sorted((set(config.parameters) | set(config.grid)) - set(declared))
    if unknown:
        raise SweepError(
            f"{config.notebook} has no parameter(s) {', '.join(unknown)} in its `parameters` cell "
            f"(it declares: {', '.join(sorted(declared)) or 'none'}); fix the sweep file or the notebook"
        )
    return declared


@contextlib.contextmanager
def sweep_lock(config: SweepConfig, *, grace_s: float = 2.0) -> Iterator[Path]:
    """Hold ``runs/<sweep>/.lock`` (per shard when sharded); raise ``SweepLockedError`` if taken."""
    import fcntl

    folder = sweep_dir(config)
    folder.mkdir(parents=True, exist_ok=True)
    name = ".lock" if config.shard_count == 1 else f".lock.{config.shard_index}-of-{config.shard_count}"
    path = folder / name
    with open(path, "a+", encoding="utf-8") as handle:
        # A short grace period: a just-killed sweep's child caught between fork and exec
        # still shares the lock for a moment.
        deadline = time.monotonic() + grace_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise SweepLockedError(
                        f"sweep {config.name!r} is already running ({path} is locked); "
                        "this invocation exits without running anything"
                    ) from e
                time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {_now()}\n")
        handle.flush()
        try:
            yield path
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _CheckedParameterNoise:
    """Drops papermill's per-run parameter warnings: ``check_parameters`` already checked them,
    and papermill's own parser misreads ``# help`` comments that contain ``=``."""

    def filter(self, record: Any) -> bool:
        return not record.getMessage().startswith(("Passed unknown parameter", "Unable to parse line"))


@contextlib.contextmanager
def _quiet_papermill() -> Iterator[None]:
    import logging

    loggers = [logging.getLogger(name) for name in ("papermill", "papermill.translators")]
    noise = _CheckedParameterNoise()
    for logger in loggers:
        logger.addFilter(noise)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(noise)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def execute_run(run: RunSpec, config: SweepConfig, declared: dict[str, str]) -> dict[str, Any]:
    """Execute one run with papermill; returns its final status (never raises for a failing notebook)."""
    import papermill

    run.dir.mkdir(parents=True, exist_ok=True)
    parameters = dict(run.parameters)
    extras = {
        "output_dir": str(run.dir.resolve()),
        "wandb_group": config.name,
        "wandb_tags": ",".join(f"{k}={v}" for k, v in sorted(run.varied.items())),
    }
    parameters.update({k: v for k, v in extras.items() if k in declared})
    _write_json(run.dir / PARAMS_FILE, parameters)
    notebook_out = run.dir / Path(config.notebook).name
    partial = run.dir / f".partial.{notebook_out.name}"  # renamed into place when papermill is done
    status: dict[str, Any] = {"run_id": run.run_id, "state": "running", "varied": run.varied, "started_at": _now(), "pid": os.getpid()}
    _write_json(run.dir / STATUS_FILE, status)
    started = time.perf_counter()
    try:
        # Absolute paths and no cwd=: papermill's cwd= is a process-wide chdir, unsafe with --jobs threads.
        # The kernel starts in this process's working directory.
        papermill.execute_notebook(
            str(Path(config.notebook).resolve()), str(partial.resolve()), parameters=parameters,
            kernel_name=config.kernel or None, progress_bar=False, log_output=False,
            execution_timeout=config.execution_timeout or None,
        )  # fmt: skip
        status.update(state="completed")
    except papermill.PapermillExecutionError as e:
        error = {"cell_index": e.cell_index, "exec_count": e.exec_count, "ename": e.ename, "evalue": e.evalue}
        status.update(state="failed", error=error)
    except Exception as e:  # noqa: BLE001 - a dead kernel or timeout fails this run, not the sweep
        status.update(state="failed", error={"exec_count": None, "ename": type(e).__name__, "evalue": str(e)})
    if partial.exists():  # papermill writes the notebook even when a cell fails
        os.replace(partial, notebook_out)
        status["notebook"] = str(notebook_out)
    status.update(finished_at=_now(), duration_s=round(time.perf_counter() - started, 3))
    _write_json(run.dir / STATUS_FILE, status)
    return status


def run_sweep(config: SweepConfig, *, dry_run: bool = False, progress: bool = True) -> SweepReport:
    """Run this shard's pending runs (``config.jobs`` at a time) and write the sweep summary.

    Raises:
        SweepError: the notebook is missing or the sweep sets parameters it does not declare
            (checked before anything runs).
        SweepLockedError: another invocation of this sweep (and shard) holds the lock.
    """
    declared = check_parameters(config)
    mine = shard(plan(config), config.shard_index, config.shard_count)
    if dry_run:
        return SweepReport(
            sweep_dir=sweep_dir(config), ran=(), skipped=tuple(r.run_id for r in mine if r.completed),
            failures=(), summary_csv=None,
        )  # fmt: skip
    from tqdm.auto import tqdm

    with sweep_lock(config), _quiet_papermill():
        _write_json(sweep_dir(config) / "sweep.json", config.to_dict())
        todo = [r for r in mine if not r.completed]
        skipped = tuple(r.run_id for r in mine if r not in todo)
        failures: list[dict[str, Any]] = []
        bar = tqdm(total=len(todo), desc=config.name, unit="run", disable=not progress)
        with concurrent.futures.ThreadPoolExecutor(max_workers=config.jobs) as pool:
            futures = {pool.submit(execute_run, r, config, declared): r for r in todo}
            for future in concurrent.futures.as_completed(futures):
                status = future.result()
                if status["state"] != "completed":
                    failures.append(status)
                    bar.write(f"FAILED {status['run_id']}: {describe_error(status.get('error') or {})}")
                bar.update(1)
                bar.set_postfix(failed=len(failures))
        bar.close()
        from vlm_lab.ablation import write_summary

        summary_csv = write_summary(sweep_dir(config), plan(config))
    failures.sort(key=lambda f: f["run_id"])
    return SweepReport(
        sweep_dir=sweep_dir(config), ran=tuple(sorted(r.run_id for r in todo)), skipped=skipped,
        failures=tuple(failures), summary_csv=summary_csv,
    )  # fmt: skip
