"""vlm_lab.memory_kv: the positions each layer's KV cache holds (sliding windows), and the prefill / decode headroom.

The sliding-window counts are checked against a real tiny Gemma 3 (a sliding and a full layer) whose cache
is weighed after ``generate``, and by hand against Gemma-3-4B's public config.
"""

from __future__ import annotations

import pytest

from vlm_lab import memory, memory_kv, memory_synthetic, synthetic_families

SLIDING, FULL = "sliding_attention", "full_attention"


# ----------------------------------------------------------------------------- a real cache


@pytest.fixture(scope="module")
def gemma3_window_12(tmp_path_factory):
    """A tiny Gemma 3 whose first layer keeps 12 positions and whose second keeps them all (the hub's alternation)."""
    return synthetic_families.build_gemma3(tmp_path_factory.mktemp("gemma3") / "w12", sliding_window=12, layer_types=(SLIDING, FULL))


def _cache_peak_over_generate(ref, new_tokens: int) -> tuple[int, int]:
    """(prefill positions, the most bytes the KV cache's tensors held after any step) over a real greedy ``generate``.

    Storage bytes, not shapes: a sliding layer's keys are a view of the last window-1 positions, and the tensor they
    view (the whole prefill, until the first decode step replaces it) is what stays allocated.
    """
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor, DynamicCache, StoppingCriteria

    processor = AutoProcessor.from_pretrained(ref)
    model = AutoModelForImageTextToText.from_pretrained(ref, dtype=torch.float32).eval()
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what shape is it"}]}],
                                         add_generation_prompt=True)
    enc = processor(images=[[Image.new("RGB", (64, 64), "red")]], text=[text], return_tensors="pt")
    cache, held = DynamicCache(config=model.config), []

    class Weigh(StoppingCriteria):  # called after every forward, the prefill's too
        def __call__(self, input_ids, scores, **kwargs):
            held.append(sum(t.untyped_storage().nbytes() for layer in cache.layers for t in (layer.keys, layer.values)))
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    with torch.inference_mode():
        model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, past_key_values=cache,
                       stopping_criteria=[Weigh()])
    assert len(held) == new_tokens and [type(layer).__name__ for layer in cache.layers] == ["DynamicSlidingWindowLayer", "DynamicLayer"]
    return int(enc["input_ids"].shape[1]), max(held)


@pytest.mark.parametrize("new_tokens", [30, 1, 5], ids=["past-the-window", "prefill-only", "first-steps"])
def test_a_real_gemma3_cache_peaks_where_the_estimate_says(gemma3_window_12, new_tokens):
    """Past the window, the sliding layer keeps 12 positions and the full one all (the estimate counted all in both).
    Early on, the cache peaks at the prefill: the sliding layer still holds it all then (its keys view it)."""
    prefill, held = _cache_peak_over_generate(gemma3_window_12, new_tokens)
    image = memory.estimate(gemma3_window_12, dtype="float32", device="cpu").image.tokens
    est = memory.estimate(gemma3_window_12, dtype="float32", device="cpu", prompt_tokens=prefill - image, max_new_tokens=new_tokens)
    assert prefill > 12 and est.prefill_tokens == prefill
    # the last new token is never fed back, so the estimate may be one position of each layer over; never under
    assert 0 <= est.kv_cache_bytes() - held <= est.kv_bytes_per_token, (est.kv_cache_bytes(), held)


# ----------------------------------------------------------------------------- which layers slide


def _layers(config) -> tuple[int, tuple[int, ...]]:
    kv = memory_kv.kv_layers(config)
    return kv.full, kv.windows


def _mistral_llava(window):
    from transformers import LlavaConfig

    return LlavaConfig(text_config=dict(model_type="mistral", hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                                        num_key_value_heads=2, sliding_window=window, vocab_size=100))  # fmt: skip


def _qwen2_vl(use_sliding_window):
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(text_config=dict(vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                                          num_key_value_heads=2, use_sliding_window=use_sliding_window, sliding_window=256, max_window_layers=1,
                                          rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}))  # fmt: skip


def _paligemma2():
    from transformers import PaliGemmaConfig

    return PaliGemmaConfig(text_config=dict(model_type="gemma2", hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                                            num_key_value_heads=2, head_dim=16, sliding_window=512, vocab_size=100))  # fmt: skip


def _gemma3_pattern():
    from transformers import Gemma3Config

    # a hub config from before layer_types: every 6th layer full
    return Gemma3Config(text_config=dict(num_hidden_layers=7, sliding_window=1024, sliding_window_pattern=6, hidden_size=64, intermediate_size=128,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, vocab_size=100))  # fmt: skip


@pytest.mark.parametrize("config, full, windows", [
    (lambda: _mistral_llava(4096), 0, (4096,) * 4),  # Mistral: every layer slides
    (lambda: _mistral_llava(None), 4, ()),  # Mistral v0.2+ (sliding_window null)
    (lambda: _qwen2_vl(True), 1, (256, 256)),  # Qwen2: the layers from max_window_layers on
    (lambda: _qwen2_vl(False), 3, ()),
    (_paligemma2, 2, (512, 512)),  # Gemma 2: sliding, full, sliding, full
    (_gemma3_pattern, 1, (1024,) * 6),
    (lambda: memory_synthetic.llava_config(memory_synthetic.LLAVA_TINY), 2, ()),
], ids=["mistral", "mistral-no-window", "qwen2-vl-sliding", "qwen2-vl", "paligemma2", "gemma3-pattern", "llama"])
def test_the_layers_that_slide_are_those_transformers_caches_so(config, full, windows):
    assert _layers(config()) == (full, windows)


