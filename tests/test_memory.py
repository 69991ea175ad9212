"""vlm_lab.memory*: exact parameter counts on the meta device, image tokens per family,
estimate vs measurement, verdict logic, errors, and notebook 03 under papermill and nbval."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vlm_lab import memory, memory_synthetic
from vlm_lab.config import MemoryConfig
from vlm_lab.errors import CheckpointNotFoundError, ConfigError, DeviceError, VlmLabError
from vlm_lab.memory_synthetic import LLAVA_100M, LlavaSize
from vlm_lab.memory_targets import GPU_TARGETS, MIB, budget_bytes

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03_memory_profile.ipynb"


# ----------------------------------------------------------------------------- model configs


def _idefics3_config():
    from transformers import Idefics3Config

    return Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=64, patch_size=8),
        text_config=dict(model_type="llama", vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2),
        scale_factor=2,
    )


def _qwen2_vl_config():
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        vision_config=dict(depth=1, embed_dim=32, num_heads=2, hidden_size=64, mlp_ratio=2, patch_size=14, spatial_merge_size=2),
        text_config=dict(vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, bos_token_id=0, eos_token_id=1,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
    )


CONFIGS = {
    "llava-tiny": lambda: memory_synthetic.llava_config(memory_synthetic.LLAVA_TINY),
    "llava-wide-tied": lambda: memory_synthetic.llava_config(LlavaSize(vision_width=96, vision_layers=3, vision_heads=3, text_width=128,
                                                                       text_layers=3, text_intermediate=256, tie_word_embeddings=True)),
    "llava-deep-gqa": lambda: memory_synthetic.llava_config(LlavaSize(text_width=96, text_layers=5, text_heads=6, text_kv_heads=2,
                                                                      text_intermediate=200), vocab_size=500),
    "idefics3": _idefics3_config,
    "qwen2-vl": _qwen2_vl_config,
}


@pytest.mark.parametrize("name", CONFIGS)
def test_meta_parameter_count_equals_the_instantiated_model(name, tmp_path):
    from transformers import AutoModelForImageTextToText

    config = CONFIGS[name]()
    folder = memory_synthetic.write_config_only(tmp_path / name, config)  # config.json only: no weights, no processor
    est = memory.estimate(folder, dtype="float32", device="cpu")
    model = AutoModelForImageTextToText.from_config(config)
    assert est.num_params == sum(p.numel() for p in model.parameters())
    assert all(est.params[c] > 0 for c in ("vision", "projector", "language")), est.params
    assert est.param_bytes("float16") * 2 == est.param_bytes("float32")
    assert est.param_bytes("int4") < est.param_bytes("int8") < est.param_bytes("float16")


@pytest.mark.parametrize("name", ["llava-tiny", "idefics3", "qwen2-vl"])
def test_vision_headroom_follows_the_built_vision_mlp(name, tmp_path):
    """The vision encoder's widest layer, per patch: its residual and norm (2 x width) and its MLP's two
    intermediates (2 x fc1's width), as the built model has them. Qwen2-VL's vision ``hidden_size`` is the
    merger's output (1536 on the 2B), not the encoder's width (``embed_dim`` 1280, MLP ``embed_dim x mlp_ratio``):
    reading it over-counted every patch by a fifth (336 MB a row at 16k image tokens)."""
    import torch
    from transformers import AutoModelForImageTextToText

    config = CONFIGS[name]()
    est = memory.estimate(memory_synthetic.write_config_only(tmp_path / name, config), dtype="float32", device="cpu")
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    fc1 = next(m for n, m in model.named_modules() if n.endswith("mlp.fc1") and ("vision" in n or "visual" in n))
    assert est.image.patches > 0
    assert est.vision_activation_values == est.image.patches * 2 * (fc1.in_features + fc1.out_features)


def test_tiny_checkpoint_counts_and_weights_match_the_loaded_model(tiny_checkpoints):
    from vlm_lab.models import load_model

    est = memory.estimate(tiny_checkpoints[-1], dtype="float32", device="cpu")
    loaded = load_model(tiny_checkpoints[-1], device="cpu", dtype="float32")
    assert est.num_params == sum(p.numel() for p in loaded.model.parameters())
    assert est.weight_bytes == loaded.nbytes
    assert est.file_dtype == "float32" and not est.converts
    assert est.with_dtype("bfloat16").converts


# ----------------------------------------------------------------------------- image tokens


def test_llava_image_tokens_match_the_processor(tiny_checkpoints):
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_checkpoints[-1])
    enc = processor(images=[Image.new("RGB", (90, 70))], text=["<image> what"], return_tensors="pt")
    real = int((enc["input_ids"][0] == processor.image_token_id).sum())
    assert memory.estimate(tiny_checkpoints[-1]).image.tokens == real == 64


def _llava_next_folder(tmp_path):
    """A config-only LLaVA-NeXT (CLIP 32px tiles, patch 8) saved with a real LlavaNextProcessor."""
    from transformers import LlavaNextConfig, LlavaNextImageProcessorPil, LlavaNextProcessor

    from vlm_lab import tiny

    pinpoints = [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]]
    config = LlavaNextConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
        text_config=dict(model_type="llama", vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2),
        image_grid_pinpoints=pinpoints, vision_feature_select_strategy="default",
    )
    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                                 image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tiny.build_processor().tokenizer, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
    folder = memory_synthetic.write_config_only(tmp_path / "llava-next", config)
    processor.save_pretrained(folder)
    return folder, processor


def test_llava_next_image_tokens_match_the_processor(tmp_path):
    """LLaVA-NeXT tiles an image (anyres): its tokens are several times a LLaVA's, and the KV cache with them."""
    from PIL import Image

    folder, processor = _llava_next_folder(tmp_path)
    for side in (20, 32, 50, 64, 90, 200):
        enc = processor(images=[Image.new("RGB", (side, side))], text=["<image> what"], return_tensors="pt")
        est = memory.estimate(folder, image_size=(side, side))
        assert est.image.tokens == int((enc["input_ids"][0] == processor.image_token_id).sum()), side
        assert est.image.patches == enc["pixel_values"].shape[1] * ((32 // 8) ** 2 + 1), side
    worst = memory.estimate(folder)  # image_size 0: the most tokens any square image makes
    enc = processor(images=[Image.new("RGB", (worst.image.side, worst.image.side))], text=["<image> what"], return_tensors="pt")
    assert worst.image.tokens == int((enc["input_ids"][0] == processor.image_token_id).sum()) == 4 * 16 + 8 + 16
    assert worst.image.family == "llava_next"


def test_idefics3_image_tokens_match_the_processor(tmp_path):
    from PIL import Image
    from transformers import Idefics3ImageProcessorPil, Idefics3Processor

    from vlm_lab import tiny

    tokenizer = tiny.build_processor().tokenizer
    specials = ["<fake_token_around_image>", "<global-img>", "<image>"] + [f"<row_{r}_col_{c}>" for r in (1, 2) for c in (1, 2)]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 128}, max_image_size={"longest_edge": 64})
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=16)
    folder = memory_synthetic.write_config_only(tmp_path / "idefics3", _idefics3_config())
    processor.save_pretrained(folder)

    enc = processor(images=[[Image.new("RGB", (100, 100))]], text=["<image> what"], return_tensors="pt")
    est = memory.estimate(folder)
    rows = 2  # 128 / 64: a 2 x 2 grid of tiles plus the global image
    assert enc["pixel_values"].shape[1] == rows * rows + 1
    # the word-level test tokenizer drops newlines: one per row and one before the global image
    assert est.image.tokens == (enc["input_ids"].shape[1] - 1) + rows + 1
    assert est.image.patches == (rows * rows + 1) * (64 // 8) ** 2


@pytest.mark.parametrize("side", [28, 100, 448, 1001, 3000])
def test_qwen2_vl_image_tokens_follow_smart_resize(side, tmp_path):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    settings = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280, "patch_size": 14, "merge_size": 2}
    folder = memory_synthetic.write_config_only(tmp_path / "qwen", _qwen2_vl_config(), settings)
    h, w = smart_resize(side, side, factor=28, min_pixels=settings["min_pixels"], max_pixels=settings["max_pixels"])
    est = memory.estimate(folder, image_size=(side, side))
    assert est.image.tokens == (h // 14) * (w // 14) // 4 + 2
    assert est.image.patches == (h // 14) * (w // 14)


def test_kv_cache_formula(tiny_checkpoints):
    est = memory.estimate(tiny_checkpoints[-1], dtype="float16", batch_size=3, prompt_tokens=10, max_new_tokens=6)
    # 2 (K, V) x 2 layers x 2 kv heads x head_dim 16 x 2 bytes x (10 + 64 image + 6) tokens x batch 3
    assert est.kv_cache_bytes() == 2 * 2 * 2 * 16 * 2 * (10 + 64 + 6) * 3


# ----------------------------------------------------------------------------- estimate vs measurement


@pytest.fixture(scope="session")
def llava_100m(tmp_path_factory) -> Path:
    """A random-initialised ~105M-parameter LLaVA (about 400 MiB of float32 weights)."""
    return memory_synthetic.build_llava(tmp_path_factory.mktemp("memory") / "llava-100m", LLAVA_100M)


@pytest.mark.slow
def test_estimate_within_15_percent_of_cpu_measurement(llava_100m):
    from vlm_lab.memory_measure import measure

    est = memory.estimate(llava_100m, dtype="float32", device="cpu", batch_size=2, prompt_tokens=32, max_new_tokens=16)
    assert est.num_params >= 100_000_000
    m = measure(llava_100m, dtype="float32", device="cpu", batch_size=2, prompt_tokens=32, max_new_tokens=16, image_side=est.image.side)
    assert not m.out_of_memory
    assert m.peak_bytes > est.weight_bytes * 0.9  # the weights really were touched
    assert abs(est.peak_bytes() - m.peak_bytes) / m.peak_bytes < 0.15, (est.peak_bytes() / MIB, m.peak_bytes / MIB)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_estimate_within_15_percent_of_cuda_measurement(llava_100m, dtype):
    from vlm_lab.memory_measure import measure

    est = memory.estimate(llava_100m, dtype=dtype, device="cuda", target="l4x1", batch_size=8, max_new_tokens=32)
    m = measure(llava_100m, dtype=dtype, device="cuda", batch_size=8, max_new_tokens=32, image_side=est.image.side)
    assert 0 < m.context_bytes <= m.runtime_bytes and m.allocated_peak_bytes <= m.reserved_peak_bytes
    assert abs(est.peak_bytes() - m.peak_bytes) / m.peak_bytes < 0.15, (est.peak_bytes() / MIB, m.peak_bytes / MIB)


@pytest.mark.gpu
def test_t4_rehearsal_runs_under_the_cap_and_snapshots_out_of_memory(llava_100m, tmp_path):
    from vlm_lab.memory_measure import measure

    est = memory.estimate(llava_100m, dtype="float16", device="cuda", max_new_tokens=8)
    fits = measure(llava_100m, dtype="float16", device="cuda", rehearse="t4-small", max_new_tokens=8, image_side=64)
    assert not fits.out_of_memory and fits.rehearsal_target == "t4-small"
    too_big = 2 * memory.max_batch_size(est, "t4-small")
    oom = measure(llava_100m, dtype="float16", device="cuda", rehearse="t4-small", batch_size=too_big, max_new_tokens=8,
                  image_side=64, snapshot_dir=str(tmp_path))
    assert oom.out_of_memory and Path(oom.snapshot).is_file() and oom.snapshot.endswith("-oom.pickle")


def test_measure_refuses_what_it_cannot_measure(tiny_checkpoints):
    from vlm_lab.memory_measure import measure

    with pytest.raises(DeviceError, match="use measure=False") as err:
        measure(str(tiny_checkpoints[-1]), dtype="int4")
    # installing bitsandbytes would not make it measurable: the message must not say it would
    assert "loads float32, float16 or bfloat16 only" in str(err.value) and "needs bitsandbytes" not in str(err.value)
    with pytest.raises(DeviceError, match="CUDA"):
        measure(str(tiny_checkpoints[-1]), dtype="float32", device="cpu", rehearse="t4-small")


# ----------------------------------------------------------------------------- verdicts


def _clip_l_llava(tmp_path_factory, name: str, **text) -> Path:
    """config.json only of a LLaVA with a CLIP-L/14-336 vision tower and the given text model."""
    size = LlavaSize(vision_width=1024, vision_layers=24, vision_heads=16, image_size=336, patch_size=14, **text)
    return memory_synthetic.write_config_only(tmp_path_factory.mktemp("cfg") / name, memory_synthetic.llava_config(size, vocab_size=32064))


@pytest.fixture(scope="module")
def llava_7b(tmp_path_factory) -> Path:
    """config.json of a LLaVA-1.5-7B-sized model (CLIP-L/14-336 + Llama-7B): estimate-only."""
    return _clip_l_llava(tmp_path_factory, "llava-7b", text_width=4096, text_layers=32, text_heads=32, text_kv_heads=32,
                         text_intermediate=11008)


@pytest.mark.parametrize(
    "dtype, target, batch, fits",
    [
        ("float32", "t4-small", 1, False),  # 28 GiB of weights
        ("float16", "t4-small", 1, True),  # ~13 GiB: fits, barely
        ("float16", "t4-small", 64, False),  # the KV cache no longer fits
        ("int4", "t4-small", 16, True),  # 0.5 MiB of KV cache per token: 16 rows of 704 tokens fit
        ("int4", "t4-small", 64, False),
        ("bfloat16", "l4x1", 8, True),
        ("float32", "a100-large", 32, True),
        ("float32", "cpu-basic", 1, False),
    ],
)
def test_verdict_table(llava_7b, dtype, target, batch, fits):
    est = memory.estimate(llava_7b, dtype=dtype, device=GPU_TARGETS[target].device, batch_size=batch, prompt_tokens=64, max_new_tokens=64)
    assert 7.0e9 < est.num_params < 7.2e9
    assert est.image.tokens == 576
    v = memory.verdict(est, target)
    assert v.fits is fits and (v.margin_bytes >= 0) is fits
    assert v.budget_bytes == budget_bytes(target) and v.price_per_hour == GPU_TARGETS[target].price_per_hour
    b = v.max_batch_size
    if b:  # the largest batch fits and one more does not
        assert est.peak_bytes(b, GPU_TARGETS[target].device) <= v.budget_bytes
        assert b == memory.MAX_BATCH or est.peak_bytes(b + 1, GPU_TARGETS[target].device) > v.budget_bytes
    assert (b >= batch) is fits


@pytest.fixture(scope="module")
def llava_70b(tmp_path_factory) -> Path:
    """config.json of a 70B-sized LLaVA: bigger than a T4 or an L4 in any dtype; an A100 only quantized."""
    return _clip_l_llava(tmp_path_factory, "llava-70b", text_width=8192, text_layers=80, text_heads=64, text_kv_heads=8,
                         text_intermediate=28672)


@pytest.mark.parametrize(
    "model, dtype, target, batch, suggestion",
    [
        ("7b", "float16", "t4-small", 1, ""),  # it fits: nothing to suggest
        ("7b", "float16", "t4-small", 64, "batch 1 fits"),
        ("7b", "float32", "t4-small", 1, "in float16 it fits"),
        ("7b", "float32", "l4x1", 1, "in bfloat16 it fits"),  # the L4's own 16-bit dtype
        ("7b", "float32", "cpu-basic", 1, "in float16 it fits"),
        ("70b", "float16", "t4-small", 1, "a100-large fits it in int8"),  # the cheapest target, then the lightest dtype
        ("70b", "int4", "l4x1", 1, "a100-large fits it in int4"),
        ("70b", "float32", "cpu-basic", 1, "a100-large fits it in int8"),  # from the free CPU: the GPU that holds it
    ],
)
def test_a_verdict_that_does_not_fit_says_what_would(llava_7b, llava_70b, model, dtype, target, batch, suggestion):
    device = GPU_TARGETS[target].device
    est = memory.estimate({"7b": llava_7b, "70b": llava_70b}[model], dtype=dtype, device=device, batch_size=batch)
    v = memory.verdict(est, target)
    assert v.suggestion.startswith(suggestion) and bool(v.suggestion) is not v.fits
    assert "--" not in v.suggestion and "=" not in v.suggestion  # read in a notebook, a shell and a Space's log alike
    assert v.message().endswith(f"max batch {v.max_batch_text}; {v.suggestion}" if v.suggestion else "of this size loaded at once")
    assert "budget (15.00 GiB less 5% kept free)" in v.message() or target != "t4-small"
    if " it fits" in v.suggestion:  # the suggestion is the verdict's own arithmetic: it does fit
        assert memory.verdict(est.with_dtype(v.suggestion.split()[1]), target).fits
    if " fits it in " in v.suggestion:
        other, _, _, _, other_dtype = v.suggestion.split()[:5]
        assert memory.verdict(est.with_dtype(other_dtype), other).fits
        assert not memory.verdict(est.with_dtype("bfloat16" if dtype == "float16" else dtype), "a10g-small").fits


@pytest.mark.parametrize("batch, new_tokens", [(1, 2000), (4, 1000)])
def test_a_verdict_whose_answers_do_not_fit_says_how_many_new_tokens_would(llava_7b, batch, new_tokens):
    """A 7B in float16 on a T4: its weights fit, its answers' KV cache (0.5 MiB a token a row) does not, not even one
    row's. Fewer new tokens fit in float16 as well as int8 does: both are named, the tokens first (no quantization)."""
    import re

    est = memory.estimate(llava_7b, dtype="float16", batch_size=batch, max_new_tokens=new_tokens)
    v = memory.verdict(est, "t4-small")
    assert not v.fits and v.max_batch_size == 0, v.message()
    said = re.fullmatch(r"batch 1 fits with at most (\d+) new tokens, or in int8 it fits \(needs [\d.]+ GiB\)", v.suggestion)
    assert said, v.suggestion
    n = int(said[1])
    assert 0 < n < new_tokens
    # the suggestion is the verdict's own arithmetic: n new tokens fit a row, n + 1 do not
    for tokens, fits in ((n, True), (n + 1, False)):
        assert memory.verdict(memory.estimate(llava_7b, dtype="float16", max_new_tokens=tokens), "t4-small").fits is fits
    assert memory.verdict(est.with_dtype("int8"), "t4-small").fits


def test_a_verdict_says_what_at_once_counts_and_claims_nothing_at_once_where_it_does_not_fit(llava_7b):
    """'5 at once' read as five requests at once; and '0 at once' beside 'batch 16 fits' read as if none could run."""
    fits = memory.verdict(memory.estimate(llava_7b, dtype="float16"), "a100-large")
    assert fits.fits and fits.message().endswith(f"max batch {fits.max_batch_size}, 5 of this size loaded at once")
    too_big = memory.verdict(memory.estimate(llava_7b, dtype="int4", batch_size=64), "t4-small")
    assert (too_big.fits, too_big.co_resident) == (False, 0) and too_big.max_batch_size > 0
    assert "at once" not in too_big.message()
    assert too_big.message().endswith(f"; max batch {too_big.max_batch_size}; batch {too_big.max_batch_size} fits"), too_big.message()


def test_co_resident_leaves_room_for_one_to_generate(tiny_checkpoints, llava_7b):
    for ref, target in ((tiny_checkpoints[-1], "t4-small"), (llava_7b, "a100-large"), (llava_7b, "t4-small")):
        est = memory.estimate(ref, dtype="float16", batch_size=4)
        n = memory.co_resident(est, target)
        working = est.generate_bytes(4) - est.weight_bytes
        assert n * est.weight_bytes + working <= budget_bytes(target) < (n + 1) * est.weight_bytes + working
    assert memory.co_resident(memory.estimate(llava_7b, dtype="float16"), "a100-large") == 5


@pytest.mark.parametrize("target, dtype", [("t4-small", "float16"), ("l4x1", "bfloat16"), ("a100-large", "bfloat16"), ("cpu-basic", "float32")])
def test_auto_dtype_is_the_targets(tiny_checkpoints, target, dtype):
    device = GPU_TARGETS[target].device
    assert memory.estimate(tiny_checkpoints[-1], dtype="auto", device=device, target=target).dtype == dtype
    assert memory.recommended_dtype(target) == dtype


def test_bfloat16_on_a_t4_is_refused_with_the_fix(tiny_checkpoints):
    est = memory.estimate(tiny_checkpoints[-1], dtype="bfloat16")
    with pytest.raises(ConfigError, match="use dtype='float16'"):
        memory.verdict(est, "t4-small")
    assert memory.verdict(est, "l4x1").fits
    assert [v.target for v in memory.verdicts(est)] == ["cpu-basic", "l4x1", "a10g-small", "a100-large"]
    with pytest.raises(ConfigError, match="float16"):
        MemoryConfig(dtype="bfloat16", target="t4-small")


# ----------------------------------------------------------------------------- errors


def test_folder_without_config_json_is_a_clear_error(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(CheckpointNotFoundError, match="config.json") as err:
        memory.estimate(tmp_path)
    assert isinstance(err.value, FileNotFoundError) and isinstance(err.value, VlmLabError)


LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 680112\n"


@pytest.fixture
def copy_checkpoint(tiny_checkpoints, tmp_path):
    """``copy_checkpoint(name, drop=(...))``: checkpoint-1000 copied to tmp_path/name, less some files."""

    def copy(name: str, drop: tuple[str, ...] = ()) -> Path:
        folder = Path(shutil.copytree(tiny_checkpoints[-1], tmp_path / name))
        for pattern in drop:
            for f in folder.glob(pattern):
                f.unlink()
        return folder

    return copy


@pytest.mark.parametrize(
    "cut, message",
    [
        (lambda data: LFS_POINTER, r"model.safetensors is a Git-LFS pointer, not the weights; run `git lfs pull`"),
        (lambda data: data[:500], r"not a valid safetensors file \(header: invalid header length; truncated or corrupt\); re-download it"),
        (lambda data: data[: len(data) // 2], r"not a valid safetensors file \(header: incomplete metadata"),
        (lambda data: b"", r"not a valid safetensors file \(header: header too small"),
    ],
    ids=["lfs-pointer", "cut-in-header", "cut-in-data", "empty"],
)
def test_broken_weights_are_named_with_the_fix(copy_checkpoint, cut, message):
    from vlm_lab.memory_checkpoint import safetensors_header
    from vlm_lab.models import load_model

    folder = copy_checkpoint("broken")
    weights = folder / "model.safetensors"
    weights.write_bytes(cut(weights.read_bytes()))
    for fails in (lambda: safetensors_header(weights), lambda: memory.estimate(folder), lambda: load_model(folder, device="cpu")):
        with pytest.raises(CheckpointNotFoundError, match=message) as err:
            fails()
        assert str(weights) in str(err.value)


def test_intact_header_is_read_without_loading(tiny_checkpoints):
    from safetensors.torch import load_file

    from vlm_lab.memory_checkpoint import safetensors_header

    path = tiny_checkpoints[-1] / "model.safetensors"
    header = safetensors_header(path)
    tensors = load_file(path)
    assert header == {name: ("F32", list(t.shape)) for name, t in tensors.items()}


@pytest.mark.parametrize(
    "drop, missing",
    [
        (("*.safetensors", "tokenizer*", "chat_template.jinja"), "no weights or tokenizer in the folder"),
        (("tokenizer*",), "no tokenizer in the folder"),
        (("*.safetensors",), "no weights in the folder"),
    ],
)
def test_loading_an_incomplete_folder_says_what_is_missing(copy_checkpoint, drop, missing):
    from vlm_lab.models import load_model

    folder = copy_checkpoint("incomplete", drop)
    with pytest.raises(CheckpointNotFoundError, match=f"{missing} .*point at a complete model folder"):
        load_model(folder, device="cpu")


@pytest.mark.parametrize("bad", ["t5-small", "T4", ""])
def test_unknown_target_lists_the_known_ones(tiny_checkpoints, bad):
    with pytest.raises(ConfigError, match="t4-small, l4x1"):
        memory.verdict(memory.estimate(tiny_checkpoints[-1]), bad)
    with pytest.raises(ConfigError, match="unknown target"):
        MemoryConfig(target=bad)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"dtype": "int2"}, "dtype"),
        ({"batch_size": 0}, "batch_size"),
        ({"image_size": -1}, "image_size"),
        ({"checkpoints": ""}, "checkpoints is empty"),
        ({"device": "cpu", "rehearse": True}, "rehearse"),
        ({"batchsize": 2}, "unknown MemoryConfig field"),
    ],
)
def test_memory_config_validation(values, message):
    with pytest.raises(ConfigError, match=message):
        MemoryConfig.from_dict(values)


# ----------------------------------------------------------------------------- report + notebook


def test_profile_measures_one_run_once(tiny_dir):
    from vlm_lab import memory_report

    rows = memory_report.profile(MemoryConfig(checkpoints=(str(tiny_dir),), device="cpu", max_new_tokens=4))
    assert [r.estimate.checkpoint for r in rows] == ["checkpoint-0", "checkpoint-250", "checkpoint-500", "checkpoint-750", "checkpoint-1000"]
    assert len({r.measurement.seconds for r in rows}) == 1  # same architecture and size: one measurement shared
    assert not any(r.not_measured for r in rows)
    table = memory_report.report_table(rows)
    assert list(table.columns[:9]) == [
        "checkpoint", "dtype", "params_M", "device", "estimated_MiB", "measured_MiB", "error_%", "target", "needs_MiB",
    ]
    assert table["fits"].all() and (table["dtype"] == "float16").all()
    # estimated/measured on the CPU they were measured on; needs_MiB on the T4 the verdict is for
    assert (table["device"] == "cpu").all() and (table["needs_MiB"] > table["estimated_MiB"]).all()
    assert table["needs_MiB"].tolist() == [round(r.verdict.required_bytes / MIB, 1) for r in rows]
    targets = memory_report.targets_table(rows[0].estimate)
    assert targets.set_index("target").loc["t4-small", "dtype"] == "float16"


def test_profile_keeps_the_estimates_of_what_cannot_be_measured(tiny_checkpoints, copy_checkpoint, tmp_path):
    from vlm_lab import memory_report

    config_only = memory_synthetic.write_config_only(tmp_path / "config-only", memory_synthetic.llava_config(memory_synthetic.LLAVA_TINY))
    # tokenizer_config.json without the vocabulary: seen before measuring
    no_vocab = copy_checkpoint("no-vocab", drop=("tokenizer.json",))
    # weights that do not match config.json: the folder looks complete, the measuring process fails
    mismatched = copy_checkpoint("mismatched")
    config = json.loads((mismatched / "config.json").read_text())
    config["text_config"]["intermediate_size"] *= 2
    (mismatched / "config.json").write_text(json.dumps(config))
    refs = (str(config_only), str(no_vocab), str(mismatched), str(tiny_checkpoints[-1]))
    with pytest.warns(memory_report.NotMeasuredWarning) as caught:
        rows = memory_report.profile(MemoryConfig(checkpoints=refs, device="cpu", max_new_tokens=4))
    assert [str(w.message).split(":")[0] for w in caught] == [f"cannot measure {p}" for p in refs[:3]]
    assert "no weights or tokenizer in the folder (estimate only; to skip measuring pass measure=False, or --no-measure on the command line)" in str(caught[0].message)  # a notebook passes measure=
    assert [r.measurement is None for r in rows] == [True, True, True, False]
    assert rows[0].not_measured == "no weights or tokenizer in the folder"
    assert rows[1].not_measured == "no tokenizer in the folder: tokenizer_config.json without tokenizer.json"
    assert rows[2].not_measured.startswith("the measuring process failed (exit 1): ") and "\n" not in rows[2].not_measured
    assert rows[3].not_measured == "" and rows[3].measured_bytes > 0
    assert all(r.verdict.fits for r in rows)  # every row keeps its estimate and verdict
    assert [r.to_dict()["not_measured"] for r in rows] == [r.not_measured for r in rows[:3]] + [None]
    assert "; not measured: no weights or tokenizer in the folder" in memory_report.summary(rows).splitlines()[0]


@pytest.mark.parametrize("config_only", [False, True])
def test_plots_of_an_estimate_only_profile_say_nothing_was_measured_and_why(tiny_checkpoints, llava_7b, config_only):
    """The estimate-vs-measured panel of a profile with no measurement said 'nothing measured' on axes 0..1 labelled
    MiB, without why (measure=False, or a folder with only a config.json) or what would measure it."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    from vlm_lab import memory_report

    path = llava_7b if config_only else tiny_checkpoints[-1]
    rows = memory_report.profile(MemoryConfig(checkpoints=(str(path),), measure=config_only, device="cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. matplotlib's "No artists with labels found to put in legend"
        fig = memory_report.plot_estimate_vs_measured(rows)
        memory_report.plot_memory_vs_batch(rows[0].estimate)
    (said,) = [t.get_text() for t in fig.axes[0].texts]
    assert said.startswith("nothing measured") and not fig.axes[0].axison  # no made-up 0..1 MiB scale
    why = rows[0].not_measured if config_only else "measure=True"
    assert why and " ".join(why.split()) in " ".join(said.split()), said


@pytest.mark.parametrize("name", ["checkpoint-1000", "config-only"])
def test_the_batch_plots_title_stays_inside_its_figure(tiny_checkpoints, llava_7b, name):
    """Notebook 03's plot of the embedded checkpoint lost its title's end past the figure's edge; a folder given by
    its absolute path (the checkpoint's name then) lost most of it, and a 7B's plot its y label."""
    import matplotlib

    matplotlib.use("Agg")
    from vlm_lab import memory_report

    est = memory.estimate(tiny_checkpoints[-1] if name == "checkpoint-1000" else llava_7b)
    fig = memory_report.plot_memory_vs_batch(est)
    fig.canvas.draw()
    title = fig.axes[0].title
    box = title.get_window_extent()
    assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, (title.get_text(), box, fig.bbox)
    # a 7B's log axis labels 2 x 10^4, 3 x 10^4: wide tick labels pushed "peak memory (MiB)" off the left edge
    assert fig.axes[0].yaxis.label.get_window_extent().x0 >= fig.bbox.x0
    assert f"{est.sequence_tokens} tokens/row" in title.get_text() and est.checkpoint.rsplit("/", 1)[-1] in title.get_text()


def test_checkpoints_sharing_a_measurement_are_one_point_labelled_once(tiny_checkpoints):
    """The checkpoints of one run share one measurement (one point): five names written over each other
    at that point read as a smudge; the point says which checkpoints it is, once."""
    import matplotlib

    matplotlib.use("Agg")
    from vlm_lab import memory_report
    from vlm_lab.memory_measure import Measurement

    rows = memory_report.profile(MemoryConfig(checkpoints=tuple(map(str, tiny_checkpoints)), device="cpu", measure=False))
    shared = Measurement(checkpoint="checkpoint-0", device="cpu", dtype="float32", batch_size=1, sequence_tokens=128,
                         prompt_tokens=32, load_bytes=10 * MIB, peak_bytes=14 * MIB)  # fmt: skip
    rows = [dataclasses.replace(r, measurement=shared) for r in rows[:-1]] + [rows[-1]]  # the last one not measured
    fig = memory_report.plot_estimate_vs_measured(rows)
    assert [t.get_text() for t in fig.axes[0].texts] == ["checkpoint-0 … checkpoint-750 (4)"]
    assert len(fig.axes[0].collections[-1].get_offsets()) == 1


def test_summary_says_a_verdict_shared_by_checkpoints_once(tiny_checkpoints, llava_7b):
    """A training run's checkpoints get the same verdict word for word: one line names them all (notebook 03
    and `vlm-lab memory checkpoints/shapes` printed five identical 300-character lines); a checkpoint whose
    verdict differs keeps its own line, in the order given."""
    from vlm_lab import memory_report

    refs = (str(tiny_checkpoints[0]), str(llava_7b), *map(str, tiny_checkpoints[1:]))
    rows = memory_report.profile(MemoryConfig(checkpoints=refs, dtype="float16", measure=False))
    lines = memory_report.summary(rows).splitlines()[:-1]  # the last: how many of them fit together
    names = ", ".join(r.estimate.checkpoint for r in rows if r.estimate.checkpoint.startswith("checkpoint-"))
    assert [line.split(" (float16")[0] for line in lines] == [names, rows[1].estimate.checkpoint]
    assert lines[0].removeprefix(names) == memory_report.summary(rows[:1]).removeprefix("checkpoint-0")


def test_summary_says_how_many_of_different_checkpoints_fit_loaded_together(tiny_checkpoints, llava_7b, tmp_path):
    """Each verdict's 'N of this size loaded at once' counts copies of one checkpoint. Comparing different ones asks how
    many of *these* the model cache holds at once: two 7Bs in float16 fit a T4 one at a time, so the two and the five
    tiny checkpoints are not all loaded at once; the tiny ones alone are."""
    from vlm_lab import memory_report

    other_7b = shutil.copytree(llava_7b, tmp_path / "other-7b")
    rows = memory_report.profile(MemoryConfig(checkpoints=(str(llava_7b), str(other_7b), *map(str, tiny_checkpoints)), measure=False))
    assert all(r.verdict.fits for r in rows)
    together = memory.resident_together([r.estimate for r in rows], "t4-small")
    first_7b = rows[0].estimate.checkpoint
    assert [e.checkpoint for e in together] == [*(c.name for c in tiny_checkpoints), first_7b]  # the smallest first
    assert memory_report.summary(rows).splitlines()[-1] == (
        "together on t4-small: 6 of these 7 checkpoints fit loaded at once, with room for one to generate (the smallest "
        f"first: checkpoint-0, checkpoint-250, checkpoint-500, checkpoint-750, checkpoint-1000, {first_7b}); the model cache "
        "loads the others in turn, evicting the least recently used")
    weights = sum(e.weight_bytes for e in together)
    working = max(e.generate_bytes() - e.weight_bytes for e in together)
    assert weights + working <= memory.budget_bytes("t4-small") < weights + working + rows[1].estimate.weight_bytes
    tiny = [r for r in rows if r.estimate.checkpoint.startswith("checkpoint-")]
    assert memory_report.summary(tiny).splitlines()[-1] == (
        f"together on t4-small: all 5 fit loaded at once, with room for one to generate ({memory.human_bytes(5 * tiny[0].estimate.weight_bytes)} of weights)")
    assert memory_report.summary(tiny[:2]).splitlines()[-1].startswith("together on t4-small: both fit loaded at once")  # not "all 2"
    assert len(memory_report.summary(tiny[:1]).splitlines()) == 1  # one checkpoint: its own line says it
    too_big = memory_report.profile(MemoryConfig(checkpoints=(str(llava_7b), str(other_7b)), dtype="float32", measure=False))
    assert memory_report.summary(too_big).count("\n") == 0 and "together" not in memory_report.summary(too_big)  # none fits: no line


def test_profile_checks_every_reference_before_measuring_any(tiny_checkpoints, copy_checkpoint, capsys):
    """A broken reference last in the list fails at once, not after minutes of measuring the others."""
    from vlm_lab import memory_report

    broken = copy_checkpoint("truncated")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    config = MemoryConfig(checkpoints=(str(tiny_checkpoints[-1]), str(broken)), device="cpu", max_new_tokens=4)
    with pytest.raises(CheckpointNotFoundError, match="not a valid safetensors file"):
        memory_report.profile(config, progress=True)
    out, err = capsys.readouterr()
    assert "measuring" not in out + err


@pytest.fixture
def project(tmp_path, tiny_dir) -> Path:
    """A scratch project root: pyproject.toml, notebook 03 and checkpoints/shapes -> the test checkpoints."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / "notebooks").mkdir()
    shutil.copy(NOTEBOOK, tmp_path / "notebooks" / NOTEBOOK.name)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "shapes").symlink_to(tiny_dir, target_is_directory=True)
    return tmp_path


