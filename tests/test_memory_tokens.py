"""vlm_lab.memory_tokens: image tokens per VLM family against the real processors of
transformers 5 (PIL image processors; no torchvision), and the estimate's KV cache with them.

A family that splits images or states a fixed count must not fall back to "one tile"
(``(image_size / patch_size)^2``): that over- or undercounts the KV cache many times.
Where no rule applies the count is a guess, and says so.
"""

from __future__ import annotations

import json

import pytest

from vlm_lab import memory, memory_checkpoint, memory_synthetic

TEXT = dict(vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)
WORDS = ["what", "here", "is", "the", "original", "image", "and", "are", "some", "crops", "to", "help", "you", "see", "better"]


def _tokenizer(specials: list[str], named: dict[str, str] | None = None):
    """A word-level tokenizer (whitespace split: it drops the newlines a real one keeps) with the family's special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", "<bos>", "<eos>", *specials, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<bos>", eos_token="<eos>",
                                   additional_special_tokens=specials, extra_special_tokens=named or {})


def _encode(processor, text: str, side: int):
    from PIL import Image

    return processor(images=[Image.new("RGB", (side, side))], text=[text], return_tensors="np")


def _count(enc, token_id: int) -> int:
    return int((enc["input_ids"][0] == token_id).sum())


def test_gemma3_counts_mm_tokens_per_image_and_its_markers(tmp_path):
    """Gemma3 pools every image to mm_tokens_per_image (256 on the real model, not (896/14)^2 = 4096)."""
    from transformers import Gemma3Config, Gemma3ImageProcessorPil, Gemma3Processor

    config = Gemma3Config(vision_config=dict(model_type="siglip_vision_model", **VISION), text_config=dict(head_dim=16, **TEXT),
                          mm_tokens_per_image=4)
    names = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tokenizer = _tokenizer(list(names.values()), names)
    processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 32, "width": 32}), tokenizer=tokenizer,
                                image_seq_length=4)
    folder = memory_synthetic.write_config_only(tmp_path / "gemma3", config)
    processor.save_pretrained(folder)

    enc = _encode(processor, "what <start_of_image>", 100)
    soft = _count(enc, tokenizer.convert_tokens_to_ids("<image_soft_token>"))
    markers = _count(enc, tokenizer.boi_token_id) + _count(enc, tokenizer.convert_tokens_to_ids("<end_of_image>"))
    est = memory.estimate(folder)
    # + the "\n\n" before and after, which this tokenizer drops and Gemma's keeps as one token each
    assert (soft, markers) == (4, 2)
    assert est.image.tokens == soft + markers + 2
    assert est.image.patches == (32 // 8) ** 2 and not est.image.guessed
    assert "image_seq_length in the processor config" in est.image.rule


@pytest.fixture(scope="module")
def gemma3_pan_and_scan(tmp_path_factory):
    """The tiny synthetic Gemma 3 (16 tokens a view) whose saved image processor turns pan-and-scan on (the rest left
    null, as the hub's Gemma 3 configs leave them: Gemma3Processor's defaults, crops >= 256 px, at most 4)."""
    from vlm_lab import synthetic_families

    folder = synthetic_families.build_gemma3(tmp_path_factory.mktemp("gemma3") / "pan-and-scan")
    settings = json.loads((folder / "processor_config.json").read_text())
    settings["image_processor"].update(do_pan_and_scan=True, pan_and_scan_min_crop_size=None, pan_and_scan_max_num_crops=None,
                                       pan_and_scan_min_ratio_to_activate=None)
    (folder / "processor_config.json").write_text(json.dumps(settings))
    return folder


@pytest.mark.parametrize("image_size, shape, views", [
    (0, "256x1024", 5),  # any size: the worst is a 1:4 strip that makes the most crops (4), each a view of its own
    (512, "410x512", 3),  # up to 512 px: 2 crops of >= 256 px at most
    ((256, 1024), "256x1024", 5),
    ((1000, 256), "1000x256", 4),  # tall: floor(1000/256 + 0.5) = 4, capped by floor(1000/256) = 3 crops
    ((300, 256), "300x256", 1),  # below pan_and_scan_min_ratio_to_activate (1.2): no crops
    ((64, 64), "64x64", 1),
])
def test_gemma3_pan_and_scan_counts_each_crop_as_its_processor_cuts_it(gemma3_pan_and_scan, image_size, shape, views):
    """With do_pan_and_scan on, a wide or tall image is the whole view plus one view per crop (the estimate counted one)."""
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(gemma3_pan_and_scan)
    est = memory.estimate(gemma3_pan_and_scan, image_size=image_size)
    height, width = est.image.height, est.image.width
    # transformers 5's Gemma3Processor crops only when called with do_pan_and_scan (it overrides the saved setting)
    enc = processor(images=[[Image.new("RGB", (width, height))]], text=["<start_of_image>"], return_tensors="np", do_pan_and_scan=True)
    assert (est.image.shape, enc["pixel_values"].shape[0]) == (shape, views)
    # + the "\n\n" before and after each view, which this whitespace tokenizer drops and Gemma's keeps as one token each
    assert est.image.tokens == enc["input_ids"].shape[1] + 2 * views
    assert est.image.patches == views * (64 // 8) ** 2
    assert ("pan-and-scan on: the image + %d crop(s)" % (views - 1)) in est.image.rule


def test_gemma3_pan_and_scan_raises_the_kv_cache_and_is_measured_with_its_crops(gemma3_pan_and_scan):
    from vlm_lab.memory_measure import measure

    est = memory.estimate(gemma3_pan_and_scan, dtype="float32", device="cpu", max_new_tokens=2)
    off = json.loads((gemma3_pan_and_scan / "processor_config.json").read_text())
    off["image_processor"]["do_pan_and_scan"] = False
    plain = gemma3_pan_and_scan.parent / "plain"
    if not plain.exists():
        import shutil

        shutil.copytree(gemma3_pan_and_scan, plain)
        (plain / "processor_config.json").write_text(json.dumps(off))
    without = memory.estimate(plain, dtype="float32", device="cpu", max_new_tokens=2)
    assert (est.image.tokens, without.image.tokens) == (5 * 20 + 15, 20)
    # both of its layers keep a window of 64: with the crops the prefill (32 text + 115) outgrows it, and the cache peaks
    # there (memory_kv); without them, all 32 + 20 + 2 new positions stay inside it
    assert est.kv_cache_bytes() == (32 + 115) * est.kv_bytes_per_token
    assert without.kv_cache_bytes() == (32 + 20 + 2) * without.kv_bytes_per_token
    m = measure(gemma3_pan_and_scan, dtype="float32", device="cpu", max_new_tokens=2, image_shape=(est.image.height, est.image.width))
    assert m.image_tokens == 5 * 16  # the soft tokens of the image and its 4 crops, measured as planned


def test_paligemma_counts_image_seq_length(tmp_path):
    from transformers import PaliGemmaConfig, PaliGemmaProcessor, SiglipImageProcessorPil

    config = PaliGemmaConfig(vision_config=dict(model_type="siglip_vision_model", **VISION), text_config=dict(model_type="gemma", head_dim=16, **TEXT))
    image_processor = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    image_processor.image_seq_length = 16  # as the hub's preprocessor_config.json carries it
    tokenizer = _tokenizer(["<image>"])
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    folder = memory_synthetic.write_config_only(tmp_path / "paligemma", config)
    processor.save_pretrained(folder)

    enc = _encode(processor, "<image>what", 100)
    est = memory.estimate(folder)
    assert est.image.tokens == _count(enc, tokenizer.convert_tokens_to_ids("<image>")) == 16
    assert est.image.family == "paligemma" and not est.image.guessed


@pytest.mark.parametrize("splitting, crops", [(False, 1), (True, 5)])
def test_idefics2_counts_its_perceiver_latents_per_crop(splitting, crops, tmp_path):
    """Idefics2 resamples each crop to image_seq_len latents (64 on the real model, not (980/14)^2 = 4900)."""
    from transformers import Idefics2Config, Idefics2ImageProcessorPil, Idefics2Processor

    config = Idefics2Config(vision_config={**VISION, "image_size": 64}, perceiver_config=dict(resampler_n_latents=8, hidden_size=64),
                            text_config=dict(model_type="mistral", **TEXT))
    tokenizer = _tokenizer(["<image>", "<fake_token_around_image>"])
    image_processor = Idefics2ImageProcessorPil(do_image_splitting=splitting, size={"shortest_edge": 32, "longest_edge": 64})
    processor = Idefics2Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=8)
    folder = memory_synthetic.write_config_only(tmp_path / "idefics2", config)
    processor.save_pretrained(folder)

    for side in (20, 100):
        enc = _encode(processor, "<image> what", side)
        est = memory.estimate(folder, image_size=(side, side))
        assert enc["pixel_values"].shape[1] == crops
        assert est.image.tokens == enc["input_ids"].shape[1] - 1  # all but "what": latents and the markers around each crop
        assert est.image.patches == crops * (enc["pixel_values"].shape[-1] // 8) ** 2, side
    assert memory.estimate(folder).image.tokens == crops * 9 + 1


def test_mllama_caches_the_image_in_its_cross_attention_layers(tmp_path):
    """One <|image|> token in the text; the cross-attention layers cache max_num_tiles x (patches + CLS) positions."""
    from transformers import MllamaConfig, MllamaImageProcessorPil, MllamaProcessor

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_global_layers=1, attention_heads=2, image_size=32,
                  patch_size=8, max_num_tiles=4, intermediate_layers_indices=[0], vision_output_dim=64)
    text = {**TEXT, "num_hidden_layers": 3, "cross_attention_layers": [1], "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0}
    config = MllamaConfig(vision_config=vision, text_config=text)
    tokenizer = _tokenizer(["<|image|>"], {"image_token": "<|image|>"})
    processor = MllamaProcessor(image_processor=MllamaImageProcessorPil(size={"height": 32, "width": 32}, max_image_tiles=4), tokenizer=tokenizer)
    folder = memory_synthetic.write_config_only(tmp_path / "mllama", config)
    processor.save_pretrained(folder)

    enc = _encode(processor, "<|image|> what", 100)
    est = memory.estimate(folder, dtype="float16", batch_size=2, prompt_tokens=10, max_new_tokens=6)
    tiles = enc["pixel_values"].shape[2]  # always padded to max_image_tiles
    assert est.image.tokens == _count(enc, tokenizer.image_token_id) == 1
    assert (tiles, est.image.cross_tokens) == (4, 4 * (16 + 1))
    # K and V x 2 kv heads x head_dim 16 x 2 bytes x (2 self-attention layers x 17 positions + 1 cross layer x 68) x batch 2
    assert est.kv_cache_bytes() == 2 * 2 * 16 * 2 * (2 * (10 + 1 + 6) + 1 * 68) * 2


def _onevision_folder(tmp_path, aspect: str):
    """A config-only LLaVA-OneVision (SigLIP 32px tiles, patch 8: 16 tokens a tile), with its processor's settings."""
    from transformers import LlavaOnevisionConfig, LlavaOnevisionImageProcessorPil
    from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor

    pinpoints = [[32, 32], [32, 64], [64, 32], [64, 64], [96, 96], [128, 128]]
    config = LlavaOnevisionConfig(vision_config=dict(model_type="siglip_vision_model", **VISION), text_config=dict(model_type="qwen2", **TEXT),
                                  image_grid_pinpoints=pinpoints, vision_aspect_ratio=aspect)
    folder = memory_synthetic.write_config_only(tmp_path / f"onevision-{aspect}", config)
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints)
    image_processor.save_pretrained(folder)
    settings = {"num_image_tokens": 16, "vision_aspect_ratio": aspect, "vision_feature_select_strategy": "full"}
    (folder / "processor_config.json").write_text(json.dumps(settings))
    # The processor itself needs a video processor, which needs torchvision: its counting is used as is
    processor = object.__new__(LlavaOnevisionProcessor)
    vars(processor).update(image_processor=image_processor, image_token="<image>", **settings)
    return folder, processor


