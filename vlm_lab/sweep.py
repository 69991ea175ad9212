"""Papermill sweeps: one notebook run per grid point, resumable, locked, sharded.

Layout of ``runs/<sweep>/``::

    .lock                       held while a sweep runs (``.lock.<i>-of-<n>`` per shard)
    .locks/<run-id>             held while that run executes, by whichever invocation runs it
    .notebooks/<fingerprint>.ipynb  the notebook as an invocation found it: its runs execute this copy
    <run-id>/params.json        the notebook parameters of this run
    <run-id>/status.json        running | completed | failed (+ failing cell, error; the run's W&B
                                id, kept across re-runs; the notebook, its fingerprint and kernel;
                                ``wandb``: what the run's W&B step did, from its wandb.json)
    <run-id>/<notebook>.ipynb   the executed notebook (also when a cell failed)
    <run-id>/kernel.log         what the kernel process printed itself (ipykernel's log, output
                                written to its file descriptors, why it did not start); absent if nothing
    <run-id>/...                whatever the notebook writes to its ``output_dir``
    summary.csv, summary.md     one row per run: parameters, status, headline metrics (of completed runs
                                only), wandb (logged offline/online, disabled, or NOT LOGGED and why)
                                (rewritten as runs finish, so a killed sweep leaves a current one)

The run id is the varied parameters, readable, plus a short hash of *all* the
parameters and of the notebook's code and kernel (``notebook_fingerprint``): stable across
invocations, and a changed fixed parameter, an edited code cell or another ``kernel:`` makes
new runs instead of serving results made by other code. A nightly cron job re-running the sweep
file after the notebook was edited so runs the whole grid again with the new notebook, says so
in its log, and leaves the earlier runs' folders untouched (out of the summary); editing
markdown or saving the notebook with outputs changes nothing. Completed runs are skipped; a run left ``running`` by a
killed sweep is run again (its run lock proves nobody else is running it); a run whose
lock another invocation holds (another shard spec, another machine on the same folder) is
left to it, and this invocation exits 75.

Each run is one W&B run in the sweep's group: the sweep passes ``wandb_group`` (the
sweep name), ``wandb_tags`` (``"key=value,..."`` of the varied parameters), ``wandb_id``
(random, kept in status.json: the same for every execution of a run, so a run re-run after
a kill resumes its W&B run instead of making a second one) and ``wandb_notebook`` (the first 8
hex digits of ``notebook_fingerprint``: which version of the notebook made the run, as the group,
tags and names stay the variant's across edits) to notebooks that declare those parameters, and
``output_dir`` (the run folder).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import errno
import hashlib
import itertools
import json
import math
import os
import re
import secrets
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from vlm_lab.config import SweepConfig
from vlm_lab.data import atomic_write_text
from vlm_lab import sweep_coverage, sweep_kernel_dirs, sweep_papermill as papermill_run
from vlm_lab.sweep_coverage import Coverage
from vlm_lab.errors import SweepError, VlmLabError
from vlm_lab.sweep_file import load_sweep  # noqa: F401 - re-exported
from vlm_lab.sweep_checks import check_parameters, notebook_fingerprint, notebook_parameters, snapshot_notebook  # noqa: F401
from vlm_lab.sweep_locks import LOCKED_EXIT_CODE, RUN_LOCKS, SweepLockedError, now as _now, run_is_running, run_lock, sweep_lock  # noqa: F401


STATUS_FILE, PARAMS_FILE, SWEEP_FILE = "status.json", "params.json", "sweep.json"
KERNEL_LOG = "kernel.log"  # <run-id>/kernel.log: the kernel process's own output (not the sweep's log)
NOTEBOOKS = ".notebooks"  # runs/<sweep>/.notebooks/<fingerprint>.ipynb: the notebook as each invocation ran it
WRITE_EXIT_CODE = 74  # EX_IOERR: the sweep could not write its own files (disk full, quota, read-only)
# What a full disk looks like: no run can succeed until someone frees space, so the sweep stops.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
MAX_RUNS = 10_000  # a bigger grid is a typo (or needs several sweep files), not a night's work
SUMMARY_EVERY_S = 10.0  # summary.csv is rewritten as runs finish, at most this often
WANDB_ID_LENGTH = 16  # hex digits of a run's W&B id (64 bits)
BEFORE_CELLS = "before the first cell"  # a run's error.stage when no cell started (the kernel did not start)
ERROR_CHARS = 300  # a run's error as the log and the summary show it (status.json keeps all of it)
SAME_ERROR_LINES = 3  # the final report lists up to this many runs with one error, each on its line; more, in one line


class SweepWriteError(SweepError, OSError):
    """The sweep could not write its own files (a full disk, a quota, a read-only folder): it stops
    starting runs, as every later run would fail the same way; completed runs are kept.

    ``errno``, ``strerror`` and ``filename`` are the OS error's (``ENOSPC``, ``EROFS``, ...), and the
    message names the fix for that cause."""

    exit_code = WRITE_EXIT_CODE

    def __str__(self) -> str:  # OSError's would be "[Errno 28] ...", without the fix
        return str(self.args[0]) if self.args else ""

    @classmethod
    def of(cls, error: OSError, where: Path) -> SweepWriteError:
        what = f"{error.filename}" if error.filename else f"in {where}"
        here = shlex.quote(str(where))
        # The fix depends on the cause: "free space" misled when --runs-dir named a file or /proc, when a
        # read-only mount (no chmod helps) or a file-size limit (ulimit -f, no free space helps) was the cause.
        fix = {
            errno.ENOSPC: f"The disk is full: free space on it (`df -h {here}`), or pass --runs-dir on another disk",
            errno.EDQUOT: "Your disk quota there is used up (`quota -s`): free some, or pass --runs-dir on another disk",
            errno.EFBIG: "A file passed the size limit for this process (`ulimit -f`; systemd LimitFSIZE=) or the "
                         "filesystem's largest file: raise the limit, or pass --runs-dir on another filesystem",
            errno.EROFS: f"{where} is on a filesystem mounted read-only (`findmnt -T {here}`): remount it read-write, "
                         "or pass --runs-dir a writable folder",
            errno.EACCES: "Make that folder writable for this user (or pass --runs-dir a writable folder)",
        }.get(errno.EACCES if error.errno == errno.EPERM else error.errno,
              # ENOTDIR, ENOENT (a /proc or vanished path), ...
              "Pass --runs-dir (or set runs_dir: in the sweep file to) a folder that can hold the runs")  # fmt: skip
        return cls(
            f"cannot write {what}: {error.strerror or error} (errno {error.errno}); the sweep stopped starting "
            f"runs. {fix}; then run the sweep again: completed runs are kept, the others run then"
        ).caused_by(error)

    def caused_by(self, error: OSError) -> SweepWriteError:
        """This error with ``error``'s ``errno``, ``strerror`` and ``filename``."""
        self.errno, self.strerror, self.filename = error.errno, error.strerror, error.filename
        return self