def test_notebook_tells_a_newcomer_which_checkpoint_its_tables_show_and_how_to_plan_an_undownloaded_model():
    """With several checkpoints, the weights and Space GPU tables show only ``rows[-1]``, and neither table names it:
    the text before them must. A newcomer deciding on a hub model (a 7B LLaVA) must learn from the notebook that its
    configs are enough (``measure=False``), as the README says, without downloading the weights."""
    import nbformat

    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    for i, cell in enumerate(cells):
        if cell.cell_type == "code" and "rows[-1]" in cell.source and "plot" not in cell.source:
            text = cells[i - 1].source
            assert cells[i - 1].cell_type == "markdown" and "last checkpoint" in text and "rows[" in text, cell.source
    story = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    assert "config.json" in story and "measure=False" in story and "hf download" in story


def test_notebook_house_style():
    import ast

    import nbformat

    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    (params,) = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    names = []
    for line in params.source.splitlines():
        code, _, help_text = line.partition("  # ")
        node = ast.parse(code).body[0]
        assert isinstance(node, ast.AnnAssign) and help_text.strip(), line
        names.append(node.target.id)
    assert names == [f.name for f in dataclasses.fields(MemoryConfig)]  # the parameters are the config
    # papermill reads them too (`papermill --help-notebook`, and it warns "Passed unknown parameter" for any it cannot
    # parse: it gives up on a line whose help holds "=")
    import papermill

    assert list(papermill.inspect_notebook(str(NOTEBOOK))) == names
    for cell in cells:
        if cell.cell_type == "code":
            tree = ast.parse(cell.source)
            assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda)) for n in ast.walk(tree)), cell.source
            if cell.outputs:
                assert "NBVAL_CHECK_OUTPUT" in cell.source, "commit outputs only for cells nbval checks"


