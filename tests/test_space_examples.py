"""space_examples: the Space's examples are your own images and questions when space/examples/examples.jsonl says so.

Real files read by the real JSONL reader (vlm_lab.data); the app that shows them is served in tests/test_space.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from vlm_lab.errors import DataError
from vlm_lab.space_examples import EXAMPLES_FILE, load_examples

SHIPPED = Path(__file__).resolve().parents[1] / "space" / "examples"


def test_the_shipped_shapes_are_the_examples_without_a_jsonl():
    examples, heading = load_examples(SHIPPED)
    assert heading == "Examples (synthetic shapes)"
    assert [e.image.name for e in examples] == sorted(p.name for p in SHIPPED.glob("*.png"))
    assert examples[0].question == "What color is the shape?" and examples[0].label.startswith("blue square · ")


def test_my_jsonl_gives_my_images_and_questions_jpeg_included(tmp_path):
    """Only space/examples/*.png were shown, each with a shapes question ("What color is the shape?"): a Space of
    checkpoints trained on other images showed synthetic shapes, and a dog.jpg put beside them was ignored."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32), "blue").save(tmp_path / "images" / "dog.jpg")
    Image.new("RGB", (32, 32), "red").save(tmp_path / "images" / "cat.png")
    rows = [{"image": "images/dog.jpg", "prompt": "What color is the dog?", "id": "dog"},
            {"image": "images/cat.png", "prompt": "Is the cat asleep?"}]
    (tmp_path / EXAMPLES_FILE).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    examples, heading = load_examples(tmp_path)
    assert heading == "Examples"
    assert [(e.image, e.question) for e in examples] == [(tmp_path / "images" / "dog.jpg", "What color is the dog?"),
                                                          (tmp_path / "images" / "cat.png", "Is the cat asleep?")]
    assert [e.label for e in examples] == ["dog · What color is the dog?", "cat · Is the cat asleep?"]


def test_a_jsonl_naming_a_missing_image_is_refused_with_its_line(tmp_path):
    (tmp_path / EXAMPLES_FILE).write_text(json.dumps({"image": "images/gone.png", "prompt": "?"}) + "\n")
    with pytest.raises(DataError, match=r"gone\.png"):
        load_examples(tmp_path)
