"""The ablation report's W&B line: which runs to upload, and which of them did not finish."""

from __future__ import annotations

from test_ablation import lay_out_sweep
from test_offline_runs import _cut_before_exit
from wandb_fixtures import wandb_home  # noqa: F401 - fixture

from vlm_lab import tracking
from vlm_lab.ablation import Ablation


def test_the_upload_line_names_the_runs_that_did_not_finish(tmp_path, wandb_home):
    """Notebook 04 read during a sweep offered the run being logged to `wandb sync`, which uploads what is there and
    marks it synced (later syncs skip the rest): the line names the runs whose latest start did not finish."""
    sweep_dir = lay_out_sweep(tmp_path, {"strategy": ["greedy", "nucleus(0.9)"]})
    ablation = Ablation.load(sweep_dir)
    logged = {}
    for index, run_id in enumerate(ablation.runs["run_id"]):
        run = tracking.start_run({"run": run_id}, group=ablation.name, id=f"point{index}", resume="allow")
        logged[run_id] = tracking.finish_run(run)
        tracking.write_record(sweep_dir / run_id, logged[run_id])
    done, running = ablation.runs["run_id"]
    _cut_before_exit(next(logged[running].dir.glob("run-*.wandb")))  # as a live run's log reads: no exit record yet
    line = Ablation.load(sweep_dir).describe_wandb()
    assert line == (
        f"2 run(s) logged to W&B offline, 2 not uploaded yet: wandb sync {logged[done].dir} {logged[running].dir}; "
        f"1 of them did not finish (strategy=nucleus(0.9)): if it is still running (a sweep in progress), upload it "
        "once it ends; `wandb sync` marks what it uploaded and skips it afterwards (`--include-synced` uploads it again)"
    ), line


def test_a_run_whose_wandb_start_logged_nothing_says_so_and_whether_it_can_go(tmp_path, wandb_home):
    """A run whose W&B start was killed as wandb.init ran (its log holds only the 7-byte header) read as
    'unreadable: ...' in wandb_runs, as a damaged log does; and a run whose latest start did so, beside an earlier
    start that finished, read 'finished'. Each now says what `vlm-lab runs` says: it logged nothing, whether it is
    safe to delete (not within offline_runs.SETTLED_S of its last write: a run starting now looks the same), and
    that the earlier start is still to upload."""
    import os
    import shlex
    import time
    from pathlib import Path

    from vlm_lab import offline_runs

    sweep_dir = lay_out_sweep(tmp_path, {"strategy": ["greedy", "nucleus(0.9)", "beam(2)"]})
    ablation = Ablation.load(sweep_dir)
    folders = {}
    for index, run_id in enumerate(ablation.runs["run_id"]):
        run = tracking.start_run({"run": run_id}, group=ablation.name, id=f"point{index}", resume="allow")
        tracked = tracking.finish_run(run)
        tracking.write_record(sweep_dir / run_id, tracked)
        folders[run_id] = tracked.dir
    old, new, resumed = ablation.runs["run_id"]
    for run_id in (old, new):  # killed as W&B started: the header alone
        log = next(folders[run_id].glob("run-*.wandb"))
        log.write_bytes(log.read_bytes()[:7])
    past = time.time() - offline_runs.SETTLED_S - 60
    os.utime(next(folders[old].glob("run-*.wandb")), (past, past))
    again = tracking.start_run({"run": resumed}, group=ablation.name, id="point2", resume="allow")
    again.finish()
    assert offline_runs.wait_until_written(again.settings.sync_dir)
    latest = Path(again.settings.sync_dir)
    log = next(latest.glob("run-*.wandb"))
    log.write_bytes(log.read_bytes()[:7])  # the re-run killed as W&B started; wandb.json still names the first start

    frame = Ablation.load(sweep_dir).wandb_runs().set_index("run_id")
    assert not frame["state"].str.contains("unreadable").any(), list(frame["state"])
    assert frame.at[old, "state"] == f"logged nothing (W&B was stopped as the run started): safe to delete: rm -r {shlex.quote(str(folders[old]))}"
    assert frame.at[new, "state"].startswith("logged nothing (a run starting right now, or one stopped as it started)")
    assert f"if no run is starting, it is safe to delete (rm -r {shlex.quote(str(folders[new]))})" in frame.at[new, "state"]
    assert frame.at[resumed, "state"] == f"incomplete, latest start logged nothing ({latest.name})"  # as `vlm-lab runs`
    assert list(frame["sync_command"]) == ["", "", f"wandb sync {folders[resumed]}"]  # nothing to upload in an empty log
    line = Ablation.load(sweep_dir).describe_wandb()
    assert line.startswith(f"3 run(s) logged to W&B offline, 1 not uploaded yet: wandb sync {folders[resumed]}; 1 of them did not finish"), line
    assert line.endswith("; 2 logged nothing (W&B stopped as they started): nothing to upload, their state says whether to delete"), line