@pytest.mark.slow
def test_notebook_runs_under_papermill(project, tiny_checkpoints, artifacts_dir):
    import papermill

    out = artifacts_dir / "papermill-03_memory_profile.ipynb"
    nb = papermill.execute_notebook(
        str(project / "notebooks" / NOTEBOOK.name), str(out), kernel_name="python3", cwd=str(project), progress_bar=False,
        parameters={"checkpoints": str(tiny_checkpoints[-1]), "max_new_tokens": 4, "batch_size": 2},
    )
    outputs = "".join(json.dumps(c.get("outputs", [])) for c in nb.cells)
    assert "checkpoint-1000" in outputs and "checkpoint-0" not in outputs
    assert outputs.count("image/png") == 2 and "Traceback" not in outputs


@pytest.mark.slow
def test_notebook_passes_nbval(project):
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", f"notebooks/{NOTEBOOK.name}",
        "--nbval-sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"),
    ]  # fmt: skip
    r = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


@pytest.mark.parametrize("values, named", [
    (dict(rehearse=True), "rehearse=True needs"),
    (dict(snapshot_dir="snaps"), "snapshot_dir='snaps' needs"),
])
def test_what_needs_a_measurement_is_refused_without_one(tiny_checkpoints, values, named):
    from vlm_lab.memory_report import profile

    with pytest.raises(ConfigError, match=f"^{named} a measurement, which measure=False skips; drop measure=False"):
        profile(MemoryConfig(checkpoints=(str(tiny_checkpoints[-1]),), measure=False, **values))