@pytest.mark.parametrize("aspect", ["anyres_max_9", "anyres_max_2"])
def test_llava_onevision_counts_its_tiles_as_the_processor_does(aspect, tmp_path):
    """OneVision tiles like LLaVA-NeXT (up to 10x a tile's tokens), pooled to anyres_max_N: one tile undercounts it."""
    from PIL import Image

    folder, processor = _onevision_folder(tmp_path, aspect)
    reals = []
    for side in (20, 32, 50, 64, 100, 128, 300):
        inputs = processor.image_processor(images=[Image.new("RGB", (side, side))], return_tensors="np")
        inputs["batch_num_images"] = [1]
        reals.append(processor.replace_image_token(inputs, 0).count("<image>"))
        est = memory.estimate(folder, image_size=(side, side))
        assert est.image.tokens == reals[-1], side
        assert est.image.patches == inputs["pixel_values"].shape[1] * 16, side
    worst = memory.estimate(folder).image  # image_size 0: the worst shape of any size, checked on the real processor
    inputs = processor.image_processor(images=[Image.new("RGB", (worst.width, worst.height))], return_tensors="np")
    inputs["batch_num_images"] = [1]
    assert worst.tokens == processor.replace_image_token(inputs, 0).count("<image>") >= max(reals) > 2 * 16
    assert worst.family == "llava_onevision" and worst.by_shape


