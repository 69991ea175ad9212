"""A row's activation headroom while ``generate`` runs, from the config's widths (text model and vision encoder).

With the KV cache, the prefill runs over the prompt and each step over one token, so the larger of
the prefill's widest layer (text MLP or vision encoder, over prompt + image tokens) and a step (one
token, plus one layer's cache copied as it grows). Moved out of ``memory``; ``MemoryEstimate``
recomputes it for another answer length (``with_new_tokens``).
"""

from __future__ import annotations

from vlm_lab.memory_kv import copy_positions
from vlm_lab.memory_tokens import ImageTokens


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

