"""A checkpoint's own generation_config.json never changes how a comparison decodes, and what it set is said.

``model.generate`` merges the checkpoint's generation config into every call; real hub checkpoints ship
repetition penalties, n-gram bans and minimum lengths there. On the tiny checkpoint-1000 a copy with such a
file (same weights) answered differently under every strategy before; now it answers as the original does.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from vlm_lab import data, generation, models
from vlm_lab.compare import ComparisonResult, compare, warn_flagged_outputs
from vlm_lab.config import CompareConfig, GenerationConfig
from vlm_lab.generation_settings import GenerationSettingsWarning, decoding_kwargs, set_aside
from vlm_lab.result_cache import generation_key

# each changes checkpoint-1000's answers: the n-gram ban and the minimum length under every strategy, the
# penalty under sampling (measured); all three are settings hub checkpoints ship
SETTINGS = {"no_repeat_ngram_size": 1, "min_new_tokens": 6, "repetition_penalty": 5.0}


def _with_settings(source: Path, folder: Path, settings: dict) -> Path:
    shutil.copytree(source, folder)
    path = folder / "generation_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | settings))
    return folder


@pytest.fixture(scope="module")
def settled(tiny_checkpoints, tmp_path_factory) -> Path:
    """checkpoint-1000 with SETTINGS in its generation_config.json: the same weights."""
    return _with_settings(tiny_checkpoints[-1], tmp_path_factory.mktemp("settled") / "with-settings", SETTINGS)


@pytest.fixture(scope="module")
def samples():
    return data.load_samples("shapes:val:12")


@pytest.fixture(scope="module")
def loaded(tiny_checkpoints, settled):
    return {"plain": models.load_model(tiny_checkpoints[-1], device="cpu"), "settled": models.load_model(settled, device="cpu")}


def _texts(outs):
    return [(o.sample_id, o.text, o.new_tokens, o.truncated) for o in outs]


@pytest.mark.parametrize("strategy", ["greedy", "beam(3)", "nucleus(0.9)", "temperature(1.5)"])
def test_the_checkpoints_own_settings_do_not_change_its_answers(loaded, samples, strategy):
    config = GenerationConfig(strategy=strategy, batch_size=12, seed=1)
    assert _texts(generation.generate(loaded["settled"], samples, config)) == _texts(generation.generate(loaded["plain"], samples, config))


def test_greedy_at_batch_size_n_still_equals_batch_size_1(loaded, samples):
    one = generation.generate(loaded["settled"], samples, GenerationConfig(batch_size=1))
    assert _texts(generation.generate(loaded["settled"], samples, GenerationConfig(batch_size=12))) == _texts(one)


def test_checkpoint_generation_decodes_with_them(loaded, samples):
    """The opt-in: the strategy's own settings, the checkpoint's for the rest (model.generate's default)."""
    config = GenerationConfig(checkpoint_generation=True, batch_size=12)
    own = generation.generate(loaded["settled"], samples, config)
    assert all(o.new_tokens >= 6 for o in own)  # its min_new_tokens applied
    assert _texts(own) != _texts(generation.generate(loaded["settled"], samples, GenerationConfig(batch_size=12)))
    assert _texts(generation.generate(loaded["plain"], samples, config)) == _texts(generation.generate(loaded["plain"], samples, GenerationConfig(batch_size=12)))


def test_set_aside_names_what_the_checkpoint_set(loaded):
    kwargs = GenerationConfig().generate_kwargs()
    assert set_aside(loaded["settled"].model.generation_config, kwargs) == SETTINGS
    # the tiny checkpoints' own do_sample=False and max_new_tokens=8: nothing a greedy comparison sets aside
    assert set_aside(loaded["plain"].model.generation_config, kwargs) == {}
    assert set_aside(loaded["plain"].model.generation_config, GenerationConfig(max_new_tokens=3).generate_kwargs()) == {}
    assert set_aside(loaded["settled"].model.generation_config, kwargs, checkpoint_generation=True) == {}


def test_settings_that_change_what_generate_returns_are_set_aside(tiny_checkpoints, tmp_path, samples):
    """return_dict_in_generate in a checkpoint's config made generate return a dict: reading its tokens crashed."""
    path = _with_settings(tiny_checkpoints[-1], tmp_path / "dict", {"return_dict_in_generate": True, "output_scores": True})
    outs = generation.generate(models.load_model(path, device="cpu"), samples[:3], GenerationConfig())
    assert [o.text for o in outs] == ["red", "triangle", outs[2].text] and outs[2].text


def test_the_cache_key_follows_the_opt_in():
    gen = GenerationConfig()
    assert generation_key(gen, dtype="float32", device_type="cpu") != generation_key(
        gen.replace(checkpoint_generation=True), dtype="float32", device_type="cpu")


def test_compare_says_what_each_checkpoint_set_aside(tiny_checkpoints, settled, tmp_path):
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[-1]), str(settled)), data="shapes:val:6", batch_size=3, device="cpu",
                           output_dir=str(tmp_path / "out"))
    for run in ("fresh", "cached"):
        with pytest.warns(GenerationSettingsWarning) as said:
            result = compare(config, progress=False)
        (message,) = [str(w.message) for w in said if w.category is GenerationSettingsWarning]
        plain, named = result.checkpoints  # a folder not named checkpoint-N: named by its path
        assert message.startswith(f"{named}: ") and "min_new_tokens=6" in message and "repetition_penalty=5.0" in message
        assert "checkpoint_generation=True" in message
        aside = {s["checkpoint"]: s["generation_set_aside"] for s in result.summary}
        assert aside == {plain: {}, named: SETTINGS}, run
        outputs = [[row["outputs"][name]["output"] for name in result.checkpoints] for row in result.rows]
        assert all(a == b for a, b in outputs)  # same weights, same strategy: same answers
    assert result.summary[1]["from_cache"] == 6
    assert "set aside: min_new_tokens=6, no_repeat_ngram_size=1, repetition_penalty=5.0" in result.html()  # its notes
    saved = ComparisonResult.load(tmp_path / "out")
    assert saved.summary[1]["generation_set_aside"] == SETTINGS
    with pytest.warns(GenerationSettingsWarning) as said:  # vlm-lab show says it again
        warn_flagged_outputs(saved)
    assert [str(w.message) for w in said if w.category is GenerationSettingsWarning] == [message]


