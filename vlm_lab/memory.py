"""Memory profiling, part 1: estimate a checkpoint's memory without loading its weights.

The model is built on the ``meta`` device from ``config.json`` (shapes, no storage),
so the parameter count is exact and costs no memory. On top of the weights:

- KV cache = 2 (K and V) x layers x kv_heads x head_dim x dtype bytes
  x (prompt tokens incl. image tokens + max_new_tokens) x batch, where a sliding-window
  layer (Mistral, Gemma 2 and 3, Qwen2 with use_sliding_window) keeps at most its window
  once decoding, as transformers' cache does (``memory_kv``);
- image tokens from the processor config, per architecture family
  (LLaVA patches, LLaVA-NeXT and Idefics3/SmolVLM tiles, Qwen2-VL min/max pixels),
  for the worst image shape the user may send (``memory_shapes``: a panorama can
  make more tokens than a square);
- activation headroom: with the KV cache, the prefill runs over the prompt and each
  step over one token, so the larger of the prefill's widest layer (text MLP or vision
  encoder, over prompt + image tokens) and a step (one token, plus one layer's cache
  copied as it grows), plus the float32 logits ``generate`` keeps per row;
- fixed overhead: the CUDA context on GPU, kernel code and allocator caches on CPU;
- on CPU, loading into a dtype other than the file's touches the whole
  memory-mapped file while the converted copy is built (both count in RSS).

``verdict`` (in ``memory_verdict``) turns an estimate into "fits on a T4?" with margin, the largest batch
and how many such checkpoints fit at once (``co_resident``): the numbers the model
cache and the Space use. ``MemoryEstimate`` and its arithmetic live in ``memory_estimate``;
the activation headroom in ``memory_activations``. Measurement lives in ``memory_measure``; the table and
plots in ``memory_report``; reading the checkpoint folder in ``memory_checkpoint``.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlm_lab.checkpoints import CheckpointRef, resolve
from vlm_lab.errors import CheckpointNotFoundError, ConfigError
from vlm_lab.memory_activations import _activation_at, _activation_parts, _text_dims
from vlm_lab.memory_checkpoint import (
    count_parameters,
    count_quantizable,
    load_config,
    local_folder,
    meta_model,
    processor_settings,
    require_vision_language,
    stored_quantization,
    weight_files,
)
from vlm_lab.memory_estimate import CPU_RUNTIME_BYTES, CUDA_CONTEXT_BYTES, DTYPE_BYTES, QUANTIZED, MemoryEstimate  # re-exported
from vlm_lab.memory_kv import kv_layers
from vlm_lab.memory_targets import (  # GPU_TARGETS, MIB, budget_bytes: re-exported
    DEFAULT_TARGET,
    GPU_TARGETS,
    MIB,
    GpuTarget,
    budget_bytes,
    get_target,
    recommended_dtype,
)
from vlm_lab.memory_shapes import parse_image_size, plan_image
from vlm_lab.memory_verdict import (  # re-exported: the verdict's home is memory_verdict
    MAX_BATCH,
    Verdict,
    co_resident,
    max_batch_size,
    resident_together,
    verdict,
    verdicts,
)
from vlm_lab.units import human_bytes  # re-exported

__all__ = [
    "GPU_TARGETS",
    "DTYPE_BYTES",
    "MemoryEstimate",
    "Verdict",
    "budget_bytes",
    "co_resident",
    "estimate",
    "human_bytes",
    "max_batch_size",
    "recommended_dtype",
    "resident_together",
    "verdict",
]

# --------------------------------------------------------------------- the estimate

def _context_tokens(config) -> int:
    """``generation.context_length``: the positions the model reads, as generation stops answers there (0 when unstated)."""
    from vlm_lab.generation import context_length

    return context_length(config) or 0


def _resolve_one(ref: str | os.PathLike[str] | CheckpointRef) -> CheckpointRef:
    if isinstance(ref, CheckpointRef):
        return ref
    path = Path(ref)
    if path.is_dir() and not (path / "config.json").is_file() and not any(path.glob("checkpoint-*")):
        raise CheckpointNotFoundError(
            f"no config.json in {str(ref)!r}; point at a model folder (or a training output with checkpoint-N folders)"
        )
    return resolve(str(ref), expand=False)[0]


def estimate(
    ref: str | os.PathLike[str] | CheckpointRef,
    *,
    dtype: str = "auto",
    device: str = "cuda",
    target: str | GpuTarget = DEFAULT_TARGET,
    batch_size: int = 1,
    prompt_tokens: int = 32,
    max_new_tokens: int = 32,
    image_size: int | str | tuple[int, int] = 0,
) -> MemoryEstimate:
    """Estimate memory to load and generate with a checkpoint, from its config alone.

    Args:
        ref: a model folder (config.json, optional processor configs and weights), a
            training output (its last checkpoint-N), a ``CheckpointRef`` or a hub id
            whose config is in the local cache.
        dtype: float32 | float16 | bfloat16 | int8 | int4, or ``auto`` (the dtype
            ``target`` should run: float16 on a T4, bfloat16 on Ampere+, float32 on CPU).
            A pre-quantized checkpoint (``quantization_config`` in config.json: bitsandbytes,
            AWQ, GPTQ, FP8, ...) loads its weights as stored whatever dtype is asked, so
            they are counted so (``dtype`` int4 or int8, ``quantization`` names the format).
        device: ``cuda`` or ``cpu``; decides the fixed overhead and the CPU conversion copy.
        batch_size, prompt_tokens, max_new_tokens: one generate call; ``prompt_tokens``
            counts text only, image tokens are added from the processor config.
        image_size: the images to plan for: 0 = any size, ``N`` = up to N px on the
            longer side, ``"HxW"`` or ``(H, W)`` = exactly that image. For families whose
            count depends on the shape, the estimate takes the worst of several aspects
            (``memory_shapes.plan_image``); ``estimate.image`` names the shape and why.

    Raises:
        CheckpointNotFoundError: no config.json at ``ref``, or a config that is not a vision-language
            model (a text-only LM: ``model_type`` gpt2, bert, ...).
        ConfigError: an unknown dtype, device or target, or a non-positive size.
    """
    if dtype == "auto":
        dtype = recommended_dtype(target) if get_target(target).device == device else ("float32" if device == "cpu" else "float16")
    if dtype not in DTYPE_BYTES:
        raise ConfigError(f"dtype={dtype!r} is not one of auto, {', '.join(DTYPE_BYTES)}")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device={device!r} is not one of cpu, cuda")
    for name, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens)):
        if value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if prompt_tokens < 0:
        raise ConfigError(f"prompt_tokens must be >= 0, got {prompt_tokens!r}")
    parse_image_size(image_size)  # before anything is read: a typo fails at once

    cref = _resolve_one(ref)
    folder = local_folder(cref)
    config = load_config(folder)
    require_vision_language(config, repr(cref.spec if cref.path is None else str(folder)))
    model = meta_model(config)
    params = count_parameters(model)
    stored = stored_quantization(config)
    if stored and stored.dtype:  # the asked dtype is only the compute dtype: the weights load as stored
        dtype = stored.dtype
    # buffers (rotary frequencies, position ids) keep their own dtype: count them as built
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    file_bytes, file_dtype, file_params = weight_files(folder)
    file_dtype = file_dtype or getattr(config, "dtype", None)
    file_dtype = str(file_dtype).replace("torch.", "") if file_dtype is not None else None
    if stored and stored.dtype:
        file_dtype = dtype  # loaded as stored: no converted copy

    image = plan_image(config, processor_settings(folder), image_size)
    dims = _text_dims(config)
    context = _context_tokens(config)
    asked = max_new_tokens
    if context:  # as generation does: no answer runs past the positions the model reads
        if prompt_tokens + image.tokens >= context:
            raise ConfigError(
                f"{cref.name} reads at most {context} positions (max_position_embeddings), and a prompt of {prompt_tokens} text "
                f"tokens + {image.tokens} image tokens ({image.shape} image) leaves no room for an answer; " + (
                    "lower prompt_tokens or image_size (--prompt-tokens or --image-size on the command line)" if image.by_shape else
                    # every image is resized to one square (LLaVA, PaliGemma): a smaller one makes as many tokens
                    f"lower prompt_tokens (--prompt-tokens on the command line); the image's {image.tokens} tokens do not "
                    f"depend on its size ({image.family})")
            )
        max_new_tokens = min(max_new_tokens, context - prompt_tokens - image.tokens)
    kv = kv_layers(config)
    activations = {**_activation_parts(config, dims, image), "kv_values_per_token": kv.values_per_position * (kv.full + len(kv.windows)),
                   "kv_values_per_layer": kv.values_per_position, "sliding_windows": kv.windows}
    est = MemoryEstimate(
        checkpoint=cref.name,
        model_type=config.model_type,
        dtype=dtype,
        device=device,
        params=params,
        quantizable=count_quantizable(model, stored.skip if stored else ()),
        buffer_bytes=buffer_bytes,
        file_bytes=file_bytes,
        file_dtype=file_dtype,
        file_params=0 if stored else file_params,  # packed quantized weights hold other counts
        batch_size=batch_size,
        prompt_tokens=prompt_tokens,
        image=image,
        max_new_tokens=max_new_tokens,
        activation_values_per_sample=_activation_at(prompt_tokens + image.tokens, prompt_tokens + image.tokens + max_new_tokens,
                                                    **activations),
        logits_bytes_per_sample=2 * dims["vocab"] * 4,
        cross_kv_values_per_sample=2 * dims["cross_layers"] * dims["kv_heads"] * dims["head_dim"] * image.cross_tokens,
        quantization=stored.description if stored else "",
        quantization_capability=stored.min_capability if stored and stored.dtype else "",
        quantization_below=stored.below if stored and stored.dtype else "",
        context_tokens=context,
        asked_new_tokens=asked if max_new_tokens < asked else 0,
        **activations,
    )
    return est

