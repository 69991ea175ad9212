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

``verdict`` turns an estimate into "fits on a T4?" with margin, the largest batch
and how many such checkpoints fit at once (``co_resident``): the numbers the model
cache and the Space use. Measurement lives in ``memory_measure``; the table and
plots in ``memory_report``; reading the checkpoint folder in ``memory_checkpoint``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Sequence

from vlm_lab.checkpoints import CheckpointRef, resolve
from vlm_lab.errors import CheckpointNotFoundError, ConfigError
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
from vlm_lab.memory_kv import cached_values, copy_positions, kv_layers
from vlm_lab.memory_targets import (
    DEFAULT_TARGET,
    GPU_TARGETS,
    MIB,
    SAFETY_FRACTION,
    GpuTarget,
    budget_bytes,
    check_dtype_on_target,
    get_target,
    recommended_dtype,
)
from vlm_lab.memory_shapes import parse_image_size, plan_image
from vlm_lab.memory_tokens import ImageTokens
from vlm_lab.units import human_bytes

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

# Bytes per parameter. int8/int4 are bitsandbytes-style: Linear weights quantized
# (int4 with one float32 absmax per 64-value block), everything else in float16.
DTYPE_BYTES: dict[str, float] = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "int4": 0.5 + 4 / 64}
QUANTIZED = ("int8", "int4")
# Device memory a CUDA process holds outside PyTorch's allocator (invisible to
# max_memory_reserved): the context at the first tensor plus what the first kernels
# load (cuBLAS handles, lazily loaded modules). Measured with memory_measure on an
# H100 80GB (torch 2.11+cu130, driver 580): 527 MiB at the first tensor, 697 MiB
# after generate, the same for a 0.17M- and a 105M-parameter model. Not measured on
# a T4 yet; where a GPU holds less, verdicts err on the safe side.
CUDA_CONTEXT_BYTES = 700 * MIB
# Measured with torch 2.13 on x86 CPU (the tiny checkpoints: 25-37 MiB above their
# weights): RSS the first load + generate adds beyond tensors (kernel code pages,
# oneDNN/OpenMP scratch, allocator caches).
CPU_RUNTIME_BYTES = 32 * MIB
MAX_BATCH = 4096  # max_batch_size stops searching here


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """What a checkpoint needs, before anything is loaded. All sizes in bytes."""

    checkpoint: str
    model_type: str
    dtype: str  # float32 | float16 | bfloat16 | int8 | int4
    device: str  # cpu | cuda: decides the fixed overhead and the CPU conversion copy
    params: dict[str, int]  # per component: vision, projector, language
    quantizable: dict[str, int]  # per component: parameters in Linear weights (what int8/int4 shrink)
    buffer_bytes: int  # rotary frequencies, position ids: they keep their own dtype
    file_bytes: int  # the checkpoint's weight files (0 when only config.json is at hand)
    file_dtype: str | None  # the weight files' float dtype, if one
    batch_size: int
    prompt_tokens: int  # text tokens of one prompt, without image tokens
    image: ImageTokens
    max_new_tokens: int  # as generated: the asked number, or fewer where the model's context ends (``context_tokens``)
    kv_values_per_token: int  # one sequence position, all self-attention layers, K and V (values, not bytes)
    activation_values_per_sample: int  # the prefill's widest layer or a decode step, whichever is larger, in the compute dtype
    logits_bytes_per_sample: int  # float32 logits + scores ``generate`` keeps per row
    cross_kv_values_per_sample: int = 0  # cross-attention layers' K and V of the image (Mllama): per row, not per token
    quantization: str = ""  # a pre-quantized checkpoint's stored format ("awq 4-bit"): ``dtype`` is then what it stores
    quantization_capability: str = ""  # the compute capability the stored format needs ("8.9" for FP8); "" any
    quantization_below: str = ""  # below it: "dequantize" (transformers loads 16-bit weights) | "refuse" (it cannot load)
    context_tokens: int = 0  # positions the model reads (max_position_embeddings); 0 when its config does not say
    asked_new_tokens: int = 0  # max_new_tokens as asked, when the context cut it to ``max_new_tokens``; else 0
    file_params: int = 0  # values the safetensors weight files hold; 0 when unknown (no weights, torch pickles, quantized)
    # activation_values_per_sample's parts (``_activation_at``), so another answer length is estimated without the config
    text_activation_values_per_token: int = 0
    vision_activation_values: int = 0
    embedding_values_per_token: int = 0
    kv_values_per_layer: int = 0  # one position of one self-attention layer (0: the layers are not told apart)
    sliding_windows: tuple[int, ...] = ()  # one per sliding-window layer: the positions it keeps once decoding (``memory_kv``)

    @property
    def weights_note(self) -> str:
        """"config.json describes 6.76B parameters but its weight files hold 0.20M: ..." when the two differ; else "".

        The estimate follows config.json, as loading does; a field it lacks takes transformers' default
        (a LLaVA without text_config is a 7B Llama), so the estimate describes some other model.
        """
        if not self.file_params or abs(self.file_params - self.num_params) <= 0.05 * self.num_params:
            return ""
        return (f"config.json describes {_count(self.num_params)} parameters but its weight files hold {_count(self.file_params)}: "
                "the estimate follows config.json, which does not describe these weights (a missing field such as text_config "
                "or vision_config takes transformers' default); fix config.json, or check the weight files")

    @property
    def context_note(self) -> str:
        """"answers stop at 32 of the 512 new tokens asked: ..." when the context cut them; else ""."""
        if not self.asked_new_tokens:
            return ""
        return (f"answers stop at {self.max_new_tokens} of the {self.asked_new_tokens} new tokens asked: the model reads at most "
                f"{self.context_tokens} positions (max_position_embeddings), image and prompt included")

    @property
    def num_params(self) -> int:
        return sum(self.params.values())

    def param_bytes(self, dtype: str | None = None, component: str | None = None) -> int:
        """The weights' bytes in ``dtype`` (default: the estimate's), for one component or all."""
        dtype = dtype or self.dtype
        names = [component] if component else list(self.params)
        n = sum(self.params[c] for c in names)
        if dtype not in QUANTIZED:
            return int(n * DTYPE_BYTES[dtype])
        q = sum(self.quantizable[c] for c in names)
        return int(q * DTYPE_BYTES[dtype] + (n - q) * DTYPE_BYTES["float16"])

    @property
    def param_bytes_by_dtype(self) -> dict[str, int]:
        return {d: self.param_bytes(d) for d in DTYPE_BYTES}

    @property
    def compute_bytes(self) -> int:
        """Bytes per activation/KV value: quantized weights still compute in float16."""
        return int(DTYPE_BYTES["float16" if self.dtype in QUANTIZED else self.dtype])

    @property
    def weight_bytes(self) -> int:
        """Parameters in ``dtype`` + buffers: what stays resident after loading."""
        return self.param_bytes() + self.buffer_bytes

    @property
    def converts(self) -> bool:
        """The file's dtype differs from ``dtype``: loading on CPU builds a converted copy."""
        return bool(self.file_bytes) and self.file_dtype != self.dtype

    @property
    def kv_bytes_per_token(self) -> int:
        return self.kv_values_per_token * self.compute_bytes

    @property
    def prefill_tokens(self) -> int:
        """Positions the prefill runs over: prompt + image tokens."""
        return self.prompt_tokens + self.image.tokens

    @property
    def kv_bytes_per_sample(self) -> int:
        """One row's KV cache at its peak (sliding layers keep their window), plus the cross-attention layers' image states."""
        values = cached_values(values_per_token=self.kv_values_per_token, values_per_layer=self.kv_values_per_layer,
                               windows=self.sliding_windows, prefill=self.prefill_tokens, sequence=self.sequence_tokens)
        return (values + self.cross_kv_values_per_sample) * self.compute_bytes

    @property
    def activation_bytes_per_sample(self) -> int:
        return self.activation_values_per_sample * self.compute_bytes + self.logits_bytes_per_sample

    @property
    def pre_quantized(self) -> bool:
        """The weights are stored quantized (and counted so): another dtype does not change them."""
        return bool(self.quantization) and self.dtype in QUANTIZED

    def with_dtype(self, dtype: str) -> "MemoryEstimate":
        """The same checkpoint and workload in another dtype (a pre-quantized one stays as stored)."""
        if dtype not in DTYPE_BYTES:
            raise ConfigError(f"dtype={dtype!r} is not one of {', '.join(DTYPE_BYTES)}")
        return self if self.pre_quantized else dataclasses.replace(self, dtype=dtype)

    def with_new_tokens(self, n: int) -> "MemoryEstimate":
        """The same checkpoint and batch answering ``n`` new tokens a row: the KV cache and the decode step's headroom follow."""
        activations = _activation_at(self.prefill_tokens, self.prefill_tokens + n, **self._activation_parts)
        return dataclasses.replace(self, max_new_tokens=n, asked_new_tokens=0, activation_values_per_sample=activations)

    @property
    def _activation_parts(self) -> dict:
        return {k: getattr(self, k) for k in ("text_activation_values_per_token", "vision_activation_values", "embedding_values_per_token",
                                              "kv_values_per_token", "kv_values_per_layer", "sliding_windows")}

    def below_capability(self, target: str | GpuTarget) -> bool:
        """``target`` cannot run the stored format as stored (an FP8 checkpoint on a T4; any such on CPU)."""
        t = get_target(target)
        if not (self.pre_quantized and self.quantization_capability):
            return False
        have = tuple(map(int, (t.compute_capability or "0.0").split(".")))
        return t.device != "cuda" or have < tuple(map(int, self.quantization_capability.split(".")))

    def on_target(self, target: str | GpuTarget) -> "MemoryEstimate":
        """As transformers loads it on ``target``: a stored format that GPU cannot run is dequantized to 16 bits."""
        t = get_target(target)
        if not self.below_capability(t) or self.quantization_below != "dequantize":
            return self
        sixteen = recommended_dtype(t) if t.device == "cuda" else "bfloat16"
        why = "on CPU" if t.device != "cuda" else f"on {t.name} (compute capability {t.compute_capability} < {self.quantization_capability})"
        return dataclasses.replace(self, dtype=sixteen, quantization=f"{self.quantization}, dequantized to {sixteen} {why}",
                                   quantization_capability="", quantization_below="")

    @property
    def sequence_tokens(self) -> int:
        """Positions one row reaches: prompt + image tokens + new tokens."""
        return self.prompt_tokens + self.image.tokens + self.max_new_tokens

    @property
    def per_sample_bytes(self) -> int:
        """What each extra row of the batch adds while generating (KV cache + activations)."""
        return self.kv_bytes_per_sample + self.activation_bytes_per_sample

    def overhead_bytes(self, device: str | None = None) -> int:
        return CUDA_CONTEXT_BYTES if (device or self.device) == "cuda" else CPU_RUNTIME_BYTES

    def load_bytes(self, device: str | None = None) -> int:
        """Peak to load: the weights, plus on CPU the mapped file while converting its dtype."""
        device = device or self.device
        extra = self.file_bytes if (device == "cpu" and self.converts) else 0
        return self.weight_bytes + extra + self.overhead_bytes(device)

    def kv_cache_bytes(self, batch_size: int | None = None) -> int:
        return self.kv_bytes_per_sample * (batch_size or self.batch_size)

    def generate_bytes(self, batch_size: int | None = None, device: str | None = None) -> int:
        """Resident while generating a batch: weights + KV cache + activations + overhead."""
        b = batch_size or self.batch_size
        return self.weight_bytes + b * self.per_sample_bytes + self.overhead_bytes(device)

    def peak_bytes(self, batch_size: int | None = None, device: str | None = None) -> int:
        """The process's peak over load + generate: the number to compare with a measurement."""
        return max(self.load_bytes(device), self.generate_bytes(batch_size, device))

    @property
    def total_bytes(self) -> int:
        return self.peak_bytes()

    def breakdown(self, device: str | None = None) -> dict[str, int]:
        """The peak's parts on ``device`` (default: the estimate's), for tables, plots and ``--json``.

        ``peak_bytes(device=device)`` is ``max(weights + load_copy, weights + kv_cache + activations) + overhead``.
        """
        device = device or self.device
        return {
            "weights": self.weight_bytes,
            "load_copy": self.load_bytes(device) - self.weight_bytes - self.overhead_bytes(device),
            "kv_cache": self.kv_cache_bytes(),
            "activations": self.activation_bytes_per_sample * self.batch_size,
            "overhead": self.overhead_bytes(device),
        }


