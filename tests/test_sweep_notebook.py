"""What a sweep's runs are tied to beyond their parameters: the notebook that made them, and what
its W&B step did (notebook 02's wandb.json), seen in the summary and the report."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings

import nbformat
import pandas as pd
import pytest
import yaml

from mounts import read_only_folder  # noqa: F401 - a fixture
from test_sweep import write_notebook
from vlm_lab import sweep, tracking
from vlm_lab.cli import main


@pytest.fixture
def sweep_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_notebook(tmp_path / "nb.ipynb")
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "notebook": "nb.ipynb", "grid": {"x": [1, 2]}}))
    return path


def _edit_notebook(path, edit) -> None:
    nb = nbformat.read(path, as_version=4)
    edit(nb)
    nbformat.write(nb, path)


def test_an_edited_notebook_makes_new_runs_and_says_so(sweep_file, tmp_path, capsys):
    """A nightly cron re-runs the same sweep file after someone edited the notebook: last night's
    results were made by other code, so they are not served as tonight's (they were: run ids hashed
    only the parameters). Saving the notebook with outputs, or editing its prose, re-runs nothing."""
    first = sweep.run_sweep(sweep.load_sweep(sweep_file), progress=False)
    assert first.ok and len(first.ran) == 2 and not first.note
    old = sweep.plan(sweep.load_sweep(sweep_file))

    def prose_and_outputs(nb):
        nb.cells[0].source += "\n\nEdited prose."
        nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="saved from JupyterLab\n")]
        nb.cells[2].execution_count = 7

    _edit_notebook(tmp_path / "nb.ipynb", prose_and_outputs)
    again = sweep.run_sweep(sweep.load_sweep(sweep_file), progress=False)
    assert again.ran == () and len(again.skipped) == 2 and not again.note, again.describe()

    def code(nb):  # the results change: accuracy doubles
        nb.cells[2].source = nb.cells[2].source.replace("x * s / 100", "x * s / 50")

    _edit_notebook(tmp_path / "nb.ipynb", code)
    capsys.readouterr()
    assert main(["sweep", str(sweep_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "notebook nb.ipynb: its code or kernel changed since this sweep last ran" in out, out
    assert out.count("\n  pending ") == 2 and "\n  completed " not in out, out

    report = sweep.run_sweep(sweep.load_sweep(sweep_file), progress=False)
    new = sweep.plan(sweep.load_sweep(sweep_file))
    assert report.ok and set(report.ran) == {r.run_id for r in new} and report.skipped == (), report.describe()
    assert not {r.run_id for r in new} & {r.run_id for r in old}
    assert "so every run is new; the runs made by the earlier notebook stay in their folders" in report.note
    assert report.describe().startswith(report.note)
    assert all(r.completed for r in old)  # nothing lost: the earlier results stay on disk
    summary = pd.read_csv(tmp_path / "runs" / "t" / "summary.csv")
    assert sorted(summary["run_id"]) == sorted(r.run_id for r in new)
    assert list(summary["best_accuracy"]) == [0.2, 0.4]  # tonight's notebook's results
    status = new[0].status()
    assert status["source_notebook"] == "nb.ipynb"
    assert status["notebook_fingerprint"] == sweep.notebook_fingerprint(sweep.load_sweep(sweep_file))

    assert sweep.run_sweep(sweep.load_sweep(sweep_file), progress=False).note == ""  # said once


def test_two_sweep_files_sharing_a_name_are_told_apart(sweep_file, tmp_path):
    """A second sweep file copied from the first kept its name: but runs another notebook: the note
    said the notebook's code had changed, which nobody did; it now names both and the fix."""
    assert sweep.run_sweep(sweep.load_sweep(sweep_file), progress=False).ok
    write_notebook(tmp_path / "other.ipynb")
    _edit_notebook(tmp_path / "other.ipynb", lambda nb: nb.cells.append(nbformat.v4.new_code_cell("y = 1")))
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump({"name": "t", "notebook": "other.ipynb", "grid": {"x": [1]}}))
    note = sweep.run_sweep(sweep.load_sweep(copy), progress=False, dry_run=True).note
    assert note.startswith("notebook other.ipynb: sweep 't' last ran another notebook (nb.ipynb); if another sweep "
                           "file uses the same name:, give each its own"), note
    assert "code or kernel changed" not in note


