"""Does an estimate fit a target: ``Verdict``, the largest batch, how many checkpoints fit loaded at once.

``verdict`` turns a ``MemoryEstimate`` into "fits on a T4?" with margin, the largest batch and how many
such checkpoints fit at once (``co_resident``; ``resident_together`` for checkpoints of different sizes):
the numbers the model cache and the Space use. When it does not fit, its suggestion names what would.
Moved out of ``memory`` (which re-exports these names).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from vlm_lab.memory_estimate import QUANTIZED, MemoryEstimate
from vlm_lab.memory_targets import (
    DEFAULT_TARGET,
    GPU_TARGETS,
    SAFETY_FRACTION,
    GpuTarget,
    budget_bytes,
    check_dtype_on_target,
    get_target,
    process_bytes,
    recommended_dtype,
)
from vlm_lab.units import human_bytes

__all__ = ["MAX_BATCH", "Verdict", "co_resident", "max_batch_size", "resident_together", "verdict", "verdicts"]

MAX_BATCH = 4096  # max_batch_size stops searching here, or at the batch asked where that is larger


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
    process_bytes: int = 0  # of memory_bytes, what the Space's own process holds (CPU targets): not in the budget

    @property
    def margin_bytes(self) -> int:
        return self.budget_bytes - self.required_bytes

    @property
    def max_batch_capped(self) -> bool:
        """The search stopped at its cap (``MAX_BATCH``, or the batch asked where larger): a larger batch may fit too."""
        return self.max_batch_size >= max(MAX_BATCH, self.batch_size)

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
            process = f" and {human_bytes(self.process_bytes)} for the Space's own process" if self.process_bytes else ""
            budget += f" ({human_bytes(self.memory_bytes)} less {SAFETY_FRACTION:.0%} kept free{process})"
        stored = f", pre-quantized: {self.quantization}" if self.quantization else ""
        text = (
            f"{self.checkpoint} ({self.dtype}{stored}, batch {self.batch_size}) {word} on {self.target}: needs "
            f"{human_bytes(self.required_bytes)} of its {budget}, margin {human_bytes(self.margin_bytes)}; "
            f"max batch {self.max_batch_text}"
        )
        if self.fits:  # checkpoints, not requests; where this batch does not fit, none are (co_resident 0)
            text += f", {self.co_resident} of this size loaded at once"
        elif self.budget_bytes < self.required_bytes <= self.budget_bytes + self.process_bytes:  # a thin margin: what tips it
            text += (f"; without the Space's own process it would fit (Python with torch, transformers and gradio, "
                     f"serving: {human_bytes(self.process_bytes)} resident before any model)")
        return f"{text}; {self.suggestion}" if self.suggestion else text



def max_batch_size(est: MemoryEstimate, target: str | GpuTarget = DEFAULT_TARGET) -> int:
    """The largest batch whose peak fits ``target``'s budget (0 when loading alone does not fit), up to ``MAX_BATCH`` or the
    estimate's batch, whichever is larger: a batch asked above the cap that does not fit gets the exact largest that does."""
    t = get_target(target)
    budget = budget_bytes(t)
    if est.load_bytes(t.device) > budget or est.generate_bytes(1, t.device) > budget:
        return 0
    room = budget - est.generate_bytes(1, t.device)
    return int(min(max(MAX_BATCH, est.batch_size), 1 + room // max(1, est.per_sample_bytes)))


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
        process_bytes=process_bytes(t),
    )


def _cannot_load(est: MemoryEstimate, t: GpuTarget) -> Verdict:
    """The verdict for a stored format transformers refuses to load on ``t``: it does not fit, whatever the bytes."""
    where = f"compute capability {t.compute_capability}" if t.device == "cuda" else "CPU"
    return Verdict(
        checkpoint=est.checkpoint, target=t.name, dtype=est.dtype, batch_size=est.batch_size, required_bytes=est.peak_bytes(device=t.device),
        budget_bytes=budget_bytes(t), fits=False, max_batch_size=0, co_resident=0, recommended_dtype=recommended_dtype(t),
        price_per_hour=t.price_per_hour, memory_bytes=t.memory_bytes, quantization=est.quantization, process_bytes=process_bytes(t),
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
