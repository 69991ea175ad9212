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