class SweepTerminated(BaseException):
    """SIGTERM (a scheduler's timeout, ``systemctl stop``, a cancelled CI job, Slurm preemption) or
    SIGHUP (the terminal that started it closed); ``args[0]`` is the signal number:
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
        if state == "running" and not run_is_running(self.dir.parent, self.run_id):
            return "interrupted"
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
    unlogged: tuple[tuple[str, str], ...] = ()  # (run id, what W&B did) where its W&B step did not log as asked
    note: str = ""  # the notebook changed since the sweep last ran: every run is new
    coverage: Coverage | None = None  # the whole grid's runs with a result, and why the others have none

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        """0 all completed, 1 some run failed, 75 some runs were left to another invocation."""
        return 1 if self.failures else LOCKED_EXIT_CODE if self.busy else 0

    def describe(self) -> str:
        lines = [self.note] if self.note else []
        lines.append(f"{self.sweep_dir}: {len(self.ran)} ran, {len(self.skipped)} skipped (already completed), {len(self.failures)} failed")
        if self.busy:
            lines.append(f"{len(self.busy)} running elsewhere (left to that invocation): {', '.join(self.busy)}")
        same: dict[str, list[dict[str, Any]]] = {}  # a shared cause (a missing package, a bad path) fails every run alike
        for f in self.failures:
            same.setdefault(describe_error(f.get("error") or {}), []).append(f)
        for f in self.failures:
            error = describe_error(f.get("error") or {})
            if len(same[error]) <= SAME_ERROR_LINES:
                lines.append(f"  FAILED {f['run_id']}: {error}  (notebook: {f.get('notebook')})")
            elif f is same[error][0]:
                lines.append(f"  FAILED {len(same[error])} runs with the same error: {error}  (the first, {f['run_id']}: notebook "
                             f"{f.get('notebook')}; {self.sweep_dir / 'summary.md'} lists each)")  # fmt: skip
        if self.unlogged:  # the results are on disk; the W&B run is not what was asked (the summary's wandb column)
            lines.append(f"W&B did not log {len(self.unlogged)} run(s) as asked:")
            lines.extend(f"  {rid}: {what}" for rid, what in self.unlogged)
        if self.coverage is not None:  # this invocation's counts above; the grid's (every shard, every night) here
            lines.append(self.coverage.brief())
        if self.summary_csv:
            lines.append(f"summary: {self.summary_csv} and {self.summary_csv.with_suffix('.md')}")
        return "\n".join(lines)


def describe_error(error: dict[str, Any]) -> str:
    """``cell [4]: ValueError: boom``, on one line of at most ~``ERROR_CHARS`` characters.

    A message of several lines or thousands of characters (a CUDA OOM with its hints) would break
    a run's FAILED line in the log and hide the notebook named after it; status.json and the
    executed notebook keep the whole message.
    """
    cell = f"cell [{error['exec_count']}]" if error.get("exec_count") is not None else error.get("stage", "a cell")
    evalue = " ".join(str(error.get("evalue") or "").split())
    if len(evalue) > ERROR_CHARS:
        evalue = evalue[: ERROR_CHARS - 3] + "..."
    return f"{cell}: {error.get('ename', 'Error')}: {evalue}".rstrip(": ")


def _slug(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def run_id(varied: dict[str, Any], parameters: dict[str, Any], fingerprint: str = "") -> str:
    """``max_new_tokens=4,strategy=nucleus-0.9,1a2b3c4d``: readable varied values + a hash of all the
    parameters and of the notebook's ``fingerprint`` (``notebook_fingerprint``: its code and kernel)."""
    key = json.dumps(parameters, sort_keys=True, default=str) + (f"\nnotebook {fingerprint}" if fingerprint else "")
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    readable = ",".join(f"{k}={_slug(v)}" for k, v in sorted(varied.items()))[:80] or "default"
    return f"{readable},{digest}"