def test_the_kernel_is_part_of_the_fingerprint(sweep_file):
    config = sweep.load_sweep(sweep_file)
    assert sweep.notebook_fingerprint(config.replace(kernel="python3")) == sweep.notebook_fingerprint(config)  # its own
    assert sweep.notebook_fingerprint(config.replace(kernel="python-gpu")) != sweep.notebook_fingerprint(config)


# Stands in for notebook 02's W&B cell: the first execution's W&B step fails (as with an unwritable
# WANDB_DIR), then a later cell fails; the retry fails before reaching its W&B step.
WANDB_STEP = """\
import pathlib
import vlm_lab.tracking
retry = pathlib.Path(output_dir, "..", "retry").resolve()
if retry.exists():
    raise RuntimeError("failed before its W&B step")
why = "could not start the run: OutputPathError: W&B directory '/x/wandb' is not writable; set WANDB_DIR"
vlm_lab.tracking.write_record(output_dir, vlm_lab.tracking.NotLogged(reason=why, attempted=True))
retry.touch()
raise RuntimeError("failed after its W&B step")
"""


def test_a_wandb_failure_shows_in_the_summary_and_the_report(sweep_file, tmp_path, capsys):
    """Overnight, W&B failed inside a run: only that run's executed notebook said so. Now its
    wandb.json is in status.json, the summary's wandb column and the report printed to the cron log."""
    _edit_notebook(tmp_path / "nb.ipynb", lambda nb: nb.cells.append(nbformat.v4.new_code_cell(WANDB_STEP)))
    sweep_file.write_text(yaml.safe_dump({"name": "t", "notebook": "nb.ipynb", "grid": {"x": [1]}}))
    assert main(["sweep", str(sweep_file)]) == 1
    captured = capsys.readouterr()
    (run,) = sweep.plan(sweep.load_sweep(sweep_file))
    assert run.status()["wandb"]["logged"] is False
    summary = pd.read_csv(tmp_path / "runs" / "t" / "summary.csv", keep_default_na=False)
    assert summary["wandb"][0].startswith("NOT LOGGED: could not start the run: OutputPathError: W&B directory")
    assert "| NOT LOGGED: could not start the run" in (tmp_path / "runs" / "t" / "summary.md").read_text()
    assert f"W&B did not log 1 run(s) as asked:\n  {run.run_id}: NOT LOGGED: could not start" in captured.out
    assert re.search(r"\[1/1\] failed x=1,\S+ \(\d+\.\d s\): cell \[\d+\]: .+; W&B NOT LOGGED: could not start", captured.err), captured.err

    assert main(["sweep", str(sweep_file), "--quiet"]) == 1  # the retry never reached its W&B step
    summary = pd.read_csv(tmp_path / "runs" / "t" / "summary.csv", keep_default_na=False)
    assert summary["wandb"][0] == ""  # not the first execution's outcome
    assert "wandb" not in run.status() and "W&B did not log" not in capsys.readouterr().out


def test_with_one_job_each_run_ends_in_the_log_before_the_next_starts(sweep_file, capsys):
    sweep_file.write_text(yaml.safe_dump({"name": "t", "notebook": "nb.ipynb", "grid": {"x": [1, 2, 3, 4]}}))
    assert main(["sweep", str(sweep_file), "--jobs", "1"]) == 0
    events = [line.split()[1:] for line in capsys.readouterr().err.splitlines()[1:]]
    assert [e[0] for e in events] == [word for i in range(1, 5) for word in ("started", f"[{i}/4]")], events
    for start, end in zip(events[::2], events[1::2]):
        assert start[1] == end[2], events  # the run that started is the one that ended