def test_compare_with_checkpoint_generation_is_cached_apart(tiny_checkpoints, settled, tmp_path):
    """The default run's cached answers are never served to a run that decodes with the checkpoint's settings."""
    base = dict(checkpoints=(str(settled),), data="shapes:val:6", batch_size=3, device="cpu", output_dir=str(tmp_path / "out"))
    with pytest.warns(GenerationSettingsWarning):
        plain = compare(CompareConfig(**base), progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GenerationSettingsWarning)  # nothing set aside: nothing said
        own = compare(CompareConfig(**base, checkpoint_generation=True), progress=False)
    assert own.summary[0]["from_cache"] == 0 and own.summary[0]["generation_set_aside"] == {}
    (name,) = own.checkpoints
    assert [r["outputs"][name]["new_tokens"] for r in own.rows] != [r["outputs"][name]["new_tokens"] for r in plain.rows]
    assert own.config["checkpoint_generation"] is True


def test_the_command_line_says_it_in_one_line_and_takes_the_opt_in(settled, tmp_path):
    def compare_cli(*flags):
        return subprocess.run([sys.executable, "-m", "vlm_lab.cli", "compare", str(settled), "--data", "shapes:val:3", "--device", "cpu",
                               "--out", str(tmp_path / "cmp"), "--quiet", "--json", *flags], capture_output=True, text=True, timeout=600)

    r = compare_cli()
    assert r.returncode == 0, r.stderr
    (line,) = [line for line in r.stderr.splitlines() if line.strip()]
    assert line.startswith(f"warning: {settled}: its generation config sets min_new_tokens=6, no_repeat_ngram_size=1, "
                           "repetition_penalty=5.0; set aside") and "--checkpoint-generation" in line
    assert json.loads(r.stdout)[0]["generation_set_aside"] == SETTINGS
    r = compare_cli("--checkpoint-generation")
    assert r.returncode == 0, r.stderr
    assert "its generation config sets" not in r.stderr
    assert json.loads(r.stdout)[0]["generation_set_aside"] == {}
    assert all(o["new_tokens"] >= 6 for o in map(json.loads, (tmp_path / "cmp" / "results.jsonl").read_text().splitlines())
               for o in o["outputs"].values())