def sweep_dir(config: SweepConfig) -> Path:
    return Path(config.runs_dir) / config.name


def plan(config: SweepConfig, *, fingerprint: str | None = None) -> list[RunSpec]:
    """Every grid point of the sweep, sorted by run id (the order shards are dealt from).

    ``fingerprint``: the notebook's (``notebook_fingerprint``), read from the notebook when not given;
    a run made by another notebook or kernel has another id, so it is never taken for this one's.

    Raises:
        SweepError: the grid has more than ``MAX_RUNS`` points (counted before any is made), or the
            notebook is missing.
    """
    keys = list(config.grid)
    sizes = [len(config.grid[k]) for k in keys]
    if math.prod(sizes) > MAX_RUNS:
        raise SweepError(
            f"the grid has {math.prod(sizes):,} points ({' x '.join(map(str, sizes))}); a sweep runs at most "
            f"{MAX_RUNS:,}: split it into several sweep files or give fewer values"
        )
    if fingerprint is None:
        fingerprint = notebook_fingerprint(config)
    runs = []
    for values in itertools.product(*(config.grid[k] for k in keys)):
        varied = dict(zip(keys, values))
        parameters = {**config.parameters, **varied}
        rid = run_id(varied, parameters, fingerprint)
        runs.append(RunSpec(run_id=rid, dir=sweep_dir(config) / rid, varied=varied, parameters=parameters))
    runs.sort(key=lambda r: r.run_id)
    if len({r.run_id for r in runs}) != len(runs):
        raise SweepError("two grid points map to the same run id; make the grid values distinct")
    return runs


