"""The run locks as readers see them: a probe never takes a lock a starting runner needs."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vlm_lab import sweep
from vlm_lab.sweep_locks import SweepLockedError, run_is_running, run_lock, sweep_lock


def _left_running(folder: Path, run_id: str = "x=1,abcd1234") -> sweep.RunSpec:
    """A run whose status.json says running, with its lock file, as a sweep that was executing it leaves them."""
    run = sweep.RunSpec(run_id=run_id, dir=folder / run_id, varied={"x": 1}, parameters={"x": 1})
    run.dir.mkdir(parents=True)
    (run.dir / sweep.STATUS_FILE).write_text(json.dumps({"run_id": run_id, "state": "running"}))
    with run_lock(folder, run_id) as held:
        assert held
    return run


def test_a_reader_asking_whether_a_run_is_running_never_makes_a_starting_runner_skip_it(tmp_path):
    """Notebook 04, --dry-run and the summary ask each 'running' run whether its lock is held. Before, they took
    the lock for an instant: a sweep starting that run in that instant found it taken and left it to 'another
    invocation' (not run, exit 75). Here a runner tries to take the lock at every line the probe executes."""
    run = _left_running(tmp_path)
    refused: list[str] = []

    def a_runner_starts_now(frame, event, _arg):
        if event == "line":
            with run_lock(tmp_path, run.run_id, grace_s=0) as held:
                if not held:
                    refused.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
        return a_runner_starts_now

    sys.settrace(a_runner_starts_now)
    try:
        state = run.state()
    finally:
        sys.settrace(None)
    assert state == "interrupted"  # nobody held it: its sweep was killed
    assert not refused, f"a runner starting at these lines of the probe was refused the run: {refused}"


def test_a_run_held_by_another_process_reads_running_and_once_released_interrupted(tmp_path):
    run = _left_running(tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, pathlib; from vlm_lab.sweep_locks import run_lock\n"
         f"with run_lock(pathlib.Path({str(tmp_path)!r}), {run.run_id!r}) as held:\n"
         "    print(held, flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "True"
        assert run.state() == "running" and run_is_running(tmp_path, run.run_id)
        with run_lock(tmp_path, run.run_id, grace_s=0) as held:  # a second runner is still kept out
            assert not held
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert run.state() == "interrupted"


def test_the_probe_creates_nothing_in_the_sweep_folder(tmp_path):
    """A folder copied without .locks (or one another user owns): reading it writes nothing into it."""
    run = sweep.RunSpec(run_id="x=1,abcd1234", dir=tmp_path / "x=1,abcd1234", varied={}, parameters={})
    run.dir.mkdir()
    (run.dir / sweep.STATUS_FILE).write_text(json.dumps({"state": "running"}))
    assert run.state() == "interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x=1,abcd1234"]  # no .locks made by a reader


@pytest.mark.parametrize("since_h, stuck", [(1, False), (30, True)])
def test_a_sweep_holding_its_lock_for_more_than_a_night_is_named_as_maybe_hung(tmp_path, since_h, stuck):
    """A hung kernel (no execution_timeout:) holds the sweep lock for ever: every later night exits 75, which the
    README's systemd unit counts as success, and the line said only 'already running'."""
    since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=since_h)).isoformat(timespec="seconds")
    with open(tmp_path / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"pid 4242 on node-7 since {since}\n")  # as the holder writes it
        held.flush()
        with pytest.raises(SweepLockedError) as caught:
            with sweep_lock(tmp_path, "t", grace_s=0):
                pass
    message = str(caught.value)
    assert f"already running (pid 4242 on node-7 since {since};" in message
    assert ("It has held the lock for 30 hours: if it is hung" in message) == stuck, message
    assert ("`kill 4242` on node-7 stops it" in message) == stuck, message
    # a caller of sweep_lock (run_sweep) is told the argument it passes, not vlm-lab sweep's --run-timeout
    assert ("a run_timeout: (e.g. 2h) in the sweep file, or run_timeout='2h' as it is run, keeps" in message) == stuck, message
    assert "--" not in message, message


def test_a_sweep_held_for_more_than_a_night_tells_a_shell_user_the_flag(tmp_path, monkeypatch, capsys):
    """`vlm-lab sweep` (and so scripts/run_experiments.py) names its own flag in the stuck-lock hint."""
    from test_sweep import write_notebook
    from vlm_lab.cli import main

    monkeypatch.chdir(tmp_path)
    write_notebook(tmp_path / "nb.ipynb")
    (tmp_path / "t.yaml").write_text("name: t\nnotebook: nb.ipynb\ngrid: {x: [1]}\n")
    (tmp_path / "runs" / "t").mkdir(parents=True)
    since = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=30)).isoformat(timespec="seconds")
    with open(tmp_path / "runs" / "t" / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(f"pid 4242 on node-7 since {since}\n")
        held.flush()
        assert main(["sweep", "t.yaml", "--quiet"]) == sweep.LOCKED_EXIT_CODE
    err = capsys.readouterr().err
    assert "a run_timeout: (e.g. 2h) in the sweep file, or --run-timeout 2h as it is run, keeps it from happening" in err, err