def test_a_run_whose_turn_comes_after_a_write_error_is_neither_run_nor_failed(sweep_file, tmp_path):
    """de16a4a: after one run could not write its files (the sweep stops with SweepWriteError), a
    worker thread taking the next queued run starts nothing; that run must not be counted as run or
    failed, whichever of the two the main thread hears about first."""
    import threading

    from tqdm import tqdm

    config = sweep.load_sweep(sweep_file)
    run = sweep.plan(config)[0]
    stopped = threading.Event()
    stopped.set()  # another run hit the write error first
    tally = sweep._Tally(1, skipped=[], bar=tqdm(disable=True), log=True)
    status = sweep._execute_if_free(run, config, sweep.check_parameters(config), stopped, tally)
    assert status["state"] == "pending" and not run.dir.exists()
    assert (tally.done, tally.ran, tally.failures) == (0, [], [])


@pytest.mark.parametrize("nohup", [False, True])
def test_a_closed_terminal_says_so_and_leaves_the_summary_right_unless_under_nohup(sweep_file, tmp_path, nohup):
    """Started from an ssh session that then closed (SIGHUP): the sweep died silently, leaving no
    summary at all on a first night. Now it leaves as on SIGTERM (exit 129); under nohup it keeps going."""
    import signal
    import subprocess
    import sys

    from test_sweep import _wait_for

    sweep_file.write_text(yaml.safe_dump({"name": "t", "notebook": "nb.ipynb", "parameters": {"sleep_s": 60.0}, "grid": {"x": [1, 2]}}))
    runs = sweep.plan(sweep.load_sweep(sweep_file))
    log = tmp_path / "sweep.log"
    ignore = (lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) if nohup else None
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vlm_lab.cli", "sweep", str(sweep_file)], cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT, preexec_fn=ignore)  # fmt: skip
    try:
        _wait_for(lambda: runs[0].status()["state"] == "running", proc, "the first run starting")
        proc.send_signal(signal.SIGHUP)
        if nohup:
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=3)  # still running its run
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=50) == 128 + (signal.SIGTERM if nohup else signal.SIGHUP), log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert ("terminated (SIGHUP: the terminal or session that started it closed" in text) != nohup, text
    summary = pd.read_csv(tmp_path / "runs" / "t" / "summary.csv")
    assert list(summary["state"]) == ["interrupted", "pending"]


@pytest.mark.parametrize(
    "runs_dir, fix",
    [("a-file", "Pass --runs-dir DIR, a folder that can hold the runs (or set runs_dir: in the sweep file)"),
     ("/proc/vlm-lab-runs", "Pass --runs-dir DIR, a folder that can hold the runs"),
     ("locked/runs", "Make that folder writable for this user (or pass --runs-dir DIR, a writable folder)"),
     ("read-only", "read-only/t is on a filesystem mounted read-only (`findmnt -T {runs_dir}`): remount it read-write, "
                   "or pass --runs-dir DIR, a writable folder; then run the sweep again")],
)
def test_a_runs_dir_that_cannot_hold_runs_names_the_right_fix(sweep_file, tmp_path, capsys, request, runs_dir, fix):
    """--runs-dir on a file or a path that cannot exist said 'Free space there', as for a full disk. Nothing runs:
    the sweep's folder is written (its lock) before any run starts."""
    import os

    (tmp_path / "a-file").write_text("x")
    (tmp_path / "locked").mkdir(mode=0o555)
    if runs_dir == "read-only":  # root (these tests' user) writes anywhere chmod forbids; no mount stops it
        runs_dir = str(request.getfixturevalue("read_only_folder"))
    elif runs_dir.startswith("locked") and os.access(tmp_path / "locked", os.W_OK):
        pytest.skip("root writes anywhere chmod forbids: EACCES cannot happen (the read-only mount case runs)")
    assert main(["sweep", str(sweep_file), "--runs-dir", runs_dir]) == 74
    err = capsys.readouterr().err
    assert err.startswith("error: SweepWriteError: cannot write ") and fix.format(runs_dir=runs_dir) in err, err
    assert "Free space" not in err and "Traceback" not in err and not (tmp_path / "runs").exists(), err
    if "findmnt" in fix:  # the command it gives shows that mount (it said `findmnt -T read-only/t`, a folder not there)
        shown = subprocess.run(["findmnt", "-T", runs_dir, "-o", "OPTIONS", "-n"], capture_output=True, text=True)
        assert shown.stdout.startswith("ro,"), shown


