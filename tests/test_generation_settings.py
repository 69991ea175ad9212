"""A checkpoint's own generation_config.json never changes how a comparison decodes, and what it set is said.

``model.generate`` merges the checkpoint's generation config into every call; real hub checkpoints ship
repetition penalties, n-gram bans and minimum lengths there. On the tiny checkpoint-1000 a copy with such a
file (same weights) answered differently under every strategy before; now it answers as the original does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from vlm_lab import data, generation, models
from vlm_lab.compare import ComparisonResult, compare, warn_flagged_outputs
from vlm_lab.config import CompareConfig, GenerationConfig
from vlm_lab.generation_settings import GenerationSettingsWarning, set_aside
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
