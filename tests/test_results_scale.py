"""Comparisons of tens of thousands of samples: comparison.html holds a capped number of them, the ones where
the checkpoints disagree first, and says how many it shows and where the rest are; results.jsonl and results.csv
keep every sample. (Speed at this scale: bench/compare_scale.py.)"""

from __future__ import annotations

import re

import vlm_lab.results_html as results_html
from vlm_lab.results import ComparisonResult

N = 30
REGRESSED = {5: "blue", 17: "green", 25: "blue"}  # row -> what b answers instead of "red" (a got these right)
IMPROVED = {1: "pink"}  # row -> what a answers instead of "red" (b gets it right)
DISAGREE = {*REGRESSED, *IMPROVED}


def _result(tmp_path) -> ComparisonResult:
    rows = []
    for i in range(N):
        a, b = IMPROVED.get(i, "red"), REGRESSED.get(i, "red")
        rows.append({"id": f"s{i:02d}", "image": f"images/s{i}.png", "prompt": "colour?", "reference": "red", "outputs": {
            "a": {"output": a, "score": float(a == "red"), "latency_s": 0.1, "new_tokens": 1},
            "b": {"output": b, "score": float(b == "red"), "latency_s": 0.1, "new_tokens": 1}}})  # fmt: skip
    summary = [{"checkpoint": n, "step": s, "accuracy": acc, "ci_low": acc - 0.1, "ci_high": min(1.0, acc + 0.1), "n_scored": N,
                "n_samples": N, "mean_latency_s": 0.1, "tokens_per_s": 10.0, "peak_memory_bytes": None, "memory_kind": None}
               for n, s, acc in (("a", 1, 1 - len(IMPROVED) / N), ("b", 2, 1 - len(REGRESSED) / N))]  # fmt: skip
    refs = [{"name": n, "spec": n, "step": s} for n, s in (("a", 1), ("b", 2))]
    result = ComparisonResult(config={"data": "x.jsonl"}, checkpoints=["a", "b"], refs=refs, rows=rows, summary=summary, output_dir=tmp_path)
    result.add_paired_columns()
    return result


def _shown_ids(page: str) -> list[str]:
    body = page.split("<tbody>")[-1]  # the samples' table comes last
    return re.findall(r"<td class='id'>(s\d\d)</td>", body)


def test_a_large_comparison_page_shows_the_disagreements_first_and_says_where_the_rest_are(tmp_path, monkeypatch):
    monkeypatch.setattr(results_html, "PAGE_ROWS", 10)
    out = _result(tmp_path).save(tmp_path)
    page = (out / "comparison.html").read_text(encoding="utf-8")
    shown = _shown_ids(page)
    assert len(shown) == 10
    assert {f"s{i:02d}" for i in DISAGREE} <= set(shown)  # every disagreement, then the first others
    assert shown == sorted(shown)  # in the data's order
    assert sorted(set(shown) - {f"s{i:02d}" for i in DISAGREE}) == ["s00", "s02", "s03", "s04", "s06", "s07"]
    note = re.search(r"<p class='capped'>(.*?)</p>", page).group(1)
    assert "10 of 30 samples" in note and "all 4 where the checkpoints disagree" in note
    assert "results.jsonl" in note and "results.csv" in note
    assert len((out / "results.jsonl").read_text().splitlines()) == N  # the files keep every sample
    assert len((out / "results.csv").read_text().splitlines()) == N + 1


def test_a_page_under_the_cap_shows_every_sample_without_a_note(tmp_path):
    out = _result(tmp_path).save(tmp_path)
    page = (out / "comparison.html").read_text(encoding="utf-8")
    assert len(_shown_ids(page)) == N
    assert "class='capped'" not in page


def test_the_whole_page_can_still_be_asked_for(tmp_path, monkeypatch):
    monkeypatch.setattr(results_html, "PAGE_ROWS", 10)
    page = _result(tmp_path).page(all_rows=True)
    assert len(_shown_ids(page)) == N and "class='capped'" not in page


def test_more_disagreements_than_the_cap_shows_the_regressions_first(tmp_path, monkeypatch):
    monkeypatch.setattr(results_html, "PAGE_ROWS", 2)
    page = _result(tmp_path).page()
    assert _shown_ids(page) == ["s05", "s17"]  # not s01, which only improved
    note = re.search(r"<p class='capped'>(.*?)</p>", page).group(1)
    assert "2 of 30 samples" in note and "2 of the 4 where the checkpoints disagree" in note
