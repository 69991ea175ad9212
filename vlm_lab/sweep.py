"""Papermill sweeps: one notebook run per grid point, resumable, locked, sharded.

Layout of ``runs/<sweep>/``::

    .lock                       held while a sweep runs (``.lock.<i>-of-<n>`` per shard)
    .locks/<run-id>             held while that run executes, by whichever invocation runs it
    <run-id>/params.json        the notebook parameters of this run
    <run-id>/status.json        running | completed | failed (+ failing cell, error; the run's W&B
                                id, kept across re-runs)
    <run-id>/<notebook>.ipynb   the executed notebook (also when a cell failed)
    <run-id>/...                whatever the notebook writes to its ``output_dir``
    summary.csv, summary.md     one row per run: parameters, status, headline metrics
                                (rewritten as runs finish, so a killed sweep leaves a current one)

The run id is the varied parameters, readable, plus a short hash of *all* the
parameters: stable across invocations, and a changed fixed parameter makes new runs
instead of resuming stale ones. Completed runs are skipped; a run left ``running`` by a
killed sweep is run again (its run lock proves nobody else is running it); a run whose
lock another invocation holds (another shard spec, another machine on the same folder) is
left to it, and this invocation exits 75.

Each run is one W&B run in the sweep's group: the sweep passes ``wandb_group`` (the
sweep name), ``wandb_tags`` (``"key=value,..."`` of the varied parameters) and ``wandb_id``
(random, kept in status.json: the same for every execution of a run, so a run re-run after
a kill resumes its W&B run instead of making a second one) to notebooks that declare those
parameters, and ``output_dir`` (the run folder).
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
import math
import os
import re
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from vlm_lab.config import SweepConfig
from vlm_lab.data import atomic_write_text
from vlm_lab import sweep_papermill as papermill_run
from vlm_lab.errors import ConfigError, SweepError
from vlm_lab.sweep_checks import check_parameters, notebook_parameters  # noqa: F401 - notebook_parameters re-exported


STATUS_FILE, PARAMS_FILE = "status.json", "params.json"
LOCKED_EXIT_CODE = 75  # EX_TEMPFAIL: another invocation holds the lock; try again later
WRITE_EXIT_CODE = 74  # EX_IOERR: the sweep could not write its own files (disk full, quota, read-only)
# What a full disk looks like: no run can succeed until someone frees space, so the sweep stops.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
MAX_RUNS = 10_000  # a bigger grid is a typo (or needs several sweep files), not a night's work
SUMMARY_EVERY_S = 10.0  # summary.csv is rewritten as runs finish, at most this often
RUN_LOCKS = ".locks"  # runs/<sweep>/.locks/<run-id>: held while a run executes, whoever runs it
WANDB_ID_LENGTH = 16  # hex digits of a run's W&B id (64 bits)


class SweepLockedError(SweepError):
    """Another invocation of the same sweep (and shard) is running."""

    exit_code = LOCKED_EXIT_CODE


class SweepWriteError(SweepError, OSError):
    """The sweep could not write its own files (a full disk, a quota, a read-only folder): it stops
    starting runs, as every later run would fail the same way; completed runs are kept."""

    exit_code = WRITE_EXIT_CODE

    @classmethod
    def of(cls, error: OSError, where: Path) -> SweepWriteError:
        what = f"{error.filename}" if error.filename else f"in {where}"
        return cls(
            f"cannot write {what}: {error.strerror or error} (errno {error.errno}); the sweep stopped starting "
            "runs. Free space there (or pass --runs-dir on another disk) and run the sweep again: completed "
            "runs are kept, the others run then"
        )


class SweepTerminated(BaseException):
    """SIGTERM (a scheduler's timeout, ``systemctl stop``, a cancelled CI job, Slurm preemption):
    the sweep leaves at once, abandoning its running runs (they run again next time); raised by the
    CLI's signal handler, so like ``KeyboardInterrupt`` no ``except Exception`` swallows it."""


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

    def state(self) -> str:
        """pending | running | completed | failed, or ``interrupted``: status.json says running but
        nobody holds the run's lock (its sweep was killed; the next invocation runs it again)."""
        state = self.status().get("state", "pending")
        if state == "running":
            with run_lock(self, grace_s=0) as held:
                return "interrupted" if held else state
        return state

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
    busy: tuple[str, ...] = ()  # runs another invocation (another shard spec, machine) was executing

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        """0 all completed, 1 some run failed, 75 some runs were left to another invocation."""
        return 1 if self.failures else LOCKED_EXIT_CODE if self.busy else 0

    def describe(self) -> str:
        lines = [f"{self.sweep_dir}: {len(self.ran)} ran, {len(self.skipped)} skipped (already completed), {len(self.failures)} failed"]
        if self.busy:
            lines.append(f"{len(self.busy)} running elsewhere (left to that invocation): {', '.join(self.busy)}")
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
        values = yaml.load(path.read_text(encoding="utf-8"), Loader=_sweep_yaml_loader(yaml, path))
    except FileNotFoundError as e:
        raise SweepError(f"no sweep file at {str(path)!r}; see sweeps/shapes-ablation.yaml for an example") from e
    except IsADirectoryError as e:
        found = ", ".join(sorted(str(p) for p in path.glob("*.y*ml"))[:5]) or "no *.yaml in it"
        raise SweepError(
            f"{path} is a folder ({found}); give one sweep file, or run them all with scripts/run_experiments.py {path}/*.yaml"
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError(f"cannot read the sweep file {path}: {e}") from e
    except yaml.YAMLError as e:
        raise SweepError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(values, dict):
        raise SweepError(f"{path} must be a mapping with name, notebook, parameters and grid")
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return SweepConfig.from_dict({**values, **given})
    except ConfigError as e:
        try:
            SweepConfig.from_dict(values)
        except ConfigError:
            raise ConfigError(f"{path}: {e}") from e
        # The file is fine: the bad value came with the overrides (--jobs 0), not from the file.
        raise ConfigError(f"{e} (an override of {path}, e.g. from the command line)") from e


# YAML 1.2 floats: PyYAML (YAML 1.1) reads 1e-3, a learning rate as people write it, as the text "1e-3".
_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def _sweep_yaml_loader(yaml: Any, path: Path) -> type:
    """A YAML safe loader that reads ``1e-3`` as a number and refuses a key given twice
    (PyYAML keeps the last one silently)."""

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                if key in seen:
                    raise SweepError(f"{path}: key {key!r} appears twice (line {seen[key]} and line {line}); keep one")
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    return Loader


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
    """Every grid point of the sweep, sorted by run id (the order shards are dealt from).

    Raises:
        SweepError: the grid has more than ``MAX_RUNS`` points (counted before any is made).
    """
    keys = list(config.grid)
    sizes = [len(config.grid[k]) for k in keys]
    if math.prod(sizes) > MAX_RUNS:
        raise SweepError(
            f"the grid has {math.prod(sizes):,} points ({' x '.join(map(str, sizes))}); a sweep runs at most "
            f"{MAX_RUNS:,}: split it into several sweep files or give fewer values"
        )
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


def _try_flock(handle: Any, grace_s: float) -> bool:
    """Take an exclusive flock on ``handle``, retrying for ``grace_s``; False if another process holds it.

    The grace period: a just-killed sweep's child caught between fork and exec still shares
    the lock for a moment.
    """
    import fcntl

    deadline = time.monotonic() + grace_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


@contextlib.contextmanager
def sweep_lock(config: SweepConfig, *, grace_s: float = 2.0) -> Iterator[Path]:
    """Hold ``runs/<sweep>/.lock`` (per shard when sharded); raise ``SweepLockedError`` if taken."""
    folder = sweep_dir(config)
    name = ".lock" if config.shard_count == 1 else f".lock.{config.shard_index}-of-{config.shard_count}"
    path = folder / name
    with contextlib.ExitStack() as stack:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            handle = stack.enter_context(open(path, "a+", encoding="utf-8"))
            if not _try_flock(handle, grace_s):
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise SweepLockedError(
                    f"sweep {config.name!r} is already running ({holder}; {path} is locked); "
                    "this invocation exits without running anything"
                )
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {_now()}\n")
            handle.flush()
        except OSError as e:
            raise SweepWriteError.of(e, folder) from e
        yield path  # closing the file releases the lock


@contextlib.contextmanager
def run_lock(run: RunSpec, *, grace_s: float = 0.5) -> Iterator[bool]:
    """Hold the run's own lock (``runs/<sweep>/.locks/<run-id>``) while it executes; yields False,
    holding nothing, when another invocation is executing it.

    The sweep lock is per shard spec: ``--shard 0/2`` and a plain invocation (or ``0/3``) hold
    different ones, and without this lock would execute the same run into one folder at once.
    """
    path = run.dir.parent / RUN_LOCKS / run.run_id
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        yield _try_flock(handle, grace_s)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def execute_run(run: RunSpec, config: SweepConfig, declared: dict[str, str]) -> dict[str, Any]:
    """Execute one run with papermill; returns its final status (never raises for a failing notebook)."""
    import papermill

    from vlm_lab.tracking import variant_tags

    run.dir.mkdir(parents=True, exist_ok=True)
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
    }
    parameters.update({k: v for k, v in extras.items() if k in declared})
    _write_json(run.dir / PARAMS_FILE, parameters)
    notebook_out = run.dir / Path(config.notebook).name
    partial = run.dir / f".partial.{notebook_out.name}"  # renamed into place when papermill is done
    status: dict[str, Any] = {
        "run_id": run.run_id, "state": "running", "varied": run.varied, "started_at": _now(),
        "wandb_id": wandb_id, "pid": os.getpid(),
    }  # fmt: skip
    _write_json(run.dir / STATUS_FILE, status)
    started = time.perf_counter()
    try:
        papermill_run.execute(
            Path(config.notebook).resolve(), partial.resolve(), parameters=parameters,
            kernel_name=config.kernel or None, progress_bar=False, log_output=False,
            execution_timeout=config.execution_timeout or None,
        )  # fmt: skip
        status.update(state="completed")
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
        status.update(state="failed", error=error | papermill_run.last_started_cell(partial))
    if partial.exists():  # papermill writes the notebook even when a cell fails
        os.replace(partial, notebook_out)
        status["notebook"] = str(notebook_out)
    status.update(finished_at=_now(), duration_s=round(time.perf_counter() - started, 3))
    _write_json(run.dir / STATUS_FILE, status)
    return status


def _execute_if_free(
    run: RunSpec, config: SweepConfig, declared: dict[str, str], stopped: threading.Event, log: bool = False
) -> dict[str, Any]:
    """``execute_run`` under the run's lock; state ``busy`` when another invocation holds it,
    ``skipped`` when it completed while this invocation waited for its turn, ``pending`` when
    another run could not write its files (``stopped``) before this one's turn came.
    ``log``: a line on stderr when the run starts (a log file, where no bar shows a run is under way)."""
    if stopped.is_set():
        return {"run_id": run.run_id, "state": "pending"}
    try:
        with run_lock(run) as held:
            if not held:
                return {"run_id": run.run_id, "state": "busy"}
            if run.completed:
                return {"run_id": run.run_id, "state": "skipped"}
            if log:
                print(f"{_now()} started {run.run_id}", file=sys.stderr, flush=True)
            return execute_run(run, config, declared)
    except OSError as e:  # its lock, folder, params.json, status.json, or (disk full) the notebook
        stopped.set()  # the queued runs would fail the same way, in a burst, before the sweep stops
        raise SweepWriteError.of(e, run.dir) from e


def _stop(futures: list[concurrent.futures.Future], *, why: str = "") -> None:
    """After Ctrl-C (or a write error, ``why``): start nothing more, and wait for the runs already
    executing (their kernels run in their own process groups, so the signal did not reach them). A
    second Ctrl-C interrupts the wait; the CLI then exits at once and the abandoned runs show as
    interrupted and run next time."""
    cancelled = sum(f.cancel() for f in futures)
    running = [f for f in futures if f.running()]
    after = "(Ctrl-C again abandons them; the next invocation runs them again)" if not why else f"({why})"
    print(
        f"stopping: {cancelled} queued run(s) cancelled, waiting for the {len(running)} running to finish {after}",
        file=sys.stderr, flush=True,
    )  # fmt: skip
    concurrent.futures.wait(running)


def _write_summary(folder: Path, runs: list[RunSpec], abandoned: tuple[str, ...] = ()) -> Path:
    from vlm_lab.ablation import write_summary

    try:
        return write_summary(folder, runs, abandoned=abandoned)
    except OSError as e:
        raise SweepWriteError.of(e, folder) from e


def run_sweep(config: SweepConfig, *, dry_run: bool = False, progress: bool = True) -> SweepReport:
    """Run this shard's pending runs (``config.jobs`` at a time) and write the sweep summary.

    Raises:
        SweepError: the notebook is missing or the sweep sets parameters it does not declare
            (checked before anything runs).
        SweepLockedError: another invocation of this sweep (and shard) holds the lock.
    """
    declared = check_parameters(config)
    everything = plan(config)
    mine = shard(everything, config.shard_index, config.shard_count)
    if dry_run:
        return SweepReport(
            sweep_dir=sweep_dir(config), ran=(), skipped=tuple(r.run_id for r in mine if r.completed),
            failures=(), summary_csv=None,
        )  # fmt: skip
    from tqdm.auto import tqdm

    with sweep_lock(config), papermill_run.quiet():
        try:
            _write_json(sweep_dir(config) / "sweep.json", config.to_dict())
        except OSError as e:
            raise SweepWriteError.of(e, sweep_dir(config)) from e
        todo = [r for r in mine if not r.completed]
        skipped = [r.run_id for r in mine if r not in todo]
        failures: list[dict[str, Any]] = []
        ran, busy = [], []
        summary_written = -math.inf
        # A terminal gets a bar; a log file (cron, CI) plain lines, with the time, instead of \r-redrawn
        # bars: what this invocation is to do, and each run as it starts and ends.
        interactive = progress and sys.stderr.isatty()
        log = progress and not interactive
        bar = tqdm(total=len(todo), desc=config.name, unit="run", disable=not interactive)
        if log:
            print(
                f"{_now()} sweep {config.name}: {len(todo)} run(s) to run, {min(config.jobs, len(todo) or 1)} at a time; "
                f"{len(skipped)} already completed; in {sweep_dir(config)}",
                file=sys.stderr, flush=True,
            )  # fmt: skip
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=config.jobs)
        futures: dict[concurrent.futures.Future, str] = {}  # -> its run id
        stopped = threading.Event()
        try:
            futures.update({pool.submit(_execute_if_free, r, config, declared, stopped, log): r.run_id for r in todo})
            for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
                status = future.result()
                state = status["state"]
                if state == "pending":  # not started: another run could not write its files (its error follows)
                    continue
                {"busy": busy, "skipped": skipped}.get(state, ran).append(status["run_id"])
                if state not in ("completed", "busy", "skipped"):
                    failures.append(status)
                    bar.write(f"FAILED {status['run_id']}: {describe_error(status.get('error') or {})}")
                # A report read mid-sweep (or after a kill) sees the finished runs; at most every
                # SUMMARY_EVERY_S, as a summary reads every run's files.
                if state != "busy" and time.monotonic() - summary_written >= SUMMARY_EVERY_S:
                    _write_summary(sweep_dir(config), everything)
                    summary_written = time.monotonic()
                bar.update(1)
                bar.set_postfix(failed=len(failures))
                if log:
                    took = f" ({status['duration_s']:.1f} s)" if "duration_s" in status else ""
                    print(f"{_now()} [{done}/{len(todo)}] {state} {status['run_id']}{took}", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            _stop(list(futures))  # a second Ctrl-C (or SIGTERM), while it waits, abandons the running runs
            raise
        except SweepWriteError:
            stopped.set()
            _stop(list(futures), why="the sweep cannot write its files")
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # normally all done; abandoned runs are not joined
            bar.close()
            leaving = sys.exc_info()[1]  # the error (or Ctrl-C) on its way out, if any
            # Runs still executing now are being abandoned (a second Ctrl-C, SIGTERM): their summary
            # rows say interrupted, as their state will once this process is gone.
            abandoned = tuple(rid for f, rid in futures.items() if not f.done()) if leaving else ()
            try:
                summary_csv = _write_summary(sweep_dir(config), everything, abandoned)
            except SweepWriteError:
                if leaving is None:  # else that one is the news; a summary that cannot be written follows from it
                    raise
    failures.sort(key=lambda f: f["run_id"])
    return SweepReport(
        sweep_dir=sweep_dir(config), ran=tuple(sorted(ran)), skipped=tuple(sorted(skipped)),
        failures=tuple(failures), summary_csv=summary_csv, busy=tuple(sorted(busy)),
    )  # fmt: skip
