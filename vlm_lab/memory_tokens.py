"""How many tokens one image becomes, per VLM family, from config files alone.

Each family's processor expands an image placeholder into many tokens, and those
positions fill the KV cache like text does. The counts follow the processors in
transformers 5.23, without building them (Qwen2-VL's and SmolVLM's processors
need torchvision, which a profiling machine may lack):

- LLaVA: ``(crop / patch)^2 + num_additional_image_tokens`` (minus the CLS
  position under the "default" feature strategy);
- LLaVA-NeXT: the base image plus the grid of tiles of the best
  ``image_grid_pinpoints`` resolution, unpadded, with a newline per row;
- Idefics3 / SmolVLM: ``image_seq_len`` per tile; with image splitting, a grid of
  ``ceil(side / max_image_size)^2`` tiles plus one global image, with separators;
- Qwen2-VL / Qwen2.5-VL: ``smart_resize`` to a multiple of patch x merge within
  [min_pixels, max_pixels], then one token per merge x merge patches, plus the
  vision start/end tokens.

Anything else falls back to ``(image_size / patch_size)^2`` from the vision config.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

# Idefics3's image processor never resizes above this side (MAX_IMAGE_SIZE there).
_IDEFICS3_MAX_SIDE = 4096


@dataclasses.dataclass(frozen=True)
class ImageTokens:
    """One image's footprint: tokens in the prompt, patches through the vision encoder."""

    tokens: int  # positions in the language model's sequence
    patches: int  # positions through the vision encoder (all tiles)
    side: int  # the square image side (pixels) the counts are for
    family: str  # llava | llava_next | idefics3 | qwen2_vl | fallback | none


