"""Pre-quantized checkpoints (a ``quantization_config`` in config.json: bitsandbytes, AWQ, GPTQ,
compressed-tensors, FP8): their weights load as stored, whatever dtype is asked, so the
estimate and the verdict count them so. A 4-bit 13B LLaVA is how one serves a 13B VLM on a T4."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from vlm_lab import memory, memory_report, memory_synthetic
from vlm_lab.config import MemoryConfig
from vlm_lab.memory_synthetic import LlavaSize
from vlm_lab.memory_targets import GPU_TARGETS

BNB_4BIT = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float16"}
BNB_8BIT = {"quant_method": "bitsandbytes", "load_in_8bit": True}
AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
GPTQ_8 = {"quant_method": "gptq", "bits": 8, "group_size": 128}
FP8 = {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}
COMPRESSED_W4 = {"quant_method": "compressed-tensors", "ignore": ["lm_head", "re:.*vision_tower.*"],
                 "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int"}}}}


def _llava_13b(folder: Path, quantization: dict | None) -> Path:
    """config.json of a LLaVA-1.5-13B-sized model (CLIP-L/14-336 + Llama-13B), optionally pre-quantized."""
    size = LlavaSize(vision_width=1024, vision_layers=24, vision_heads=16, image_size=336, patch_size=14, text_width=5120,
                     text_layers=40, text_heads=40, text_kv_heads=40, text_intermediate=13824)
    config = memory_synthetic.llava_config(size, vocab_size=32064)
    if quantization:
        config.quantization_config = quantization
    return memory_synthetic.write_config_only(folder, config)


@pytest.mark.parametrize(
    "quantization, stored",
    [(BNB_4BIT, "int4"), (AWQ, "int4"), (COMPRESSED_W4, "int4"), (BNB_8BIT, "int8"), (GPTQ_8, "int8"), (FP8, "int8")],
)
def test_a_pre_quantized_checkpoint_is_counted_as_stored(tmp_path, quantization, stored):
    plain = memory.estimate(_llava_13b(tmp_path / "plain", None), target="t4-small", device="cuda")
    est = memory.estimate(_llava_13b(tmp_path / "quantized", quantization), target="t4-small", device="cuda")
    assert plain.dtype == "float16" and not plain.quantization
    assert est.dtype == stored and quantization["quant_method"] in est.quantization
    assert est.num_params == plain.num_params
    skipped_vision = quantization is COMPRESSED_W4  # its ignore list keeps the vision tower in 16 bits
    assert (est.quantizable["vision"] == 0) is skipped_vision and est.quantizable["language"] == plain.quantizable["language"]
    assert est.weight_bytes < plain.weight_bytes * (0.55 if stored == "int8" else 0.32)
    # an explicit float dtype is the compute dtype: the stored weights load quantized all the same
    assert memory.estimate(_llava_13b(tmp_path / "quantized", quantization), dtype="float32", device="cuda").weight_bytes == est.weight_bytes


def test_a_4bit_13b_fits_a_t4_and_every_target_counts_it_quantized(tmp_path):
    plain = memory.verdict(memory.estimate(_llava_13b(tmp_path / "plain", None), target="t4-small"), "t4-small")
    assert not plain.fits  # 26 GiB in float16
    est = memory.estimate(_llava_13b(tmp_path / "bnb", BNB_4BIT), target="t4-small")
    v = memory.verdict(est, "t4-small")
    assert v.fits and v.max_batch_size >= 1 and not v.suggestion, v.message()
    assert v.dtype == "int4" and "pre-quantized" in v.message()
    table = memory_report.targets_table(est)  # each target in "its" dtype: the stored weights all the same
    assert set(table["dtype"]) == {"int4"}, table
    for row in table.itertuples():
        assert row.needs_MiB == round(est.peak_bytes(device=GPU_TARGETS[row.target].device) / memory.MIB, 1), row


def test_the_cli_names_the_stored_quantization(tmp_path):
    import subprocess
    import sys

    folder = _llava_13b(tmp_path / "awq", AWQ)
    out = subprocess.run([sys.executable, "-m", "vlm_lab.cli", "memory", str(folder), "--no-measure", "--json"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.splitlines()[-1])
    assert row["dtype"] == "int4" and row["fits"] and row["quantization"].startswith("awq 4-bit")


def test_a_pre_quantized_checkpoint_is_not_measured_on_cpu_and_says_why(tiny_checkpoints, tmp_path):
    folder = tmp_path / "checkpoint-bnb"
    shutil.copytree(tiny_checkpoints[-1], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": BNB_4BIT}))
    with pytest.warns(memory_report.NotMeasuredWarning, match="pre-quantized"):
        (row,) = memory_report.profile(MemoryConfig(checkpoints=(str(folder),), device="cpu"))
    assert row.measurement is None and "bitsandbytes 4-bit" in row.not_measured and "CUDA" in row.not_measured
    assert row.estimate.dtype == "int4"


FBGEMM_FP8 = {"quant_method": "fbgemm_fp8", "activation_scale_ub": 1200.0}


@pytest.mark.parametrize("target, dtype, dequantized", [
    ("t4-small", "float16", True),  # compute capability 7.5: transformers dequantizes FP8 to 16 bits
    ("a10g-small", "bfloat16", True),  # 8.6
    ("a100-large", "bfloat16", True),  # 8.0
    ("l4x1", "int8", False),  # 8.9: FP8 kept as stored
    ("cpu-basic", "bfloat16", True),
])
def test_fp8_is_judged_as_the_target_loads_it(tmp_path, target, dtype, dequantized):
    """transformers' fine-grained FP8 needs compute capability >= 8.9; below it loads 16-bit weights: a T4 holds twice
    what the stored bytes say (a 13B FP8 LLaVA 'fit' a T4 on 8-bit arithmetic)."""
    est = memory.estimate(_llava_13b(tmp_path / "fp8", FP8), target="t4-small")
    plain = memory.estimate(_llava_13b(tmp_path / "plain", None), target="t4-small")
    v = memory.verdict(est, target)
    device = GPU_TARGETS[target].device
    expected = plain.with_dtype(dtype) if dequantized else est
    assert (v.dtype, v.required_bytes) == (dtype, expected.peak_bytes(device=device)), v.message()
    assert ("dequantized to " + dtype in v.message()) is dequantized and "fp8 8-bit" in v.message()
    if target == "t4-small":
        assert not v.fits and not v.suggestion.startswith("in "), v.message()  # no lighter --dtype here: it loads as stored
        assert "l4x1 fits it in int8" in v.suggestion, v.suggestion  # the cheapest GPU that keeps FP8 (8.9)
    row = memory_report.targets_table(est).set_index("target").loc[target]
    assert (row["dtype"], row["needs_MiB"]) == (dtype, round(v.required_bytes / memory.MIB, 1))


def test_a_format_transformers_cannot_load_on_the_target_does_not_fit(tmp_path):
    """fbgemm FP8 raises below compute capability 9.0: no Space GPU in the table loads it, whatever its bytes."""
    est = memory.estimate(_llava_13b(tmp_path / "fbgemm", FBGEMM_FP8), target="t4-small")
    for target in GPU_TARGETS:
        v = memory.verdict(est, target)
        assert (v.fits, v.max_batch_size, v.co_resident) == (False, 0, 0), v.message()
        assert "transformers loads fbgemm_fp8 8-bit only on a GPU of compute capability >= 9.0" in v.suggestion
