"""Several acceptable answers per sample (VQA-style data) through a real comparison on the tiny checkpoints:
scores, rows, CSV, DataFrame, HTML, paired comparison and a load of the saved folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from vlm_lab import data, shapes
from vlm_lab.compare import compare
from vlm_lab.config import CompareConfig
from vlm_lab.errors import TruncatedOutputWarning
from vlm_lab.model_cache import ModelCache
from vlm_lab.results import ComparisonResult


@pytest.fixture(scope="module")
def vqa(tmp_path_factory, tiny_checkpoints):
    """6 shapes samples written as a JSONL whose references are lists where the right answer is one of several
    (even lines; twice on line 5), a list that misses it (line 2), or a plain string (the rest)."""
    tmp = tmp_path_factory.mktemp("vqa")
    path = data.write_jsonl(shapes.make_samples("val", 6), tmp / "data")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    answers = [line["reference"] for line in lines]
    for i, line in enumerate(lines):
        if i == 4:  # VQAv2 lists 10 answers, most the same
            line["reference"] = [line["reference"], "", line["reference"], "something else"]
        elif i % 2 == 0:
            line["reference"] = ["something else", line["reference"], ""]
        elif i == 1:
            line["reference"] = ["nope", "other"]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[0]), str(tiny_checkpoints[-1])), data=str(path), batch_size=3,
                           device="cpu", output_dir=str(tmp / "out"))  # fmt: skip
    with pytest.warns(TruncatedOutputWarning, match="checkpoint-0: 6 of 6"):  # checkpoint-0 never learned to stop
        return answers, compare(config, progress=False, cache=ModelCache(budget_bytes="1GB"))


def test_an_output_matching_any_listed_answer_scores_and_the_rows_keep_the_list(vqa):
    answers, result = vqa
    best = result.checkpoints[-1]
    assert [r["outputs"][best]["output"] for r in result.rows] == answers  # checkpoint-1000 answers every one right
    assert [r["outputs"][best]["score"] for r in result.rows] == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0]  # line 2's list misses it
    assert result.rows[0]["reference"] == ["something else", answers[0]]  # the blank entry dropped
    assert result.rows[3]["reference"] == answers[3]  # a single reference stays a string
    assert result.summary[1]["accuracy"] == pytest.approx(5 / 6) and result.summary[1]["n_scored"] == 6
    pair = result.paired(0, 1)
    assert pair.diff == pytest.approx(5 / 6) and len(pair.wrong_to_right) == 5 and pair.ci_high <= 1.0


def test_saved_files_show_every_answer_and_load_back_as_lists(vqa):
    answers, result = vqa
    out = result.output_dir
    jsonl = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert jsonl[0]["reference"] == ["something else", answers[0]]
    csv = pd.read_csv(out / "results.csv")
    assert csv["reference"].tolist()[:5] == [f"something else | {answers[0]}", "nope | other", f"something else | {answers[2]}",
                                             answers[3], f"{answers[4]} ×2 | something else"]  # each answer once, with its count
    assert result.to_dataframe()["reference"].tolist() == csv["reference"].tolist()  # text in the DataFrame as in the CSV
    page = (out / "comparison.html").read_text()
    assert f"<td>something else | {answers[0]}</td>" in page and "<td>nope | other</td>" in page
    loaded = ComparisonResult.load(out)
    assert loaded.rows == json.loads(json.dumps(result.rows)) and loaded.rows[0]["reference"] == ["something else", answers[0]]
    assert loaded.paired(0, 1).wrong_to_right == result.paired(0, 1).wrong_to_right


def test_vlm_lab_compare_metric_vqa_scores_fractions_against_ten_human_answers(tiny_checkpoints, tmp_path):
    """``vlm-lab compare --metric vqa`` on a VQAv2-style JSONL (10 answers per question, spelled as annotators
    do): checkpoint-1000 answers all 6 right, and scores what the humans' agreement gives it."""
    path = data.write_jsonl(shapes.make_samples("val", 6), tmp_path / "data")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    others = ["orange", "2", "purple", "none", "a hexagon"] * 2
    agreeing = [["red"], ["Triangle"] * 2, ["blue square"] * 3, ["yellow."] * 4, [], ["The Blue Circle."] * 10]
    for line, agree in zip(lines, agreeing):
        line["reference"] = (agree + others)[:10]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "cmp"
    r = subprocess.run([sys.executable, "-m", "vlm_lab.cli", "compare", str(tiny_checkpoints[0]), str(tiny_checkpoints[-1]),
                        "--data", str(path), "--batch-size", "3", "--device", "cpu", "--metric", "vqa", "--out", str(out),
                        "--json"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    scores = [0.3, 0.6, 0.9, 1.0, 0.0, 1.0]  # 1, 2, 3, 4, 0 and 10 of 10 humans agree
    assert [row["outputs"]["checkpoint-1000"]["score"] for row in rows] == pytest.approx(scores)
    assert [row["outputs"]["checkpoint-0"]["score"] for row in rows] == [0.0] * 6
    summary = json.loads(r.stdout)
    best = summary[1]
    assert best["accuracy"] == pytest.approx(sum(scores) / 6) and best["n_scored"] == 6
    assert 0.0 <= best["ci_low"] < best["accuracy"] < best["ci_high"] <= 1.0
    # flips: right is 1 and wrong is 0; the partial 0.3/0.6/0.9 flip neither way but count in the difference
    assert (best["n_wrong_to_right"], best["n_right_to_wrong"]) == (2, 0) and best["diff"] == pytest.approx(sum(scores) / 6)
    page = (out / "comparison.html").read_text()
    for value in ("0.3", "0.6", "0.9"):
        assert f'title="partly right: score {value} of 1">{value}</span>' in page
    assert page.count('<td class="partial">') == 3 and page.count('<td class="ok">') == 2 and "VQA accuracy" in page
    csv = pd.read_csv(out / "results.csv")
    assert csv["checkpoint-1000/score"].tolist() == pytest.approx(scores)
    report = ComparisonResult.load(out).paired_report()
    assert "wrong->right: val-00003-color, val-00005-describe" in report and "a partial score flips neither way" in report
