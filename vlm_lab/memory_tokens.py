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
- LLaVA-OneVision: as LLaVA-NeXT, with the tiles' features pooled down to at most
  ``anyres_max_N`` base images and no CLS position (SigLIP);
- Idefics2: ``image_seq_len`` (the perceiver's latents) per crop, 5 crops with
  image splitting (4 quarters + the whole), with a marker around each;
- Gemma3: ``image_seq_length`` (``mm_tokens_per_image``) plus start/end markers and
  the blank lines around them, once for the image and, with ``do_pan_and_scan``, once
  more for each crop its ``pan_and_scan`` cuts a wide or tall image into (with the words
  that introduce them); PaliGemma: ``image_seq_length``;
- Qwen2-VL / Qwen2.5-VL: ``smart_resize`` to a multiple of patch x merge within
  [min_pixels, max_pixels], then one token per merge x merge patches, plus the
  vision start/end tokens;
- Mllama: one ``<|image|>`` token in the text, but every cross-attention layer
  caches ``max_num_tiles x (patches + CLS)`` vision positions (``cross_tokens``).
- Pixtral (LLaVA with a Pixtral vision tower) / Mistral3: the image shrunk to fit
  ``longest_edge``, its sides rounded up to patch x spatial_merge; a token per merged
  patch, an ``[IMG_BREAK]`` ending each row, ``[IMG_END]`` the last;
- InternVL / Aya Vision: GotOcr2's ``crop_to_patches`` (the processors turn it on):
  the tile grid closest to the image's aspect within [min_patches, max_patches],
  plus a thumbnail tile when there is more than one; InternVL ``image_seq_length``
  a tile + start/end, Aya ``(img_size / (patch x downsample))^2`` a tile + a
  ``TILE_i`` marker a tile + start/TILE_GLOBAL/end;
- Llama 4: the canvas of at most ``max_patches`` tiles that fits the image best
  (``get_best_fit``), ``(tile / patch)^2 / (1 / pixel_shuffle_ratio^2)`` tokens a
  tile, separators between tiles and rows, and a global tile when tiled.

Every count is for one ``height`` x ``width`` image (``image_tokens_for_shape``), by the
processors' own helpers where transformers exposes them (``select_best_resolution`` and
``_get_unpadded_features``, Qwen2-VL's ``smart_resize``, Idefics3's / SmolVLM's
``get_number_of_image_patches``, GotOcr2's ``get_optimal_tiled_canvas``); ``by_shape`` on
the result says whether the family's count depends on the shape. Which shape to plan
for (the worst one a Space may get) is ``memory_shapes``' business.

Another family uses a per-image count its processor or model config states
(``image_seq_length``, ``mm_tokens_per_image``, ...); failing that it is a guess:
one tile of ``(image_size / patch_size)^2`` from the vision config, which
undercounts any family that tiles, and says so (``ImageTokens.guessed``).
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Any

# Idefics3's image processor never resizes above this side (MAX_IMAGE_SIZE there).
_IDEFICS3_MAX_SIDE = 4096
# Fields in which a processor or model config states a fixed per-image token count
# (PaliGemma/Gemma3 image processors and processors, Gemma3Config, PaliGemma's text config).
_COUNT_KEYS = ("image_seq_length", "mm_tokens_per_image", "num_image_tokens")


@dataclasses.dataclass(frozen=True)
class ImageTokens:
    """One image's footprint: tokens in the prompt, patches through the vision encoder."""

    tokens: int  # positions in the language model's sequence
    patches: int  # positions through the vision encoder (all tiles)
    side: int  # the image's longer side (pixels) the counts are for
    family: str  # llava | llava_next | llava_onevision | idefics2 | idefics3 | gemma3 | paligemma | qwen2_vl | mllama | pixtral | internvl | aya_vision | llama4 | fixed | fallback | none
    rule: str = ""  # how the count was made, for reports ("gemma3: 256 (image_seq_length in the processor config) + 4 markers")
    cross_tokens: int = 0  # vision positions each cross-attention layer caches (Mllama), not in the sequence
    height: int = 0  # the image (pixels) the counts are for; 0 = side (a square)
    width: int = 0
    by_shape: bool = False  # the count depends on the image's height and width (tiles, dynamic resolution), not only its size
    plan: str = ""  # which image this is and why ("the worst of 9 shapes up to 1456 px", "as asked"), for reports

    @property
    def shape(self) -> str:
        """``'728x1456'`` (height x width), the image the counts are for."""
        return f"{self.height or self.side}x{self.width or self.side}"

    @property
    def guessed(self) -> bool:
        """No rule for this family and no stated count: one tile was assumed (tiling families get more)."""
        return self.family == "fallback"


def _get(settings: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if settings.get(key) is not None:
            return settings[key]
    return default


def _edge(value: Any, key: str, default: int) -> int:
    if isinstance(value, dict):
        return int(value.get(key) or value.get("height") or default)
    return int(value) if value else default


def _llava(config, settings: dict[str, Any], height: int, width: int) -> ImageTokens:
    vision = config.vision_config
    if getattr(vision, "model_type", None) == "pixtral":  # Pixtral-12B: LLaVA around a Pixtral tower and processor
        return _pixtral(config, settings, height, width)
    patch = int(_get(settings, "patch_size", default=vision.patch_size))
    crop = settings.get("crop_size") or settings.get("size")
    side = _edge(crop, "shortest_edge", vision.image_size)  # LLaVA always resizes + crops to this
    strategy = _get(settings, "vision_feature_select_strategy", default=getattr(config, "vision_feature_select_strategy", "default"))
    extra = int(_get(settings, "num_additional_image_tokens", default=1))
    grid = (side // patch) ** 2
    tokens = grid + extra - (1 if strategy == "default" else 0)
    rule = f"llava: ({side}/{patch})^2 patches" + (f" + {extra} extra" if extra else "") + (" - CLS" if strategy == "default" else "")
    return ImageTokens(tokens=tokens, patches=grid + 1, side=side, family="llava", rule=rule)


def _anyres(config, settings: dict[str, Any], height: int, width: int, *, family: str, strategy: str, extra: int, cls: int,
            tile_tokens: int | None = None, aspect: str = "") -> ImageTokens:
    """LLaVA-NeXT and LLaVA-OneVision: the base image plus the tiles of the best ``image_grid_pinpoints`` resolution,
    counted by the processors' own ``select_best_resolution`` and ``_get_unpadded_features`` (the padding that reached
    the pinpoint's aspect is cut off again; OneVision pools the tiles down to at most ``anyres_max_N`` base images).

    What differs between them is passed in: ``strategy`` the default vision_feature_select_strategy; ``extra`` tokens
    added to the base image (NeXT's num_additional_image_tokens); ``cls`` vision-encoder positions a tile adds (1 for
    CLIP); ``tile_tokens`` a tile's tokens when stated (OneVision's num_image_tokens; else (crop/patch)^2);
    ``aspect`` OneVision's vision_aspect_ratio (anyres_max_N; "" for NeXT: no pooling).
    """
    from transformers.image_processing_utils import select_best_resolution
    from transformers.models.llava_next.processing_llava_next import LlavaNextProcessor
    from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor

    vision = config.vision_config
    patch = int(_get(settings, "patch_size", default=vision.patch_size))
    crop = _edge(settings.get("crop_size") or settings.get("size"), "shortest_edge", vision.image_size)
    pinpoints = _anyres_pinpoints(config, settings)
    strategy = _get(settings, "vision_feature_select_strategy", default=getattr(config, "vision_feature_select_strategy", strategy))
    per_tile = tile_tokens or (crop // patch) ** 2
    base = per_tile + extra - (1 if strategy == "default" else 0)  # "default" drops the CLS position
    best_h, best_w = select_best_resolution((height, width), pinpoints)
    grid = math.isqrt(per_tile)
    # the processors' own count; it reads nothing from the processor but OneVision's vision_aspect_ratio
    if aspect:
        owner = types.SimpleNamespace(vision_aspect_ratio=aspect)
        features, newlines = LlavaOnevisionProcessor._get_unpadded_features(owner, height, width, grid, grid, best_h // crop, best_w // crop)
    else:
        features, newlines = LlavaNextProcessor._get_unpadded_features(None, height, width, grid, grid, best_h // crop, best_w // crop)
    tiles = (best_h // crop) * (best_w // crop)
    rule = (f"{family}: base {per_tile} + {tiles} tiles of ({crop}/{patch})^2 patches ({best_h}x{best_w} of image_grid_pinpoints), unpadded"
            + (f", pooled to {aspect}" if aspect else "") + ", a newline per row")
    return ImageTokens(tokens=features + newlines + base, patches=(tiles + 1) * ((crop // patch) ** 2 + cls), side=max(height, width),
                       family=family, rule=rule, by_shape=True)


def _anyres_pinpoints(config, settings: dict[str, Any]) -> list:
    crop = _edge(settings.get("crop_size") or settings.get("size"), "shortest_edge", config.vision_config.image_size)
    return _get(settings, "image_grid_pinpoints", default=getattr(config, "image_grid_pinpoints", None)) or [[crop, crop]]


def _llava_next(config, settings: dict[str, Any], height: int, width: int) -> ImageTokens:
    extra = int(_get(settings, "num_additional_image_tokens", default=1))
    return _anyres(config, settings, height, width, family="llava_next", strategy="default", extra=extra, cls=1)


def _llava_onevision(config, settings: dict[str, Any], height: int, width: int) -> ImageTokens:
    """As LLaVA-NeXT, with no CLS position (SigLIP) and the tiles pooled down to at most ``anyres_max_N`` base images."""
    tile_tokens = _get(settings, "num_image_tokens")
    aspect = str(_get(settings, "vision_aspect_ratio", default=getattr(config, "vision_aspect_ratio", "anyres_max_9")))
    if not aspect.startswith("anyres_max_"):
        aspect = "anyres_max_9"
    return _anyres(config, settings, height, width, family="llava_onevision", strategy="full", extra=0, cls=0,
                   tile_tokens=int(tile_tokens) if tile_tokens else None, aspect=aspect)


def _idefics3_splitting(config, settings: dict[str, Any]) -> tuple[int, int, bool]:
    """(longest_edge, tile side, image splitting) from the processor settings, with Idefics3's defaults."""
    longest = _edge(settings.get("size"), "longest_edge", 4 * 364)
    tile = _edge(settings.get("max_image_size"), "longest_edge", 364)
    return longest, tile, bool(settings.get("do_image_splitting", True))


def _idefics3(config, settings: dict[str, Any], height: int, width: int) -> ImageTokens:
    """The image processor's own ``get_number_of_image_patches``: rescaled to ``longest_edge``, then split into tiles."""
    if config.model_type == "smolvlm":
        from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil as ImageProcessor
    else:
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil as ImageProcessor

    vision = config.vision_config
    scale = int(getattr(config, "scale_factor", 2) or 1)
    tile_side = vision.image_size
    per_tile = int(_get(settings, "image_seq_len", default=((tile_side // vision.patch_size) ** 2) // (scale**2)))
    longest, tile, splitting = _idefics3_splitting(config, settings)
    processor = ImageProcessor(size={"longest_edge": longest}, max_image_size={"longest_edge": tile}, do_image_splitting=splitting)
    _, rows, cols = processor.get_number_of_image_patches(height, width)
    tiles = rows * cols + 1
    # "<fake><global-img>" + image tokens + "<fake>" for the global image; per tile
    # "<fake><row_r_col_c>" + image tokens; a newline per row and one before the global image
    tokens = per_tile + 3 + rows * (cols * (per_tile + 2) + 1) + (1 if rows else 0)
    patches_per_tile = (tile_side // vision.patch_size) ** 2
    rule = (f"{config.model_type}: {per_tile} (image_seq_len) per tile, {rows}x{cols} tiles + a global image" if rows
            else f"{config.model_type}: {per_tile} (image_seq_len), one tile") + (" (image splitting)" if splitting else "") + " + markers"
    return ImageTokens(tokens=tokens, patches=tiles * patches_per_tile, side=max(height, width), family="idefics3", rule=rule,
                       by_shape=splitting)


def _qwen2_vl_pixels(config, settings: dict[str, Any]) -> tuple[int, int, int, int]:
    """(patch, merge, min_pixels, max_pixels) from the processor settings, with Qwen2-VL's defaults."""
    vision = config.vision_config
    patch = int(_get(settings, "patch_size", default=getattr(vision, "patch_size", 14)))
    merge = int(_get(settings, "merge_size", default=getattr(vision, "spatial_merge_size", 2)))
    size = settings.get("size") or {}
    min_pixels = int(_get(settings, "min_pixels", default=size.get("shortest_edge", 56 * 56)))
    max_pixels = int(_get(settings, "max_pixels", default=size.get("longest_edge", 28 * 28 * 1280)))
    return patch, merge, min_pixels, max_pixels


def _qwen2_vl(config, settings: dict[str, Any], height: int, width: int) -> ImageTokens:
    """The image processor's ``smart_resize``: sides a multiple of patch x merge, area within [min_pixels, max_pixels]."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    patch, merge, min_pixels, max_pixels = _qwen2_vl_pixels(config, settings)
    h, w = smart_resize(height, width, patch * merge, min_pixels, max_pixels)
    patches = (h // patch) * (w // patch)
    rule = f"qwen2_vl: smart_resize to {h}x{w} within [min_pixels, max_pixels], a token per {merge}x{merge} patches of {patch} + 2"
    return ImageTokens(tokens=patches // merge**2 + 2, patches=patches, side=max(height, width), family="qwen2_vl", rule=rule,
                       by_shape=True)


def _stated_count(config, settings: dict[str, Any]) -> tuple[int, str] | None:
    """A per-image token count the processor or model config states outright, and where it was read."""
    for key in _COUNT_KEYS:
        if isinstance(settings.get(key), int) and settings[key] > 0:
            return settings[key], f"{key} in the processor config"
    for cfg in (config, config.get_text_config()):
        for key in _COUNT_KEYS:
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value, f"{key} in config.json"
    return None


def _grid(vision) -> int:
    return (vision.image_size // vision.patch_size) ** 2


# Gemma3Processor's framing of pan-and-scan crops: "Here is the original image {image} and here are some crops to help you see better {crops}"
_GEMMA3_CROPS_WORDS = 15


def _gemma3_pan_and_scan(settings: dict[str, Any]) -> dict[str, Any] | None:
    """The pan-and-scan settings when the processor config turns it on (None when off), with Gemma3Processor's defaults."""
    from transformers.models.gemma3.processing_gemma3 import Gemma3Processor

    if not settings.get("do_pan_and_scan"):
        return None
    keys = ("pan_and_scan_min_crop_size", "pan_and_scan_max_num_crops", "pan_and_scan_min_ratio_to_activate")
    return {key: settings[key] if settings.get(key) is not None else Gemma3Processor.images_kwargs[key] for key in keys}


def _gemma3_crops(pan_and_scan: dict[str, Any], height: int, width: int) -> int:
    """Crops the image processor's own ``pan_and_scan`` cuts from a ``height`` x ``width`` image (0 below its ratio or size)."""
    import numpy as np
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    image = np.broadcast_to(np.zeros((), dtype=np.uint8), (3, height, width))  # channels first, no pixels stored
    return len(Gemma3ImageProcessorPil.pan_and_scan(None, image, **pan_and_scan))


def _gemma3(config, settings: dict[str, Any], height: int, width: int) -> ImageTokens:
    """``mm_tokens_per_image`` a view, and with pan-and-scan on one more view per crop a wide or tall image is cut into.

    Counted when the processor config says ``do_pan_and_scan: true``: transformers' Gemma3Processor crops only when
    called with it, so a config that asks for it is planned for (the safe side).
    """
    vision = config.vision_config
    per_image, source = _stated_count(config, settings) or (256, "Gemma3's default")
    view = per_image + 4  # "\n\n<start_of_image>" + soft tokens + "<end_of_image>\n\n"
    pan_and_scan = _gemma3_pan_and_scan(settings)
    if pan_and_scan is None:
        rule = f"gemma3: {per_image} ({source}) + 4 markers; pan-and-scan off (do_pan_and_scan)"
        return ImageTokens(tokens=view, patches=_grid(vision), side=vision.image_size, family="gemma3", rule=rule)
    crops = _gemma3_crops(pan_and_scan, height, width)
    tokens = (1 + crops) * view + (_GEMMA3_CROPS_WORDS if crops else 0)
    rule = (f"gemma3: {per_image} ({source}) + 4 markers a view, pan-and-scan on: the image + {crops} crop(s) "
            f"(at most {pan_and_scan['pan_and_scan_max_num_crops']}, each >= {pan_and_scan['pan_and_scan_min_crop_size']} px)"
            + (f" + {_GEMMA3_CROPS_WORDS} words introducing them" if crops else ""))
    return ImageTokens(tokens=tokens, patches=(1 + crops) * _grid(vision), side=max(height, width), family="gemma3", rule=rule,
                       by_shape=True)


def _paligemma(config, settings: dict[str, Any], height: int, width: int) -> ImageTokens:
    vision = config.vision_config
    per_image, source = _stated_count(config, settings) or (_grid(vision), "(image_size/patch_size)^2")
    rule = f"paligemma: {per_image} ({source})"
    return ImageTokens(tokens=per_image, patches=_grid(vision), side=vision.image_size, family="paligemma", rule=rule)


def _idefics2(config, settings: dict[str, Any], height: int, width: int) -> ImageTokens:
    vision = config.vision_config
    perceiver = getattr(config, "perceiver_config", None)
    per_crop = int(_get(settings, "image_seq_len", default=getattr(perceiver, "resampler_n_latents", 64)))
    size = settings.get("size") or {}
    shortest, longest = int(size.get("shortest_edge") or 378), int(size.get("longest_edge") or 980)
    splitting = bool(settings.get("do_image_splitting", False))  # Idefics2ImageProcessor's default
    crops = 5 if splitting else 1  # the 4 quarters, then the whole image
    side = max(height, width)
    resized = max(min(side, longest), shortest)  # every crop is padded to the whole image's resized side
    # "<fake>" + image tokens, per crop, and a closing "<fake>"
    rule = f"idefics2: {per_crop} (image_seq_len) per crop, {crops} crop(s)" + (" (image splitting)" if splitting else "") + " + markers"
    return ImageTokens(tokens=crops * (per_crop + 1) + 1, patches=crops * (resized // vision.patch_size) ** 2, side=side,
                       family="idefics2", rule=rule)


def _mllama(config, settings: dict[str, Any], height: int, width: int) -> ImageTokens:
    vision = config.vision_config
    tiles = int(_get(settings, "max_image_tiles", default=getattr(vision, "max_num_tiles", 4)))
    per_tile = _grid(vision) + 1  # + the CLS position
    padded = per_tile + (-per_tile) % 8  # the vision encoder pads each tile to a multiple of 8
    # the processor always packs max_image_tiles tiles (unused ones zero): the cross-attention states cover them all
    rule = f"mllama: 1 token in the text; cross-attention caches {tiles} tiles x {per_tile} positions"
    return ImageTokens(tokens=1, patches=tiles * padded, side=vision.image_size, family="mllama", rule=rule,
                       cross_tokens=tiles * per_tile)


def _first(value: Any) -> int:
    """A side from a config field that may be ``448``, ``[448, 448]`` or ``{"height": 448, ...}``."""
    if isinstance(value, dict):
        value = value.get("height") or value.get("longest_edge") or value.get("shortest_edge")
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _int_setting(settings: dict[str, Any], key: str, default: Any) -> int:
    """An int processor setting; a dict (an image processor's ``patch_size`` merged over the processor's) is ignored."""
    value = settings.get(key)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else int(default)


def _pixtral(config, settings: dict[str, Any], height: int, width: int) -> ImageTokens:
    """PixtralProcessor: resize to fit ``longest_edge``, sides rounded up to patch x merge; a row of tokens + a break each."""
    vision = config.vision_config
    patch = _int_setting(settings, "patch_size", _first(vision.patch_size))
    merge = _int_setting(settings, "spatial_merge_size", getattr(config, "spatial_merge_size", 1) or 1)
    longest = _pixtral_longest(config, settings)
    step = patch * merge
    ratio = max(height / longest, width / longest)
    if ratio > 1:  # floor, as get_resize_output_image_size does
        height, width = math.floor(height / ratio), math.floor(width / ratio)
    rows, cols = (height - 1) // step + 1, (width - 1) // step + 1
    rule = (f"pixtral: fit in {longest} (size longest_edge), a token per {step}x{step} pixels (patch {patch} x merge {merge}): "
            f"{rows}x{cols}, + an [IMG_BREAK]/[IMG_END] a row")
    return ImageTokens(tokens=rows * (cols + 1), patches=rows * cols * merge**2, side=max(height, width), family="pixtral", rule=rule,
                       by_shape=True)


def _pixtral_longest(config, settings: dict[str, Any]) -> int:
    return _edge(settings.get("size"), "longest_edge", _first(config.vision_config.image_size))


def _crop_to_patches(settings: dict[str, Any], height: int, width: int, tile: int) -> int:
    """Tiles GotOcr2's ``crop_to_patches`` makes (InternVL, Aya Vision; their processors turn it on): a grid + a thumbnail."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas

    least, most = _int_setting(settings, "min_patches", 1), _int_setting(settings, "max_patches", 12)
    if most <= 1:
        return 1
    cols, rows = get_optimal_tiled_canvas((height, width), (tile, tile), least, most)
    return cols * rows + 1 if cols * rows > 1 else 1


def _internvl(config, settings: dict[str, Any], height: int, width: int) -> ImageTokens:
    vision = config.vision_config
    tile = _tile_side(config, settings)
    patch = _first(vision.patch_size)
    ratio = float(getattr(config, "downsample_ratio", 0.5))
    stated = _int_setting(settings, "image_seq_length", getattr(config, "image_seq_length", 0) or 0)
    per_tile = stated or int((tile // patch) ** 2 * ratio**2)
    tiles = _crop_to_patches(settings, height, width, tile)
    rule = f"internvl: {per_tile} (image_seq_length) a tile x {tiles} tile(s) of {tile} (crop_to_patches, thumbnail) + <img></img>"
    return ImageTokens(tokens=per_tile * tiles + 2, patches=tiles * ((tile // patch) ** 2 + 1), side=max(height, width),
                       family="internvl", rule=rule, by_shape=_int_setting(settings, "max_patches", 12) > 1)


def _aya_vision(config, settings: dict[str, Any], height: int, width: int) -> ImageTokens:
    vision = config.vision_config
    img = _int_setting(settings, "img_size", _first(settings.get("size") or vision.image_size))
    # the processor saves patch_size x downsample_factor as its patch_size (and no downsample_factor: 1 when reloaded);
    # without a processor config, the model's own: the vision patch x the projector's downsample_factor
    stated = isinstance(settings.get("patch_size"), int)
    patch = _int_setting(settings, "patch_size", _first(vision.patch_size))
    down = _int_setting(settings, "downsample_factor", 1 if stated else getattr(config, "downsample_factor", 1) or 1)
    per_tile = (img // (patch * down)) ** 2
    tiles = _crop_to_patches(settings, height, width, _first(settings.get("size") or img))
    # AyaVisionProcessor._get_num_multimodal_tokens: start, TILE_GLOBAL, end + a TILE_i marker for every other tile
    rule = f"aya_vision: ({img}/({patch}x{down}))^2 = {per_tile} a tile x {tiles} tile(s) (crop_to_patches, thumbnail) + markers"
    return ImageTokens(tokens=per_tile * tiles + 3 + (tiles - 1), patches=tiles * (img // _first(vision.patch_size)) ** 2,
                       side=max(height, width), family="aya_vision", rule=rule, by_shape=_int_setting(settings, "max_patches", 12) > 1)


def _llama4_canvases(tile: int, max_tiles: int) -> list[tuple[int, int]]:
    """(height, width) of every canvas of at most ``max_tiles`` tiles, in find_supported_resolutions' order."""
    canvases: dict[float, list[tuple[int, int]]] = {}
    for chunks in range(max_tiles, 0, -1):
        for factor in sorted(f for f in range(1, chunks + 1) if chunks % f == 0):
            canvases.setdefault(factor / (chunks // factor), []).append((factor, chunks // factor))
    return [(r * tile, c * tile) for group in canvases.values() for r, c in group]


def _llama4_canvas(height: int, width: int, tile: int, max_tiles: int) -> tuple[int, int]:
    """(rows, cols) of tiles, as Llama4ImageProcessor's find_supported_resolutions + get_best_fit choose them.

    Written out here because that module imports torchvision; the order of the candidates is kept (ties: least area, first).
    """
    candidates = _llama4_canvases(tile, max_tiles)
    scales = [min(w / width, h / height) for h, w in candidates]
    up = [s for s in scales if s >= 1]
    chosen = min(up) if up else max(scales)
    best = min((h * w, i) for i, ((h, w), s) in enumerate(zip(candidates, scales)) if s == chosen)[1]
    return candidates[best][0] // tile, candidates[best][1] // tile


def _llama4(config, settings: dict[str, Any], height: int, width: int) -> ImageTokens:
    vision = config.vision_config
    tile = _tile_side(config, settings)
    patch = _int_setting(settings, "patch_size", _first(vision.patch_size))
    shuffle = float(_get(settings, "pixel_shuffle_ratio", default=getattr(vision, "pixel_shuffle_ratio", 0.5)))
    per_tile = (tile // patch) ** 2 // int(round(1.0 / shuffle**2))
    rows, cols = _llama4_canvas(height, width, tile, _int_setting(settings, "max_patches", 16))
    grid = rows * cols
    # <|image_start|> [tiles, x-separators between, a y-separator a row] <|image|> global tile <|image_end|>
    tokens = per_tile + 3 + (grid * (per_tile + 1) if grid > 1 else 0)
    tiles = grid + (1 if grid > 1 else 0)
    rule = f"llama4: {per_tile} a tile ((tile/patch)^2 pixel-shuffled) x {rows}x{cols} tiles" + (" + a global tile" if grid > 1 else "") + " + separators"
    return ImageTokens(tokens=tokens, patches=tiles * ((tile // _first(vision.patch_size)) ** 2 + 1), side=max(height, width),
                       family="llama4", rule=rule, by_shape=_int_setting(settings, "max_patches", 16) > 1)


def _tile_side(config, settings: dict[str, Any]) -> int:
    return _first(settings.get("size") or config.vision_config.image_size)


def _fallback(config, settings: dict[str, Any], height: int, width: int) -> ImageTokens:
    vision = getattr(config, "vision_config", None)
    if vision is None or not getattr(vision, "patch_size", None):
        return ImageTokens(tokens=0, patches=0, side=0, family="none", rule="no vision config: text only")
    side = getattr(vision, "image_size", 224)
    if isinstance(side, (list, tuple)):
        side = max(side)
    grid = (side // vision.patch_size) ** 2
    stated = _stated_count(config, settings)
    if stated:
        return ImageTokens(tokens=stated[0], patches=grid, side=side, family="fixed", rule=f"{config.model_type}: {stated[0]} ({stated[1]})")
    rule = f"guessed: one tile of ({side}/{vision.patch_size})^2 patches (no rule for model type {config.model_type!r})"
    return ImageTokens(tokens=grid, patches=grid, side=side, family="fallback", rule=rule)


_FAMILIES = {
    "llava": _llava,
    "llava_next": _llava_next,
    "idefics3": _idefics3,
    "smolvlm": _idefics3,
    "qwen2_vl": _qwen2_vl,
    "qwen2_5_vl": _qwen2_vl,
    "llava_onevision": _llava_onevision,
    "idefics2": _idefics2,
    "gemma3": _gemma3,
    "paligemma": _paligemma,
    "mllama": _mllama,
    "mistral3": _pixtral,
    "internvl": _internvl,
    "aya_vision": _aya_vision,
    "llama4": _llama4,
}

COUNTED_FAMILIES = tuple(_FAMILIES)  # model types counted by their processor's rule (the others: a stated count, else a guess)


def image_tokens_for_shape(config, settings: dict[str, Any] | None, height: int, width: int) -> ImageTokens:
    """Tokens and vision-encoder patches for one ``height`` x ``width`` image, as the model's processor counts them.

    ``by_shape`` on the result says whether the count depends on the shape; where it does not (a fixed
    resize, a fixed count), ``height``/``width`` are the image the processor makes of any input.

    Args:
        config: the model's ``PretrainedConfig``.
        settings: the processor settings (``memory_checkpoint.processor_settings``); may be empty.
    """
    family = _FAMILIES.get(config.model_type, _fallback)
    counted = family(config, settings or {}, height, width)
    if counted.by_shape:
        return dataclasses.replace(counted, height=height, width=width, side=max(height, width))
    return dataclasses.replace(counted, height=counted.side, width=counted.side)


def largest_side(config, settings: dict[str, Any] | None) -> int:
    """The longer side from which the processor makes the most of any aspect (it shrinks larger images to the same)."""
    settings = settings or {}
    kind = config.model_type
    if kind == "llava" and getattr(config.vision_config, "model_type", None) == "pixtral" or kind == "mistral3":
        return _pixtral_longest(config, settings)
    if kind in ("llava_next", "llava_onevision"):
        # 2x the largest pinpoint side: a 1:4 image then has the area of any pinpoint, so no pinpoint is chosen for being smaller
        return 2 * max(int(s) for point in _anyres_pinpoints(config, settings) for s in point)
    if kind in ("qwen2_vl", "qwen2_5_vl"):
        return 2 * math.isqrt(_qwen2_vl_pixels(config, settings)[3]) + 2  # a 1:4 image of at least max_pixels
    if kind in ("idefics3", "smolvlm"):
        return _idefics3_splitting(config, settings)[0]  # every image is rescaled to longest_edge
    if kind == "idefics2":
        return int((settings.get("size") or {}).get("longest_edge") or 980)
    if kind in ("internvl", "aya_vision", "llama4"):
        key, default = "max_patches", (16 if kind == "llama4" else 12)
        return _tile_side(config, settings) * max(1, _int_setting(settings, key, default))  # a 1 x max_patches canvas
    if kind == "gemma3" and (pan_and_scan := _gemma3_pan_and_scan(settings)):
        # a 1 x max_num_crops strip of the smallest crops: every crop is resized to one view, so larger makes no more
        return int(pan_and_scan["pan_and_scan_min_crop_size"]) * max(2, int(pan_and_scan["pan_and_scan_max_num_crops"]))
    return 0  # the family does not depend on shape: its own side


def grid_shapes(config, settings: dict[str, Any] | None) -> list[tuple[int, int]]:
    """(height, width) of the model's own tile grids (LLaVA-NeXT pinpoints, InternVL/Aya/Llama 4 canvases, Gemma 3 crop strips), to try as images."""
    settings = settings or {}
    kind = config.model_type
    if kind in ("llava_next", "llava_onevision"):
        return [(int(h), int(w)) for h, w in _anyres_pinpoints(config, settings)]
    if kind in ("internvl", "aya_vision", "llama4"):
        tile = _tile_side(config, settings)
        most = _int_setting(settings, "max_patches", 16 if kind == "llama4" else 12)
        least = _int_setting(settings, "min_patches", 1)
        if kind == "llama4":
            return _llama4_canvases(tile, most)
        return [(r * tile, c * tile) for r in range(1, most + 1) for c in range(1, most + 1) if least <= r * c <= most]
    if kind == "gemma3" and (pan_and_scan := _gemma3_pan_and_scan(settings)):
        # strips of n crops either way up: the aspects that make n crops, up to max_num_crops (past the 4:1 of memory_shapes)
        crop, most = int(pan_and_scan["pan_and_scan_min_crop_size"]), int(pan_and_scan["pan_and_scan_max_num_crops"])
        return [shape for n in range(2, most + 1) for shape in ((crop, n * crop), (n * crop, crop))]
    return []


def image_tokens(config, settings: dict[str, Any] | None = None, *, image_size: int = 0) -> ImageTokens:
    """Tokens and vision-encoder patches for one square image of side ``image_size`` (0: ``largest_side``)."""
    side = image_size or largest_side(config, settings) or 1
    return image_tokens_for_shape(config, settings, side, side)
