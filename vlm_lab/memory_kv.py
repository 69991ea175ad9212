"""The KV cache ``generate`` holds: which layers keep every position and which keep a sliding window.

transformers 5's ``DynamicCache`` gives each decoder layer a cache layer by its type, as
``cache_utils.get_layer_types_and_kwargs`` reads them from the text config (``layer_types``, else
``sliding_window`` / ``attention_chunk_size``): Mistral slides every layer; Gemma 2 every other one;
Gemma 3 five in six (``sliding_window_pattern``); Qwen2 those from ``max_window_layers`` on when
``use_sliding_window``. This module asks that same function, so it follows transformers' decision.

What a sliding layer (``DynamicSlidingWindowLayer``) holds over a generate, for a prefill of
``P`` positions growing to ``S``:

- after the prefill, all ``P``: its keys are a view of the last ``window - 1`` positions, and the
  tensor they view is the whole prefill's;
- from the first decode step on, ``min(t, window)``: each step concatenates the new position to the
  ``window - 1`` kept, and keeps a view of that.

So the cache peaks either at the prefill (every layer ``P``) or at the last step (full layers ``S``,
sliding ones ``min(S, window)``), whichever is larger (``cached_values``). While a step appends, one
layer's cache is briefly there twice (the concatenation builds a copy): ``copy_positions``.
"""

from __future__ import annotations

import dataclasses

# layer types whose cache holds no positions (KV shared with another layer; no attention at all)
_NO_CACHE = ("dummy", "moe", "mlp")
# cache layers that keep a window of positions (chunked attention is cached as a window of the chunk size)
_WINDOWED = ("sliding_attention", "chunked_attention", "hybrid_sliding", "reference_sliding_attention")


@dataclasses.dataclass(frozen=True)
class KvLayers:
    """The self-attention layers of a text config, as transformers caches them."""

    values_per_position: int  # one layer, one position: 2 (K and V) x kv_heads x head_dim
    full: int  # layers that keep every position (an unknown layer type counts here: the safe side)
    windows: tuple[int, ...]  # one entry per sliding layer: the most positions it keeps once decoding


def kv_layers(config) -> KvLayers:
    """The model's self-attention cache layers (Mllama's cross-attention layers cache the image: not counted here)."""
    from transformers.cache_utils import get_layer_types_and_kwargs

    text = config.get_text_config(decoder=True)
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    cross = set(getattr(text, "cross_attention_layers", None) or ())
    types, kwargs = get_layer_types_and_kwargs(text)
    full, windows = 0, []
    for index, (kind, settings) in enumerate(zip(types, kwargs)):
        if index in cross or kind in _NO_CACHE:
            continue
        if kind in _WINDOWED and settings.get("sliding_window"):
            windows.append(int(settings["sliding_window"]))
        else:
            full += 1
    return KvLayers(values_per_position=2 * kv_heads * head_dim, full=full, windows=tuple(windows))


def cached_values(*, values_per_token: int, values_per_layer: int, windows: tuple[int, ...], prefill: int, sequence: int) -> int:
    """One row's KV values at the cache's peak: the prefill's (every layer ``prefill``) or the last step's.

    ``values_per_token`` is every self-attention layer's for one position (``values_per_layer`` x layers).
    """
    last = values_per_token * sequence - values_per_layer * sum(max(0, sequence - w) for w in windows)
    return max(values_per_token * prefill, last)


def copy_positions(*, full: bool, windows: tuple[int, ...], sequence: int) -> int:
    """Positions of the largest layer's cache, copied while a step appends to it: a full layer's all, else the widest window's."""
    if full or not windows:
        return sequence
    return min(sequence, max(windows))