def test_a_notebook_edited_while_the_sweep_runs_waits_for_the_next_invocation(sweep_file, tmp_path):
    """Cron runs the sweep at night; someone edits the notebook while it runs. The points not yet
    started ran the edited code under run ids (and a status) naming the notebook as it was."""
    import subprocess
    import sys

    from test_sweep import _wait_for

    sweep_file.write_text(yaml.safe_dump({"name": "t", "notebook": "nb.ipynb", "parameters": {"sleep_s": 3.0}, "grid": {"x": [1, 2]}}))
    config = sweep.load_sweep(sweep_file)
    runs, before = sweep.plan(config), sweep.notebook_fingerprint(config)
    proc = subprocess.Popen([sys.executable, "-m", "vlm_lab.cli", "sweep", str(sweep_file), "--quiet"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    _wait_for(lambda: runs[0].status()["state"] == "running", proc, "the first run starting")
    _edit_notebook(tmp_path / "nb.ipynb", lambda nb: setattr(nb.cells[2], "source", nb.cells[2].source.replace("x * s / 100", "x * s / 50")))
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert [r.status()["notebook_fingerprint"] for r in runs] == [before, before]
    summary = pd.read_csv(tmp_path / "runs" / "t" / "summary.csv")
    assert list(summary["best_accuracy"]) == [0.1, 0.2]  # both made by the notebook their ids name
    assert sweep.plan(sweep.load_sweep(sweep_file))[0].run_id != runs[0].run_id  # the edit runs next time


def test_a_long_multi_line_error_is_one_short_line_in_the_log_and_the_summary(sweep_file, tmp_path, capsys):
    """A cron log read the next morning: an exception message of several lines (transformers, pydantic)
    or thousands of characters (a CUDA OOM with its hints, a KeyError listing columns) broke the run's
    FAILED line over several log lines and pushed the notebook to read to the end of a 3,000-character
    line. The log, summary.md and summary.csv get one short line; status.json keeps the whole message.
    The line keeps the message's end, where the fix usually is: it was cut at 300 characters, fix and all."""
    fix = "checkpoints/shapes holds no checkpoint yet: run `make checkpoints` (about 2 minutes on a CPU), then this sweep again"
    message = "first line of the problem\nsecond  line\n" + "y" * 3000 + "\n" + fix
    _edit_notebook(tmp_path / "nb.ipynb", lambda nb: setattr(nb.cells[3], "source", f"raise ValueError({message!r})"))

    assert main(["sweep", str(sweep_file), "--jobs", "1"]) == 1

    captured = capsys.readouterr()
    log = (captured.out + captured.err).splitlines()
    assert all(len(line) < 600 for line in log), max(log, key=len)[:200]
    failed = [line for line in log if line.lstrip().startswith("FAILED") or "] failed " in line]
    assert len(failed) == 4, log  # each of the 2 runs: as it ends (timed), and in the final report
    for line in failed:
        assert "cell [4]: ValueError: first line of the problem second line yyy" in line and "..." in line, line
        assert f"yyy ... {fix}" in line, line
    report = [line for line in failed if line.lstrip().startswith("FAILED")]
    assert len(report) == 2 and all(line.endswith("nb.ipynb)") for line in report), failed  # the report's: which notebook to open
    run = sweep.plan(sweep.load_sweep(sweep_file))[0]
    assert run.status()["error"]["evalue"] == message
    summary = pd.read_csv(tmp_path / "runs" / "t" / "summary.csv")
    assert summary["error"].str.len().max() < 600 and "\n" not in summary["error"][0]
    assert summary["error"][0].endswith(fix) and fix in (tmp_path / "runs" / "t" / "summary.md").read_text()


class _Writes:
    """A stderr that keeps each ``write`` call: what another thread may slip its own text between."""

    def __init__(self) -> None:
        self.chunks: list[str] = []

    def write(self, text: str) -> int:
        self.chunks.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_each_log_line_is_written_whole_so_parallel_runs_never_share_a_line(sweep_file, monkeypatch):
    """With --jobs 2 two runs start at once: print() wrote each line's text and its newline in two
    writes, and the cron log read 'started strategy=greedy,245d5d832026-...+00:00 started
    strategy=nucleus-0.9,e0fac0c5' followed by an empty line."""
    from tqdm import tqdm

    config = sweep.load_sweep(sweep_file)
    (run, _) = sweep.plan(config)
    writes = _Writes()
    monkeypatch.setattr("sys.stderr", writes)
    tally = sweep._Tally(2, skipped=[], bar=tqdm(disable=True), log=True)
    tally.started(run.run_id)
    tally.finished({"run_id": run.run_id, "state": "completed", "duration_s": 1.0})
    assert len(writes.chunks) == 2, writes.chunks
    assert all(chunk.endswith("\n") and chunk.count("\n") == 1 for chunk in writes.chunks), writes.chunks
    assert f"started {run.run_id}\n" in writes.chunks[0] and f"[1/2] completed {run.run_id} (1.0 s)\n" in writes.chunks[1]


def test_a_copied_sweep_file_that_kept_the_name_is_told_its_runs_leave_the_summary(sweep_file, tmp_path, capsys):
    """The usual way to start an ablation is to copy a sweep file; one that kept `name:` over the same
    notebook shared the folder silently: each night the summary and notebook 04 showed only whichever
    file ran last. The note now names the runs left out and the fix; a grid that only grew says nothing."""
    assert sweep.run_sweep(sweep.load_sweep(sweep_file), progress=False).ok  # grid x: [1, 2]
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump({"name": "t", "notebook": "nb.ipynb", "grid": {"x": [3]}}))
    note = sweep.run_sweep(sweep.load_sweep(copy), progress=False, dry_run=True).note
    left = sorted(r.run_id for r in sweep.plan(sweep.load_sweep(sweep_file)))
    assert note.startswith(f"sweep 't' last ran 2 run(s) that this grid and parameters leave out ({', '.join(left)})"), note
    assert "out of the summary" in note and "if another sweep file uses the same name:, give each its own" in note
    assert main(["sweep", str(copy), "--dry-run"]) == 0
    assert note in capsys.readouterr().out

    grown = tmp_path / "grown.yaml"
    grown.write_text(yaml.safe_dump({"name": "t", "notebook": "nb.ipynb", "grid": {"x": [1, 2, 3]}}))
    assert sweep.run_sweep(sweep.load_sweep(grown), progress=False, dry_run=True).note == ""


def test_what_a_kernel_prints_itself_goes_to_its_runs_kernel_log_not_the_sweeps_log(sweep_file, tmp_path, capfd):
    """ipykernel's own log and output written to the kernel's file descriptors landed in the cron
    log, unattributed and interleaved across --jobs (and jupyter_client's SIGINT-first shutdown
    made ipykernel log 'ERROR | KeyboardInterrupt caught in kernel.' after runs nobody interrupted)."""
    said = """\
import os
if not os.path.exists("quiet"):
    os.write(2, b"fd-2 of x=%d\\n" % x)
    get_ipython().kernel.log.error("kernel log of x=%d", x)"""
    _edit_notebook(tmp_path / "nb.ipynb", lambda nb: nb.cells.append(nbformat.v4.new_code_cell(said)))
    assert main(["sweep", str(sweep_file), "--jobs", "2"]) == 0
    out, err = capfd.readouterr()
    assert "x=1" in err and "fd-2" not in out + err and "kernel log" not in out + err, err  # the sweep's lines only
    runs = sweep.plan(sweep.load_sweep(sweep_file))
    for run in runs:
        text = (run.dir / sweep.KERNEL_LOG).read_text()
        assert f"fd-2 of x={run.varied['x']}\n" in text and f"ERROR | kernel log of x={run.varied['x']}\n" in text, text
    # Executed again, by a kernel that prints nothing: no kernel.log (the earlier execution's is not
    # kept, and an empty one is removed). A loaded machine can make ipykernel itself say something at
    # start or shutdown (CI saw it once): then the log holds that, and still nothing of the earlier run.
    (tmp_path / "quiet").touch()
    status = json.loads((runs[0].dir / sweep.STATUS_FILE).read_text())
    (runs[0].dir / sweep.STATUS_FILE).write_text(json.dumps(status | {"state": "failed"}))
    assert main(["sweep", str(sweep_file), "--quiet"]) == 0
    kernel_log = runs[0].dir / sweep.KERNEL_LOG
    said = kernel_log.read_text() if kernel_log.exists() else None
    assert runs[0].completed and (said is None or (said.strip() and "of x=1" not in said)), said
    if said:  # shown in the warnings summary: what ipykernel says under load, in case it is ever ours to fix
        warnings.warn(f"the quiet kernel said: {said!r}", stacklevel=1)


def test_a_write_error_says_what_this_invocation_got_done(sweep_file, tmp_path):
    """Under cron with --quiet the SweepWriteError line is all the log has of the night: it said the
    sweep stopped, not whether anything completed before."""
    import resource

    sweep_file.write_text(yaml.safe_dump({"name": "t", "notebook": "nb.ipynb", "grid": {"x": [1, 2, 3, 4]}}))
    big = "print('y' * 50_000 if x >= 3 else '')"  # runs 3 and 4 write a notebook past the file-size limit
    _edit_notebook(tmp_path / "nb.ipynb", lambda nb: nb.cells.append(nbformat.v4.new_code_cell(big)))
    proc = subprocess.run(
        [sys.executable, "-m", "vlm_lab.cli", "sweep", str(sweep_file), "--jobs", "1", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000)),
    )  # fmt: skip
    assert proc.returncode == 74, proc.stdout + proc.stderr
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert error.endswith("(this invocation: 2 completed, 0 failed; 2 left to run)"), error


