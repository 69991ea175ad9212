"""Tiny random checkpoints of hub VLM families that lay out prompts differently from LLaVA.

The embedded shapes checkpoints are LLaVAs. Real comparisons run PaliGemma (no chat
template: a plain prompt, the processor places the image) and Gemma 3 (several images
per prompt, so a batch's images go one list per prompt; ``token_type_ids``) and Idefics3
(SmolVLM's architecture: each image split into tiles with row and column markers) and Mllama
(Llama 3.2 Vision: the image reaches the text through cross-attention). Each
builder saves a randomly initialised model of that family with its real transformers
processor, on the shapes tokenizer, so tests load them through the same Auto classes as
a hub checkpoint. Their answers are noise; what they check is that batching, padding and
prompt layout work for the family (greedy outputs equal at every batch size).
"""

from __future__ import annotations

import os
from pathlib import Path

from vlm_lab.memory_synthetic import _save

GEMMA3_MARKERS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
# a chat template in the layout of Gemma 3's: the image part becomes its begin-of-image marker
GEMMA3_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<start_of_image>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _built(out: Path) -> bool:
    return (out / "config.json").is_file() and any(out.glob("*.safetensors"))


def _shapes_tokenizer(**extra):
    """The shapes tokenizer (word level, left padding) rebuilt with a bos token and ``extra`` special tokens."""
    from vlm_lab import tiny

    base = tiny.build_processor().tokenizer
    return type(base)(tokenizer_object=base.backend_tokenizer, bos_token="<bos>", eos_token=base.eos_token, pad_token=base.pad_token,
                      unk_token=base.unk_token, padding_side="left", **extra)  # fmt: skip


def _text_config(tok) -> dict:
    return dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                head_dim=16, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)  # fmt: skip


def _finish(out: Path, model_class, config, processor, tok, seed: int) -> Path:
    """Initialise ``model_class(config)`` from ``seed`` without touching the caller's random stream, and save it."""
    import torch
    from transformers import GenerationConfig

    with torch.random.fork_rng(devices=[]):  # CPU init only; the caller's torch generator is restored after
        torch.manual_seed(seed)
        model = model_class(config)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    return _save(out, model, processor)


def build_paligemma(out: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """A tiny PaliGemma (SigLIP 64 px, patch 8: 64 image tokens; Gemma) with a real ``PaliGemmaProcessor``.

    Like the hub's PaliGemma checkpoints it has no chat template: its processor takes a
    plain prompt and places the image tokens, a bos and a newline itself.
    """
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor, SiglipImageProcessorPil

    out = Path(out)
    if _built(out):
        return out
    tok = _shapes_tokenizer()
    image_processor = SiglipImageProcessorPil(size={"height": 64, "width": 64}, image_seq_length=64)
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)  # adds <image>, <locNNNN>, <segNNN>
    vision = dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=64, patch_size=8, projection_dim=32)  # fmt: skip
    config = PaliGemmaConfig(vision_config=vision, text_config=dict(model_type="gemma", **_text_config(tok)),
                             image_token_index=processor.image_token_id, projection_dim=32, hidden_size=32)  # fmt: skip
    return _finish(out, PaliGemmaForConditionalGeneration, config, processor, tok, seed)


def build_gemma3(out: str | os.PathLike[str], *, seed: int = 0, image_seq_length: int = 16, sliding_window: int = 64,
                 layer_types: tuple[str, ...] | None = None) -> Path:
    """A tiny Gemma 3 (SigLIP 64 px, patch 8, pooled to ``image_seq_length`` tokens) with a real ``Gemma3Processor``.

    Its 2 text layers attend within ``sliding_window`` positions unless ``layer_types`` says otherwise
    (``("sliding_attention", "full_attention")``: the alternation of the hub's Gemma 3, whose every 6th layer is full).
    """
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor

    out = Path(out)
    if _built(out):
        return out
    tok = _shapes_tokenizer(extra_special_tokens=GEMMA3_MARKERS)
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 64, "width": 64}), tokenizer=tok,
                                chat_template=GEMMA3_CHAT_TEMPLATE, image_seq_length=image_seq_length)  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=64, patch_size=8)
    config = Gemma3Config(vision_config=vision, text_config=dict(sliding_window=sliding_window, layer_types=list(layer_types) if layer_types else None,
                                                                      **_text_config(tok)), mm_tokens_per_image=image_seq_length,
                          boi_token_index=tok.boi_token_id, eoi_token_index=tok.eoi_token_id, image_token_index=tok.image_token_id)  # fmt: skip
    return _finish(out, Gemma3ForConditionalGeneration, config, processor, tok, seed)


# Idefics3's layout: the image part becomes one <image>, which the processor expands into tiles
IDEFICS3_CHAT_TEMPLATE = GEMMA3_CHAT_TEMPLATE.replace("<start_of_image>", "<image>").replace("<|end|>{% endfor %}", "<end_of_utterance>{% endfor %}")


def build_idefics3(out: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """A tiny Idefics3 (SmolVLM's architecture) that splits a 64 px image into 4 tiles of 32 px plus a global one.

    Each tile is 4 image tokens between ``<fake_token_around_image>`` and a ``<row_i_col_j>``
    marker; SmolVLM's own processor needs torchvision (for video), Idefics3's does not.
    """
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil, Idefics3Processor

    out = Path(out)
    if _built(out):
        return out
    tok = _shapes_tokenizer()
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True)
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tok, image_seq_len=4, chat_template=IDEFICS3_CHAT_TEMPLATE)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
    config = Idefics3Config(vision_config=vision, text_config=dict(model_type="llama", **_text_config(tok)), scale_factor=2,
                            image_token_id=processor.image_token_id)  # fmt: skip
    return _finish(out, Idefics3ForConditionalGeneration, config, processor, tok, seed)


def build_mllama(out: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """A tiny Mllama (Llama 3.2 Vision): 32 px tiles, at most 2 a image, read by one cross-attention layer.

    The prompt holds a single ``<|image|>``; the image reaches the text through
    ``cross_attention_mask``, which the processor builds per prompt from nested image lists.
    """
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessorPil, MllamaProcessor

    out = Path(out)
    if _built(out):
        return out
    tok = _shapes_tokenizer(extra_special_tokens={"image_token": "<|image|>"})
    tok.add_special_tokens({"additional_special_tokens": ["<|image|>", "<|python_tag|>"]})
    processor = MllamaProcessor(image_processor=MllamaImageProcessorPil(size={"height": 32, "width": 32}, max_image_tiles=2), tokenizer=tok,
                                chat_template=GEMMA3_CHAT_TEMPLATE.replace("<start_of_image>", "<|image|>"))  # fmt: skip
    vision = dict(hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=2, intermediate_size=64, vision_output_dim=64,
                  image_size=32, patch_size=8, max_num_tiles=2, intermediate_layers_indices=[0], supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]])  # fmt: skip
    text = {**_text_config(tok), "num_hidden_layers": 3, "cross_attention_layers": [1]}
    text.pop("head_dim")
    config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=processor.image_token_id)
    return _finish(out, MllamaForConditionalGeneration, config, processor, tok, seed)
