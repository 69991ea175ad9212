"""How much of a sweep's grid has a result: which runs have none, why, and the command that completes them.

summary.md (``vlm_lab.ablation.write_summary``) has one row per grid point, but a reader of a
hundred rows the morning after could not tell at a glance how many had a result: runs that failed,
runs a killed sweep left interrupted, runs of another shard not run yet, runs running elsewhere.
``Coverage`` counts them from the summary.csv just written (so it says what the table says), and its
lines go into summary.md above the table (written with it, in one atomic write: ``write_summary``'s
``overview``) and into the report printed at the end of a sweep.

Invalid parameters are not a reason a run is missing: they are checked for the whole grid before
anything runs (exit 2, nothing run, no summary written), so a grid is never run with points dropped.
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

from vlm_lab.spreadsheet_csv import read_csv

SHOWN = 5  # run ids named per reason; the table's state column has the rest
TIMED_OUT = "timed_out"  # a run's state when it passed the sweep's run_timeout (killed); it runs again as a failed one

# Why a run of each state has no result, in the order summary.md lists them: (label, what it means).
WHY = {
    "failed": ("failed", ""),
    TIMED_OUT: ("timed out", ""),
    "interrupted": ("interrupted", "the sweep running them was stopped (killed, Ctrl-C, SIGTERM) before they finished"),
    "running": ("running now", "in this or another invocation; a later summary has them"),
    "pending": ("not run yet", ""),
}


@dataclasses.dataclass(frozen=True)
class Coverage:
    """The grid's runs with a result (``completed``) and, per state, those without one.

    ``shard_of``: for a sharded invocation (``--shard I/N``), the shard (``"I/N"``) of each run
    outside this invocation's shard, so "not run yet" can say whose turn it is."""

    total: int
    completed: int
    missing: dict[str, tuple[str, ...]]  # state (a WHY key, or another) -> run ids, each with no result
    errors: dict[str, str] = dataclasses.field(default_factory=dict)  # run id -> its error (one line), failed and timed-out runs
    shard_of: dict[str, str] = dataclasses.field(default_factory=dict)
    command: str = ""  # runs the missing ones

    @property
    def missing_count(self) -> int:
        return self.total - self.completed

    def _none(self) -> str:
        return f"{self.missing_count} {'has' if self.missing_count == 1 else 'have'} none"

    def _runs_them(self) -> str:
        return f"`{self.command}` runs " + ("it" if self.missing_count == 1 else f"the {self.missing_count}")

    def lines(self) -> list[str]:
        """summary.md's paragraph: the count, one line per reason naming its runs, and the command."""
        if not self.missing_count:
            return [f"Results for all {self.total} of the grid's runs."]
        lines = [f"Results for {self.completed} of the grid's {self.total} runs; {self._none()}:", ""]
        for state, ids in self.missing.items():
            elsewhere = [rid for rid in ids if rid in self.shard_of]  # another shard's turn, not this invocation's
            shards = ", ".join(sorted({self.shard_of[rid] for rid in elsewhere}))
            whose = "" if not elsewhere else f"; shard {shards}'s" if len(elsewhere) == len(ids) else f"; {len(elsewhere)} of them shard {shards}'s"
            if len(ids) == 1 and ids[0] in self.errors:
                named = f"`{ids[0]}`: {self.errors[ids[0]]}"
            elif any(rid in self.errors for rid in ids):  # each failed run with its error, one per line
                named = "".join(f"\n  - `{rid}`: {self.errors.get(rid, '')}" for rid in ids[:SHOWN])
            else:
                named = ", ".join(f"`{rid}`" for rid in ids[:SHOWN])
            more = f" ... and {len(ids) - SHOWN} more (see the state column)" if len(ids) > SHOWN else ""
            label, meaning = WHY.get(state, (state, ""))
            named = named if named.startswith("\n") else f" {named}{more}" + (f"; {meaning}" if meaning else "")
            lines.append(f"- {label} ({len(ids)}{whose}):{named}" + (more if named.startswith("\n") else ""))
        again = "failed and timed-out ones" if TIMED_OUT in self.missing else "failed ones"
        lines += ["", f"{self._runs_them()} (completed runs are kept; {again} run again)."]
        return lines

    def brief(self) -> str:
        """The report's line: ``grid: results for 1 of 4 runs; 3 have none: 1 failed, 2 not run yet; `cmd` runs the 3``."""
        if not self.missing_count:
            return f"grid: results for all {self.total} runs"
        why = ", ".join(f"{len(ids)} {WHY.get(state, (state,))[0]}" for state, ids in self.missing.items())
        return f"grid: results for {self.completed} of {self.total} runs; {self._none()}: {why}; {self._runs_them()}"


def default_command(config: Any) -> str:
    """The command that runs a sweep (a ``SweepConfig``) when the caller gave none: ``vlm-lab sweep`` with the
    file ``load_sweep`` read it from, or, for a config made in Python, the call (no file holds it)."""
    if not config.sweep_file:
        return "vlm_lab.sweep.run_sweep(config)"
    words = ["vlm-lab", "sweep", config.sweep_file]
    return shlex.join(words + (["--runs-dir", config.runs_dir] if config.runs_dir != "runs" else []))


def coverage(summary_csv: Path, *, shard_of: dict[str, str] | None = None, command: str) -> Coverage:
    """The coverage of the grid as ``summary_csv`` (just written) has it: one row per run, its state and error."""
    frame = read_csv(summary_csv, dtype={"run_id": str, "state": str, "error": str}, keep_default_na=False)
    states: dict[str, list[str]] = {}
    for rid, state in zip(frame["run_id"], frame["state"]):
        states.setdefault(state, []).append(rid)
    order = [s for s in WHY if s in states] + sorted(s for s in states if s not in WHY and s != "completed")
    errors = dict(zip(frame["run_id"], frame["error"])) if "error" in frame else {}
    return Coverage(
        total=len(frame), completed=len(states.get("completed", ())), missing={s: tuple(states[s]) for s in order},
        errors={rid: e for rid, e in errors.items() if e and rid in (*states.get("failed", ()), *states.get(TIMED_OUT, ()))},
        shard_of={rid: s for rid, s in (shard_of or {}).items() if rid in frame["run_id"].values}, command=command,
    )  # fmt: skip


def shard_names(runs: list[Any], index: int, count: int) -> dict[str, str]:
    """``{run id: "I/N"}`` of the runs outside shard ``index`` of ``count`` (runs sorted by id, as shards deal them)."""
    if count == 1:
        return {}
    ordered = sorted(runs, key=lambda r: r.run_id)
    return {r.run_id: f"{i % count}/{count}" for i, r in enumerate(ordered) if i % count != index}