def _count(n: int) -> str:
    """``'6.76B'``, ``'203.46K'``."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Does a checkpoint fit a target, with what margin, at what batch, how many at once."""

    checkpoint: str
    target: str
    dtype: str
    batch_size: int
    required_bytes: int
    budget_bytes: int
    fits: bool
    max_batch_size: int  # 0 when even loading does not fit
    co_resident: int  # copies that can be loaded at once with room for one to generate
    recommended_dtype: str
    price_per_hour: float
    memory_bytes: int = 0  # the target's whole memory; budget_bytes is this less the safety margin
    suggestion: str = ""  # when it does not fit: the batch, dtype or target that would
    quantization: str = ""  # a pre-quantized checkpoint's stored format (MemoryEstimate.quantization)

    @property
    def margin_bytes(self) -> int:
        return self.budget_bytes - self.required_bytes

    @property
    def max_batch_capped(self) -> bool:
        """The search stopped at ``MAX_BATCH``: a larger batch may fit too."""
        return self.max_batch_size >= MAX_BATCH

    @property
    def max_batch_text(self) -> str:
        """``'12'``, or ``'>= 4096'`` when the search stopped at its cap."""
        return f">= {self.max_batch_size}" if self.max_batch_capped else str(self.max_batch_size)

    @property
    def margin_fraction(self) -> float:
        return self.margin_bytes / self.budget_bytes

    def message(self) -> str:
        word = "fits" if self.fits else "does NOT fit"
        budget = f"{human_bytes(self.budget_bytes)} budget"
        if self.memory_bytes:
            budget += f" ({human_bytes(self.memory_bytes)} less {SAFETY_FRACTION:.0%} kept free)"
        stored = f", pre-quantized: {self.quantization}" if self.quantization else ""
        text = (
            f"{self.checkpoint} ({self.dtype}{stored}, batch {self.batch_size}) {word} on {self.target}: needs "
            f"{human_bytes(self.required_bytes)} of its {budget}, margin {human_bytes(self.margin_bytes)}; "
            f"max batch {self.max_batch_text}"
        )
        if self.fits:  # checkpoints, not requests; where this batch does not fit, none are (co_resident 0)
            text += f", {self.co_resident} of this size loaded at once"
        return f"{text}; {self.suggestion}" if self.suggestion else text


