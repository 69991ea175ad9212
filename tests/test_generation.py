"""Batched generation on the real tiny checkpoints: batch invariance, strategies, counts."""

from __future__ import annotations

import pytest

from vlm_lab import data, generation, models
from vlm_lab.config import GenerationConfig
from vlm_lab.errors import ConfigError


@pytest.fixture(scope="module")
def samples():
    # the three question kinds have different prompt lengths: batches really are left-padded
    return data.load_samples("shapes:val:18")


@pytest.fixture(scope="module")
def loaded(tiny_checkpoints):
    return {p.name: models.load_model(p, device="cpu") for p in (tiny_checkpoints[1], tiny_checkpoints[-1])}


def _texts(outs):
    return [(o.sample_id, o.text, o.new_tokens) for o in outs]


def test_batches_are_left_padded(loaded, samples):
    enc = generation.encode_batch(loaded["checkpoint-1000"], samples[:3])
    mask = enc["attention_mask"]
    assert {int((row == 0).sum()) for row in mask} == {0, 1, 2}  # three prompt lengths
    assert all(int(row[-1]) == 1 for row in mask)  # padding on the left: every row ends with real tokens


@pytest.fixture(scope="module")
def batch_of_one(loaded, samples):
    """Greedy outputs one sample at a time: the reference every batch size must reproduce."""
    return {name: generation.generate(model, samples, GenerationConfig(batch_size=1)) for name, model in loaded.items()}


@pytest.mark.parametrize("name", ["checkpoint-250", "checkpoint-1000"])
@pytest.mark.parametrize("batch_size", [4, 18])
def test_greedy_at_batch_size_n_equals_batch_size_1(loaded, samples, batch_of_one, name, batch_size):
    one = batch_of_one[name]
    many = generation.generate(loaded[name], samples, GenerationConfig(batch_size=batch_size))
    assert _texts(many) == _texts(one)
    assert many[0].batch_size == batch_size and one[0].batch_size == 1


def test_beam_search_runs_and_is_batch_invariant(loaded, samples):
    config = GenerationConfig(strategy="beam(2)", batch_size=1)
    one = generation.generate(loaded["checkpoint-250"], samples[:4], config)
    many = generation.generate(loaded["checkpoint-250"], samples[:4], config.replace(batch_size=4))
    assert _texts(one) == _texts(many)


@pytest.mark.parametrize("strategy", ["nucleus(0.9)", "temperature(1.5)"])
def test_sampling_is_seeded(loaded, samples, strategy):
    config = GenerationConfig(strategy=strategy, batch_size=6, seed=3, max_new_tokens=6)
    model = loaded["checkpoint-250"]
    assert _texts(generation.generate(model, samples, config)) == _texts(generation.generate(model, samples, config))


def test_outputs_latency_and_throughput(loaded, samples):
    outs = generation.generate(loaded["checkpoint-1000"], samples[:6], GenerationConfig(batch_size=3, max_new_tokens=3))
    assert [o.sample_id for o in outs] == [s.id for s in samples[:6]]
    assert all(1 <= o.new_tokens <= 3 and o.latency_s > 0 and o.tokens_per_s > 0 for o in outs)
    assert outs[0].latency_s == outs[2].latency_s != outs[3].latency_s  # one wall time per batch
    describe = outs[2]  # "a <color> <shape>" needs 3 words + eos: cut at max_new_tokens
    assert describe.new_tokens == 3 and len(describe.text.split()) == 3


def test_trained_checkpoint_answers_and_stops_at_eos(loaded, samples):
    outs = generation.generate(loaded["checkpoint-1000"], samples[:3], GenerationConfig())
    assert [o.text for o in outs] == [s.reference for s in samples[:3]]
    assert [o.new_tokens for o in outs] == [len(s.reference.split()) + 1 for s in samples[:3]]  # + the end token