def _get(settings: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if settings.get(key) is not None:
            return settings[key]
    return default


def _edge(value: Any, key: str, default: int) -> int:
    if isinstance(value, dict):
        return int(value.get(key) or value.get("height") or default)
    return int(value) if value else default


def _llava(config, settings: dict[str, Any], image_size: int) -> ImageTokens:
    vision = config.vision_config
    patch = int(_get(settings, "patch_size", default=vision.patch_size))
    crop = settings.get("crop_size") or settings.get("size")
    side = _edge(crop, "shortest_edge", vision.image_size)  # LLaVA always resizes + crops to this
    strategy = _get(settings, "vision_feature_select_strategy", default=getattr(config, "vision_feature_select_strategy", "default"))
    extra = int(_get(settings, "num_additional_image_tokens", default=1))
    grid = (side // patch) ** 2
    tokens = grid + extra - (1 if strategy == "default" else 0)
    return ImageTokens(tokens=tokens, patches=grid + 1, side=side, family="llava")


def _llava_next_tokens(side: int, crop: int, patch: int, pinpoints: list, extra: int, strategy: str) -> tuple[int, int]:
    """(tokens, tiles) for a square image, as ``LlavaNextProcessor._get_number_of_features`` counts them."""
    from transformers.image_processing_utils import select_best_resolution

    best_h, best_w = select_best_resolution((side, side), pinpoints)
    grid = crop // patch
    height, width = grid * (best_h // crop), grid * (best_w // crop)
    # the padding the processor added to reach the pinpoint's aspect is cut off again (square image)
    if width < height:
        height -= 2 * ((height - width) // 2)
    elif height < width:
        width -= 2 * ((width - height) // 2)
    tokens = height * width + height + grid * grid + extra - (1 if strategy == "default" else 0)
    return tokens, (best_h // crop) * (best_w // crop)


def _llava_next(config, settings: dict[str, Any], image_size: int) -> ImageTokens:
    vision = config.vision_config
    patch = int(_get(settings, "patch_size", default=vision.patch_size))
    crop = _edge(settings.get("crop_size") or settings.get("size"), "shortest_edge", vision.image_size)
    pinpoints = _get(settings, "image_grid_pinpoints", default=getattr(config, "image_grid_pinpoints", None)) or [[crop, crop]]
    strategy = _get(settings, "vision_feature_select_strategy", default=getattr(config, "vision_feature_select_strategy", "default"))
    extra = int(_get(settings, "num_additional_image_tokens", default=1))
    # 0 = the worst case: the square side (from the pinpoints' sides) that makes the most tokens
    sides = [image_size] if image_size else sorted({int(s) for point in pinpoints for s in point})
    tokens, tiles, side = max((*_llava_next_tokens(s, crop, patch, pinpoints, extra, strategy), s) for s in sides)
    return ImageTokens(tokens=tokens, patches=(tiles + 1) * ((crop // patch) ** 2 + 1), side=side, family="llava_next")


def _idefics3(config, settings: dict[str, Any], image_size: int) -> ImageTokens:
    vision = config.vision_config
    scale = int(getattr(config, "scale_factor", 2) or 1)
    tile_side = vision.image_size
    per_tile = int(_get(settings, "image_seq_len", default=((tile_side // vision.patch_size) ** 2) // (scale**2)))
    longest = _edge(settings.get("size"), "longest_edge", 4 * 364)
    tile = _edge(settings.get("max_image_size"), "longest_edge", 364)
    splitting = bool(settings.get("do_image_splitting", True))
    side = image_size or longest
    rows = cols = 0
    if splitting:  # the processor rescales every image so its longest edge is size["longest_edge"]
        grid = math.ceil(min(longest, _IDEFICS3_MAX_SIDE) / tile)
        if grid > 1:
            rows = cols = grid
    tiles = rows * cols + 1
    # "<fake><global-img>" + image tokens + "<fake>" for the global image; per tile
    # "<fake><row_r_col_c>" + image tokens; a newline per row and one before the global image
    tokens = per_tile + 3 + rows * (cols * (per_tile + 2) + 1) + (1 if rows else 0)
    patches_per_tile = (tile_side // vision.patch_size) ** 2
    return ImageTokens(tokens=tokens, patches=tiles * patches_per_tile, side=side, family="idefics3")


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize: sides multiple of ``factor``, area within [min_pixels, max_pixels]."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def _qwen2_vl(config, settings: dict[str, Any], image_size: int) -> ImageTokens:
    vision = config.vision_config
    patch = int(_get(settings, "patch_size", default=getattr(vision, "patch_size", 14)))
    merge = int(_get(settings, "merge_size", default=getattr(vision, "spatial_merge_size", 2)))
    size = settings.get("size") or {}
    min_pixels = int(_get(settings, "min_pixels", default=size.get("shortest_edge", 56 * 56)))
    max_pixels = int(_get(settings, "max_pixels", default=size.get("longest_edge", 28 * 28 * 1280)))
    side = image_size or math.isqrt(max_pixels)
    h, w = smart_resize(side, side, patch * merge, min_pixels, max_pixels)
    patches = (h // patch) * (w // patch)
    return ImageTokens(tokens=patches // merge**2 + 2, patches=patches, side=side, family="qwen2_vl")


def _fallback(config, settings: dict[str, Any], image_size: int) -> ImageTokens:
    vision = getattr(config, "vision_config", None)
    if vision is None or not getattr(vision, "patch_size", None):
        return ImageTokens(tokens=0, patches=0, side=0, family="none")
    side = getattr(vision, "image_size", 224)
    grid = (side // vision.patch_size) ** 2
    return ImageTokens(tokens=grid, patches=grid, side=side, family="fallback")


_FAMILIES = {
    "llava": _llava,
    "llava_next": _llava_next,
    "idefics3": _idefics3,
    "smolvlm": _idefics3,
    "qwen2_vl": _qwen2_vl,
    "qwen2_5_vl": _qwen2_vl,
}


def image_tokens(config, settings: dict[str, Any] | None = None, *, image_size: int = 0) -> ImageTokens:
    """Tokens and vision-encoder patches for one square image of side ``image_size``.

    Args:
        config: the model's ``PretrainedConfig``.
        settings: the processor settings (``memory_checkpoint.processor_settings``); may be empty.
        image_size: the image's side in pixels; 0 = the largest the processor produces.
    """
    family = _FAMILIES.get(config.model_type, _fallback)
    return family(config, settings or {}, image_size)
