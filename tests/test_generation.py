"""Batched generation on the real tiny checkpoints: batch invariance, strategies, counts."""

from __future__ import annotations

import pytest

from vlm_lab import data, generation, models
from vlm_lab.config import GenerationConfig
from vlm_lab.errors import ConfigError, DataError


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



@pytest.fixture(scope="module")
def untrained(tiny_checkpoints):
    """checkpoint-0: never says its end token, so every answer runs to whatever limit there is."""
    return models.load_model(tiny_checkpoints[0], device="cpu")


def _prompt_tokens(loaded, samples) -> list[int]:
    return [int(n) for n in generation.encode_inputs(loaded.processor, samples)["attention_mask"].sum(dim=1)]


@pytest.mark.parametrize("strategy", ["greedy", "beam(2)", "nucleus(0.9)"])
def test_no_output_runs_past_what_the_checkpoint_can_read(untrained, samples, strategy):
    """The embedded checkpoints read 128 tokens, 64 of them the image: 100 new tokens would run past
    the context (noise with RoPE, an index error with learned position embeddings). Each answer stops
    where its own prompt leaves off, marked at_context, and batching does not change where."""
    lengths = _prompt_tokens(untrained, samples[:3])
    assert len(set(lengths)) == 3 and max(lengths) + 100 > 128  # three prompt lengths, each would overflow
    config = GenerationConfig(strategy=strategy, max_new_tokens=100, batch_size=3, seed=1)
    many = generation.generate(untrained, samples[:3], config)
    ends = [n + o.new_tokens for n, o in zip(lengths, many)]
    assert [o.at_context for o in many] == [o.truncated for o in many] == [end == 128 for end in ends]
    if strategy == "nucleus(0.9)":  # sampling may draw the end token early; never a token past the context
        assert max(ends) <= 128
    else:  # greedy and beam search never end: all stop at the context, the same answers one at a time
        assert ends == [128] * 3
        assert _texts(generation.generate(untrained, samples[:3], config.replace(batch_size=1))) == _texts(many)
    short = generation.generate(untrained, samples[:3], config.replace(max_new_tokens=20))
    assert [(o.new_tokens, o.truncated, o.at_context) for o in short] == [(20, True, False)] * 3  # max_new_tokens cut these


def test_only_the_rows_that_reach_the_context_are_cut_there(untrained, loaded, samples):
    """A batch mixing a long prompt and short ones: the short ones get every token asked for."""
    long = data.Sample(id="long", image=samples[0].image, prompt=" ".join(["What color is the shape?"] * 6))
    batch = [samples[0], long, samples[1]]
    lengths = _prompt_tokens(untrained, batch)
    asked = 128 - lengths[1] + 5  # 5 more than the long prompt leaves
    outs = generation.generate(untrained, batch, GenerationConfig(max_new_tokens=asked, batch_size=3))
    assert [o.new_tokens for o in outs] == [asked, 128 - lengths[1], asked]
    assert [o.at_context for o in outs] == [False, True, False] and all(o.truncated for o in outs)


def test_a_prompt_that_leaves_no_room_is_refused_with_the_counts(loaded, samples):
    long = data.Sample(id="q7", image=samples[0].image, prompt=" ".join(["What color is the shape?"] * 12))
    with pytest.raises(DataError, match=r"sample q7: the image and prompt take \d+ tokens, and checkpoint-1000 reads at most "
                                        r"128 \(the answer included\); shorten the prompt"):
        generation.generate(loaded["checkpoint-1000"], [samples[0], long], GenerationConfig(batch_size=2))


@pytest.mark.parametrize("family, prompt_tokens, wanted", [
    ("llama", 1000, 24),  # decoder-only: the answer shares the 1024 positions with the inputs
    ("llama", 100, 924),
    ("bart", 1000, None),  # encoder-decoder (Florence-2 and the like): the answer has positions of its own
    ("none", 5000, None),  # a config that does not say its context: left as asked
])  # fmt: skip
def test_context_room_by_family(family, prompt_tokens, wanted):
    import torch
    from transformers import BartConfig, LlamaConfig, PretrainedConfig

    config = {"llama": LlamaConfig(max_position_embeddings=1024), "bart": BartConfig(max_position_embeddings=1024),
              "none": PretrainedConfig()}[family]  # fmt: skip
    room = generation.context_room(config, {"attention_mask": torch.ones(2, prompt_tokens, dtype=torch.long)})
    assert room == (None if wanted is None else (1024, [wanted, wanted]))


@pytest.mark.parametrize("row, ended_at", [
    ([11, 12, 2, 0, 0], (3, True)),  # the end token counts; the padding after it does not
    ([11, 0, 12, 2, 0], (4, True)),  # the pad token emitted as content, mid-answer: a token like any
    ([0, 0, 0], (3, False)),  # nothing but pad tokens, no end: cut off at max_new_tokens
    ([11, 12, 13], (3, False)),
    ([2, 2, 2], (1, True)),  # pad == eos (many models): the first one ends it
])  # fmt: skip
def test_new_tokens_count_to_the_first_end_token(row, ended_at):
    import torch

    assert generation._count_new_tokens(torch.tensor(row), {2}) == ended_at