WIDE_FIRST = [[32, 96], [96, 32], [64, 128], [128, 64], [160, 160]]  # [height, width]: a square image ties; the first wins


@pytest.mark.parametrize("strategy, extra, pinpoints", [("default", 1, WIDE_FIRST), ("full", 0, [p[::-1] for p in WIDE_FIRST])])
def test_llava_next_counts_wide_and_tall_pinpoints_as_the_processor_does(strategy, extra, pinpoints, tmp_path):
    """LLaVA-NeXT and OneVision share one anyres count: here NeXT's side of it, on pinpoints of 1x3, 3x1, 2x4, 4x2 and
    5x5 tiles (unpadding cuts columns of a wide grid, rows of a tall one) and sides from below a tile to far above the largest."""
    from PIL import Image
    from transformers import LlavaNextConfig, LlavaNextImageProcessorPil, LlavaNextProcessor

    config = LlavaNextConfig(vision_config=dict(model_type="clip_vision_model", **VISION), text_config=dict(model_type="llama", **TEXT),
                             image_grid_pinpoints=pinpoints, vision_feature_select_strategy=strategy)
    tokenizer = _tokenizer(["<image>"], {"image_token": "<image>"})
    image_processor = LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                                 image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8,
                                   vision_feature_select_strategy=strategy, num_additional_image_tokens=extra)
    folder = memory_synthetic.write_config_only(tmp_path / f"llava-next-{strategy}", config)
    processor.save_pretrained(folder)

    reals = []
    for side in (10, 33, 48, 70, 96, 129, 160, 400):
        enc = _encode(processor, "<image> what", side)
        reals.append(_count(enc, tokenizer.convert_tokens_to_ids("<image>")))
        est = memory.estimate(folder, image_size=(side, side))
        assert est.image.tokens == reals[-1], side
        assert est.image.patches == enc["pixel_values"].shape[1] * (16 + 1), side  # CLIP: + the CLS position a tile
    worst = memory.estimate(folder)  # image_size 0: the most any square image makes (5x5 tiles)
    assert worst.image.tokens == max(reals) == 20 * 20 + 20 + 16 + extra - (strategy == "default")


