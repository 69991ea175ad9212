"""Randomly initialised VLM checkpoints of a chosen size, to check the memory estimate.

With no hub in reach, the estimate is checked on models built from a config:
a LLaVA (CLIP vision tower + projector + Llama) at any width and depth, saved with
``save_pretrained`` together with the tiny shapes processor, so it loads through
the same Auto classes as any checkpoint. ``LLAVA_100M`` (~105M parameters,
~400 MiB in float32) is the accuracy benchmark's model. ``build_llava_next`` saves a tiny
LLaVA-NeXT whose image tokens depend on the image's height and width.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from pathlib import Path

from vlm_lab.model_construction import building_models


@dataclasses.dataclass(frozen=True)
class LlavaSize:
    """Widths and depths of a synthetic LLaVA."""

    vision_width: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 128
    image_size: int = 64  # must equal the processor's crop size (64 for the shapes processor)
    patch_size: int = 8
    tie_word_embeddings: bool = False


LLAVA_TINY = LlavaSize()
LLAVA_100M = LlavaSize(
    vision_width=768, vision_layers=4, vision_heads=12,
    text_width=768, text_layers=12, text_heads=12, text_kv_heads=4, text_intermediate=2048,
)


def llava_config(size: LlavaSize = LLAVA_TINY, *, vocab_size: int = 64, image_token_id: int = 3, pad_token_id: int = 0):
    """A ``LlavaConfig`` of the given size (no weights)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(
        hidden_size=size.vision_width, intermediate_size=4 * size.vision_width, num_hidden_layers=size.vision_layers,
        num_attention_heads=size.vision_heads, image_size=size.image_size, patch_size=size.patch_size,
        projection_dim=size.vision_width,
    )
    text = LlamaConfig(
        vocab_size=vocab_size, hidden_size=size.text_width, intermediate_size=size.text_intermediate,
        num_hidden_layers=size.text_layers, num_attention_heads=size.text_heads, num_key_value_heads=size.text_kv_heads,
        max_position_embeddings=1024, pad_token_id=pad_token_id, bos_token_id=None,
        tie_word_embeddings=size.tie_word_embeddings,
    )
    return LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=image_token_id,
        vision_feature_select_strategy="default", vision_feature_layer=-1, pad_token_id=pad_token_id,
        tie_word_embeddings=size.tie_word_embeddings,
    )


def build_llava(out: str | os.PathLike[str], size: LlavaSize = LLAVA_100M, *, seed: int = 0) -> Path:
    """Save a randomly initialised LLaVA of ``size`` with the shapes processor into ``out``.

    Skipped when ``out`` already holds one (config.json and weights). Written to a
    temp folder first and renamed, so an interrupted build never looks finished.
    """
    from transformers import GenerationConfig, LlavaForConditionalGeneration

    from vlm_lab import tiny

    out = Path(out)
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    processor = tiny.build_processor()
    tok = processor.tokenizer
    config = llava_config(size, vocab_size=len(tok), image_token_id=tok.convert_tokens_to_ids(tiny.IMAGE_TOKEN),
                          pad_token_id=tok.pad_token_id)
    config.text_config.eos_token_id = tok.eos_token_id
    with building_models(f"a synthetic LLaVA ({out.name})"), _seeded(seed):
        model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    return _save(out, model, processor)


@contextlib.contextmanager
def _seeded(seed: int):
    """Torch's global generator seeded with ``seed`` inside, the caller's state back after.

    The weights are those of ``torch.manual_seed(seed)``; a notebook's own random stream goes
    on as if nothing was built (``torch.manual_seed`` alone reseeded it for the rest of the session).
    """
    import torch

    with torch.random.fork_rng(devices=[]):  # the model is initialised on CPU: no CUDA generator to save
        torch.manual_seed(seed)
        yield


def _save(out: Path, model, processor) -> Path:
    """Model + processor into a temp folder, then renamed: an interrupted build never looks finished."""
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out


def write_config_only(out: str | os.PathLike[str], config, processor_settings: dict | None = None) -> Path:
    """A folder with only config.json (+ processor_config.json): enough for an estimate."""
    import json

    from vlm_lab.data import atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    if processor_settings:
        atomic_write_text(out / "processor_config.json", json.dumps(processor_settings, indent=2))
    return out


# a tile a 32 px, pinpoints of 1x2, 2x1, 2x2 and the 1x4 / 4x1 strips: a strip of 4 tiles makes more tokens than a square
NEXT_PINPOINTS = ((32, 64), (64, 32), (64, 64), (32, 128), (128, 32))


def build_llava_next(out: str | os.PathLike[str], *, pinpoints=NEXT_PINPOINTS, seed: int = 0) -> Path:
    """Save a randomly initialised tiny LLaVA-NeXT (CLIP 32 px tiles, patch 8) with a real ``LlavaNextProcessor``.

    Its image tokens depend on the image's height and width (anyres pinpoints), so it
    loads and generates like any checkpoint whose memory depends on the image's shape.
    """
    from transformers import GenerationConfig, LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil, LlavaNextProcessor

    from vlm_lab import tiny

    out = Path(out)
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    shapes = tiny.build_processor()
    tok = shapes.tokenizer
    base = llava_config(LlavaSize(image_size=32), vocab_size=len(tok), image_token_id=tok.convert_tokens_to_ids(tiny.IMAGE_TOKEN),
                        pad_token_id=tok.pad_token_id)
    base.text_config.eos_token_id = tok.eos_token_id
    points = [list(p) for p in pinpoints]
    config = LlavaNextConfig(vision_config=base.vision_config, text_config=base.text_config, image_token_index=base.image_token_id,
                             image_grid_pinpoints=points, vision_feature_select_strategy="default", vision_feature_layer=-1,
                             pad_token_id=tok.pad_token_id)
    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_grid_pinpoints=points)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tok, chat_template=shapes.chat_template, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1, image_token=tiny.IMAGE_TOKEN)
    with building_models(f"a synthetic LLaVA-NeXT ({out.name})"), _seeded(seed):
        model = LlavaNextForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    return _save(out, model, processor)

