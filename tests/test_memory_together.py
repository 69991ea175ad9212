"""memory.resident_together: how many of *these* different checkpoints fit loaded at once, on real families' sizes.

Config-only folders of Qwen2-VL-2B, SmolVLM (2.2B) and PaliGemma-3B, built on the meta device: no weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vlm_lab import memory, memory_report, memory_synthetic
from vlm_lab.config import MemoryConfig
from vlm_lab.memory_targets import budget_bytes

SIGLIP_SO400M = dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, patch_size=14)


def _qwen2_vl_2b():
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        vision_config=dict(depth=32, embed_dim=1280, mlp_ratio=4, num_heads=16, hidden_size=1536, patch_size=14, spatial_merge_size=2),
        text_config=dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True, bos_token_id=151643,
                         eos_token_id=151645, rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}),
        tie_word_embeddings=True,
    ), {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2}


def _smolvlm():
    from transformers import Idefics3Config

    return Idefics3Config(
        vision_config=dict(image_size=384, **SIGLIP_SO400M), scale_factor=3, image_token_id=49190,
        text_config=dict(model_type="llama", vocab_size=49155, hidden_size=2048, intermediate_size=8192, num_hidden_layers=24,
                         num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=16384),
    ), {"do_image_splitting": True, "size": {"longest_edge": 1536}, "max_image_size": {"longest_edge": 384}, "image_seq_len": 81}


def _paligemma_3b():
    from transformers import PaliGemmaConfig

    return PaliGemmaConfig(
        vision_config=dict(model_type="siglip_vision_model", image_size=224, projection_dim=2048, vision_use_head=False, **SIGLIP_SO400M),
        text_config=dict(model_type="gemma", hidden_size=2048, intermediate_size=16384, num_hidden_layers=18, num_attention_heads=8,
                         num_key_value_heads=1, head_dim=256, vocab_size=257216, max_position_embeddings=8192),
        image_token_index=257152, projection_dim=2048, hidden_size=2048,
    ), None


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: memory_synthetic.write_config_only(root / name, *build())
            for name, build in (("qwen2-vl-2b", _qwen2_vl_2b), ("smolvlm", _smolvlm), ("paligemma-3b", _paligemma_3b))}


def test_the_most_that_fit_together_not_only_the_smallest_first(families):
    """At batch 4 Qwen2-VL-2B has the smallest weights (4.4 GB) but its rows of 16k image tokens need 9 GB to generate:
    it fits a T4 alone, with no other. Taken smallest first, the answer stopped there ('1 of these 3'), while SmolVLM
    and PaliGemma (10.4 GB of weights, 2 GB to generate) fit loaded together."""
    rows = memory_report.profile(MemoryConfig(checkpoints=tuple(map(str, families.values())), batch_size=4, measure=False))
    assert all(r.verdict.fits for r in rows)
    ests = {Path(r.path).name: r.estimate for r in rows}
    budget = budget_bytes("t4-small")

    def needs(names):  # their weights together, with room for whichever needs the most to generate its batch
        return sum(ests[n].weight_bytes for n in names) + max(ests[n].generate_bytes() - ests[n].weight_bytes for n in names)

    assert needs(["qwen2-vl-2b", "smolvlm"]) > budget and needs(["qwen2-vl-2b", "paligemma-3b"]) > budget
    assert needs(["smolvlm", "paligemma-3b"]) <= budget
    together = memory.resident_together(list(ests.values()), "t4-small")
    assert [e.checkpoint for e in together] == [str(families["smolvlm"]), str(families["paligemma-3b"])]  # the smallest first
    assert memory_report.summary(rows).splitlines()[-1].startswith(
        f"together on t4-small: 2 of these 3 checkpoints fit loaded at once, with room for one to generate (the smallest first: "
        f"{families['smolvlm']}, {families['paligemma-3b']})")


def test_one_that_fits_alone_is_said_in_the_singular(families):
    """'1 of these 2 checkpoints fit loaded at once ... (the smallest first: qwen2-vl-2b)' read wrong twice."""
    refs = (str(families["qwen2-vl-2b"]), str(families["smolvlm"]))
    rows = memory_report.profile(MemoryConfig(checkpoints=refs, batch_size=4, measure=False))
    assert memory_report.summary(rows).splitlines()[-1] == (
        f"together on t4-small: 1 of these 2 checkpoints fits loaded at once, with room for one to generate ({refs[0]}); "
        "the model cache loads the others in turn, evicting the least recently used")


def test_json_lines_carry_the_together_answer(families):
    """`vlm-lab memory --json` printed one object per checkpoint and no together answer: each line now carries the answer
    for the checkpoints printed so far (itself included), so the last line's is the whole list's, and every line still
    parses as a checkpoint (a trailing summary line would not)."""
    import json
    import subprocess
    import sys

    refs = [str(families[n]) for n in ("qwen2-vl-2b", "smolvlm", "paligemma-3b")]
    r = subprocess.run([sys.executable, "-m", "vlm_lab.cli", "memory", *refs, "--no-measure", "--json", "--batch-size", "4"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [line["path"] for line in lines] == refs and all(line["fits"] for line in lines)
    assert [line["together"] for line in lines] == [
        {"target": "t4-small", "counted": 1, "listed": 3, "fit": 1, "loaded": refs[:1]},
        {"target": "t4-small", "counted": 2, "listed": 3, "fit": 1, "loaded": refs[:1]},  # either alone: the smaller weights
        {"target": "t4-small", "counted": 3, "listed": 3, "fit": 2, "loaded": refs[1:]},  # the smallest first
    ]
    said = subprocess.run([sys.executable, "-m", "vlm_lab.cli", "memory", "--help"], capture_output=True, text=True).stdout
    assert all(f'"{key}"' in said for key in lines[-1]["together"]), said  # --help names each key
