"""compare checks, before it generates anything, that every sample leaves each checkpoint room for an answer."""

from __future__ import annotations

import json
import shutil

import pytest

from vlm_lab import data, shapes
from vlm_lab.compare import compare
from vlm_lab.config import CompareConfig
from vlm_lab.generation import ContextOverflowError
from vlm_lab.model_cache import ModelCache

LONG = " ".join(["What color is the shape?"] * 12)  # with the image, more than the 128 tokens the shapes checkpoints read


def _data(tmp_path, prompts: dict[str, str]):
    folder = tmp_path / "data"
    folder.mkdir()
    shapes.make_samples("val", 1)[0].image.save(folder / "a.png")
    lines = [{"id": sample_id, "image": "a.png", "prompt": prompt} for sample_id, prompt in prompts.items()]
    (folder / "d.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder / "d.jsonl"


def test_every_sample_without_room_is_named_for_every_checkpoint_before_anything_generates(tmp_path, tiny_checkpoints):
    """The long samples come last: batch by batch, the earlier ones of the first checkpoint ran before the first
    long one stopped the run, naming it alone. Both are named, with their counts, each checkpoint's limit and
    the fix, before any model loads or any batch runs."""
    prompts = {f"ok-{i}": "What color is the shape?" for i in range(4)} | {"long-1": LONG, "long-2": LONG + " Now?",
                                                                           "long-1-again": LONG}
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[1]), str(tiny_checkpoints[-1])), data=str(_data(tmp_path, prompts)),
                           batch_size=1, device="cpu", output_dir=str(tmp_path / "out"))
    models, batches = ModelCache(budget_bytes="1GB"), []
    with pytest.raises(ContextOverflowError) as caught:
        compare(config, progress=False, cache=models, on_batch=batches.append)
    said = str(caught.value)
    assert said.startswith("3 samples leave no room for an answer: checkpoint-250, checkpoint-1000 read at most 128 tokens"), said
    tokens = {sample_id: tokens for sample_id, tokens, *_ in caught.value.overflows}
    assert set(tokens) == {"long-1", "long-2", "long-1-again"} and tokens["long-2"] > tokens["long-1"] >= 128
    lines = {s.id: s.line.rsplit(":", 1)[1] for s in data.read_jsonl(config.data)}
    for sample_id, n in tokens.items():
        assert f"{sample_id} ({n}) at line {lines[sample_id]}" in said  # where to shorten it
    assert said.count("long-2") == 1  # the two checkpoints share the list: said once
    assert "shorten their prompts, or leave them out of the data" in said
    assert batches == [] and len(models) == 0  # refused before any generation, and before any weights loaded
    assert not list((tmp_path / "out").glob(".cache/*.jsonl"))


def test_batches_encoded_for_the_check_are_padded_as_generation_needs(tmp_path, tiny_checkpoints):
    """Generation reuses the batches the check encoded: they must be left-padded, as the model's processor pads,
    also for a tokenizer saved to pad on the right (many hub ones are). The answers are the engine's own."""
    from vlm_lab import data, generation, models
    from vlm_lab.config import GenerationConfig

    path = tmp_path / "right" / "checkpoint-1000"
    shutil.copytree(tiny_checkpoints[-1], path)
    settings = json.loads((path / "tokenizer_config.json").read_text())
    (path / "tokenizer_config.json").write_text(json.dumps(settings | {"padding_side": "right"}))
    config = CompareConfig(checkpoints=(str(path),), data="shapes:val:9", batch_size=9, device="cpu",
                           output_dir=str(tmp_path / "out"), use_cache=False)  # three prompt lengths in one batch
    result = compare(config, progress=False, cache=ModelCache(budget_bytes="1GB"))
    expected = generation.generate(models.load_model(path, device="cpu"), data.load_samples("shapes:val:9"), GenerationConfig(batch_size=9))
    assert [r["outputs"]["checkpoint-1000"]["output"] for r in result.rows] == [o.text for o in expected]
    assert result.summary[0]["accuracy"] > 0.5