@pytest.mark.parametrize("setting", [{"min_p": 0.9}, {"typical_p": 0.3}, {"epsilon_cutoff": 0.3}, {"eta_cutoff": 0.99}, {"top_h": 0.5}],
                         ids=lambda s: next(iter(s)))
def test_sampling_sets_aside_the_checkpoints_own_warpers(tiny_checkpoints, samples, setting):
    """Sampling draws through generation.seeded_sampling, which rebuilds the warpers itself: each of these values
    changes checkpoint-250's draws when applied (seen: every case failed before; typical_p=0.8 and eta_cutoff=0.5
    did not change them)."""
    model = models.load_model(tiny_checkpoints[1], device="cpu")
    config = GenerationConfig(strategy="temperature(1.5)", batch_size=6, seed=3, max_new_tokens=8)
    plain = generation.generate_batch(model, samples[:6], config)
    for k, v in setting.items():
        setattr(model.model.generation_config, k, v)
    assert _texts(generation.generate_batch(model, samples[:6], config)) == _texts(plain)
    assert set_aside(model.model.generation_config, config.generate_kwargs()) == setting


def test_the_space_decodes_every_checkpoint_alike_and_logs_what_it_set_aside(tiny_checkpoints, settled, samples, caplog):
    import logging

    from vlm_lab.space_service import ComparisonService
    from vlm_lab.space_settings import SpaceSettings

    service = ComparisonService(SpaceSettings(checkpoints=(str(tiny_checkpoints[-1]), str(settled)), device="cpu"))
    plain, named = service.labels
    with caplog.at_level(logging.INFO, logger="vlm_lab.space"):
        for sample in samples[:3]:
            for strategy in ("greedy", "beam(2)", "nucleus(0.9)"):
                a, b = service.compare(sample.image, sample.prompt, [plain, named], strategy, 8)
                assert (a.text, a.new_tokens) == (b.text, b.new_tokens), strategy
        batch = service.answer_batch([s.image for s in samples[:3]] * 2, [s.prompt for s in samples[:3]] * 2, [plain] * 3 + [named] * 3)
        assert [x.text for x in batch[:3]] == [x.text for x in batch[3:]]
    said = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"{named}: its generation config sets min_new_tokens=6"), said  # once per checkpoint


def _tiny_bart(forced_bos: int | None):
    """An encoder-decoder (BART, as Florence-2's language model and mBART are), random, with a generation config of its
    own: decoder start 2, and ``forced_bos`` as the first answer token (mBART's target language, Florence-2's <s>)."""
    import torch
    from transformers import BartConfig, BartForConditionalGeneration
    from transformers import GenerationConfig as HFGenerationConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BartForConditionalGeneration(BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                                                        max_position_embeddings=32)).eval()
    model.generation_config = HFGenerationConfig(decoder_start_token_id=2, eos_token_id=2, pad_token_id=1, bos_token_id=0,
                                                 forced_bos_token_id=forced_bos)
    return model


