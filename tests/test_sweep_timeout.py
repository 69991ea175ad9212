"""A sweep's ``run_timeout:``: a run still going when it passes is stopped (its kernel killed), recorded and
reported as timed out with the time, and runs again next time like a failed run; the other runs go on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from vlm_lab import sweep
from vlm_lab.cli import main
from vlm_lab.config import SweepConfig
from vlm_lab.errors import ConfigError

PARAMETERS = """\
x: int = 1  # a grid value
hang: str = ""  # a file: while it exists, the run with x=2 waits
output_dir: str = "out"  # set by the sweep
"""
# The kernel starts a process of its own (it must end with the kernel) and records both pids before it waits.
WORK = """\
import json, os, pathlib, subprocess, time
out = pathlib.Path(output_dir)
out.mkdir(parents=True, exist_ok=True)
child = subprocess.Popen(["sleep", "600"])
(out / "pids").write_text(f"{os.getpid()} {child.pid}")
print("waiting", flush=True)
while x == 2 and pathlib.Path(hang).exists():
    time.sleep(0.2)
child.kill()
(out / "summary.json").write_text(json.dumps({"summary": [{"checkpoint": "c", "step": 1, "accuracy": x / 10}]}))
"""


def _vlm_lab_sweep(path: Path, *flags: str) -> subprocess.CompletedProcess:
    """``vlm-lab sweep PATH FLAGS...`` as cron runs it: a process of its own, in the sweep file's folder."""
    return subprocess.run([sys.executable, "-m", "vlm_lab.cli", "sweep", str(path), *flags], cwd=path.parent,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie nobody reaped is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture
def sweep_file(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# a run that can hang"), params, nbformat.v4.new_code_cell(WORK)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "nb.ipynb")
    (tmp_path / "hang").write_text("")
    path = tmp_path / "t.yaml"
    spec = {"name": "t", "notebook": "nb.ipynb", "parameters": {"hang": str(tmp_path / "hang")}, "grid": {"x": [1, 2]}}
    path.write_text(yaml.safe_dump(spec, sort_keys=False) + "jobs: 2\nrun_timeout: 30s\n")
    return path


def test_a_run_past_its_run_timeout_is_stopped_reported_and_runs_again_next_time(sweep_file, tmp_path, capsys):
    """With only execution_timeout (per cell), a run whose cells each finish in time, or a kernel stuck between
    cells, ran on for ever: it held the sweep's lock and every later night exited 75."""
    assert main(["sweep", str(sweep_file), "--quiet"]) == 1
    out = capsys.readouterr().out
    runs = {r.varied["x"]: r for r in sweep.plan(sweep.load_sweep(sweep_file))}
    assert runs[1].completed  # the other run is untouched

    status = runs[2].status()
    assert status["state"] == "timed_out" and runs[2].state() == "timed_out"
    assert status["run_timeout_s"] == 30 and 30 <= status["duration_s"] < 300  # stopped, not left to its 600 s
    error = status["error"]
    assert (error["ename"], error["cell_index"], error["exec_count"]) == ("RunTimeout", 3, 3)  # the cell it was in
    assert error["evalue"].startswith("still running at its run_timeout (30s): its kernel was killed after "), error
    assert error["evalue"].endswith("; raise run_timeout: in the sweep file if the run needs longer")
    kernel, child = map(int, (runs[2].dir / "pids").read_text().split())
    assert not _alive(kernel) and not _alive(child)  # the kernel and what it started
    executed = nbformat.read(runs[2].dir / "nb.ipynb", as_version=4)  # nothing else lost: its notebook, as far as it got
    assert "waiting" in "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "run_timeout (30s) passed: the sweep killed the kernel" in (runs[2].dir / sweep.KERNEL_LOG).read_text()

    line = f"  TIMED OUT {runs[2].run_id}: cell [3]: RunTimeout: still running at its run_timeout (30s)"
    assert line in out and "1 failed (1 of them timed out)" in out, out
    assert "grid: results for 1 of 2 runs; 1 has none: 1 timed out;" in out, out
    summary = (tmp_path / "runs" / "t" / "summary.md").read_text()
    assert f"- timed out (1): `{runs[2].run_id}`: cell [3]: RunTimeout: still running at its run_timeout (30s)" in summary
    assert "| 2 | timed_out |" in summary, summary
    row = pd.read_csv(tmp_path / "runs" / "t" / "summary.csv").set_index("x").loc[2]
    assert (row["state"], row["duration_s"]) == ("timed_out", status["duration_s"]) and row["error"].startswith("cell [3]: RunTimeout")

    assert main(["sweep", str(sweep_file), "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert f"  timed_out   {runs[2].run_id}  cell [3]: RunTimeout: still running" in listed, listed
    assert f"1 completed, 1 timed_out; `vlm-lab sweep {sweep_file}` runs the 1 not completed" in listed, listed

    (tmp_path / "hang").unlink()  # what made it hang is fixed: the next invocation runs it again, like a failed run
    report = sweep.run_sweep(sweep.load_sweep(sweep_file), progress=False)
    assert report.ok and report.ran == (runs[2].run_id,), report.describe()
    assert runs[2].completed and runs[2].status()["wandb_id"] == status["wandb_id"]


@pytest.mark.parametrize(
    "value, seconds",
    [(0, 0), (90, 90), ("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1.5h", 5400), ("1d", 86400), (" 45 m ", 2700)],
)
def test_run_timeout_is_seconds_or_a_duration_with_units(value, seconds):
    assert SweepConfig(name="s", notebook="nb.ipynb", run_timeout=value).run_timeout == seconds


@pytest.mark.parametrize(
    "value, message",
    [
        ("30 minutes", r"run_timeout '30 minutes' is not a duration: give seconds \(1800\) or a number with s, m, h or d "
                       r"\(90s, 30m, 2h, 1h30m\); 0 = no limit"),
        ("-5m", "is not a duration"),
        ("1h30", "is not a duration"),
        (-1, r"run_timeout must be a whole number >= 0 \(seconds, or text such as 30m; 0 = no limit\), got -1"),
        ("0.2s", r"run_timeout '0.2s' is under a second: give at least 1s \(or 0 for no limit\)"),
        (True, "run_timeout must be"),
    ],
)
def test_a_bad_run_timeout_names_the_value_and_the_fix(value, message):
    with pytest.raises(ConfigError, match=message):
        SweepConfig.from_dict({"name": "s", "notebook": "nb.ipynb", "run_timeout": value})


def test_run_timeout_on_the_command_line_limits_this_invocation_and_a_resume_uses_its_own(sweep_file, tmp_path):
    """A cron user limits one night's runs without editing the sweep file (its run_timeout: 30s stays); the timed-out
    run says to raise the flag, not the file's key, and a resume with another --run-timeout runs with that one."""
    spec = yaml.safe_load(sweep_file.read_text())
    sweep_file.write_text(yaml.safe_dump({**spec, "grid": {"x": [2]}}, sort_keys=False))  # the run that waits
    (run,) = sweep.plan(sweep.load_sweep(sweep_file))

    night = _vlm_lab_sweep(sweep_file, "--run-timeout", "4s", "--quiet")
    assert night.returncode == 1, night.stderr
    status = run.status()
    assert status["state"] == "timed_out" and status["run_timeout_s"] == 4, status  # the flag's, not the file's 30s
    evalue = status["error"]["evalue"]
    assert evalue.startswith("still running at its run_timeout (4s): its kernel was killed after "), evalue
    assert evalue.endswith("; raise --run-timeout if the run needs longer"), evalue  # the file's run_timeout: did not set it
    assert f"TIMED OUT {run.run_id}: " in night.stdout and "raise --run-timeout" in night.stdout, night.stdout
    assert "raise --run-timeout" in (tmp_path / "runs" / "t" / "summary.md").read_text()

    # The same runs folder, another night, another limit: that limit is the one used, and nothing the first
    # night recorded (sweep.json, status.json) refuses the resume or notes a changed sweep.
    listed = _vlm_lab_sweep(sweep_file, "--run-timeout", "6s", "--dry-run")
    assert listed.returncode == 0 and not listed.stderr, listed.stderr
    assert f"`vlm-lab sweep {sweep_file} --run-timeout 6s` runs the 1 not completed" in listed.stdout, listed.stdout
    resumed = _vlm_lab_sweep(sweep_file, "--run-timeout", "6s", "--quiet")
    assert resumed.returncode == 1 and "last ran" not in resumed.stderr, resumed.stderr
    again = run.status()
    assert again["state"] == "timed_out" and again["run_timeout_s"] == 6, again
    assert again["error"]["evalue"].startswith("still running at its run_timeout (6s)") and again["wandb_id"] == status["wandb_id"]

    (tmp_path / "hang").unlink()  # fixed: without the flag the file's run_timeout: applies again, and the run completes
    done = _vlm_lab_sweep(sweep_file, "--quiet")
    assert done.returncode == 0 and run.completed, done.stdout + done.stderr
    assert "run_timeout: 30s" in sweep_file.read_text()  # the flag never edits the file


@pytest.mark.parametrize("value", ["soon", "1h30", "0.2s", "2 hours"])
def test_a_bad_run_timeout_flag_names_the_flag_and_the_fix(sweep_file, tmp_path, value):
    proc = _vlm_lab_sweep(sweep_file, "--run-timeout", value, "--quiet")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    expected = {"0.2s": f"--run-timeout {value!r} is under a second: give at least 1s (or 0 for no limit)"}.get(
        value, f"--run-timeout {value!r} is not a duration: give seconds (1800) or a number with s, m, h or d (90s, 30m, 2h, "
        "1h30m); 0 = no limit")
    assert expected in proc.stderr and str(sweep_file) not in proc.stderr, proc.stderr  # the flag, not the file, is wrong
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_the_cron_wrapper_refuses_a_bad_run_timeout_once_before_any_sweep(sweep_file, tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "run_experiments.py"
    proc = subprocess.run([sys.executable, str(script), str(sweep_file), "--run-timeout", "soon"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "--run-timeout 'soon' is not a duration" in proc.stderr, proc.stderr
    assert "invalid sweep file" not in proc.stderr and not (tmp_path / "runs").exists()  # not blamed on the file
