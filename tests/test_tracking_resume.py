"""A W&B run logged into again with its id (a sweep point re-run after a kill, ``resume="allow"``): each evaluated
checkpoint is drawn once in its charts, and runs logged twice by earlier versions are read back counting each once."""

from __future__ import annotations

from collections import Counter

import pytest
from wandb_fixtures import comparison, wandb_home  # noqa: F401 - fixtures

from vlm_lab import offline_runs, tracking
from vlm_lab.tracking import CHART_METRICS

STEPS = [0, 1000]  # the comparison fixture's checkpoints


def _eval_steps(run: offline_runs.OfflineRun) -> Counter:
    """How often each ``eval/step`` was logged, over every start of the run (what `wandb sync` uploads)."""
    return Counter(row["eval/step"] for row in run.history if "eval/step" in row)


def test_a_resumed_run_draws_each_checkpoint_once(wandb_home, comparison):
    """A sweep point killed after its W&B step and run again logs into the same run: it logged every ``eval/*``
    row again, so after `wandb sync` each checkpoint was two points in the charts (and twice in the history)."""
    result, config = comparison
    first = tracking.log_comparison(result, config, group="abl", tags="x=1", id="point0001", resume="allow")
    again = tracking.log_comparison(result, config, group="abl", tags="x=1", id="point0001", resume="allow")
    assert again.id == first.id and again.dir != first.dir  # offline: one folder per start
    run = offline_runs.read_merged_run(again.dir)
    assert run.earlier == (first.dir,)
    assert _eval_steps(run) == Counter(STEPS), run.history
    assert [row["eval/step"] for row in run.eval_rows()] == STEPS
    assert run.finished and run.metrics()["best/accuracy"] == pytest.approx(max(s["accuracy"] for s in result.summary))


def test_a_resume_draws_the_checkpoints_the_earlier_start_did_not(wandb_home, comparison):
    """A start killed while it logged its rows (only the first checkpoint drawn): the resume draws the rest, once."""
    result, config = comparison
    killed = tracking.start_run(config, group="abl", id="point0002", resume="allow")
    killed.define_metric("eval/step", hidden=True, summary="none")
    killed.define_metric("eval/*", step_metric="eval/step", summary="none")
    killed.log({"eval/step": 0, "eval/accuracy": 0.0})
    killed.finish(exit_code=1)
    assert offline_runs.wait_until_written(killed.settings.sync_dir)
    tracked = tracking.log_comparison(result, config, group="abl", id="point0002", resume="allow")
    assert _eval_steps(offline_runs.read_merged_run(tracked.dir)) == Counter(STEPS)


def test_an_online_resume_reads_the_steps_drawn_from_the_summary_wandb_restores(wandb_home, comparison):
    """Online, a resumed run's earlier history is on the server, not on disk; wandb restores the run's summary on
    resume, and the summary keeps the steps drawn (a hidden ``_`` key, out of ``metrics()`` and `vlm-lab runs`)."""
    from vlm_lab.tracking import EVAL_STEPS_KEY, _log_along_training

    result, config = comparison
    logged = offline_runs.read_offline_run(tracking.log_comparison(result, config, group="abl").dir)
    assert logged.summary[EVAL_STEPS_KEY] == STEPS and EVAL_STEPS_KEY not in logged.metrics()
    resumed = tracking.start_run(config, group="abl")
    resumed.summary[EVAL_STEPS_KEY] = STEPS  # as wandb leaves a resumed online run's summary
    _log_along_training(resumed, result)
    run = offline_runs.read_offline_run(tracking.finish_run(resumed).dir)
    assert _eval_steps(run) == Counter() and run.summary[EVAL_STEPS_KEY] == STEPS


def test_runs_that_drew_a_checkpoint_twice_are_read_counting_it_once(wandb_home):
    """Runs resumed by vlm_lab before each step was drawn once hold every ``eval/*`` row twice: ``eval_rows`` gives
    one row per step, the latest start's (what the run's summary says), so a report over them does not count twice."""
    values = [{0: 0.1, 1000: 0.5}, {0: 0.1, 1000: 0.75}]  # the resume's comparison ended differently
    for accuracy in values:
        run = tracking.start_run({"strategy": "greedy"}, group="old", id="point0003", resume="allow")
        run.define_metric("eval/*", step_metric="eval/step", summary="none")
        for step in STEPS:
            run.log({"eval/step": step, **{f"eval/{m}": accuracy[step] for m in CHART_METRICS[:1]}})
        last = tracking.finish_run(run)
    merged = offline_runs.read_merged_run(last.dir)
    assert _eval_steps(merged) == Counter({0: 2, 1000: 2})  # as written: W&B stores both
    assert [(row["eval/step"], row["eval/accuracy"]) for row in merged.eval_rows()] == [(0, 0.1), (1000, 0.75)]
    # and a resume now draws nothing more
    again = tracking.start_run({"strategy": "greedy"}, group="old", id="point0003", resume="allow")
    from vlm_lab.tracking import _logged_steps

    assert _logged_steps(again) == set(STEPS)
    tracking.finish_run(again)


def test_a_resumed_run_says_to_upload_every_start_of_it(wandb_home, comparison):
    """Notebook 02 printed, and wandb.json kept, `wandb sync <this start's folder>` for a resumed run: the earlier
    start was left out, and synced later on its own it would overwrite the resume's values on W&B."""
    result, config = comparison
    first = tracking.log_comparison(result, config, group="abl", id="point0004", resume="allow")
    assert first.earlier == () and first.sync_command == f"wandb sync {first.dir}"
    again = tracking.log_comparison(result, config, group="abl", id="point0004", resume="allow")
    assert again.earlier == (first.dir,)
    assert again.sync_command == f"wandb sync {first.dir} {again.dir}"  # oldest first, as `vlm-lab runs` says
    assert again.sync_command == offline_runs.read_merged_run(again.dir).sync_command
    assert str(again).endswith(f"(2 starts); upload it with: wandb sync {first.dir} {again.dir}"), str(again)
    assert tracking.read_record(result.output_dir)["sync_command"] == again.sync_command
