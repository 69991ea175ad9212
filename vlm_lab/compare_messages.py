"""What compare says of its outputs and failures: cut-off and NaN/inf outputs, a GPU out of memory.

``compare`` warns with them as it finishes; ``vlm-lab show``, the explorer and the Space say the same words.
"""

from __future__ import annotations

import contextlib
import traceback
import warnings
from typing import Callable, Iterator

from vlm_lab.config import GenerationConfig
from vlm_lab.errors import MemoryBudgetError, NonFiniteWarning, TruncatedOutputWarning
from vlm_lab.results import ComparisonResult

__all__ = ["context_message", "memory_budget_said", "nonfinite_message", "out_of_memory_said", "truncated_message",
           "warn_flagged_outputs"]


@contextlib.contextmanager
def memory_budget_said(own_cache: bool) -> Iterator[None]:
    """Inside, a model over the budget of the cache ``compare`` made (``own_cache``) names the field that sized it,
    ``memory_budget='2GB'``, not the cache's ``ModelCache(budget_bytes=...)`` (the words for a cache a caller passed);
    ``vlm-lab compare`` says ``--memory-budget 2GB`` (``vlm_lab.cli.flags_in_config_errors``)."""
    try:
        yield
    except MemoryBudgetError as e:
        if own_cache:
            from vlm_lab.model_cache import budget_as

            e.args = (budget_as(str(e), "memory_budget='{}'"),)
        raise


@contextlib.contextmanager
def out_of_memory_said(name: str, gen: GenerationConfig, device, others: Callable[[], list] | None = None) -> Iterator[None]:
    """A GPU out of memory in a batch becomes ``MemoryBudgetError`` with what to lower; the failed batch's tensors
    (held by the traceback a notebook keeps) are let go, so a retry in the same process has the memory back.
    ``others``: the other models a caller's cache holds on ``device`` (``(reference, bytes)``, as
    ``ModelCache.resident`` gives them), asked when it happens; letting them go is named first.

    It names the arguments (``batch_size=3``), as a notebook's ``compare()`` and a sweep pass them;
    ``vlm-lab compare`` says its flags instead (``--batch-size 3``: ``vlm_lab.cli.flags_in_config_errors``)."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError as e:
        traceback.clear_frames(e.__traceback__)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        lower = (f"lower the batch size (e.g. batch_size={gen.batch_size // 2})" if gen.batch_size > 1 else
                 f"generate fewer tokens (e.g. max_new_tokens={max(1, gen.max_new_tokens // 2)})")
        held = others() if others else []
        if held:
            from vlm_lab.units import format_bytes

            them = ", ".join(f"{ref.name}: {format_bytes(nbytes)}" for ref, nbytes in held)
            lower = (f"free the other model{'s' if len(held) > 1 else ''} your cache= holds on {device} ({them}) with "
                     f"cache.evict({held[0][0].spec!r}) or cache.clear(), {lower}")
        raise MemoryBudgetError(
            f"out of memory on {device} while {name} generated batches of {gen.batch_size} (max_new_tokens="
            f"{gen.max_new_tokens}): {str(e).splitlines()[0] if str(e) else 'no detail'}; {lower}, or compare on a "
            f"larger GPU. The batches that finished are cached per batch size: a re-run with batch_size={gen.batch_size} "
            "starts after them, a smaller batch size generates them again (latency and tokens/s are measured at it)"
        ) from None


def warn_flagged_outputs(result: ComparisonResult, *, stacklevel: int = 2) -> None:
    """Warn about each checkpoint whose outputs are noise (NaN/inf scores: ``NonFiniteWarning``) or cut off
    (at max_new_tokens, or where it reads no further: ``TruncatedOutputWarning``), from the summary's counts, and
    whose own generation settings were set aside (``GenerationSettingsWarning``: its answers are the strategy's alone).

    ``compare`` calls it as it finishes; ``vlm-lab show`` calls it on a saved comparison, which says the same.
    """
    from vlm_lab.generation_settings import GenerationSettingsWarning, set_aside_message

    max_new_tokens = result.config.get("max_new_tokens")
    for ref, row in zip(result.refs, result.summary):
        name, total = row["checkpoint"], row.get("n_samples") or len(result.rows)
        if row.get("generation_set_aside"):
            warnings.warn(GenerationSettingsWarning(set_aside_message(name, row["generation_set_aside"])), stacklevel=stacklevel)
        nonfinite, truncated, at_context = (row.get(k) or 0 for k in ("n_nonfinite", "n_truncated", "n_at_context"))
        if nonfinite:  # the dtype it ran in (saved since it was recorded; before, the dtype asked for)
            dtype = ref.get("dtype") or result.config.get("dtype", "?")
            warnings.warn(NonFiniteWarning(nonfinite_message(name, nonfinite, total, dtype)), stacklevel=stacklevel)
        if truncated > at_context:
            warnings.warn(TruncatedOutputWarning(truncated_message(name, truncated - at_context, total, max_new_tokens)), stacklevel=stacklevel)
        if at_context:
            warnings.warn(TruncatedOutputWarning(context_message(name, at_context, total)), stacklevel=stacklevel)


def truncated_message(checkpoint: str, count: int, total: int, max_new_tokens: int) -> str:
    """What outputs cut off at ``max_new_tokens`` mean for ``checkpoint`` and what to do about them."""
    return (f"{checkpoint}: {count} of {total} output(s) stopped at max_new_tokens={max_new_tokens} before the end token, "
            "so their text is cut off (and scores as wrong if the reference is longer); raise max_new_tokens "
            "(--max-new-tokens on the command line) to let them finish (the default 8 suits the shapes checkpoints' short answers), "
            "unless the checkpoint never learned to stop (an early training step)")  # fmt: skip


def context_message(checkpoint: str, count: int, total: int) -> str:
    """What outputs cut off where ``checkpoint`` reads no further mean, and what can help."""
    return (f"{checkpoint}: {count} of {total} output(s) stopped where the checkpoint reads no further (its "
            "max_position_embeddings holds the image, the prompt and the answer) before the end token, so their text is cut "
            "off; more new tokens cannot help: shorten the prompts, or use a checkpoint with a longer context, unless "
            "the checkpoint never learned to stop (an early training step)")  # fmt: skip


def nonfinite_message(checkpoint: str, count: int, total: int, dtype: str, *, dtype_option: str | None = None) -> str:
    """What NaN/+inf scores mean for ``checkpoint`` and what to do about them.

    ``dtype_option``: how the caller's user sets the dtype, ``{}`` standing for the value (the explorer's argument:
    ``"dtype='{}'"``; the Space's variable: ``"VLM_LAB_DTYPE={}"``; without ``{}`` the value follows it). By default the
    argument and the flag both: compare's warning reaches a notebook and ``vlm-lab compare`` (or ``show``) alike.
    """
    what = f"{checkpoint}: NaN or infinite next-token scores on {count} of {total} sample(s) in {dtype}; those outputs are noise"
    if dtype == "float16":
        setting = dtype_option if dtype_option is None or "{}" in dtype_option else dtype_option + "{}"
        use = (f"{setting.format('float32')}, or {setting.format('bfloat16')}" if setting is not None else
               "dtype='float32' (--dtype float32 on the command line), or dtype='bfloat16'")
        return (f"{what}. The model overflows float16's range: use {use} "
                "on a GPU with compute capability >= 8 (not a T4)")  # fmt: skip
    return f"{what}. The weights may hold NaN or inf (a diverged training run?): check the checkpoint"