def test_runs_of_an_edited_notebook_are_told_apart_in_wandb_by_its_fingerprint_not_by_their_names(sweep_file, tmp_path):
    """After an edit the new runs had the same W&B group, tags and names as the earlier notebook's: W&B charts
    mixed two notebook versions and nothing told them apart. A notebook declaring ``wandb_notebook`` gets the
    8-hex fingerprint of the code it runs (for a W&B tag or config key); names and tags stay the variant's, so
    a run re-run with an unchanged notebook keeps its name."""

    def declare(nb):
        nb.cells[1].source += 'wandb_notebook: str = ""  # set by the sweep\n'

    _edit_notebook(tmp_path / "nb.ipynb", declare)
    assert sweep.run_sweep(sweep.load_sweep(sweep_file), progress=False).ok
    old = sweep.plan(sweep.load_sweep(sweep_file))
    _edit_notebook(tmp_path / "nb.ipynb", lambda nb: nb.cells.append(nbformat.v4.new_code_cell("edited = True")))
    assert sweep.run_sweep(sweep.load_sweep(sweep_file), progress=False).ok
    new = sweep.plan(sweep.load_sweep(sweep_file))

    def passed(run):
        params = json.loads((run.dir / "params.json").read_text())
        return params["wandb_notebook"], params["wandb_group"], params["wandb_tags"]

    for before, after in zip(old, new):
        assert passed(before)[0] == before.status()["notebook_fingerprint"][:8]
        assert passed(after)[0] == after.status()["notebook_fingerprint"][:8] != passed(before)[0]
        assert passed(after)[1:] == passed(before)[1:] == ("t", f"x={after.varied['x']}")
    with pytest.raises(Exception, match="wandb_notebook are set by the sweep"):
        sweep_file.write_text(yaml.safe_dump({"name": "t", "notebook": "nb.ipynb", "grid": {"wandb_notebook": ["a"]}}))
        sweep.load_sweep(sweep_file)


