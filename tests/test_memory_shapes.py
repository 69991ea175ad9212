"""vlm_lab.memory_shapes: the estimate plans for the worst image shape a Space may be sent, not the square.

Where a family's image tokens depend on height AND width, a panorama or a tall screenshot of the same
size makes more tokens than the square: a verdict made for the square says "fits" for a workload that
may not. Every count is checked against transformers' own processors on the shape the plan names.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from vlm_lab import memory, memory_report, memory_synthetic
from vlm_lab.config import MemoryConfig
from vlm_lab.errors import ConfigError

TEXT = dict(vocab_size=120, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
QWEN = {"min_pixels": 56 * 56, "max_pixels": 28 * 28 * 1280, "patch_size": 14, "merge_size": 2}


def _qwen2_vl_folder(tmp_path):
    from transformers import Qwen2VLConfig

    config = Qwen2VLConfig(
        vision_config=dict(depth=1, embed_dim=32, num_heads=2, hidden_size=64, mlp_ratio=2, patch_size=14, spatial_merge_size=2),
        text_config=dict(bos_token_id=0, eos_token_id=1, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, **TEXT),
    )
    return memory_synthetic.write_config_only(tmp_path / "qwen2-vl", config, QWEN)


def _qwen2_vl_real(height: int, width: int) -> int:
    """Tokens Qwen2-VL's own image processor makes of a height x width image (+ vision start/end)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    processor = Qwen2VLImageProcessorPil(min_pixels=QWEN["min_pixels"], max_pixels=QWEN["max_pixels"], patch_size=14, merge_size=2)
    return processor.get_number_of_image_patches(height, width) // 4 + 2


@pytest.mark.parametrize("image_size, bound", [(0, None), (1600, 1600), ("1600", 1600)])
def test_qwen2_vl_plans_for_the_shape_that_makes_the_most_tokens(image_size, bound, tmp_path):
    """Qwen2-VL's dynamic resolution: at max_pixels a 5:4 or 2:1 image makes more tokens than the square."""
    folder = _qwen2_vl_folder(tmp_path)
    image = memory.estimate(folder, image_size=image_size).image
    square = bound or image.side
    assert image.tokens == _qwen2_vl_real(image.height, image.width) > _qwen2_vl_real(square, square)
    assert image.by_shape and image.height != image.width and max(image.height, image.width) <= (bound or 10**6)
    assert f"{image.shape}, {image.tokens} tokens (a square makes {_qwen2_vl_real(square, square)})" in image.plan
    # what the plan tried: no common aspect at the bound makes more
    for h, w in [(1, 1), (3, 4), (4, 3), (9, 16), (16, 9), (1, 2), (2, 1), (1, 4), (4, 1)]:
        side = image.side
        assert _qwen2_vl_real(round(side * h / max(h, w)), round(side * w / max(h, w))) <= image.tokens, (h, w)


def test_an_exact_shape_is_counted_as_asked(tmp_path):
    folder = _qwen2_vl_folder(tmp_path)
    for asked, (h, w) in [("300x1200", (300, 1200)), ("1200X300", (1200, 300)), ((448, 448), (448, 448)), (" 64 x 2000 ", (64, 2000))]:
        image = memory.estimate(folder, image_size=asked).image
        assert (image.height, image.width, image.tokens) == (h, w, _qwen2_vl_real(h, w)), asked
        assert image.plan == f"{h}x{w} as asked: {image.tokens} tokens"


def test_llava_next_plans_for_its_widest_pinpoint_and_the_processor_agrees(tmp_path):
    """A 1x4 strip of tiles makes more tokens than the 2x2 square; the real LlavaNextProcessor counts the planned image."""
    from PIL import Image
    from transformers import AutoProcessor

    folder = memory_synthetic.build_llava_next(tmp_path / "llava-next")
    processor = AutoProcessor.from_pretrained(folder)

    def real(height: int, width: int) -> int:
        enc = processor(images=[Image.new("RGB", (width, height))], text=[f"{processor.image_token} what"], return_tensors="pt")
        return int((enc["input_ids"][0] == processor.image_token_id).sum())

    image = memory.estimate(folder).image
    assert image.tokens == real(image.height, image.width) == 16 + 16 * 4 + 16  # the base image + 4 tiles stacked (16 x 4 features) + a newline per row
    assert real(64, 64) < image.tokens and "(a square makes 88)" in image.plan and image.height == 4 * image.width
    # a bound smaller than the pinpoints: still the worst shape within it, checked by the processor
    small = memory.estimate(folder, image_size=48).image
    assert max(small.height, small.width) <= 48 and small.tokens == real(small.height, small.width) >= real(48, 48)


