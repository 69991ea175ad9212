import json
import random
import re

import numpy as np
import pytest

from vlm_lab import data, shapes


def pixels(sample):
    return np.asarray(sample.image)


def test_same_seed_same_samples():
    a = shapes.make_samples("val", 12, seed=3)
    b = shapes.make_samples("val", 12, seed=3)
    assert [s.id for s in a] == [s.id for s in b]
    assert [s.reference for s in a] == [s.reference for s in b]
    assert all((pixels(x) == pixels(y)).all() for x, y in zip(a, b))


def test_other_seed_other_images():
    a = shapes.make_samples("val", 12, seed=0)
    b = shapes.make_samples("val", 12, seed=1)
    assert any((pixels(x) != pixels(y)).any() for x, y in zip(a, b))


def test_train_and_val_splits_differ():
    train = shapes.make_samples("train", 30)
    val = shapes.make_samples("val", 30)
    train_px = {pixels(s).tobytes() for s in train}
    assert not any(pixels(s).tobytes() in train_px for s in val)


def test_questions_rotate_and_answers_match():
    samples = shapes.make_samples("val", 9)
    assert [s.prompt for s in samples[:3]] == list(shapes.QUESTIONS.values())
    for s in samples:
        kind = s.id.rsplit("-", 1)[1]
        if kind == "color":
            assert s.reference in shapes.COLORS
        elif kind == "shape":
            assert s.reference in shapes.SHAPES
        else:
            article, color, shape = s.reference.split()
            assert (article, color in shapes.COLORS, shape in shapes.SHAPES) == ("a", True, True)


def test_images_show_the_color_asked_about():
    for s in shapes.make_samples("val", 30)[::3]:  # the color questions
        px = pixels(s).reshape(-1, 3).astype(int)
        target = np.array(shapes.COLORS[s.reference])
        assert (np.abs(px - target).sum(axis=1) < 70).mean() > 0.15  # the shape is large


def test_training_triples_ask_everything_per_image():
    triples = shapes.make_training_triples(4)
    assert len(triples) == 12
    assert {s.prompt for s in triples} == set(shapes.QUESTIONS.values())


def test_jsonl_round_trip(tmp_path):
    samples = shapes.make_training_triples(2)
    path = data.write_jsonl(samples, tmp_path)
    back = data.read_jsonl(path)
    assert [(s.id, s.prompt, s.reference, s.meta) for s in back] == [(s.id, s.prompt, s.reference, s.meta) for s in samples]
    assert back[0].meta == {"question_type": "color"}  # what accuracy_by breaks the embedded set down by
    assert all((pixels(x) == pixels(y)).all() for x, y in zip(samples, back))
    assert len(list((tmp_path / "images").glob("*.png"))) == 2  # 3 questions per image


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"prompt": "hi"}', "missing image"),
        ("not json", "not valid JSON"),
        ('{"image": "x.png", "prompt": "hi", "answer": "y"}', "unknown key"),
        ('{"image": "x.png", "prompt": "hi", "answer_type": "y"}', 'put other fields under "meta"'),
        ('{"image": "x.png", "prompt": "hi", "meta": ["number"]}', "meta is a list .*an object of named values"),
        ('{"image": "x.png", "prompt": "hi", "meta": {"tags": {"a": 1}}}', "meta\\['tags'\\] is a dict"),
        ('{"image": "nope.png", "prompt": "hi"}', "image not found"),
        ('{"image": 5, "prompt": "hi"}', "image is a int; image .* and prompt are strings"),
        ('{"image": "x.png", "prompt": ["hi"]}', "prompt is a list"),
        ('{"image": "x.png", "prompt": "hi", "reference": {"a": 1}}', "reference is a dict"),
    ],
)
def test_bad_jsonl_lines_name_the_problem(tmp_path, line, message):
    path = tmp_path / "d.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(data.DataError, match=message):
        data.read_jsonl(path)


def test_unreadable_image_is_a_data_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    (tmp_path / "d.jsonl").write_text('{"image": "bad.png", "prompt": "hi"}\n')
    with pytest.raises(data.DataError, match="cannot read image"):
        data.read_jsonl(tmp_path / "d.jsonl")


@pytest.mark.parametrize("spec, n", [("shapes:val:5", 5), ("shapes:train:4", 4), ("shapes", 64)])
def test_data_specs(spec, n):
    assert len(data.load_samples(spec)) == n


def test_numbers_as_id_and_reference_are_read_as_text(tmp_path):
    written = json.loads(data.write_jsonl(shapes.make_samples("val", 1), tmp_path).read_text())
    (tmp_path / "d.jsonl").write_text(json.dumps({"id": 7, "image": written["image"], "prompt": "How many?", "reference": 3}) + "\n")
    (sample,) = data.read_jsonl(tmp_path / "d.jsonl")
    assert (sample.id, sample.reference) == ("7", "3")


@pytest.mark.parametrize("name", ["shapes.jsonl", "shapes_mine.jsonl", "shapes/data.jsonl"])
def test_own_data_named_like_the_embedded_set_is_read_as_a_file(tmp_path, monkeypatch, name):
    path = tmp_path / name
    data.write_jsonl(shapes.make_samples("test", 3), path.parent, name=path.name)
    monkeypatch.chdir(tmp_path)
    assert [s.id for s in data.load_samples(name)] == [s.id for s in shapes.make_samples("test", 3)]


@pytest.mark.parametrize("spec", ["shapes:bogus:3", "shapes:val:x", "shapes:val:0"])
def test_bad_data_specs(spec):
    with pytest.raises(data.DataError, match="shapes:SPLIT:N"):
        data.load_samples(spec)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: shapes.make_samples("tset", 3), "unknown split 'tset'; use one of train, val, test"),
        (lambda: shapes.make_samples("val", -3), "num_samples must be >= 0, got -3"),
        (lambda: shapes.make_training_triples(-1), "num_images must be >= 0, got -1"),
        (lambda: shapes.draw_shape("pink", "circle", random.Random(0)), "unknown color 'pink'; known: red, green"),
        (lambda: shapes.draw_shape("red", "star", random.Random(0)), "unknown shape 'star'; known: circle"),
    ],
)
def test_bad_arguments_are_data_errors_that_name_the_choices(call, message):
    with pytest.raises(data.DataError, match=re.escape(message)):
        call()
