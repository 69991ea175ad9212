"""What a sweep says: the final report (``SweepReport``), its timed log lines, and each run counted as it ends."""

from __future__ import annotations

import dataclasses
import sys
import threading
from pathlib import Path
from typing import Any

from vlm_lab.sweep_coverage import TIMED_OUT, Coverage
from vlm_lab.sweep_locks import LOCKED_EXIT_CODE, now as _now

ERROR_CHARS = 300  # a run's error as the log and the summary show it (status.json keeps all of it)
SAME_ERROR_LINES = 3  # the final report lists up to this many runs with one error, each on its line; more, in one line


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
        timed_out = sum(f.get("state") == TIMED_OUT for f in self.failures)
        of_them = f" ({timed_out} of them timed out)" if timed_out else ""
        lines.append(f"{self.sweep_dir}: {len(self.ran)} ran, {len(self.skipped)} skipped (already completed), {len(self.failures)} failed{of_them}")
        if self.busy:
            lines.append(f"{len(self.busy)} running elsewhere (left to that invocation): {', '.join(self.busy)}")
        same: dict[str, list[dict[str, Any]]] = {}  # a shared cause (a missing package, a bad path) fails every run alike
        for f in self.failures:
            same.setdefault(describe_error(f.get("error") or {}), []).append(f)
        for f in self.failures:
            error = describe_error(f.get("error") or {})
            if len(same[error]) <= SAME_ERROR_LINES:
                lines.append(f"  {outcome(f)} {f['run_id']}: {error}  (notebook: {f.get('notebook')})")
            elif f is same[error][0]:
                lines.append(f"  {outcome(f)} {len(same[error])} runs with the same error: {error}  (the first, {f['run_id']}: notebook "
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
    executed notebook keep the whole message. A longer message keeps its start and its end, where
    the fix usually is ("run `make checkpoints`"): its whole last line when that fits in
    ``ERROR_CHARS`` * 2/3, else the last ``ERROR_CHARS`` / 2 characters.
    """
    cell = f"cell [{error['exec_count']}]" if error.get("exec_count") is not None else error.get("stage", "a cell")
    return f"{cell}: {error.get('ename', 'Error')}: {_shortened(str(error.get('evalue') or ''))}".rstrip(": ")


def _shortened(message: str) -> str:
    flat = " ".join(message.split())
    if len(flat) <= ERROR_CHARS:
        return flat
    lines = [line for line in message.splitlines() if line.strip()]
    last = " ".join(lines[-1].split())  # the end of ``flat``: the same words
    tail = len(last) if len(lines) > 1 and len(last) <= ERROR_CHARS * 2 // 3 else ERROR_CHARS // 2
    return f"{flat[: ERROR_CHARS - tail - 5]} ... {flat[-tail:]}"


def outcome(status: dict[str, Any]) -> str:
    """How the report and the log name a run without a result: ``FAILED``, or ``TIMED OUT`` (its run_timeout)."""
    return "TIMED OUT" if status.get("state") == TIMED_OUT else "FAILED"


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
                    self.bar.write(f"{outcome(status)} {rid}: {describe_error(status.get('error') or {})}")
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