def shard(runs: list[RunSpec], index: int, count: int) -> list[RunSpec]:
    """The runs of shard ``index`` of ``count`` (0-based): every run lands in exactly one shard."""
    ordered = sorted(runs, key=lambda r: r.run_id)
    return ordered[index::count]


def _write_json(path: Path, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def execute_run(
    run: RunSpec, config: SweepConfig, declared: dict[str, str], fingerprint: str = "", source: Path | None = None
) -> dict[str, Any]:
    """Execute one run with papermill; returns its final status (never raises for a failing notebook).

    ``source``: the notebook to execute (the invocation's snapshot of ``config.notebook``, whose
    ``fingerprint`` is in the run id); default ``config.notebook``.

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


def log_line(text: str) -> None:
    """``text`` on stderr with the UTC time, as one ``write``: ``print`` writes the newline apart, and
    with ``--jobs`` another run's line landed between the two (two lines on one, then an empty one)."""
    sys.stderr.write(f"{_now()} {text}\n")
    sys.stderr.flush()


class _Tally:
    """What this invocation's runs came to, counted as each run ends, in the worker thread that ran
    it (not when the main thread gets to it): with ``--jobs 1`` a run's end line is in the log before
    the next run's start line. ``log``: plain timed lines on stderr (a log file, where no bar shows), a failed
    run's error on its line; ``terminal``: a ``FAILED`` line above the bar (or alone, with ``--quiet``) as each
    run fails. Without either (``--quiet`` under cron), nothing until the final report."""

    def __init__(self, total: int, *, skipped: list[str], bar: Any, log: bool, terminal: bool = False) -> None:
        self.total, self.bar, self.log, self.terminal, self.done = total, bar, log, terminal, 0
        self.ran: list[str] = []
        self.skipped, self.busy = list(skipped), []
        self.failures: list[dict[str, Any]] = []
        self.unlogged: list[tuple[str, str]] = []  # (run id, what W&B did) where W&B did not log as asked
        self._lock = threading.Lock()

    def so_far(self) -> str:
        """``2 completed, 1 failed; 3 left to run``: this invocation's runs, counted so far."""
        failed = len(self.failures)
        return f"{len(self.ran) - failed} completed, {failed} failed; {self.total - self.done} left to run"

    def started(self, run_id: str) -> None:
        if self.log:
            log_line(f"started {run_id}")

    def finished(self, status: dict[str, Any]) -> None:
        from vlm_lab.tracking import describe_record

        state, rid = status["state"], status["run_id"]
        if state == "pending":  # never started: another run could not write its files (its error follows)
            return
        with self._lock:
            self.done += 1
            {"busy": self.busy, "skipped": self.skipped}.get(state, self.ran).append(rid)
            failed = state not in ("completed", "busy", "skipped")
            if failed:
                self.failures.append(status)
                if self.terminal:
                    self.bar.write(f"FAILED {rid}: {describe_error(status.get('error') or {})}")
            wandb = describe_record(status.get("wandb"))
            if wandb.startswith("NOT LOGGED") or "online failed" in wandb:
                self.unlogged.append((rid, wandb))
            self.bar.update(1)
            self.bar.set_postfix(failed=len(self.failures))
            if self.log:
                took = f" ({status['duration_s']:.1f} s)" if "duration_s" in status else ""
                why = f": {describe_error(status.get('error') or {})}" if failed else ""
                note = f"; W&B {wandb}" if (rid, wandb) in self.unlogged else ""
                log_line(f"[{self.done}/{self.total}] {state} {rid}{took}{why}{note}")


def _execute_if_free(
    run: RunSpec, config: SweepConfig, declared: dict[str, str], stopped: threading.Event, tally: _Tally,
    fingerprint: str = "", source: Path | None = None,
) -> dict[str, Any]:
    """``execute_run`` under the run's lock, counted in ``tally``; state ``busy`` when another
    invocation holds the lock, ``skipped`` when it completed while this invocation waited for its
    turn, ``pending`` when another run could not write its files (``stopped``) before this one's turn."""
    if stopped.is_set():
        status = {"run_id": run.run_id, "state": "pending"}
    else:
        try:
            with run_lock(run.dir.parent, run.run_id) as held:
                if not held:
                    status = {"run_id": run.run_id, "state": "busy"}
                elif run.completed:
                    status = {"run_id": run.run_id, "state": "skipped"}
                else:
                    tally.started(run.run_id)
                    status = execute_run(run, config, declared, fingerprint, source)
        except OSError as e:  # its lock, folder, params.json, status.json, or (disk full) the notebook
            stopped.set()  # the queued runs would fail the same way, in a burst, before the sweep stops
            raise SweepWriteError.of(e, run.dir) from e
    tally.finished(status)
    return status


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


def _write_summary(
    folder: Path, runs: list[RunSpec], abandoned: tuple[str, ...] = (), *, in_progress: bool = False,
    config: SweepConfig, command: str,
) -> tuple[Path, Coverage]:
    """summary.csv and summary.md, which says how many of the grid's runs have a result, why the others have
    none and the ``command`` that runs them; returns the csv's path and that coverage."""
    from vlm_lab.ablation import write_summary

    try:
        csv = write_summary(folder, runs, abandoned=abandoned, in_progress=in_progress)
        shards = sweep_coverage.shard_names(runs, config.shard_index, config.shard_count)
        covered = sweep_coverage.coverage(csv, shard_of=shards, command=command)
        sweep_coverage.add_to_markdown(csv.with_suffix(".md"), covered)
    except OSError as e:
        raise SweepWriteError.of(e, folder) from e
    return csv, covered


def _since_last_run(config: SweepConfig, fingerprint: str, planned: list[RunSpec]) -> str:
    """A note when the sweep's last invocation (its sweep.json) ran another notebook or kernel (every
    run is new this time), or runs that ``planned`` leaves out of the summary (another grid: a
    sweep file copied without a new ``name:``, or values taken out of the grid); "" otherwise."""
    try:
        before = json.loads((sweep_dir(config) / SWEEP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""  # a first invocation
    if not isinstance(before, dict):
        return ""
    if before.get("notebook_fingerprint") != fingerprint:
        return _notebook_changed(config, fingerprint, before)
    try:  # the runs the last invocation planned: the same notebook, so the same ids for the same values
        earlier = SweepConfig.from_dict({k: v for k, v in before.items() if k != "notebook_fingerprint"})
        left = sorted({r.run_id for r in plan(earlier, fingerprint=fingerprint)} - {r.run_id for r in planned})
    except (VlmLabError, ValueError, TypeError):  # a sweep.json an older vlm_lab wrote: nothing to say
        return ""
    if not left:
        return ""
    shown = ", ".join(left[:3]) + (f", ... {len(left) - 3} more" if len(left) > 3 else "")
    return (
        f"sweep {config.name!r} last ran {len(left)} run(s) that this grid and parameters leave out ({shown}): they stay "
        f"in their folders under {sweep_dir(config)}, out of the summary; if another sweep file uses the same name:, "
        f"give each its own (it is the folder under {config.runs_dir} and the W&B group)"
    )


def _notebook_changed(config: SweepConfig, fingerprint: str, before: dict[str, Any]) -> str:
    """The note when the sweep last ran another notebook (or kernel): every run is new this time."""
    earlier = before.get("notebook_fingerprint")
    other = before.get("notebook")
    if isinstance(other, str) and other != config.notebook:  # e.g. two sweep files sharing one name:
        what = (f"sweep {config.name!r} last ran another notebook ({other}); if another sweep file uses the same "
                f"name:, give each its own (it is the folder under {config.runs_dir} and the W&B group)")
    elif earlier:
        what = f"its code or kernel changed since this sweep last ran (fingerprint {earlier[:8]} -> {fingerprint[:8]})"
    else:
        what = "this sweep's runs were made before run ids covered the notebook"
    return (
        f"notebook {config.notebook}: {what}, so every run is new; the runs made by the earlier notebook stay in "
        f"their folders under {sweep_dir(config)}, out of the summary (restore the notebook to report them again)"
    )


def _as_completed(futures) -> Iterator[concurrent.futures.Future | None]:
    """``concurrent.futures.as_completed``, waking the main thread twice a second (None: a wake with no future done).

    A SIGTERM or SIGHUP the kernel delivers to another thread (a worker's, a kernel client's) only
    sets a flag: its Python handler runs when the main thread next wakes, and one blocked on a lock
    never did (the sweep ignored a SIGTERM until a run finished; seen under load, 1 in ~6).
    """
    pending = set(futures)
    while pending:
        done, pending = concurrent.futures.wait(pending, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED)
        yield from done or (None,)


def run_sweep(config: SweepConfig, *, dry_run: bool = False, progress: bool = True, command: str = "") -> SweepReport:
    """Run this shard's pending runs (``config.jobs`` at a time) and write the sweep summary.

    ``command``: the command that runs this sweep (every shard), which summary.md and the report give
    for the runs without a result (default ``vlm-lab sweep SWEEP.yaml``, with its ``--runs-dir``).

    Run ids cover the notebook's code and kernel (``notebook_fingerprint``): after the notebook changes,
    every run is new and ``SweepReport.note`` (also printed on stderr) says so.

    Raises:
        SweepError: the notebook is missing or the sweep sets parameters it does not declare
            (checked before anything runs).
        SweepLockedError: another invocation of this sweep (and shard) holds the lock.
        SweepWriteError: the sweep cannot write its files.
    """
    declared = check_parameters(config)
    if dry_run:
        fingerprint = notebook_fingerprint(config)
        everything = plan(config, fingerprint=fingerprint)
        mine = shard(everything, config.shard_index, config.shard_count)
        return SweepReport(
            sweep_dir=sweep_dir(config), ran=(), skipped=tuple(r.run_id for r in mine if r.completed),
            failures=(), summary_csv=None, note=_since_last_run(config, fingerprint, everything),
        )  # fmt: skip
    from tqdm.auto import tqdm

    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(sweep_lock(sweep_dir(config), config.name, shard=(config.shard_index, config.shard_count)))
            # Every run executes this copy: an edit made while the sweep runs waits for the next invocation.
            source, fingerprint = snapshot_notebook(config, sweep_dir(config) / NOTEBOOKS)
            everything = plan(config, fingerprint=fingerprint)
            note = _since_last_run(config, fingerprint, everything)
            _write_json(sweep_dir(config) / SWEEP_FILE, {**config.to_dict(), "notebook_fingerprint": fingerprint})
        except OSError as e:
            raise SweepWriteError.of(e, sweep_dir(config)) from e
        mine = shard(everything, config.shard_index, config.shard_count)
        sweep_kernel_dirs.remove_leftovers()  # the kernels' socket folders of sweeps killed outright (SIGKILL)
        # Before any run: a sweep killed outright (SIGKILL, a reboot) during its first run left no summary, and
        # notebook 04 then said no run had finished yet, for a sweep that is not running.
        command = command or sweep_coverage.default_command(config.runs_dir)
        _write_summary(sweep_dir(config), everything, in_progress=True, config=config, command=command)
        stack.enter_context(papermill_run.quiet())
        todo = [r for r in mine if not r.completed]
        # A terminal gets a bar; a log file (cron, CI) plain lines, with the time, instead of \r-redrawn
        # bars: what this invocation is to do, and each run as it starts and ends.
        interactive = progress and sys.stderr.isatty()
        log = progress and not interactive
        bar = tqdm(total=len(todo), desc=config.name, unit="run", disable=not interactive)
        tally = _Tally(len(todo), skipped=[r.run_id for r in mine if r not in todo], bar=bar, log=log, terminal=sys.stderr.isatty())
        if note:
            log_line(note)
        if log:
            log_line(
                f"sweep {config.name}: {len(todo)} run(s) to run, {min(config.jobs, len(todo) or 1)} at a time; "
                f"{len(tally.skipped)} already completed; in {sweep_dir(config)}"
            )
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=config.jobs)
        futures: dict[concurrent.futures.Future, str] = {}  # -> its run id
        stopped = threading.Event()
        summary_written, unwritten = -math.inf, False  # unwritten: a run finished since the summary was written
        try:
            for r in todo:
                futures[pool.submit(_execute_if_free, r, config, declared, stopped, tally, fingerprint, source)] = r.run_id
            for future in _as_completed(futures):
                # The worker counted it; this raises its SweepWriteError.
                unwritten |= future is not None and future.result()["state"] not in ("busy", "pending")
                # A report read mid-sweep (or after a kill) sees the finished runs; at most every SUMMARY_EVERY_S,
                # as a summary reads every run's files, and once that has passed (not at the next run's end: a run
                # that ended within it was missing from the summary while the next one ran for hours).
                if unwritten and time.monotonic() - summary_written >= SUMMARY_EVERY_S:
                    _write_summary(sweep_dir(config), everything, in_progress=True, config=config, command=command)
                    summary_written, unwritten = time.monotonic(), False
        except KeyboardInterrupt:
            _stop(list(futures))  # a second Ctrl-C (or SIGTERM), while it waits, abandons the running runs
            raise
        except SweepWriteError as e:
            stopped.set()
            _stop(list(futures), why="the sweep cannot write its files")
            # With --quiet (cron) this line is all the log has: say what this invocation got done.
            raise SweepWriteError(f"{e} (this invocation: {tally.so_far()})").caused_by(e) from e
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # normally all done; abandoned runs are not joined
            bar.close()
            leaving = sys.exc_info()[1]  # the error (or Ctrl-C) on its way out, if any
            # Runs still executing now are being abandoned (a second Ctrl-C, SIGTERM): their summary
            # rows say interrupted, as their state will once this process is gone.
            abandoned = tuple(rid for f, rid in futures.items() if not f.done()) if leaving else ()
            try:
                summary_csv, covered = _write_summary(sweep_dir(config), everything, abandoned, config=config, command=command)
            except SweepWriteError:
                if leaving is None:  # else that one is the news; a summary that cannot be written follows from it
                    raise
    return SweepReport(
        sweep_dir=sweep_dir(config), ran=tuple(sorted(tally.ran)), skipped=tuple(sorted(tally.skipped)),
        failures=tuple(sorted(tally.failures, key=lambda f: f["run_id"])), summary_csv=summary_csv,
        busy=tuple(sorted(tally.busy)), unlogged=tuple(sorted(tally.unlogged)), note=note, coverage=covered,
    )  # fmt: skip
