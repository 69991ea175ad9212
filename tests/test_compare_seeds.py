"""The comparison's seed and strategies, as a user varies them: what changes and what must not."""

from __future__ import annotations

from vlm_lab.compare import compare
from vlm_lab.config import CompareConfig
from vlm_lab.model_cache import ModelCache


def _run(tmp_path, checkpoint, name: str, **kw):
    config = CompareConfig(checkpoints=(str(checkpoint),), data="shapes:val:6", batch_size=3, device="cpu",
                           output_dir=str(tmp_path / name), **kw)
    return compare(config, progress=False, cache=ModelCache(budget_bytes="1GB"))


def _questions(result):
    return [(r["id"], r["image"], r["prompt"], r["reference"]) for r in result.rows]


def test_the_seed_changes_the_draws_not_the_questions(tmp_path, tiny_checkpoints):
    """--seed 'seeds sampling strategies and the bootstrap CIs': runs over seeds ask the same questions of the same
    images (the sweep report pairs runs by sample id), and only sampled answers change."""
    greedy = [_run(tmp_path, tiny_checkpoints[-1], f"greedy-{seed}", seed=seed) for seed in (0, 5)]
    assert _questions(greedy[0]) == _questions(greedy[1])
    texts = [[r["outputs"]["checkpoint-1000"]["output"] for r in result.rows] for result in greedy]
    assert texts[0] == texts[1]  # greedy draws nothing
    hot = [_run(tmp_path, tiny_checkpoints[0], f"hot-{seed}", seed=seed, strategy="temperature(5)") for seed in (0, 5)]
    assert _questions(hot[0]) == _questions(greedy[0])
    answers = [[r["outputs"]["checkpoint-0"]["output"] for r in result.rows] for result in hot]
    assert answers[0] != answers[1]  # the seed still seeds the draws