def test_max_batch_says_when_it_is_the_search_cap(tiny_checkpoints, llava_7b):
    from vlm_lab.memory_report import targets_table

    capped = memory.verdict(memory.estimate(tiny_checkpoints[-1]))
    assert capped.max_batch_size == memory.MAX_BATCH and capped.max_batch_capped
    assert f"max batch >= {memory.MAX_BATCH}," in capped.message()
    assert set(targets_table(memory.estimate(tiny_checkpoints[-1]))["max_batch"]) == {f">= {memory.MAX_BATCH}"}
    exact = memory.verdict(memory.estimate(llava_7b, dtype="float16"), "a100-large")
    assert 1 < exact.max_batch_size < memory.MAX_BATCH and not exact.max_batch_capped
    assert f"max batch {exact.max_batch_size}," in exact.message()


def test_a_batch_asked_above_the_search_cap_is_searched_up_to(tiny_checkpoints):
    """At batch 120000 on t4-small the tiny checkpoint does not fit: it said "max batch >= 4096; batch 4096 fits" where
    some 98000 fit (and where 60000 fits, "max batch >= 4096"). Past an asked batch above the cap, the search goes on up to it."""
    v = memory.verdict(memory.estimate(tiny_checkpoints[-1], batch_size=120000))
    assert not v.fits and memory.MAX_BATCH < v.max_batch_size < 120000 and not v.max_batch_capped, v.message()
    assert f"max batch {v.max_batch_size}; batch {v.max_batch_size} fits" in v.message()
    at_most = memory.verdict(memory.estimate(tiny_checkpoints[-1], batch_size=5000))  # fits: a larger one may too
    assert at_most.fits and at_most.max_batch_size == 5000 and f"max batch >= 5000," in at_most.message()