def test_a_model_that_emits_its_pad_token_is_counted_whole(tiny_checkpoints, samples):
    """checkpoint-1000 with the pad token's and 'a''s output rows swapped: it says <pad> where it said 'a'
    ('<pad> blue square' + end). The text skips the pad; the count used to stop there (0 tokens, not cut off)."""
    import torch

    loaded = models.load_model(tiny_checkpoints[-1], device="cpu", dtype="float32")
    tok = loaded.processor.tokenizer
    a, pad = tok.convert_tokens_to_ids("a"), tok.pad_token_id
    head = loaded.model.get_output_embeddings().weight
    with torch.no_grad():
        head[[pad, a]] = head[[a, pad]].clone()
    (describe,) = generation.generate(loaded, [samples[2]], GenerationConfig(max_new_tokens=8))
    assert (describe.text, describe.new_tokens, describe.truncated) == ("blue square", 4, False)
    (cut,) = generation.generate(loaded, [samples[2]], GenerationConfig(max_new_tokens=2))
    assert (cut.text, cut.new_tokens, cut.truncated) == ("blue", 2, True)


SAMPLED = GenerationConfig(strategy="temperature(5)", batch_size=6, seed=7, max_new_tokens=8)  # untrained + hot: every draw shows


def test_sampling_leaves_the_callers_random_stream_alone(loaded, samples):
    """A notebook that seeded torch for its own work gets the same numbers after a sampled run as without one."""
    import torch

    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    generation.generate(loaded["checkpoint-250"], samples[:6], SAMPLED)
    assert torch.equal(torch.rand(4), expected), "a sampled run reset or advanced torch's global generator"


def test_draws_made_elsewhere_during_a_sampled_batch_do_not_change_its_answers(loaded, samples):
    """Other code drawing from torch's global generator while a batch samples (the kernel while the explorer runs
    in its thread, another Space visitor) leaves the batch's answers as they were: they depend on the seed only."""
    import torch

    model = loaded["checkpoint-250"]
    alone = generation.generate(model, samples[:6], SAMPLED)

    def draw_elsewhere(module, args) -> None:  # a draw before every step
        torch.rand(7)

    hook = model.model.register_forward_pre_hook(draw_elsewhere)
    try:
        disturbed = generation.generate(model, samples[:6], SAMPLED)
    finally:
        hook.remove()
    assert _texts(disturbed) == _texts(alone)
    assert len({o.text for o in alone}) > 1  # the draws show in the answers: the check above can fail


@pytest.mark.parametrize("strategy", ["nucleus(0.9)", "temperature(1.5)"])
def test_seeded_sampling_draws_what_transformers_own_sampling_draws_for_the_seed(loaded, samples, strategy):
    """Results saved before sampling got its own generator stay valid: same seed, same answers as
    ``torch.manual_seed(seed)`` then ``model.generate(do_sample=True)``."""
    import torch

    model, config = loaded["checkpoint-250"], GenerationConfig(strategy=strategy, batch_size=6, seed=11, max_new_tokens=8)
    ours = generation.generate_batch(model, samples[:6], config)
    enc = generation.encode_batch(model, samples[:6])
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(config.seed)
        out = model.model.generate(**enc, **config.generate_kwargs(), pad_token_id=model.processor.tokenizer.pad_token_id)
    theirs = model.processor.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert [o.text for o in ours] == [t.strip() for t in theirs]


@pytest.mark.parametrize("setting", [{"min_p": 0.9}, {"typical_p": 0.8}, {"epsilon_cutoff": 0.3},
                                     {"eta_cutoff": 0.5}, {"top_h": 0.5}], ids=lambda s: next(iter(s)))
def test_seeded_sampling_applies_the_checkpoints_own_warpers_as_transformers_does(loaded, samples, setting):
    """``seeded_sampling`` rebuilds the warpers ``generate`` applies when sampling; decoding with the checkpoint's
    own settings (``checkpoint_generation``), a checkpoint whose generation config sets one (min_p, typical_p, ...)
    must sample as transformers' own sampling does. Each setting changes this checkpoint's draws (seen: without its
    warper, each case fails); top_k, top_p and temperature come from the strategy (the test above). By default they
    are set aside: tests/test_generation_settings.py."""
    import torch

    model, config = loaded["checkpoint-250"], GenerationConfig(strategy="temperature(1.5)", batch_size=6, seed=3, max_new_tokens=8,
                                                               checkpoint_generation=True)
    enc = generation.encode_batch(model, samples[:6])
    before = {k: getattr(model.model.generation_config, k, None) for k in setting}
    for k, v in setting.items():
        setattr(model.model.generation_config, k, v)
    try:
        ours = generation.generate_batch(model, samples[:6], config)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(config.seed)
            out = model.model.generate(**enc, **config.generate_kwargs(), pad_token_id=model.processor.tokenizer.pad_token_id)
    finally:
        for k, v in before.items():
            setattr(model.model.generation_config, k, v)
    theirs = model.processor.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert [o.text for o in ours] == [t.strip() for t in theirs]