def test_a_config_shared_by_checkpoints_is_read_once_and_each_other_one_is_still_its_own(tmp_path, tiny_checkpoints, monkeypatch):
    """A training run's checkpoints have one config.json: parsed once (transformers validates every field, a few ms
    each). A checkpoint with another config.json (here a shorter context) is still checked against its own."""
    import transformers

    short = tmp_path / "short" / "checkpoint-1000"
    shutil.copytree(tiny_checkpoints[-1], short)
    settings = json.loads((short / "config.json").read_text())
    settings["text_config"]["max_position_embeddings"] = 64  # the image and prompt take 70 of the 128 positions
    (short / "config.json").write_text(json.dumps(settings))
    reads = []
    real = transformers.AutoConfig.from_pretrained.__func__

    def counted(cls, *args, **kwargs):
        reads.append(kwargs.get("pretrained_model_name_or_path", args[0] if args else None))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", classmethod(counted))
    config = CompareConfig(checkpoints=(*map(str, tiny_checkpoints[1:]), str(short)), data=str(_data(tmp_path, {"ok": "What color?"})),
                           device="cpu", output_dir=str(tmp_path / "out"))
    with pytest.raises(ContextOverflowError) as caught:
        compare(config, progress=False, cache=ModelCache(budget_bytes="1GB"))
    assert [checkpoint for *_, checkpoint in caught.value.overflows] == ["short/checkpoint-1000"]
    # the run's first checkpoint is read (its processor's load reads it too); the others are not, the copy is, and
    # its processor's load reads it too: another config.json is another processor (checkpoints.processor_fingerprint)
    assert [path for path in reads if path != str(tiny_checkpoints[1])] == [str(short)] * 2, reads


# past the bound (0 bytes: none fits) the check encodes the batch the cache refused [2 rows], then one row of each
# prompt not yet counted (shapes:val:8 asks 3 questions of 64x64 images: 1 more), and each generation every batch
@pytest.mark.parametrize("cache_bytes, encodes", [(0, [2, 1] + [2] * 4 * 3), (2**30, [2] * 4)])
def test_the_check_encodes_a_batch_once_for_every_checkpoint_with_its_processor(tmp_path, tiny_checkpoints, monkeypatch,
                                                                               cache_bytes, encodes):
    """A training run's checkpoints share a processor, so a batch's rows have the same lengths for each: past the
    encoding cache's bound the check encoded every batch again for each checkpoint, only to count the same tokens,
    and later encoded every batch once more besides each generation's (4 encodes for 3 checkpoints). Now it counts
    each (prompt, image size) once there. With the batches held, nothing twice."""
    from vlm_lab import compare as compare_module, generation

    real, calls = generation.encode_inputs, []
    monkeypatch.setattr(generation, "encode_inputs", lambda processor, samples: calls.append(len(samples)) or real(processor, samples))
    monkeypatch.setattr(compare_module, "ENCODING_CACHE_BYTES", cache_bytes)
    monkeypatch.setattr(compare_module, "_WARM_DEVICES", {"cpu"})  # its once-a-process warm-up batch is not counted here
    config = CompareConfig(checkpoints=tuple(map(str, tiny_checkpoints[1:4])), data="shapes:val:8", batch_size=2, device="cpu",
                           output_dir=str(tmp_path / "out"), use_cache=False)
    result = compare(config, progress=False, cache=ModelCache(budget_bytes="1GB"))
    assert len(result.summary) == 3 and calls == encodes, calls


def _photo(path, size, orientation=None, seed=0):
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif.tobytes())


def test_past_the_cache_bound_every_sample_without_room_is_still_named_counting_each_prompt_and_image_size_once(
        tmp_path, tiny_checkpoints, monkeypatch):
    """Past the encoding cache's bound the check counts one row of each (prompt, image size as shown): photos of one
    size asking one question are counted once, each long prompt once per size, a photo turned by its EXIF
    orientation (stored 48x40, shown 40x48) apart from one stored 48x40 upright. Every sample without room is still
    named, before anything generates."""
    from vlm_lab import compare as compare_module, generation

    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(6):
        _photo(folder / f"p{i}.jpg", (48, 40), seed=i)
    _photo(folder / "turned.jpg", (48, 40), orientation=6)
    rows = [(f"ok-{i}", f"p{i}.jpg", "What color is the shape?") for i in range(6)] + [
        ("long-a", "p0.jpg", LONG), ("long-b", "p1.jpg", LONG), ("long-turned", "turned.jpg", LONG), ("ok-turned", "turned.jpg", "What?")]
    (folder / "d.jsonl").write_text("".join(json.dumps({"id": i, "image": img, "prompt": p}) + "\n" for i, img, p in rows))
    real, calls = generation.encode_inputs, []
    monkeypatch.setattr(generation, "encode_inputs", lambda processor, samples: calls.append([s.id for s in samples]) or real(processor, samples))
    monkeypatch.setattr(compare_module, "ENCODING_CACHE_BYTES", 0)
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[1]), str(tiny_checkpoints[-1])), data=str(folder / "d.jsonl"),
                           batch_size=2, device="cpu", output_dir=str(tmp_path / "out"))
    models, batches = ModelCache(budget_bytes="1GB"), []
    with pytest.raises(ContextOverflowError) as caught:
        compare(config, progress=False, cache=models, on_batch=batches.append)
    assert sorted({sample_id for sample_id, *_ in caught.value.overflows}) == ["long-a", "long-b", "long-turned"]
    # the batch the cache refused, then a row of each new (prompt, size): long 48x40, long 40x48, short 40x48
    assert calls == [["ok-0", "ok-1"], ["long-a"], ["long-turned", "ok-turned"]], calls
    assert batches == [] and len(models) == 0