def test_summary_says_when_the_fixed_overhead_is_most_of_a_measured_estimate(tiny_checkpoints, llava_7b):
    """The tiny checkpoints' estimate is mostly the 32 MiB CPU runtime constant: their error % must not read as the tool's."""
    from vlm_lab import memory_report

    (row,) = memory_report.profile(MemoryConfig(checkpoints=(str(tiny_checkpoints[-1]),), device="cpu", max_new_tokens=2))
    share = memory.CPU_RUNTIME_BYTES / row.estimate.peak_bytes()
    assert share > 0.5 and row.measured_bytes
    assert f"off (a fixed 32.00 MiB CPU runtime overhead is {share:.0%} of this estimate, so its error says little about larger models)" \
        in memory_report.summary([row])
    assert memory_report.overhead_note(memory.estimate(llava_7b, dtype="float16", device="cpu")) == ""
    assert "CUDA context overhead" in memory_report.overhead_note(memory.estimate(tiny_checkpoints[-1], device="cuda"))


def test_a_failed_measurement_is_not_retried_for_its_look_alikes(copy_checkpoint, capfd):
    from vlm_lab import memory_report

    broken = []
    for name in ("mismatched-a", "mismatched-b"):  # same architecture and bytes: one measurement would serve both
        folder = copy_checkpoint(name)
        config = json.loads((folder / "config.json").read_text())
        config["text_config"]["intermediate_size"] *= 2
        (folder / "config.json").write_text(json.dumps(config))
        broken.append(str(folder))
    with pytest.warns(memory_report.NotMeasuredWarning):
        rows = list(memory_report.iter_profile(MemoryConfig(checkpoints=tuple(broken), device="cpu", max_new_tokens=4), progress=True))
    assert rows[0].not_measured.startswith("the measuring process failed") and rows[1].not_measured == rows[0].not_measured
    assert capfd.readouterr().err.count("measuring ") == 1  # the second was not sent to a new process


