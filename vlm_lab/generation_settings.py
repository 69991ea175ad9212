"""Which of a checkpoint's own generation settings a comparison decodes with.

``model.generate`` merges the checkpoint's ``generation_config.json`` into every call: each field the call
leaves unset takes the checkpoint's value (transformers' ``_prepare_generation_config``; a checkpoint without
the file gets the generation fields of its ``config.json``). Hub checkpoints ship settings there that change
answers under any strategy: Qwen2-VL ``repetition_penalty=1.05``, others ``no_repeat_ngram_size``,
``min_new_tokens``, ``suppress_tokens``, ``bad_words_ids``, ``length_penalty`` for beams. Two checkpoints
compared "greedily" would decode differently, and a training run whose later checkpoint gained the file
would seem to change behaviour.

So by default every checkpoint decodes with the strategy asked and nothing else: each field its generation
config sets is passed to ``generate`` at transformers' neutral value, but for the ids that say which token is
which (eos, pad, bos, decoder start, an encoder-decoder's forced first token) and the fields that change how
fast it runs, not what it says (KV cache, compilation). ``set_aside`` names what the checkpoint set and did not
get, for the summary and a warning.
``GenerationConfig.checkpoint_generation=True`` decodes as ``model.generate`` does by default instead: the
strategy's own settings, the checkpoint's for everything else.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["GenerationSettingsWarning", "checkpoint_fields", "decoding_kwargs", "set_aside", "set_aside_message"]

# the checkpoint's always: which token is which, and how (not what) it computes. forced_bos_token_id is the answer's
# first token after the decoder start (transformers' ForcedBOSTokenLogitsProcessor fires at length 1 only, so on a
# decoder-only prompt never): an encoder-decoder's (mBART's target language, Florence-2's <s>) decodes wrongly
# without it. forced_eos_token_id is not kept: it ends every answer that reaches max_length with the end token (a
# length policy), and an answer cut off at max_new_tokens would then read as finished, not truncated
KEPT = frozenset({
    "eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id", "forced_bos_token_id",
    "use_cache", "cache_implementation", "cache_config", "max_cache_len", "compile_config", "disable_compile",
    "prefill_chunk_size", "continuous_batching_config", "transformers_version",
})  # fmt: skip
# the answer's length is the caller's max_new_tokens, which transformers puts before max_length (and we always pass)
LENGTH = frozenset({"max_new_tokens", "max_length"})
# the warpers a sampling strategy applies (generation.seeded_sampling applies them itself)
SAMPLING = ("temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff")


class GenerationSettingsWarning(UserWarning):
    """A checkpoint's generation_config.json sets decoding settings that the comparison set aside.

    Not an error: every checkpoint decoded with the strategy asked (comparable answers); the warning and the
    summary's ``generation_set_aside`` say what the checkpoint would have used (``checkpoint_generation=True``
    decodes with it).
    """


def _defaults() -> dict[str, Any]:
    from transformers import GenerationConfig

    return GenerationConfig._get_default_generation_params()  # what generate fills in when neither side sets a field


def checkpoint_fields(generation_config: Any) -> dict[str, Any]:
    """The decoding fields ``generation_config`` (a model's ``generation_config``) sets to other than transformers'
    neutral value, by name; ``KEPT`` fields left out."""
    from transformers import GenerationConfig

    blank, defaults = GenerationConfig(), _defaults()
    own = generation_config.to_dict()
    return {k: v for k, v in sorted(own.items())
            if k not in KEPT and not k.startswith("_") and hasattr(blank, k) and v is not None and v != defaults.get(k)}


def decoding_kwargs(generation_config: Any, kwargs: Mapping[str, Any], *, checkpoint_generation: bool = False) -> dict[str, Any]:
    """``kwargs`` (the strategy's ``generate`` arguments) plus the neutral value of every field the checkpoint sets
    that they leave open, so ``generate`` decodes with the strategy alone; ``checkpoint_generation``: ``kwargs`` as
    they are, the checkpoint filling the rest."""
    out = dict(kwargs)
    if checkpoint_generation:
        return out
    defaults = _defaults()
    for field in checkpoint_fields(generation_config):
        if field not in out and field != "max_length":  # max_new_tokens rules it (passed, it would only warn)
            out[field] = defaults.get(field)
    return out


def set_aside(generation_config: Any, kwargs: Mapping[str, Any], *, checkpoint_generation: bool = False) -> dict[str, Any]:
    """The checkpoint's settings that decoding with ``kwargs`` did not use, ``{field: its value}``: what it would
    have decoded with. Its length fields are not named: the caller's ``max_new_tokens`` is asked for explicitly."""
    if checkpoint_generation:
        return {}
    missing = object()
    return {k: v for k, v in checkpoint_fields(generation_config).items() if k not in LENGTH and kwargs.get(k, missing) != v}


def set_aside_message(checkpoint: str, fields: Mapping[str, Any], *, opt_in: bool = True) -> str:
    """One line naming ``checkpoint`` and the settings of its own that were set aside; ``opt_in``: and how to decode
    with them (a comparison can; the Space cannot)."""
    said = ", ".join(f"{k}={v!r}" for k, v in fields.items())
    how = (" (checkpoint_generation=True, --checkpoint-generation on the command line, decodes with them)" if opt_in else "")
    return f"{checkpoint}: its generation config sets {said}; set aside, so every checkpoint decodes with the strategy asked and no other settings{how}"