@pytest.mark.parametrize("strategy", ["greedy", "beam(2)"])
def test_an_output_cut_off_at_max_new_tokens_is_marked(loaded, samples, strategy):
    # samples 0-2: color ("red" + eos: 2 tokens), shape (2 tokens), describe ("a red circle" + eos: 4 tokens)
    model = loaded["checkpoint-1000"]
    assert [o.truncated for o in generation.generate(model, samples[:3], GenerationConfig(strategy=strategy))] == [False] * 3
    at_3 = generation.generate(model, samples[:3], GenerationConfig(strategy=strategy, max_new_tokens=3))
    assert [o.truncated for o in at_3] == [False, False, True]  # only the description is cut off
    at_4 = generation.generate(model, samples[:3], GenerationConfig(strategy=strategy, max_new_tokens=4))
    assert at_4[2].new_tokens == 4 and not at_4[2].truncated  # its end token is the 4th: it ended, just in time
    assert all(o.truncated for o in generation.generate(model, samples[:3], GenerationConfig(max_new_tokens=1)))


@pytest.mark.parametrize(
    "strategy, expected",
    [
        ("greedy", {"do_sample": False, "num_beams": 1}),
        ("nucleus(0.9)", {"do_sample": True, "top_p": 0.9}),
        ("temperature(0.7)", {"do_sample": True, "temperature": 0.7}),
        ("beam(4)", {"do_sample": False, "num_beams": 4}),
        ("nucleus(.5)", {"do_sample": True, "top_p": 0.5}),
        ("Temperature( 1e-3 )", {"do_sample": True, "temperature": 0.001}),
    ],
)
def test_generate_kwargs(strategy, expected):
    kwargs = GenerationConfig(strategy=strategy, max_new_tokens=5).generate_kwargs()
    assert kwargs["max_new_tokens"] == 5 and expected.items() <= kwargs.items()


@pytest.mark.parametrize(
    "strategy, problem",
    [
        ("nucleus", "needs a probability"), ("nucleus(1.5)", "needs a probability"), ("beam(2.5)", "whole number"),
        ("greedy(1)", "no argument"), ("topk(5)", "unknown strategy"), ("temperature(-1)", "needs a value > 0"),
        ("nucleus(abc)", "takes a number"), ("temperature(inf)", "finite"),
    ],
)  # fmt: skip
def test_bad_strategy_says_what_is_wrong_and_how_to_write_it(strategy, problem):
    with pytest.raises(ConfigError, match=rf"{problem}.*(e\.g\.|greedy)"):
        GenerationConfig(strategy=strategy)


def test_small_local_checkpoint_loads_without_a_progress_bar(tiny_checkpoints, capfd, monkeypatch):
    from transformers.utils import logging as hf_logging

    models.load_model(tiny_checkpoints[0], device="cpu")
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.set_tqdm_hook(None) is None  # the quieting hook was taken off again

    monkeypatch.setattr(models, "QUIET_LOAD_BYTES", 0)  # as if the weights were large: the bar is back
    models.load_model(tiny_checkpoints[0], device="cpu")
    assert "Loading weights" in capfd.readouterr().err


def test_float16_overflow_is_flagged_not_passed_off_as_an_answer(overflowing_checkpoint, samples):
    full = generation.generate(models.load_model(overflowing_checkpoint, device="cpu", dtype="float32"), samples[:4])
    half = generation.generate(models.load_model(overflowing_checkpoint, device="cpu", dtype="float16"), samples[:4])
    assert [o.nonfinite for o in full] == [False] * 4  # the same weights are fine in float32
    assert [o.nonfinite for o in half] == [True] * 4
    assert [(o.text, o.new_tokens) for o in half] == [("", 1)] * 4  # ended at once, not 8 tokens of noise


@pytest.mark.parametrize("strategy", ["greedy", "nucleus(0.9)", "temperature(0.7)", "beam(3)"])
def test_nonfinite_flags_under_every_strategy(loaded, overflowing_checkpoint, samples, strategy):
    config = GenerationConfig(strategy=strategy, batch_size=4, max_new_tokens=4)
    healthy = generation.generate(loaded["checkpoint-1000"], samples[:4], config)
    broken = generation.generate(models.load_model(overflowing_checkpoint, device="cpu", dtype="float16"), samples[:4], config)
    assert [o.nonfinite for o in healthy] == [False] * 4
    assert [o.nonfinite for o in broken] == [True] * 4  # beam search: several rows per sample, one flag each