def test_mllama_cross_attention_layers_are_not_self_attention_layers():
    from transformers import MllamaConfig

    config = MllamaConfig(text_config=dict(num_hidden_layers=5, cross_attention_layers=[1, 3], hidden_size=64, intermediate_size=128,
                                           num_attention_heads=4, num_key_value_heads=2, vocab_size=100))  # fmt: skip
    assert _layers(config) == (3, ())


# ----------------------------------------------------------------------------- by hand, a real config

# Gemma-3-4B (google/gemma-3-4b-it config.json): 34 text layers, sliding_window 1024, sliding_window_pattern 6
# (layers 5, 11, 17, 23, 29 full), 4 KV heads of 256; SigLIP 896 px, patch 14, pooled to 256 tokens an image.
GEMMA3_4B = dict(
    text_config=dict(hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8, num_key_value_heads=4,
                     head_dim=256, sliding_window=1024, sliding_window_pattern=6, max_position_embeddings=131072, vocab_size=262208,
                     query_pre_attn_scalar=256, rope_scaling={"factor": 8.0, "rope_type": "linear"}),
    vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16, image_size=896, patch_size=14),
    mm_tokens_per_image=256, boi_token_index=255999, eoi_token_index=256000, image_token_index=262144,
)


@pytest.fixture(scope="module")
def gemma3_4b(tmp_path_factory):
    from transformers import Gemma3Config

    return memory_synthetic.write_config_only(tmp_path_factory.mktemp("gemma-3-4b"), Gemma3Config(**GEMMA3_4B))


def test_gemma3_4b_kv_cache_by_hand(gemma3_4b):
    est = memory.estimate(gemma3_4b, dtype="float16", prompt_tokens=32, max_new_tokens=2000)
    prefill = 32 + est.image.tokens
    assert est.image.tokens == 256 + 4  # the soft tokens, begin/end of image and the blank lines around them
    per_position = 2 * 4 * 256 * 2  # K and V x 4 heads x 256 x float16: 4 KiB a layer
    # 5 full layers hold all 2292 positions; 29 sliding layers 1024 each
    assert est.kv_cache_bytes() == (5 * (prefill + 2000) + 29 * 1024) * per_position == 168_574_976
    # the headroom: the prefill's widest layer, here SigLIP's MLP over (896/14)^2 patches (2 x 1152 + 2 x 4304 a patch), not
    # the text MLP over 292 positions (3 x 10240 + 2 x 2560), + the 292 embedded positions
    assert est.image.patches == 64 * 64
    assert est.activation_values_per_sample == max(64 * 64 * (2 * 1152 + 2 * 4304), 292 * (3 * 10240 + 2 * 2560)) + 292 * 2560


def test_gemma3_4b_fits_a_t4_at_batch_8_with_8k_new_tokens(gemma3_4b):
    """Counted as if every layer kept every position (and the MLP ran over all 8484 of them), it did not fit."""
    v = memory.verdict(memory.estimate(gemma3_4b, dtype="float16", batch_size=8, prompt_tokens=32, max_new_tokens=8192), "t4-small")
    assert v.fits, v.message()
    assert "(float16, batch 8) fits on t4-small: needs " in v.message()


# ----------------------------------------------------------------------------- prefill, then one token a step


@pytest.fixture(scope="module")
def llava_tiny_config(tmp_path_factory):
    """hidden 64, intermediate 128, 2 layers of 2 KV heads x 16; 64 image tokens from CLIP (64 wide, MLP 256) over 65 patches."""
    return memory_synthetic.write_config_only(tmp_path_factory.mktemp("llava") / "tiny", memory_synthetic.llava_config(memory_synthetic.LLAVA_TINY))


PREFILL = max(65 * (2 * 64 + 2 * 256), 74 * (2 * 64 + 3 * 128)) + 74 * 64  # the wider of CLIP and the text MLP, + 10 + 64 embedded


@pytest.mark.parametrize("new_tokens, expected", [
    (8, PREFILL),  # the prefill, whatever the answer's length
    (500, PREFILL),
    # a long answer: a step's one position, and one layer's cache copied as it grows by one (2 x 2 x 16 a position)
    (900, (2 * 64 + 3 * 128) + 64 + 2 * 2 * 16 * (74 + 900)),
])
def test_activation_headroom_is_the_prefill_or_a_decode_step_not_the_whole_sequence(llava_tiny_config, new_tokens, expected):
    est = memory.estimate(llava_tiny_config, dtype="float32", device="cpu", prompt_tokens=10, max_new_tokens=new_tokens)
    assert est.image.tokens == 64
    assert est.activation_values_per_sample == expected
    assert est.with_new_tokens(new_tokens) == est  # another answer length is re-estimated the same way