# --------------------------------------------------------------------- the estimate


def _text_dims(config) -> dict[str, int]:
    text = config.get_text_config()
    heads = text.num_attention_heads
    hidden = text.hidden_size
    cross = len(getattr(text, "cross_attention_layers", None) or ())  # Mllama: these cache the image, not the sequence
    return {
        "cross_layers": cross,
        "kv_heads": getattr(text, "num_key_value_heads", None) or heads,
        "head_dim": getattr(text, "head_dim", None) or hidden // heads,
        "hidden": hidden,
        "intermediate": getattr(text, "intermediate_size", None) or 4 * hidden,
        "vocab": text.vocab_size,
    }


def _activation_parts(config, dims: dict[str, int], image: ImageTokens) -> dict[str, int]:
    """One row's activation headroom during prefill (attention via SDPA: no T x T matrix), in parts: ``_activation_at``.

    The peak is the widest layer: the text MLP holds gate, up and their product
    (3 x intermediate) next to the residual stream and its norm (2 x hidden) for
    every position; the vision encoder the same for every patch.
    """
    vision = 0
    vcfg = getattr(config, "vision_config", None)
    if vcfg is not None and image.patches:
        # Qwen2-VL's vision hidden_size is its merger's output; the encoder runs at embed_dim, its MLP at embed_dim x mlp_ratio
        vh = getattr(vcfg, "embed_dim", None) or getattr(vcfg, "hidden_size", 0)
        vi = getattr(vcfg, "intermediate_size", None) or int(vh * (getattr(vcfg, "mlp_ratio", None) or 4))
        vision = image.patches * (2 * vh + 2 * vi)
    return {
        "text_activation_values_per_token": 2 * dims["hidden"] + 3 * dims["intermediate"],
        "vision_activation_values": vision,
        # the embedded prompt (image features merged in) lives through the whole prefill
        "embedding_values_per_token": dims["hidden"],
    }