def test_a_family_without_a_rule_is_a_guess_that_says_so(tmp_path):
    """BLIP-2 has no rule here: one tile is assumed, the row and the summary say so."""
    from transformers import Blip2Config

    from vlm_lab.config import MemoryConfig
    from vlm_lab.memory_report import profile, summary

    config = Blip2Config(vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                            image_size=32, patch_size=8),
                         qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                             encoder_hidden_size=32),
                         text_config=dict(model_type="opt", hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                                          word_embed_proj_dim=64, vocab_size=120))
    folder = memory_synthetic.write_config_only(tmp_path / "blip2", config)
    rows = profile(MemoryConfig(checkpoints=(str(folder),), measure=False))
    assert rows[0].estimate.image.guessed
    assert rows[0].to_dict()["image_tokens_guessed"] is True
    assert rows[0].to_dict()["image_token_rule"].startswith("guessed: one tile of (32/8)^2 patches")
    assert "image tokens guessed (one tile), 16 per image" in summary(rows)

    folder = memory_synthetic.write_config_only(tmp_path / "stated", config, {"image_seq_length": 12})
    est = memory.estimate(folder)  # a count the processor config states is read, not guessed
    assert (est.image.tokens, est.image.guessed) == (12, False)
    assert "image tokens guessed" not in summary(profile(MemoryConfig(checkpoints=(str(folder),), measure=False)))


