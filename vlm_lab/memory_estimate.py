"""What a checkpoint needs, before anything is loaded: ``MemoryEstimate`` and the bytes it adds up.

``vlm_lab.memory.estimate`` fills one from a checkpoint's config; its properties turn the counts into
bytes per dtype and device: the weights, the KV cache (``memory_kv``), the activation headroom
(``memory_activations``), the fixed overhead and, on CPU, the conversion copy while loading.
Moved out of ``memory`` (which re-exports these names).
"""

from __future__ import annotations

import dataclasses

from vlm_lab.errors import ConfigError
from vlm_lab.memory_activations import _activation_at
from vlm_lab.memory_kv import cached_values
from vlm_lab.memory_targets import MIB, GpuTarget, get_target, recommended_dtype
from vlm_lab.memory_tokens import ImageTokens

__all__ = ["CPU_RUNTIME_BYTES", "CUDA_CONTEXT_BYTES", "DTYPE_BYTES", "QUANTIZED", "MemoryEstimate"]

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

