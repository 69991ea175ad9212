"""Hub VLM families whose prompt layout differs from LLaVA's, as tiny random checkpoints.

PaliGemma has no chat template (a plain prompt; its processor places the image);
Gemma 3 and Idefics3 (SmolVLM) take several images per prompt, so a batch's images go one list per
prompt; Idefics3 also splits each image into tiles; Mllama (Llama 3.2 Vision) reads images through
cross-attention, with a mask the processor builds per prompt.
Each must load through the generic path and give the same greedy outputs at every batch size.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vlm_lab import data, generation, models, synthetic_families
from vlm_lab.config import GenerationConfig
from vlm_lab.errors import DataError

FAMILIES = {"paligemma": synthetic_families.build_paligemma, "gemma3": synthetic_families.build_gemma3, "idefics3": synthetic_families.build_idefics3,
            "mllama": synthetic_families.build_mllama}


@pytest.fixture(scope="module")
def samples():
    return data.load_samples("shapes:val:12")  # three prompt lengths: batches are really left-padded


@pytest.fixture(scope="module")
def family(request, tmp_path_factory):
    return FAMILIES[request.param](tmp_path_factory.mktemp(request.param) / "model")


@pytest.fixture(scope="module")
def loaded(family):
    return models.load_model(family, device="cpu")


def _texts(outs):
    return [(o.sample_id, o.text, o.new_tokens) for o in outs]


@pytest.mark.parametrize("family", sorted(FAMILIES), indirect=True)
def test_greedy_at_batch_size_n_equals_batch_size_1(loaded, samples):
    one = generation.generate(loaded, samples, GenerationConfig(batch_size=1))
    many = generation.generate(loaded, samples, GenerationConfig(batch_size=6))
    assert _texts(many) == _texts(one)
    assert any(o.new_tokens > 0 for o in one) and many[0].batch_size == 6  # (a random model may emit its pad token first)


@pytest.mark.parametrize("family", ["paligemma"], indirect=True)
def test_a_processor_without_chat_template_gets_the_prompt_as_written(loaded, samples, caplog):
    assert not loaded.processor.chat_template
    ids = generation.encode_inputs(loaded.processor, samples[:1])["input_ids"][0].tolist()
    tok, image_id = loaded.processor.tokenizer, loaded.processor.image_token_id
    assert ids.count(image_id) == loaded.processor.image_seq_length  # the processor placed the image
    layout = tok(f"{tok.bos_token}{samples[0].prompt}\n", add_special_tokens=False)["input_ids"]
    assert [i for i in ids if i != image_id] == layout  # PaliGemma's layout: <image>... <bos> prompt \n, no chat turn
    with caplog.at_level("WARNING"):
        generation.generate(loaded, samples, GenerationConfig(batch_size=6))
    assert not [r for r in caplog.records if "PaliGemmaProcessor" in r.getMessage()]  # plain prompts are meant: no notice per batch


@pytest.mark.parametrize("family", ["paligemma"], indirect=True)
def test_a_prompt_holding_the_image_token_is_refused_for_a_plain_prompt_processor_too(loaded, samples):
    bad = [data.Sample(id="q1", image=samples[0].image, prompt="<image>caption en")]
    with pytest.raises(DataError, match=r"sample q1: the prompt holds the image token '<image>'; the processor places the image itself"):
        generation.encode_inputs(loaded.processor, bad)


@pytest.mark.parametrize("family", ["gemma3"], indirect=True)
def test_each_prompt_gets_its_own_image(loaded, samples):
    enc = generation.encode_inputs(loaded.processor, samples[:4])
    per_row = (enc["input_ids"] == loaded.processor.tokenizer.image_token_id).sum(dim=1).tolist()
    assert per_row == [loaded.processor.image_seq_length] * 4  # not all four images given to the first prompt
    assert enc["pixel_values"].shape[0] == 4


def test_the_cli_compares_two_families_side_by_side(tmp_path):
    refs = [str(build(tmp_path / name)) for name, build in FAMILIES.items()]
    proc = subprocess.run([sys.executable, "-m", "vlm_lab.cli", "compare", *refs, "--data", "shapes:val:12", "--batch-size", "4",
                           "--device", "cpu", "--out", str(tmp_path / "cmp"), "--json"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["checkpoint"] for r in rows] == refs and all(r["n_scored"] == 12 for r in rows)
    results = [json.loads(line) for line in (tmp_path / "cmp" / "results.jsonl").read_text().splitlines()]
    assert len(results) == 12 and all(set(r["outputs"]) == set(refs) for r in results)


@pytest.mark.parametrize("family", ["gemma3"], indirect=True)
def test_memory_is_measured_on_a_batch_of_prompts_each_with_its_image(family):
    from vlm_lab.memory_measure import measure

    m = measure(family, dtype="float32", device="cpu", batch_size=3, prompt_tokens=8, max_new_tokens=4)
    assert not m.out_of_memory and m.peak_bytes > 0  # the batch of 3 prompts was encoded and generated


def test_building_a_family_leaves_the_callers_random_stream_alone_and_is_seeded(tmp_path):
    """A test that draws from torch's generator after building one gets the same numbers as without the build."""
    import hashlib

    import torch

    def weights(folder) -> str:
        return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()

    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    first = synthetic_families.build_paligemma(tmp_path / "a", seed=5)
    assert torch.equal(torch.rand(4), expected)
    assert weights(synthetic_families.build_paligemma(tmp_path / "b", seed=5)) == weights(first)
    assert weights(synthetic_families.build_paligemma(tmp_path / "c", seed=6)) != weights(first)