# Pixtral / Mistral3, InternVL, Aya Vision and Llama 4 count by the image's shape: through image_tokens_for_shape and
# memory.estimate(image_size=(height, width)).
SHAPES = [(20, 20), (50, 50), (64, 64), (100, 100), (300, 300), (30, 90), (90, 30), (60, 100), (100, 75), (33, 200), (400, 130)]


def _specials_tokenizer(specials: list[str]):
    """_tokenizer with its specials registered as added tokens (so "<a><b>" without spaces splits into them)."""
    tokenizer = _tokenizer(specials)
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    return tokenizer


def _pixtral_processor_class(monkeypatch):
    """PixtralProcessor's module imports its torchvision image processor only for a resize helper the PIL one also has."""
    import importlib.util
    import sys

    from transformers.models.pixtral import image_processing_pil_pixtral

    monkeypatch.setitem(sys.modules, "transformers.models.pixtral.image_processing_pixtral", image_processing_pil_pixtral)
    spec = importlib.util.find_spec("transformers.models.pixtral.processing_pixtral")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # taken out again after the test
    spec.loader.exec_module(module)
    return module.PixtralProcessor


@pytest.mark.parametrize("kind", ["mistral3", "pixtral"])
def test_pixtral_counts_a_token_per_merged_patch_and_a_break_per_row(kind, tmp_path, monkeypatch):
    """Mistral3 (merge 2) and Pixtral-12B (LLaVA with a Pixtral tower, merge 1): rows x (cols + 1), not one 1540px tile."""
    from transformers import LlavaConfig, Mistral3Config, PixtralImageProcessorPil
    from transformers.models.pixtral.configuration_pixtral import PixtralVisionConfig

    from vlm_lab.memory_tokens import image_tokens_for_shape

    vision = PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, head_dim=16,
                                 image_size=96, patch_size=8)
    text = dict(model_type="mistral", head_dim=16, **TEXT)
    merge = 2 if kind == "mistral3" else 1
    config = (Mistral3Config(vision_config=vision, text_config=text, spatial_merge_size=2) if kind == "mistral3"
              else LlavaConfig(vision_config=vision, text_config=text))
    image_processor = PixtralImageProcessorPil(size={"longest_edge": 96}, patch_size={"height": 8, "width": 8})
    settings = {"patch_size": 8, "spatial_merge_size": merge}
    folder = memory_synthetic.write_config_only(tmp_path / kind, config, settings)
    image_processor.save_pretrained(folder)
    processor = object.__new__(_pixtral_processor_class(monkeypatch))
    vars(processor).update(image_token="[IMG]", image_break_token="[IMG_BREAK]", image_end_token="[IMG_END]", **settings)
    tokenizer = _specials_tokenizer(["[IMG]", "[IMG_BREAK]", "[IMG_END]"])

    from PIL import Image

    counts = {}
    for height, width in SHAPES:
        inputs = image_processor(images=[Image.new("RGB", (width, height))], patch_size=8 * merge, return_tensors="np")
        text_ = processor.replace_image_token(inputs, 0)
        real = len(tokenizer(text_, add_special_tokens=False)["input_ids"])
        assert real == text_.count("[IMG]") + text_.count("[IMG_BREAK]") + text_.count("[IMG_END]")
        got = image_tokens_for_shape(config, memory_checkpoint.processor_settings(folder), height, width)
        assert (got.tokens, got.patches) == (real, inputs["pixel_values"][0].size // 3 // 64), (height, width)
        est = memory.estimate(folder, image_size=(height, width))  # any shape, through the estimate
        assert (est.image.tokens, est.image.family, est.image.guessed) == (real, "pixtral", False)
        counts[height, width] = real
    worst = memory.estimate(folder).image  # 0: a square as large as longest_edge
    step = 8 * merge
    assert (worst.side, worst.tokens) == (96, (96 // step) * (96 // step + 1)) and worst.tokens >= max(counts.values())


def _got_ocr2_tiles(image_processor, height: int, width: int):
    from PIL import Image

    return image_processor(images=[Image.new("RGB", (width, height))], crop_to_patches=True, return_tensors="np")


def test_internvl_counts_image_seq_length_per_tile_and_thumbnail(tmp_path):
    """InternVL tiles every image (up to max_patches + a thumbnail): image_seq_length alone undercounts it 13x."""
    from transformers import GotOcr2ImageProcessorPil, InternVLConfig
    from transformers.models.internvl.processing_internvl import InternVLProcessor

    from vlm_lab.memory_tokens import image_tokens_for_shape

    config = InternVLConfig(vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                               image_size=[32, 32], patch_size=[8, 8]),
                            text_config=dict(model_type="qwen2", **TEXT), image_seq_length=4, downsample_ratio=0.5)
    folder = memory_synthetic.write_config_only(tmp_path / "internvl", config, {"image_seq_length": 4})
    image_processor = GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, max_patches=6)  # crop_to_patches False here:
    image_processor.save_pretrained(folder)  # the processor turns it on, as on the hub
    tokenizer = _specials_tokenizer(["<img>", "</img>", "<IMG_CONTEXT>"])
    # The processor needs a video processor, which needs torchvision: its counting is used as is
    processor = object.__new__(InternVLProcessor)
    vars(processor).update(start_image_token="<img>", end_image_token="</img>", image_token="<IMG_CONTEXT>", image_seq_length=4)

    tiles = set()
    for height, width in SHAPES:
        inputs = _got_ocr2_tiles(image_processor, height, width)
        real = len(tokenizer(processor.replace_image_token(inputs, 0), add_special_tokens=False)["input_ids"])
        got = image_tokens_for_shape(config, memory_checkpoint.processor_settings(folder), height, width)
        assert (got.tokens, got.patches) == (real, len(inputs["pixel_values"]) * (16 + 1)), (height, width)  # + CLS a tile
        est = memory.estimate(folder, image_size=(height, width))  # any shape, through the estimate
        assert (est.image.tokens, est.image.family, est.image.guessed) == (real, "internvl", False)
        tiles.add(int(inputs["num_patches"][0]))
    assert tiles >= {1, 4, 5, 7}  # one tile, 1x3 / 3x1 + thumbnail, 2x2 + thumbnail, 2x3 / 3x2 + thumbnail
    worst = memory.estimate(folder).image  # 0: the worst shape of any size, checked on the real image processor
    inputs = _got_ocr2_tiles(image_processor, worst.height, worst.width)
    real = len(tokenizer(processor.replace_image_token(inputs, 0), add_special_tokens=False)["input_ids"])
    # 2x3 (or 3x2) tiles + the thumbnail; a square gets at most 2x2 + the thumbnail
    assert worst.tokens == real == 7 * 4 + 2 and worst.height != worst.width and "(a square makes 22)" in worst.plan


def test_aya_vision_counts_tiles_and_markers_as_its_processor(tmp_path):
    from PIL import Image
    from transformers import AyaVisionConfig, GotOcr2ImageProcessorPil
    from transformers.models.aya_vision.processing_aya_vision import AyaVisionProcessor

    from vlm_lab.memory_tokens import image_tokens_for_shape

    config = AyaVisionConfig(vision_config=dict(model_type="siglip_vision_model", **VISION), text_config=dict(model_type="cohere2", **TEXT),
                             downsample_factor=2)
    specials = ["<image>", "<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>", "<|IMG_LINE_BREAK|>", "TILE_GLOBAL",
                *(f"TILE_{i}" for i in range(1, 13))]
    tokenizer = _specials_tokenizer(specials)
    image_processor = GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, max_patches=9)
    processor = AyaVisionProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=8, downsample_factor=2, img_size=32)
    folder = memory_synthetic.write_config_only(tmp_path / "aya", config)
    processor.save_pretrained(folder)

    for height, width in SHAPES:
        enc = processor(images=[Image.new("RGB", (width, height))], text=["<image> what"], return_tensors="np")
        real = enc["input_ids"].shape[1] - 1  # all but "what"
        got = image_tokens_for_shape(config, memory_checkpoint.processor_settings(folder), height, width)
        assert (got.tokens, got.patches) == (real, len(enc["pixel_values"]) * 16), (height, width)
        est = memory.estimate(folder, image_size=(height, width))  # any shape, through the estimate
        assert (est.image.tokens, est.image.family, est.image.guessed) == (real, "aya_vision", False)
    assert memory.estimate(folder).image.tokens == 10 * 4 + 3 + 9  # 3x3 tiles + the thumbnail, a TILE_i each but the thumbnail


