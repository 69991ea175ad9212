"""Accuracy broken down by the samples' ``meta`` values: the library, the CLI, ``show``, the HTML and the plot,
on real comparisons of the tiny checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib
import pytest

from vlm_lab import data, shapes
from vlm_lab.compare import compare
from vlm_lab.config import CompareConfig
from vlm_lab.errors import ConfigError, DataError
from vlm_lab.results import ComparisonResult

matplotlib.use("Agg")


def vlm_lab(*args):
    return subprocess.run([sys.executable, "-m", "vlm_lab.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def shapes_result(tiny_checkpoints, tmp_path_factory) -> ComparisonResult:
    """checkpoint-250 and checkpoint-1000 on 30 shapes samples: 10 of each question type."""
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[1]), str(tiny_checkpoints[-1])), data="shapes:val:30",
                           device="cpu", output_dir=str(tmp_path_factory.mktemp("by") / "cmp"))  # fmt: skip
    return compare(config, progress=False)


def test_each_question_types_accuracy_is_the_mean_of_its_samples_scores(shapes_result):
    assert shapes_result.meta_keys() == ["question_type"]
    frame = shapes_result.accuracy_by("question_type")
    assert list(dict.fromkeys(frame["question_type"])) == list(shapes.QUESTIONS)  # in the order the data gives them
    for _, row in frame.iterrows():
        scores = [r["outputs"][row["checkpoint"]]["score"] for r in shapes_result.rows if r["meta"]["question_type"] == row["question_type"]]
        assert row["n_scored"] == len(scores) == 10
        assert row["accuracy"] == pytest.approx(sum(scores) / len(scores))
        assert row["ci_low"] <= row["accuracy"] <= row["ci_high"]
    # the groups' sample-weighted mean is the overall accuracy
    for name, overall in zip(shapes_result.checkpoints, shapes_result.summary):
        part = frame[frame["checkpoint"] == name]
        assert (part["accuracy"] * part["n_scored"]).sum() / part["n_scored"].sum() == pytest.approx(overall["accuracy"])


def test_the_wide_table_reads_one_row_per_value_and_a_column_per_checkpoint(shapes_result):
    table = shapes_result.accuracy_by("question_type", wide=True)
    assert list(table.index) == list(shapes.QUESTIONS)
    assert list(table.columns) == ["n", *shapes_result.checkpoints]
    long = shapes_result.accuracy_by("question_type")
    first = long.iloc[0]
    assert table.loc[first["question_type"], first["checkpoint"]] == (
        f"{first['accuracy'] * 100:.0f}% [{first['ci_low'] * 100:.0f}–{first['ci_high'] * 100:.0f}]"
    )


def test_the_csv_and_dataframes_carry_each_samples_meta(shapes_result):
    """Pivoting results.csv by question_type (in a spreadsheet, pandas, W&B's table) needs the column: it was left out."""
    import pandas as pd

    types = [r["meta"]["question_type"] for r in shapes_result.rows]
    csv = pd.read_csv(shapes_result.output_dir / "results.csv")
    assert list(csv.columns[:5]) == ["id", "image", "prompt", "reference", "question_type"] and list(csv["question_type"]) == types
    assert list(shapes_result.to_dataframe()["question_type"]) == types
    long = shapes_result.to_dataframe(long=True)
    assert list(long["question_type"]) == [t for t in types for _ in shapes_result.checkpoints]


def test_a_key_no_sample_carries_names_the_keys_they_do(shapes_result):
    with pytest.raises(ConfigError, match="no sample carries meta key 'answer_type'.*they carry: question_type"):
        shapes_result.accuracy_by("answer_type")


def test_jsonl_meta_groups_and_samples_without_the_key(tiny_checkpoints, tmp_path):
    samples = shapes.make_samples("val", 6)
    for s, kind in zip(samples, ["number", "other", None, "number", "other", None]):
        s.meta = {"answer_type": kind, "source": 2024} if kind else None
    path = data.write_jsonl(samples, tmp_path / "d")
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[-1]),), data=str(path), device="cpu", output_dir=str(tmp_path / "cmp"))
    result = compare(config, progress=False)
    assert result.meta_keys() == ["answer_type", "source"]
    frame = result.accuracy_by("answer_type")
    assert list(frame["answer_type"]) == ["number", "other", "(none)"] and list(frame["n_scored"]) == [2, 2, 2]
    assert list(result.accuracy_by("source")["source"]) == ["2024", "(none)"]  # a number, shown as text
    again = ComparisonResult.load(tmp_path / "cmp")  # results.jsonl keeps each row's meta
    assert again.accuracy_by("answer_type").equals(frame)


def test_without_references_there_is_nothing_to_break_down(tiny_checkpoints, tmp_path):
    samples = shapes.make_samples("val", 3)
    for s in samples:
        s.reference = None
    path = data.write_jsonl(samples, tmp_path / "d")
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[-1]),), data=str(path), device="cpu", output_dir=str(tmp_path / "cmp"))
    result = compare(config, progress=False)
    with pytest.raises(DataError, match="no sample has a reference"):
        result.accuracy_by("question_type")
    assert result.meta_keys() == [] and "accuracy by" not in result.html()  # nothing to break down: no tables, no failure
    r = vlm_lab("compare", str(tiny_checkpoints[-1]), "--data", str(path), "--device", "cpu", "--out", str(tmp_path / "cmp"),
                "--by", "question_type", "--quiet")  # fmt: skip
    assert r.returncode == 2 and "no sample has a reference" in r.stderr
    assert r.stderr.rstrip().endswith(f"The comparison is saved: vlm-lab show {tmp_path / 'cmp'}")  # its outputs are worth reading


