"""Offline W&B runs read back from their record logs: one run started several times (resumed)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import wandb
from wandb_fixtures import wandb_home  # noqa: F401 - fixture

from vlm_lab import offline_runs, tracking


def _complete_start() -> offline_runs.OfflineRun:
    """A sweep point's first execution: it logged its comparison and finished."""
    run = tracking.start_run({"strategy": "greedy", "max_new_tokens": 4}, group="abl", tags="strategy=greedy",
                             name="strategy=greedy", id="point0001", resume="allow")  # fmt: skip
    run.summary.update({"best/accuracy": 0.9, "checkpoint-1000/accuracy": 0.9, "checkpoint-0/accuracy": 0.0})
    run.log({"samples": wandb.Table(columns=["prompt", "output"], data=[["What shape?", "circle"]])})
    return offline_runs.read_offline_run(tracking.finish_run(run).dir)


def _cut_before_exit(log: Path) -> None:
    """Leave ``log`` as a killed wandb-core leaves it: a torn tail, no exit record."""
    data = log.read_bytes()
    for end in range(len(data), 0, -1):
        log.write_bytes(data[:end])
        if not any(r.WhichOneof("record_type") == "exit" for r in offline_runs.iter_records(log)):
            return
    raise AssertionError(f"no exit record in {log}")


@pytest.mark.parametrize("how", ["failed", "killed"])
def test_a_resume_that_did_not_finish_keeps_the_metrics_of_the_earlier_start(wandb_home, capsys, how):
    """A sweep point re-run after a failure logs into the same W&B run (same id): a resume that failed
    or was killed before logging hid every metric the earlier, complete start logged. W&B merges the
    starts on `wandb sync` (later values win per key): the reader shows that, and that the latest start
    did not finish."""
    from vlm_lab.cli import main

    first = _complete_start()
    resume = tracking.start_run({"strategy": "greedy", "max_new_tokens": 4, "seed": 1}, group="abl", id="point0001",
                                resume="allow")  # fmt: skip
    resume.summary.update({"checkpoint-0/accuracy": 0.25})  # logged before it died: later value wins
    resume.finish(exit_code=1 if how == "failed" else 0)
    assert offline_runs.wait_until_written(resume.settings.sync_dir)  # wandb-core writes after finish() returns
    if how == "killed":
        _cut_before_exit(next(Path(resume.settings.sync_dir).glob("run-*.wandb")))

    starts = [offline_runs.read_offline_run(f) for f in offline_runs.find_offline_runs(wandb_home)]
    (run,) = offline_runs.latest_runs(starts)
    assert run.dir == Path(resume.settings.sync_dir) and run.earlier == (first.dir,)
    metrics = run.metrics()
    assert metrics["best/accuracy"] == 0.9 and metrics["checkpoint-1000/accuracy"] == 0.9
    assert metrics["checkpoint-0/accuracy"] == 0.25
    assert run.config == {"strategy": "greedy", "max_new_tokens": 4, "seed": 1}
    assert run.name == "strategy=greedy" and run.tags == ("strategy=greedy",)  # the resume set none
    assert run.table("samples") == [{"prompt": "What shape?", "output": "circle"}]  # logged by the earlier start
    state = "failed (exit 1)" if how == "failed" else "incomplete"
    assert run.state == f"{state}, latest of 2 starts"  # the metrics are the merged ones all the same
    assert run.headline() == {"best/accuracy": 0.9}

    assert main(["runs", str(wandb_home)]) == 0
    out = capsys.readouterr().out
    assert "90.0%" in out and ("failed" if how == "failed" else "incomplete") in out, out


def test_a_run_started_once_reads_as_it_was_logged(wandb_home):
    run = _complete_start()
    (latest,) = offline_runs.latest_runs([run])
    assert latest is run and latest.state == "finished" and latest.earlier == ()