@pytest.mark.parametrize("family", ["shapes", "paligemma", "gemma3", "idefics3", "mllama"])
def test_a_rows_tokens_follow_its_prompt_and_image_size_never_its_pixels(family, tmp_path, tiny_checkpoints):
    """What the check past the bound relies on, for each family: rows with the same prompt and image size take the
    same tokens whatever their pixels and the rows beside them; and the check's count is the processor's own."""
    import numpy as np
    import transformers
    from PIL import Image

    from vlm_lab import synthetic_families
    from vlm_lab.checkpoints import resolve
    from vlm_lab.compare_context import _count_rows
    from vlm_lab.data import Sample
    from vlm_lab.generation import encode_inputs
    from vlm_lab.models import load_processor

    path = tiny_checkpoints[-1] if family == "shapes" else getattr(synthetic_families, f"build_{family}")(tmp_path / family)
    ref = resolve(str(path), expand=False)[0]
    processor = load_processor(ref, ref.pretrained_kwargs())
    rng = np.random.default_rng(0)
    images = {(size, kind): Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) if kind == "noise" else
                                            np.full((size[1], size[0], 3), 255 * (kind == "white"), dtype=np.uint8))
              for size in [(64, 64), (300, 200), (200, 700)] for kind in ("noise", "black", "white")}
    samples = [Sample(id=f"{i}", image=image, prompt=prompt) for i, (image, prompt) in
               enumerate((image, prompt) for image in images.values() for prompt in ("What?", "What color is the shape in it?"))]
    tokens = encode_inputs(processor, samples)["attention_mask"].sum(dim=1).tolist()
    alone = [encode_inputs(processor, [s])["attention_mask"].sum(dim=1).item() for s in samples]
    assert tokens == alone
    by_shape: dict = {}
    for s, n in zip(samples, tokens):
        by_shape.setdefault((s.prompt, s.image.size), set()).add(n)
    assert all(len(counts) == 1 for counts in by_shape.values()), by_shape
    assert _count_rows(processor, "fp", samples, transformers.AutoConfig.from_pretrained(path), {}) == tokens


def test_the_image_shape_read_from_a_files_header_is_the_one_the_model_gets(tmp_path):
    """Past the bound the check reads a file's size from its header and EXIF orientation, without decoding it:
    for each kind of file, what the decoded image (upright RGB) has."""
    import numpy as np
    from PIL import Image

    from vlm_lab.compare_context import _shape
    from vlm_lab.data import Sample

    pixels = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    files = {}
    for orientation in (1, 3, 5, 6, 8):
        for suffix in ("jpg", "webp", "png"):
            exif = Image.Exif()
            exif[0x0112] = orientation
            files[f"o{orientation}.{suffix}"] = (Image.fromarray(pixels), {"exif": exif.tobytes()})
    files["rgba.png"] = (Image.fromarray(pixels).convert("RGBA"), {})
    files["palette.gif"] = (Image.fromarray(pixels).convert("P"), {})
    files["grey16.png"] = (Image.fromarray((pixels[..., 0].astype(np.uint16) * 257)), {})
    for name, (image, options) in files.items():
        image.save(tmp_path / name, **options)
        sample = Sample(id=name, image=None, image_path=str(tmp_path / name), prompt="What?")
        shown = sample.image
        assert _shape(sample) == ("What?", shown.size, shown.mode), name
    assert {Sample(id="x", image=None, image_path=str(tmp_path / n), prompt="").image.size for n in files} == {(48, 40), (40, 48)}