def _activation_at(prefill: int, sequence: int, *, text_activation_values_per_token: int, vision_activation_values: int,
                   embedding_values_per_token: int, kv_values_per_token: int = 0, kv_values_per_layer: int = 0,
                   sliding_windows: tuple[int, ...] = ()) -> int:
    """One row's activation values, at the larger of the two phases a cached ``generate`` runs.

    The prefill: its widest layer, text (over ``prefill`` positions) or vision, plus the embedded prompt. A decode step
    up to ``sequence`` positions: one token's widest layer and embedding, plus one layer's cache while the step's
    concatenation copies it (``memory_kv.copy_positions``).
    """
    first = max(prefill * text_activation_values_per_token, vision_activation_values) + prefill * embedding_values_per_token
    full = kv_values_per_token > kv_values_per_layer * len(sliding_windows)
    copied = kv_values_per_layer * copy_positions(full=full, windows=sliding_windows, sequence=sequence)
    return max(first, text_activation_values_per_token + embedding_values_per_token + copied)


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


# --------------------------------------------------------------------- the verdict


def max_batch_size(est: MemoryEstimate, target: str | GpuTarget = DEFAULT_TARGET) -> int:
    """The largest batch whose peak fits ``target``'s budget (0 when loading alone does not fit)."""
    t = get_target(target)
    budget = budget_bytes(t)
    if est.load_bytes(t.device) > budget or est.generate_bytes(1, t.device) > budget:
        return 0
    room = budget - est.generate_bytes(1, t.device)
    return int(min(MAX_BATCH, 1 + room // max(1, est.per_sample_bytes)))


def co_resident(est: MemoryEstimate, target: str | GpuTarget = DEFAULT_TARGET, *, batch_size: int | None = None) -> int:
    """How many checkpoints of this size can be loaded at once on ``target``.

    Room is kept for one of them to generate a batch of ``batch_size`` (default:
    the estimate's) and, on CPU, for the conversion copy of the next one loading.
    One that fits alone counts 1 even where that copy and the batch do not fit together:
    alone, it loads before it generates. The model cache sizes itself with this; the Space shows it.
    """
    t = get_target(target)
    b = batch_size or est.batch_size
    room = budget_bytes(t) - _beside_weights(est, t, b)
    alone = est.peak_bytes(b, t.device) <= budget_bytes(t)
    return max(int(alone), int(room // max(1, est.weight_bytes)))


def _beside_weights(est: MemoryEstimate, t: GpuTarget, batch_size: int | None = None) -> int:
    """What ``co_resident`` keeps free beside the weights: one batch generating, the overhead, and on CPU the next load's copy."""
    working = (batch_size or est.batch_size) * est.per_sample_bytes + est.overhead_bytes(t.device)
    return working + est.load_bytes(t.device) - est.weight_bytes - est.overhead_bytes(t.device)


def resident_together(estimates: Sequence[MemoryEstimate], target: str | GpuTarget = DEFAULT_TARGET) -> list[MemoryEstimate]:
    """The most of these different checkpoints (each one that fits alone) loaded at once on ``target``, smallest first.

    ``co_resident``'s rule for checkpoints of different sizes: their weights together, with room for whichever of
    them needs the most to generate its batch (and on CPU to load). The first always counts: it fits alone.
    Of sets as large, the one with the least weights.
    """
    t = get_target(target)
    ests = sorted((e.on_target(t) for e in estimates), key=lambda e: e.weight_bytes)
    best: list[MemoryEstimate] = ests[:1]
    # Smallest first alone stops at a small model that needs much to generate (Qwen2-VL's 16k image tokens a row),
    # where larger ones that need little fit together: try each as the one that needs the most beside the weights,
    # with the smallest of those that need no more
    for most in ests:
        room = budget_bytes(t) - _beside_weights(most, t) - most.weight_bytes
        chosen = []
        for est in ests:
            if est is most or (_beside_weights(est, t) <= _beside_weights(most, t) and est.weight_bytes <= room):
                chosen.append(est)
                room -= 0 if est is most else est.weight_bytes
        if room >= 0 and (len(chosen), -sum(e.weight_bytes for e in chosen)) > (len(best), -sum(e.weight_bytes for e in best)):
            best = chosen
    return best


def verdict(est: MemoryEstimate, target: str | GpuTarget = DEFAULT_TARGET) -> Verdict:
    """Fits or not, with margin, max batch and co-resident count, for one target.

    When it does not fit, ``suggestion`` names what would: a smaller batch, else a
    lighter dtype on the same target, else the cheapest target that fits in its
    recommended dtype.

    Raises:
        ConfigError: bfloat16 on a GPU without native support (a T4): use float16.
    """
    t = get_target(target)
    stored, est = est, est.on_target(t)  # an FP8 checkpoint is 16-bit on a T4: transformers dequantizes it there
    if est.below_capability(t):  # transformers refuses the format on this GPU (fbgemm FP8, NVFP4)
        return _cannot_load(est, t)
    check_dtype_on_target(est.dtype, t)
    required = est.peak_bytes(device=t.device)
    budget = budget_bytes(t)
    fits = required <= budget
    max_batch = max_batch_size(est, t)
    return Verdict(
        checkpoint=est.checkpoint,
        target=t.name,
        dtype=est.dtype,
        batch_size=est.batch_size,
        required_bytes=required,
        budget_bytes=budget,
        fits=fits,
        max_batch_size=max_batch,
        co_resident=co_resident(est, t),
        recommended_dtype=recommended_dtype(t),
        price_per_hour=t.price_per_hour,
        memory_bytes=t.memory_bytes,
        suggestion="" if fits else _what_would_fit(stored, t, max_batch),
        quantization=est.quantization,
    )


def _cannot_load(est: MemoryEstimate, t: GpuTarget) -> Verdict:
    """The verdict for a stored format transformers refuses to load on ``t``: it does not fit, whatever the bytes."""
    where = f"compute capability {t.compute_capability}" if t.device == "cuda" else "CPU"
    return Verdict(
        checkpoint=est.checkpoint, target=t.name, dtype=est.dtype, batch_size=est.batch_size, required_bytes=est.peak_bytes(device=t.device),
        budget_bytes=budget_bytes(t), fits=False, max_batch_size=0, co_resident=0, recommended_dtype=recommended_dtype(t),
        price_per_hour=t.price_per_hour, memory_bytes=t.memory_bytes, quantization=est.quantization,
        suggestion=(f"transformers loads {est.quantization} only on a GPU of compute capability >= {est.quantization_capability} "
                    f"({t.name}: {where}); use a checkpoint stored another way (bitsandbytes, AWQ, GPTQ) or the unquantized one"),
    )


def _what_would_fit(est: MemoryEstimate, t: GpuTarget, max_batch: int) -> str:
    """A smaller batch; else fewer new tokens at batch 1 (where the weights fit but no row's answers do), and the first of:
    a lighter dtype here; the cheapest larger target, lightest dtype last.

    Said in plain words, without flags or arguments: a shell, a notebook and a Space's log (which sets its batch with
    ``VLM_LAB_MAX_BATCH_SIZE``) each set them their own way.
    """
    if max_batch:
        return f"batch {max_batch} fits"
    tokens = _most_new_tokens(est.on_target(t), t)
    lighter_or_larger = _lighter_or_larger(est, t)
    if not tokens:
        return lighter_or_larger
    fewer = f"batch 1 fits with at most {tokens} new tokens"
    return fewer if lighter_or_larger == _NOTHING_FITS else f"{fewer}, or {lighter_or_larger}"


def _most_new_tokens(est: MemoryEstimate, t: GpuTarget) -> int:
    """The most new tokens, fewer than asked, with which a batch of 1 fits ``t`` (0: none do)."""
    budget, low, high = budget_bytes(t), 0, est.max_new_tokens - 1
    while low < high:  # the peak grows with the answer's length: bisect
        mid = (low + high + 1) // 2
        if est.with_new_tokens(mid).peak_bytes(1, t.device) <= budget:
            low = mid
        else:
            high = mid - 1
    return low


_NOTHING_FITS = "no Space hardware fits it, even in int4"


def _lighter_or_larger(est: MemoryEstimate, t: GpuTarget) -> str:
    """A lighter dtype on ``t`` that fits, else the cheapest larger target that does, in words."""

    def lighter(target: GpuTarget, than: str) -> list[str]:
        order = [recommended_dtype(target) if target.device == "cuda" else "float16", "int8", "int4"]
        return order[order.index(than) + 1:] if than in order else order

    for dtype in [] if est.quantization else lighter(t, est.dtype):  # a pre-quantized checkpoint loads as stored: no lighter dtype
        need = est.with_dtype(dtype).peak_bytes(device=t.device)
        if need <= budget_bytes(t):
            return f"in {dtype} it fits (needs {human_bytes(need)})"
    for other in sorted(GPU_TARGETS.values(), key=lambda g: (g.price_per_hour, g.memory_bytes)):
        if other.device != "cuda" or other.memory_bytes <= t.memory_bytes:  # from the free CPU too: the GPU that holds it
            continue
        for dtype in ([est.dtype] if est.dtype in QUANTIZED else []) + lighter(other, est.dtype if est.dtype in QUANTIZED else ""):
            there = est.with_dtype(dtype).on_target(other)  # as stored, or dequantized where that GPU cannot run it
            need = there.peak_bytes(device=other.device)
            if not there.below_capability(other) and need <= budget_bytes(other):
                return f"{other.name} fits it in {there.dtype} (needs {human_bytes(need)}, ${other.price_per_hour:.2f}/h)"
    return _NOTHING_FITS


def verdicts(est: MemoryEstimate, targets: tuple[str, ...] | None = None) -> list[Verdict]:
    """One verdict per target; bfloat16 estimates skip GPUs without native bfloat16."""
    out = []
    for name in targets or tuple(GPU_TARGETS):
        t = get_target(name)
        if est.dtype == "bfloat16" and not t.native_bfloat16:
            continue
        out.append(verdict(est, t))
    return out