def test_an_encoder_decoders_forced_first_token_is_kept():
    """forced_bos_token_id forces the token after the decoder start (transformers' ForcedBOSTokenLogitsProcessor fires at
    length 1 only: inert for a decoder-only model's prompt); an encoder-decoder decodes wrongly without it, so it is
    kept, like decoder_start_token_id, and not said to be set aside."""
    import torch

    inputs = torch.tensor([[0, 5, 9, 13, 2]])
    kwargs = GenerationConfig(max_new_tokens=4).generate_kwargs()
    unforced = _tiny_bart(None).generate(inputs, **decoding_kwargs(_tiny_bart(None).generation_config, kwargs))
    forced = next(t for t in (7, 8) if t != int(unforced[0, 1]))  # a first token the weights would not choose
    model = _tiny_bart(forced)
    out = model.generate(inputs, **decoding_kwargs(model.generation_config, kwargs))
    assert out[0, :2].tolist() == [2, forced]
    assert set_aside(model.generation_config, kwargs) == {}


def test_forced_eos_is_set_aside():
    """forced_eos_token_id puts the end token at max_length's last step: a length policy, not which token is which.
    Applied, an answer cut off at max_new_tokens would end in eos and not read as truncated."""
    model = _tiny_bart(None)
    model.generation_config.forced_eos_token_id = 2
    kwargs = GenerationConfig(max_new_tokens=4).generate_kwargs()
    assert set_aside(model.generation_config, kwargs) == {"forced_eos_token_id": 2}
    assert decoding_kwargs(model.generation_config, kwargs)["forced_eos_token_id"] is None


class _Said(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record) -> None:
        self.messages.append(record.getMessage())


BOTH_LENGTHS = "Both `max_new_tokens`"


def test_a_checkpoints_max_length_is_not_logged_on_every_batch(tiny_checkpoints, samples, tmp_path):
    """transformers logs 'Both `max_new_tokens` ... and `max_length` ... seem to have been set' on every generate call
    when the checkpoint's generation config sets max_length; we always pass max_new_tokens: once per batch it was noise.
    Only our calls are quiet: the user's own generate call still says it, and other warnings pass."""
    loaded = models.load_model(_with_settings(tiny_checkpoints[-1], tmp_path / "long", {"max_length": 50}), device="cpu")
    logger = logging.getLogger("transformers.generation.utils")
    said = _Said()
    logger.addHandler(said)
    hook = loaded.model.register_forward_pre_hook(lambda *_: logger.warning("another warning"))
    try:
        outs = generation.generate(loaded, samples[:4], GenerationConfig(batch_size=2))
        assert [o.text for o in outs] == [o.text for o in generation.generate(models.load_model(tiny_checkpoints[-1], device="cpu"), samples[:4],
                                                                                  GenerationConfig(batch_size=2))]
        assert "another warning" in said.messages
        assert not [m for m in said.messages if m.startswith(BOTH_LENGTHS)], said.messages
        hook.remove()
        loaded.model.generate(**generation.encode_batch(loaded, samples[:1]), max_new_tokens=2)
        assert [m for m in said.messages if m.startswith(BOTH_LENGTHS)]
    finally:
        hook.remove()
        logger.removeHandler(said)


def test_a_run_killed_after_its_last_batch_still_says_what_it_set_aside(settled, tmp_path):
    """Killed after its last batch was cached but before the run's end record: the re-run is served from the cache
    and loads no model, yet still knows what the checkpoint set (recorded before the first batch ran)."""
    out = tmp_path / "out"
    script = (
        "import os\n"
        "from vlm_lab.compare import compare\n"
        "from vlm_lab.config import CompareConfig\n"
        f"config = CompareConfig(checkpoints=({str(settled)!r},), data='shapes:val:6', batch_size=3, device='cpu', output_dir={str(out)!r})\n"
        "compare(config, progress=False, on_batch=lambda e: e.batch == e.num_batches - 1 and os._exit(7))\n"
    )
    assert subprocess.run([sys.executable, "-c", script], timeout=600).returncode == 7
    with pytest.warns(GenerationSettingsWarning, match="min_new_tokens=6"):
        result = compare(CompareConfig(checkpoints=(str(settled),), data="shapes:val:6", batch_size=3, device="cpu", output_dir=str(out)),
                         progress=False)
    assert result.summary[0]["from_cache"] == 6 and result.summary[0]["generation_set_aside"] == SETTINGS