def test_a_resume_killed_before_it_wrote_anything_is_not_shown_as_finished(wandb_home, capsys):
    """wandb-core killed as a resume started leaves its log with the header alone: unreadable, so the run's
    readable starts said "finished" though its latest start did not finish."""
    from vlm_lab.cli import main

    first = _complete_start()
    resume = tracking.start_run({"strategy": "greedy"}, group="abl", id="point0001", resume="allow")
    resume.finish()
    assert offline_runs.wait_until_written(resume.settings.sync_dir)
    log = next(Path(resume.settings.sync_dir).glob("run-*.wandb"))
    log.write_bytes(log.read_bytes()[:7])  # the header wandb-core writes first
    assert main(["runs", str(wandb_home)]) == 0
    captured = capsys.readouterr()
    assert f"{resume.settings.sync_dir}: nothing logged" in captured.err  # nothing to upload there
    row = next(line for line in captured.out.splitlines() if "point0001" in line)
    assert f"incomplete, latest start logged nothing ({Path(resume.settings.sync_dir).name})" in row and "finished" not in row
    assert f"wandb sync {first.dir}" in captured.out  # the readable start is still offered for upload



def test_a_run_killed_as_wandb_started_is_said_to_hold_nothing_and_to_be_safe_to_delete(wandb_home, capsys):
    """A sweep run killed while wandb.init ran leaves an offline-run folder whose log holds only its 7-byte header
    (as a wandb.init SIGKILLed once its log appeared leaves it). `vlm-lab runs` called it unreadable, as it calls a
    damaged log, and left the user wondering whether to sync it: it holds nothing to upload, and can go."""
    import shlex

    from vlm_lab.cli import main

    kept = _complete_start()
    killed = kept.dir.parent / "offline-run-20990101_000000-killed01"
    (killed / "logs").mkdir(parents=True)
    (killed / "run-killed01.wandb").write_bytes(next(kept.dir.glob("run-*.wandb")).read_bytes()[:7])  # its header
    assert main(["runs", str(wandb_home)]) == 0
    captured = capsys.readouterr()
    assert f"wandb sync {kept.dir}\n" in captured.out  # the empty one is not offered for upload
    assert "unreadable" not in captured.out + captured.err and "cannot read" not in captured.err
    # Written just now: a run starting at this moment looks the same, and deleting its folder would lose it.
    assert f"{killed}: nothing logged" in captured.err and "a run starting right now" in captured.err
    assert f"if no run is starting, it is safe to delete (rm -r {shlex.quote(str(killed))})" in captured.err
    old = time.time() - offline_runs.SETTLED_S - 1
    os.utime(killed / "run-killed01.wandb", (old, old))
    assert main(["runs", str(wandb_home)]) == 0
    err = capsys.readouterr().err
    assert f"{killed}: nothing logged" in err and "starting" not in err and f"safe to delete: rm -r {shlex.quote(str(killed))}" in err

def test_a_log_damaged_in_the_middle_is_said_to_be_damaged_not_killed(wandb_home, capsys):
    """A byte flipped in a run's log (a bad disk, a copy gone wrong) ended the reading quietly, as a killed run's torn
    tail does: `vlm-lab runs` showed the finished run 'incomplete' and offered it for upload as if nothing were wrong.
    It says where the log is damaged; a torn tail still reads as incomplete."""
    from vlm_lab.cli import main

    run = _complete_start()
    (log,) = run.dir.glob("run-*.wandb")
    original = log.read_bytes()
    data = bytearray(original)
    data[len(data) // 3] ^= 0xFF
    log.write_bytes(bytes(data))
    damaged = offline_runs.read_offline_run(run.dir)
    assert damaged.damaged_at is not None and damaged.damaged_at < len(data) // 3
    assert damaged.state == f"damaged at byte {damaged.damaged_at}: the records after it cannot be read"
    assert main(["runs", str(wandb_home)]) == 0
    assert f"damaged at byte {damaged.damaged_at}" in capsys.readouterr().out

    log.write_bytes(original)
    _cut_before_exit(log)  # a torn tail, as a kill leaves it
    assert offline_runs.read_offline_run(run.dir).state == "incomplete"