def test_a_family_whose_count_does_not_depend_on_shape_keeps_its_square_and_says_so(tiny_checkpoints):
    """LLaVA resizes and crops every image to 64x64: any bound or shape gives the same count, named as such."""
    for asked in (0, 1024, "300x1200"):
        image = memory.estimate(tiny_checkpoints[-1], image_size=asked).image
        assert (image.shape, image.tokens, image.by_shape) == ("64x64", 64, False), asked
        assert "the count does not depend on the image's shape (llava), planned for a 64x64 square, 64 tokens" in image.plan


def test_one_image_token_reads_as_one_token(tmp_path):
    """Mllama puts one <|image|> in the text (its image goes through cross-attention): the plan said '1 tokens'."""
    from vlm_lab.synthetic_families import build_mllama

    image = memory.estimate(build_mllama(tmp_path / "mllama"), image_size=0).image
    assert image.tokens == 1 and image.plan.endswith("planned for a 32x32 square, 1 token"), image.plan


def test_idefics3_names_the_square_when_it_is_the_worst(tmp_path):
    """Idefics3 rescales every image to longest_edge, then tiles it: the square gets the most tiles."""
    from transformers import Idefics3Config, Idefics3ImageProcessorPil

    config = Idefics3Config(vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                               image_size=64, patch_size=8), text_config=dict(model_type="llama", **TEXT), scale_factor=2)
    folder = memory_synthetic.write_config_only(tmp_path / "idefics3", config, {"image_seq_len": 16})
    Idefics3ImageProcessorPil(size={"longest_edge": 128}, max_image_size={"longest_edge": 64}).save_pretrained(folder)
    image = memory.estimate(folder).image
    assert image.shape == "128x128" and image.by_shape and "the square is the worst" in image.plan
    wide = memory.estimate(folder, image_size="64x128").image
    assert wide.tokens < image.tokens  # 1x2 tiles + the global image, against 2x2 + the global image


@pytest.mark.parametrize("bad", ["12x", "x5", "0x64", "64x0", "abc", -1, 1.5, True, "99999999", (1, 2, 3)])
def test_a_bad_image_size_names_the_value_and_the_forms_that_work(bad):
    from vlm_lab.memory_shapes import parse_image_size

    with pytest.raises(ConfigError, match=r"image_size must be a whole number >= 0 \(0 = the largest .* or an exact HEIGHTxWIDTH"):
        parse_image_size(bad)
    with pytest.raises(ConfigError, match=f"image_size must be .*; got {re.escape(repr(bad))}$"):
        MemoryConfig(image_size=bad)


def test_memory_config_keeps_one_spelling_of_the_image_size():
    assert MemoryConfig(image_size="1024").image_size == 1024
    assert MemoryConfig(image_size=" 768 X 1536 ").image_size == "768x1536"
    assert MemoryConfig.from_dict({"image_size": "768x1536"}).to_dict()["image_size"] == "768x1536"


def test_profile_measures_on_the_worst_shape_and_says_which(tmp_path):
    """The measuring process generates on the planned (worst) image: its prompt holds as many image tokens as estimated."""
    folder = memory_synthetic.build_llava_next(tmp_path / "llava-next")
    (row,) = memory_report.profile(MemoryConfig(checkpoints=(str(folder),), device="cpu", dtype="float32", target="cpu-basic",
                                                max_new_tokens=2))
    image, m = row.estimate.image, row.measurement
    assert m is not None and m.image_shape == image.shape != "64x64"
    assert m.image_tokens == image.tokens == 96
    out = row.to_dict()
    assert (out["image_shape"], out["measured_image_shape"], out["measured_image_tokens"]) == (image.shape, image.shape, 96)
    assert out["image_tokens_by_shape"] is True and out["image_shape_plan"] == image.plan
    assert memory_report.report_table([row])["image"].tolist() == [image.shape]
    assert f"; image: {image.plan}" in memory_report.summary([row])


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "vlm_lab.cli", "memory", *args], capture_output=True, text=True, timeout=600)


def test_cli_image_size_takes_a_bound_or_an_exact_shape(tmp_path):
    folder = _qwen2_vl_folder(tmp_path)
    r = _cli(str(folder), "--no-measure", "--json", "--image-size", "300x1200")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert (row["image_shape"], row["image_tokens"]) == ("300x1200", _qwen2_vl_real(300, 1200))
    assert row["image_shape_plan"] == f"300x1200 as asked: {row['image_tokens']} tokens" and row["image_tokens_by_shape"]

    r = _cli(str(folder), "--no-measure")
    assert r.returncode == 0, r.stderr
    worst = memory.estimate(folder).image
    assert f"; image: the worst of " in r.stdout and f"{worst.shape}, {worst.tokens} tokens" in r.stdout

    r = _cli(str(folder), "--no-measure", "--image-size", "300by1200")
    assert r.returncode == 2 and "--image-size must be a whole number >= 0 (0 = the largest" in r.stderr, r.stderr
    assert "HEIGHTxWIDTH such as 768x1536, sides up to 65536; got '300by1200'" in r.stderr
    assert "Traceback" not in r.stderr
