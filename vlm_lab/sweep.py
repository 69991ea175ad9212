"""Papermill sweeps: one notebook run per grid point, resumable, locked, sharded.

Layout of ``runs/<sweep>/``::

    .lock                       held while a sweep runs (``.lock.<i>-of-<n>`` per shard)
    .locks/<run-id>             held while that run executes, by whichever invocation runs it
    .notebooks/<fingerprint>.ipynb  the notebook as an invocation found it: its runs execute this copy
    <run-id>/params.json        the notebook parameters of this run
    <run-id>/status.json        running | completed | failed | timed_out (+ failing cell, error; the run's W&B
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
left to it, and this invocation exits 75. A run still executing at the sweep file's ``run_timeout:``
(``30m``, ``2h``; ``vlm-lab sweep --run-timeout`` overrides it for one invocation) is stopped (its
kernel's process group killed), ``timed_out``, and runs again next time.

Each run is one W&B run in the sweep's group: the sweep passes ``wandb_group`` (the
sweep name), ``wandb_tags`` (``"key=value,..."`` of the varied parameters), ``wandb_id``
(random, kept in status.json: the same for every execution of a run, so a run re-run after
a kill resumes its W&B run instead of making a second one) and ``wandb_notebook`` (the first 8
hex digits of ``notebook_fingerprint``: which version of the notebook made the run; notebook 02 logs
it as a ``notebook=`` tag and config key, as the group and name stay the variant's across edits) to
notebooks that declare those parameters, and ``output_dir`` (the run folder). The run of an edited
notebook has a new run id, so a new folder and a new ``wandb_id``: it never logs into a W&B run that
holds the earlier notebook's results.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import json
import math
import os
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from vlm_lab.config import SweepConfig
from vlm_lab import kernel_threads, sweep_coverage, sweep_kernel_dirs, sweep_papermill as papermill_run
from vlm_lab.sweep_coverage import Coverage
from vlm_lab.errors import SweepError, VlmLabError
from vlm_lab.paths import nearest_existing
from vlm_lab.signals import signals_after_block
from vlm_lab.sweep_file import load_sweep  # noqa: F401 - re-exported
from vlm_lab.sweep_checks import check_parameters, notebook_fingerprint, notebook_parameters, snapshot_notebook  # noqa: F401
from vlm_lab.sweep_locks import LOCKED_EXIT_CODE, RUN_LOCKS, SweepLockedError, now as _now, run_is_running, run_lock, sweep_lock  # noqa: F401
# Re-exported: vlm_lab.sweep is where the ablation report, the CLI, scripts and tests find them.
from vlm_lab.sweep_plan import MAX_RUNS, PARAMS_FILE, STATUS_FILE, SWEEP_FILE, RunSpec, grid_order, plan, run_id, shard, sweep_dir  # noqa: F401
from vlm_lab.sweep_report import ERROR_CHARS, SAME_ERROR_LINES, SweepReport, _Tally, describe_error, log_line  # noqa: F401
from vlm_lab.sweep_run import (  # noqa: F401
    BEFORE_CELLS, KERNEL_LOG, RUN_TIMEOUT_FROM_FILE, WANDB_ID_LENGTH, _DISK_ERRNOS, _write_json, execute_run,
)


NOTEBOOKS = ".notebooks"  # runs/<sweep>/.notebooks/<fingerprint>.ipynb: the notebook as each invocation ran it
WRITE_EXIT_CODE = 74  # EX_IOERR: the sweep could not write its own files (disk full, quota, read-only)
SUMMARY_EVERY_S = 10.0  # summary.csv is rewritten as runs finish, at most this often


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
        # df and findmnt need a path that exists: the sweep's folder is not there yet on its first invocation
        here = shlex.quote(str(where if os.path.exists(where) else nearest_existing(where)))
        # The fix depends on the cause: "free space" misled when --runs-dir named a file or /proc, when a
        # read-only mount (no chmod helps) or a file-size limit (ulimit -f, no free space helps) was the cause.
        # Said as a caller of run_sweep passes it (runs_dir='DIR'); `vlm-lab sweep` says --runs-dir DIR
        # (vlm_lab.cli.flags_in_config_errors).
        fix = {
            errno.ENOSPC: f"The disk is full: free space on it (`df -h {here}`), or pass runs_dir='DIR' on another disk",
            errno.EDQUOT: "Your disk quota there is used up (`quota -s`): free some, or pass runs_dir='DIR' on another disk",
            errno.EFBIG: "A file passed the size limit for this process (`ulimit -f`; systemd LimitFSIZE=) or the "
                         "filesystem's largest file: raise the limit, or pass runs_dir='DIR' on another filesystem",
            errno.EROFS: f"{where} is on a filesystem mounted read-only (`findmnt -T {here}`): remount it read-write, "
                         "or pass runs_dir='DIR', a writable folder",
            errno.EACCES: "Make that folder writable for this user (or pass runs_dir='DIR', a writable folder)",
        }.get(errno.EACCES if error.errno == errno.EPERM else error.errno,
              # ENOTDIR, ENOENT (a /proc or vanished path), ...
              "Pass runs_dir='DIR', a folder that can hold the runs (or set runs_dir: in the sweep file)")  # fmt: skip
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


def _execute_if_free(
    run: RunSpec, config: SweepConfig, declared: dict[str, str], stopped: threading.Event, tally: _Tally,
    fingerprint: str = "", source: Path | None = None, run_timeout_from: str = RUN_TIMEOUT_FROM_FILE,
    *, kernel_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """``execute_run`` (its kernel given ``kernel_env``) under the run's lock, counted in ``tally``; state
    ``busy`` when another invocation holds the lock, ``skipped`` when it completed while this invocation waited for its
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
                    status = execute_run(run, config, declared, fingerprint, source, run_timeout_from=run_timeout_from,
                                         kernel_env=kernel_env)
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

    shards = sweep_coverage.shard_names(runs, config.shard_index, config.shard_count)
    covered: list[Coverage] = []

    def overview(csv: Path) -> list[str]:  # read from the CSV just written: it says what the table says
        covered.append(sweep_coverage.coverage(csv, shard_of=shards, command=command))
        return covered[-1].lines()

    try:
        csv = write_summary(folder, runs, abandoned=abandoned, in_progress=in_progress, overview=overview)
    except OSError as e:
        raise SweepWriteError.of(e, folder) from e
    return csv, covered[-1]


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