def test_html_and_plot(shapes_result):
    page = shapes_result.html()
    assert "accuracy by question_type (3 values; 95% bootstrap CI)" in page
    assert "<details open>" in page  # three values: unfolded
    ax = shapes_result.plot_accuracy(by="question_type")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["color (n=10)", "shape (n=10)", "describe (n=10)"]
    assert len(ax.lines) >= 3 and "question_type" in ax.get_title()


def test_cli_by_prints_a_table_and_json_and_show_repeats_it(shapes_result):
    out = str(shapes_result.output_dir)
    r = vlm_lab("show", out, "--by", "question_type")
    assert r.returncode == 0, r.stderr
    table = r.stdout.split("accuracy by question_type (95% bootstrap CI):\n")[1].splitlines()
    assert table[0].split() == ["n", *shapes_result.checkpoints] and table[2].split()[:2] == ["color", "10"]
    r = vlm_lab("show", out, "--by", "question_type", "--json")
    assert r.returncode == 0, r.stderr
    by = {s["checkpoint"]: s["by"]["question_type"] for s in json.loads(r.stdout)}
    frame = shapes_result.accuracy_by("question_type")
    for _, row in frame.iterrows():
        assert by[row["checkpoint"]][row["question_type"]] == {
            "accuracy": row["accuracy"], "ci_low": row["ci_low"], "ci_high": row["ci_high"], "n_scored": 10,
        }  # fmt: skip
    r = vlm_lab("show", out, "--by", "answer_type")
    assert r.returncode == 2 and "they carry: question_type" in r.stderr and r.stdout == ""  # fails before printing


def test_compare_by_a_missing_key_says_the_comparison_is_saved(shapes_result, tiny_checkpoints):
    r = vlm_lab("compare", str(tiny_checkpoints[1]), str(tiny_checkpoints[-1]), "--data", "shapes:val:30", "--device", "cpu",
                "--out", str(shapes_result.output_dir), "--by", "answer_type", "--quiet")  # fmt: skip
    assert r.returncode == 2 and "they carry: question_type" in r.stderr
    assert f"The comparison is saved: vlm-lab show {shapes_result.output_dir} --by KEY" in r.stderr


def test_a_meta_key_named_like_a_column_keeps_its_values(tiny_checkpoints, tmp_path):
    """A sample's meta "step" (or "checkpoint", "accuracy") is its own column, meta.step: it was overwritten by the
    checkpoint's training step, so every group read the same value and the wide table could not be made."""
    samples = shapes.make_samples("val", 4)
    for s, when in zip(samples, ["early", "late", "early", "late"]):
        s.meta = {"step": when, "prompt": when}
    path = data.write_jsonl(samples, tmp_path / "d")
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[-1]),), data=str(path), device="cpu", output_dir=str(tmp_path / "cmp"))
    result = compare(config, progress=False)
    frame = result.accuracy_by("step")
    assert list(frame.columns) == ["meta.step", "checkpoint", "step", "accuracy", "ci_low", "ci_high", "n_scored"]
    assert list(frame["meta.step"]) == ["early", "late"] and list(frame["step"]) == [result.refs[0]["step"]] * 2
    assert list(frame["n_scored"]) == [2, 2]
    wide = result.to_dataframe()  # "step" is no column of its; "prompt" is
    assert list(wide["step"]) == list(wide["meta.prompt"]) == ["early", "late"] * 2 and wide["prompt"][0] == samples[0].prompt
    table = result.accuracy_by("step", wide=True)
    assert list(table.index) == ["early", "late"] and list(table.columns) == ["n", result.checkpoints[0]]
    assert "accuracy by step (2 values" in result.html()
    r = vlm_lab("show", str(tmp_path / "cmp"), "--by", "step", "--json")
    assert r.returncode == 0, r.stderr
    assert set(json.loads(r.stdout)[0]["by"]["step"]) == {"early", "late"}


def test_a_key_with_a_value_per_sample_is_broken_down_only_when_asked(tiny_checkpoints, tmp_path):
    """VQA exports carry question_id: broken down by default it made a table row per sample in comparison.html
    and a W&B summary key per sample; it is left out unless named, the few-valued keys are not."""
    from vlm_lab.breakdown import MAX_VALUES

    samples = shapes.make_samples("val", MAX_VALUES + 3)
    for i, s in enumerate(samples):
        s.meta = {"question_id": i, "answer_type": ["number", "other", "yes/no"][i % 3]}
    path = data.write_jsonl(samples, tmp_path / "d")
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[-1]),), data=str(path), device="cpu", output_dir=str(tmp_path / "cmp"))
    result = compare(config, progress=False)
    assert result.meta_keys() == ["answer_type"] and result.meta_keys(max_values=None) == ["question_id", "answer_type"]
    assert len(result.accuracy_by("question_id")) == MAX_VALUES + 3  # named: broken down all the same
    page = (tmp_path / "cmp" / "comparison.html").read_text()
    assert "accuracy by answer_type" in page and "accuracy by question_id" not in page
