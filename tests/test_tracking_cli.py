"""`vlm-lab runs` when it finds nothing to list: it says where to look instead."""

from __future__ import annotations

from PIL import Image
from wandb_fixtures import comparison, wandb_home  # noqa: F401 - fixtures

from vlm_lab import tracking
from vlm_lab.cli import main


def _interaction(group: str) -> tracking.TrackedRun:
    return tracking.log_interaction(image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c": "a"}, group=group)


def test_a_group_with_no_runs_names_the_groups_there(wandb_home, capsys):
    """`vlm-lab runs --group shapes-ablatoin` (a typo) said only 'no W&B offline runs ... in group': which are there?"""
    for group in ("shapes-ablation", "space", ""):
        _interaction(group)
    assert main(["runs", str(wandb_home), "--group", "shapes-ablatoin"]) == 0
    out = capsys.readouterr().out
    assert out == (f"no W&B offline runs under {wandb_home} in group 'shapes-ablatoin' "
                   "(groups there: shapes-ablation, space; 1 run in no group)\n"), out  # fmt: skip


def test_a_sweep_folder_names_where_its_runs_were_logged(wandb_home, comparison, capsys):
    """`vlm-lab runs runs/shapes-ablation` (the sweep's folder, where its results are) said 'no W&B offline runs':
    the runs are under WANDB_DIR, which each run's wandb.json names."""
    result, config = comparison
    tracked = tracking.log_comparison(result, config, group="abl")
    results = result.output_dir
    assert main(["runs", str(results)]) == 0
    out = capsys.readouterr().out
    assert out == (f"no W&B offline runs under {results}; the results there were logged to W&B offline under "
                   f"{tracked.dir.parent} (their wandb.json says so): vlm-lab runs {tracked.dir.parent}\n"), out  # fmt: skip
    assert main(["runs", str(tracked.dir.parent)]) == 0
    assert tracked.id in capsys.readouterr().out


def test_the_upload_command_warns_that_unfinished_runs_may_still_be_running(wandb_home, capsys):
    """`vlm-lab runs` during a sweep offered the run being logged to `wandb sync`, which uploads what is there and
    marks it synced: the rest of the run is then skipped by later syncs. It says which runs did not finish."""
    from test_offline_runs import _cut_before_exit

    done, running = _interaction("abl"), _interaction("abl")
    _cut_before_exit(next(running.dir.glob("run-*.wandb")))  # as a live run's log reads: no exit record yet
    assert main(["runs", str(wandb_home)]) == 0
    out = capsys.readouterr().out
    assert out.endswith(
        f"\n  1 of them did not finish ({running.id}): if it is still running (a sweep in progress), upload it once it "
        "ends; `wandb sync` marks what it uploaded and skips it afterwards (`--include-synced` uploads it again)\n"
    ), out
    assert done.id not in out.splitlines()[-1]