def _llama4_best_fit():
    """find_supported_resolutions and get_best_fit from transformers' Llama4ImageProcessor, whose module imports torchvision:
    the two functions (torch only) are taken from its source and run as they are."""
    import ast
    import collections
    import functools
    import inspect

    import torch
    from transformers.image_utils import SizeDict
    from transformers.models.llama4 import processing_llama4

    source = inspect.getsourcefile(processing_llama4).replace("processing_llama4.py", "image_processing_llama4.py")
    tree = ast.parse(open(source).read())
    wanted = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("get_factors", "find_supported_resolutions", "get_best_fit")]
    assert len(wanted) == 3
    scope = {"torch": torch, "SizeDict": SizeDict, "defaultdict": collections.defaultdict, "lru_cache": functools.lru_cache}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), source, "exec"), scope)

    def best_fit(height: int, width: int, tile: int, max_patches: int) -> tuple[int, int]:
        resolutions = torch.tensor(scope["find_supported_resolutions"](max_patches, SizeDict(height=tile, width=tile)))
        h, w = scope["get_best_fit"]((height, width), resolutions).tolist()
        return h // tile, w // tile

    return best_fit


def test_llama4_counts_its_canvas_tiles_global_tile_and_separators(tmp_path):
    """Llama 4's processor can't be built without torchvision: the canvas comes from its own get_best_fit, the tokens from
    its own replace_image_token, both run here."""
    import numpy as np
    from transformers import Llama4Config
    from transformers.models.llama4.processing_llama4 import Llama4Processor

    from vlm_lab.memory_tokens import image_tokens_for_shape

    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8,
                  vision_output_dim=64, projector_input_dim=64, projector_output_dim=64, pixel_shuffle_ratio=0.5)
    config = Llama4Config(vision_config=vision, text_config=dict(head_dim=16, **TEXT))
    settings = {"patch_size": 8, "size": {"height": 32, "width": 32}, "max_patches": 6}
    folder = memory_synthetic.write_config_only(tmp_path / "llama4", config, settings)
    best_fit = _llama4_best_fit()
    processor = object.__new__(Llama4Processor)
    vars(processor).update(patch_size=8, downsample_ratio=4)
    tokenizer = _specials_tokenizer(["<|image_start|>", "<|image_end|>", "<|image|>", "<|patch|>", "<|tile_x_separator|>", "<|tile_y_separator|>"])

    grids = set()
    for height, width in [*SHAPES, (10, 10), (32, 33), (64, 200), (500, 20)]:
        rows, cols = best_fit(height, width, 32, 6)
        tiles = rows * cols + (rows * cols > 1)
        inputs = {"pixel_values": [np.zeros((tiles, 3, 32, 32))], "aspect_ratios": [[rows, cols]]}
        real = len(tokenizer(processor.replace_image_token(inputs, 0), add_special_tokens=False)["input_ids"])
        got = image_tokens_for_shape(config, settings, height, width)
        assert (got.tokens, got.patches) == (real, tiles * (16 + 1)), (height, width)  # + the class embedding a tile
        est = memory.estimate(folder, image_size=(height, width))  # any shape, through the estimate
        assert (est.image.tokens, est.image.family, est.image.guessed) == (real, "llama4", False)
        grids.add((rows, cols))
    assert {(1, 1), (2, 2), (1, 3), (3, 1), (2, 3)} <= grids
    worst = memory.estimate(folder).image  # 0: the worst shape of any size
    assert best_fit(worst.height, worst.width, 32, 6) in ((2, 3), (3, 2))  # a square gets at most 2x2 tiles of 6
    assert worst.tokens == 4 + 3 + 6 * (4 + 1) and f"(a square makes {4 + 3 + 4 * 5})" in worst.plan


def test_processor_keys_win_over_the_nested_image_processor_keys(tmp_path):
    """As in the processors: Pixtral's processor patch_size is an int, its image processor's a dict."""
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"patch_size": 14, "image_mean": [0.5] * 3}))
    nested = {"patch_size": {"height": 16, "width": 16}, "longest_edge": 1024}
    (tmp_path / "processor_config.json").write_text(json.dumps({"patch_size": 16, "image_processor": nested}))
    settings = memory_checkpoint.processor_settings(tmp_path)
    assert (settings["patch_size"], settings["longest_edge"], settings["image_mean"]) == (16, 1024, [0.5] * 3)
