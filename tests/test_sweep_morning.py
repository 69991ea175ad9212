"""The morning after a night that went wrong: what summary.md and notebook 04 can tell."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from test_sweep import _wait_for, sweep_file  # noqa: F401 - the fixture
from vlm_lab import sweep
from vlm_lab.ablation import Ablation


def test_a_first_sweep_killed_outright_during_its_first_run_can_still_be_reported(sweep_file, tmp_path):  # noqa: F811
    """SIGKILL (a CI job past its limit, the OOM killer choosing the sweep) before any run had ended left no
    summary.csv: notebook 04 said there were no results and to run the sweep first, for a sweep that had run."""
    path = sweep_file({"x": [1, 2]}, {"sleep_s": 60.0})
    runs = sweep.plan(sweep.load_sweep(path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlm_lab.cli", "sweep", str(path), "--quiet"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(lambda: runs[0].status()["state"] == "running", proc, "the first run starting")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    ablation = Ablation.load(tmp_path / "runs" / "t")
    assert list(ablation.runs["state"]) == ["interrupted", "pending"]
    assert "while the sweep was running" in (tmp_path / "runs" / "t" / "summary.md").read_text()
