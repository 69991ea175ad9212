"""The per-sample tables a logged comparison carries, read back from the offline run (no server, no mocks)."""

from __future__ import annotations

import json
import warnings

import pytest

from wandb_fixtures import comparison, wandb_home  # noqa: F401 - fixtures

from vlm_lab import offline_runs, tracking


@pytest.fixture(scope="module")
def mixed_meta_comparison(tiny_checkpoints, tmp_path_factory):
    """A real comparison on data whose ``meta.difficulty`` is a number on some samples and text on others, as
    hand-labelled data often is (``1``, ``2``, ``"hard"``)."""
    from vlm_lab.compare import compare
    from vlm_lab.config import CompareConfig
    from vlm_lab.data import load_samples, write_jsonl

    folder = tmp_path_factory.mktemp("mixed-meta")
    write_jsonl(load_samples("shapes:val:4"), folder / "data")
    path = folder / "data" / "data.jsonl"
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for i, line in enumerate(lines):
        line.setdefault("meta", {})["difficulty"] = "hard" if i % 2 else i
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[-1]),), data=str(path), device="cpu",
                           output_dir=str(folder / "out"))  # fmt: skip
    return compare(config, progress=False), config


def test_a_meta_key_with_numbers_and_text_is_logged_not_fatal(wandb_home, mixed_meta_comparison):
    # wandb.Table types each column by its first value and refused the row with the other type: the whole
    # comparison went unlogged (no samples table, no results artifact, the run marked failed).
    result, config = mixed_meta_comparison
    with warnings.catch_warnings():
        warnings.simplefilter("error", tracking.TrackingWarning)
        tracked = tracking.log_comparison(result, config, group="mixed", tags="strategy=greedy")
    assert tracked, str(tracked)
    run = offline_runs.read_offline_run(tracked.dir)
    assert run.state == "finished"
    rows = run.table("samples")
    assert [r["difficulty"] for r in rows] == ["0", "hard", "2", "hard"]  # text, as the column's values read
    assert [r["prompt"] for r in rows] == list(result.to_dataframe()["prompt"])
    assert {r["difficulty"] for r in run.table("accuracy_by/difficulty")} == {"0", "2", "hard"}
    assert [a for a in run.artifacts if a.type == "comparison"]


def test_the_samples_table_marks_where_the_checkpoints_disagree(wandb_home, comparison):
    # Without the column, finding the disagreements in W&B's table took an expression over every checkpoint's output.
    result, config = comparison
    tracked = tracking.log_comparison(result, config, group="g")
    rows = offline_runs.read_offline_run(tracked.dir).table("samples")
    disagree = {row["id"] for row in result.disagreements()}
    assert [r["disagree"] for r in rows] == [row["id"] in disagree for row in result.rows]
    assert any(r["disagree"] for r in rows) and list(rows[0])[:5] == ["id", "image", "prompt", "reference", "disagree"]