@pytest.mark.slow
def test_notebook_02_resumed_keeps_its_wandb_run_and_edited_makes_a_new_one_told_apart(tiny_checkpoints, tmp_path, monkeypatch):
    """What W&B shows for notebook 02's sweep runs: a run executed again with the same notebook (after a kill) logs
    into its W&B run, under the same name and group; a run of the edited notebook is a new W&B run (never the old
    one's id, whose results came from other code), with the variant's name and group and its own ``notebook=`` tag
    and ``wandb_notebook`` config key, which is how W&B tells the two versions apart."""
    import shutil

    from vlm_lab import offline_runs
    from vlm_lab.config import SweepConfig
    from test_sweep import ROOT

    for name, value in tracking.local_env(tmp_path / "wandb-home").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.chdir(tmp_path)
    notebook = tmp_path / "02.ipynb"
    shutil.copy(ROOT / "notebooks" / "02_compare_checkpoints.ipynb", notebook)
    config = SweepConfig(
        name="nb02", notebook=str(notebook), runs_dir=str(tmp_path / "runs"), grid={"strategy": ["greedy"]},
        parameters={"checkpoints": str(tiny_checkpoints[-1]), "num_samples": 4, "device": "cpu", "max_new_tokens": 4},
    )  # fmt: skip

    def wandb_runs():
        return offline_runs.latest_runs(offline_runs.read_offline_run(p) for p in offline_runs.find_offline_runs(tmp_path / "wandb-home"))

    assert sweep.run_sweep(config, progress=False).ok
    (point,) = sweep.plan(config)
    first = point.status()
    (run,) = wandb_runs()
    fp8 = first["notebook_fingerprint"][:8]
    assert (run.id, run.name, run.group) == (first["wandb_id"], "strategy=greedy", "nb02")
    assert run.tags == ("strategy=greedy", f"notebook={fp8}") and run.config["wandb_notebook"] == fp8

    # Killed mid-run (status left "running", its lock free): the next invocation runs it again, into the same W&B run.
    sweep._write_json(point.dir / sweep.STATUS_FILE, {**first, "state": "running"})
    assert sweep.run_sweep(config, progress=False).ran == (point.run_id,)
    (resumed,) = wandb_runs()
    assert (resumed.id, resumed.name, resumed.tags) == (run.id, run.name, run.tags) and len(resumed.earlier) == 1

    def edit(nb):
        nb.cells.append(nbformat.v4.new_code_cell("print('edited')"))

    _edit_notebook(notebook, edit)
    assert sweep.run_sweep(config, progress=False).ok
    (edited_point,) = sweep.plan(config)
    edited = edited_point.status()
    assert edited_point.run_id != point.run_id and edited["wandb_id"] != first["wandb_id"]
    new = {r.id: r for r in wandb_runs()}
    assert set(new) == {first["wandb_id"], edited["wandb_id"]}
    after = new[edited["wandb_id"]]
    new8 = edited["notebook_fingerprint"][:8]
    assert new8 != fp8 and (after.name, after.group) == ("strategy=greedy", "nb02") and not after.earlier
    assert after.tags == ("strategy=greedy", f"notebook={new8}") and after.config["wandb_notebook"] == new8
    assert new[first["wandb_id"]].tags == run.tags  # the old notebook's run is left as it was