def test_answers_are_planned_only_as_far_as_the_models_context(tiny_checkpoints, tmp_path):
    """The tiny checkpoints read 128 positions: 100000 new tokens asked were a KV cache for 100000 (and a measurement that
    generated them); the answers generation would give stop at the context, and the estimate says so."""
    ckpt = tiny_checkpoints[-1]
    est = memory.estimate(ckpt, max_new_tokens=100_000)  # 32 prompt + 64 image tokens
    assert (est.context_tokens, est.max_new_tokens, est.asked_new_tokens, est.sequence_tokens) == (128, 32, 100_000, 128)
    assert est.kv_cache_bytes() == memory.estimate(ckpt, max_new_tokens=32).kv_cache_bytes()
    assert "answers stop at 32 of the 100000 new tokens asked" in est.context_note
    assert memory.estimate(ckpt, max_new_tokens=8).context_note == ""
    # notebook 03 and MemoryConfig set prompt_tokens= and image_size=; the CLI's flags are named beside them. A LLaVA
    # resizes every image to one square: a smaller image_size changes nothing, so only the prompt is named
    with pytest.raises(ConfigError, match=r"reads at most 128 positions .* a prompt of 100 text tokens \+ 64 image tokens .* lower "
                       r"prompt_tokens \(--prompt-tokens on the command line\); the image's 64 tokens do not depend on its size \(llava\)$"):
        memory.estimate(ckpt, prompt_tokens=100)
    with pytest.raises(ConfigError, match=r"lower prompt_tokens or image_size \(--prompt-tokens or --image-size on the command line\)$"):
        memory.estimate(memory_synthetic.build_llava_next(tmp_path / "next"), prompt_tokens=1000)  # 1024 positions; tiles by size
    r = subprocess.run([sys.executable, "-m", "vlm_lab.cli", "memory", str(ckpt), "--no-measure", "--max-new-tokens", "100000"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "answers stop at 32 of the 100000 new tokens asked" in r.stdout, r.stderr


@pytest.mark.parametrize("drop", ["text_config", "vision_config"])
def test_a_config_that_does_not_describe_its_weights_is_said_so(copy_checkpoint, drop):
    """A config.json without text_config (or vision_config) takes transformers' defaults: a LLaVA without text_config
    is a 7B Llama. The estimate follows config.json, as loading does, and said nothing: 'needs 13.34 GiB, fits'
    for a 0.17M-parameter checkpoint. Now the row says the config and the weight files disagree."""
    from vlm_lab import memory_report

    folder = copy_checkpoint(f"no-{drop}")
    config = json.loads((folder / "config.json").read_text())
    del config[drop]
    (folder / "config.json").write_text(json.dumps(config))
    [row] = memory_report.profile(MemoryConfig(checkpoints=(str(folder),), measure=False))
    est = row.estimate
    assert est.file_params == 168256 != est.num_params
    note = est.weights_note
    assert note.startswith("config.json describes ")
    assert note.endswith("but its weight files hold 168.26K: the estimate follows config.json, which does not describe these "
                         "weights (a missing field such as text_config or vision_config takes transformers' default); fix config.json, "
                         "or check the weight files")
    assert f"; {note}" in memory_report.summary([row])
    assert row.to_dict()["weights_note"] == note and row.to_dict()["params_in_weight_files"] == 168256


def test_a_config_that_describes_its_weights_says_nothing_more(tiny_checkpoints):
    from vlm_lab import memory_report

    [row] = memory_report.profile(MemoryConfig(checkpoints=(str(tiny_checkpoints[-1]),), measure=False))
    assert row.estimate.file_params == row.estimate.num_params == 168256
    assert row.estimate.weights_note == "" and row.to_dict()["weights_note"] is None


def test_a_checkpoint_that_fits_is_at_least_one_at_once(tiny_checkpoints):
    """On CPU the dtype conversion copy is only there while loading, and the batch only while generating: a model
    whose load and generation each fit, though not both at once, fits, so one of it is loaded at once, not 0."""
    import dataclasses

    est = memory.estimate(tiny_checkpoints[-1], dtype="float16", device="cpu", batch_size=1)  # stored in float32
    room = budget_bytes("cpu-basic") - est.weight_bytes - est.overhead_bytes("cpu")
    per_sample = room // 2 // est.batch_size
    est = dataclasses.replace(est, file_bytes=room * 3 // 4, kv_values_per_token=0, logits_bytes_per_sample=per_sample,
                              activation_values_per_sample=0, cross_kv_values_per_sample=0)
    assert est.converts and est.load_bytes("cpu") <= budget_bytes("cpu-basic") and est.generate_bytes(device="cpu") <= budget_bytes("cpu-basic")
    v = memory.verdict(est, "cpu-basic")
    assert v.fits and v.co_resident == 1 == memory.co_resident(est, "cpu-basic"), v.message()
    too_big = dataclasses.replace(est, logits_bytes_per_sample=room + 1)
    assert (memory.verdict(too_big, "cpu-basic").fits, memory.co_resident(too_big, "cpu-basic")) == (False, 0)
