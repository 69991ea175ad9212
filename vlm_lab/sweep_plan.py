"""A sweep's grid: one ``RunSpec`` per point, its run id and folder, and the shards that deal them.

The run id is the varied parameters, readable, plus a short hash of *all* the parameters and of
the notebook's code and kernel (``notebook_fingerprint``): stable across invocations, and a changed
fixed parameter, an edited code cell or another ``kernel:`` makes new runs (``vlm_lab.sweep``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

from vlm_lab.config import SweepConfig
from vlm_lab.errors import SweepError
from vlm_lab.sweep_checks import notebook_fingerprint
from vlm_lab.sweep_locks import run_is_running

STATUS_FILE, PARAMS_FILE, SWEEP_FILE = "status.json", "params.json", "sweep.json"
MAX_RUNS = 10_000  # a bigger grid is a typo (or needs several sweep files), not a night's work


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
        """pending | running | completed | failed | timed_out (stopped at the sweep's run_timeout), or
        ``interrupted``: status.json says running but nobody holds the run's lock (its sweep was killed;
        the next invocation runs it again)."""
        state = self.status().get("state", "pending")
        if state == "running" and not run_is_running(self.dir.parent, self.run_id):
            return "interrupted"
        return state

    @property
    def completed(self) -> bool:
        return self.status().get("state") == "completed"


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


def grid_order(run: RunSpec) -> tuple:
    """A key listing runs by their varied values in the grid's key order, numbers by value (summary.md, --dry-run):
    run ids sort as text, which put max_new_tokens 16 before 4 in the table a researcher reads first."""
    return tuple(
        (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))
        for v in run.varied.values()
    ) + (run.run_id,)


def shard(runs: list[RunSpec], index: int, count: int) -> list[RunSpec]:
    """The runs of shard ``index`` of ``count`` (0-based): every run lands in exactly one shard."""
    ordered = sorted(runs, key=lambda r: r.run_id)
    return ordered[index::count]