def run_sweep(
    config: SweepConfig, *, dry_run: bool = False, progress: bool = True, command: str = "",
    run_timeout_from: str = RUN_TIMEOUT_FROM_FILE,
) -> SweepReport:
    """Run this shard's pending runs (``config.jobs`` at a time) and write the sweep summary.

    ``command``: the command that runs this sweep (every shard), which summary.md and the report give
    for the runs without a result (default ``vlm-lab sweep`` with ``config.sweep_file`` and its ``--runs-dir``).
    ``run_timeout_from``: what set ``config.run_timeout`` (``--run-timeout``; default the sweep file's
    ``run_timeout:``), which a run stopped at it says to raise.

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
        command = command or sweep_coverage.default_command(config)
        _write_summary(sweep_dir(config), everything, in_progress=True, config=config, command=command)
        stack.enter_context(papermill_run.quiet())
        todo = sorted((r for r in mine if not r.completed), key=grid_order)  # as --dry-run and summary.md list them
        # A terminal gets a bar; a log file (cron, CI) plain lines, with the time, instead of \r-redrawn
        # bars: what this invocation is to do, and each run as it starts and ends.
        interactive = progress and sys.stderr.isatty()
        log = progress and not interactive
        bar = tqdm(total=len(todo), desc=config.name, unit="run", disable=not interactive)
        tally = _Tally(len(todo), skipped=[r.run_id for r in mine if r not in todo], bar=bar, log=log, terminal=sys.stderr.isatty())
        if note:
            log_line(note)
        # Each kernel's torch (MKL, OpenBLAS) gets the cores divided among the kernels at once, unless the user set it.
        kernels = min(config.jobs, len(todo) or 1)
        kernel_env = kernel_threads.kernel_env(kernels)
        if log:
            log_line(
                f"sweep {config.name}: {len(todo)} run(s) to run, {kernels} at a time, "
                f"{kernel_threads.describe_threads(kernels)}; "
                f"{len(tally.skipped)} already completed; in {sweep_dir(config)}"
            )
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=config.jobs)
        futures: dict[concurrent.futures.Future, str] = {}  # -> its run id
        stopped = threading.Event()
        summary_written, unwritten = -math.inf, False  # unwritten: a run finished since the summary was written
        try:
            with signals_after_block():  # each run handed over is in futures, which _stop waits for
                for r in todo:
                    futures[pool.submit(
                        _execute_if_free, r, config, declared, stopped, tally, fingerprint, source, run_timeout_from,
                        kernel_env=kernel_env,
                    )] = r.run_id
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
