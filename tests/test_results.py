"""vlm_lab/results.py: the summary as people read it (the CLI's table and notebook 02's)."""

from __future__ import annotations

from vlm_lab.results import ComparisonResult


def _result(tmp_path) -> ComparisonResult:
    rows = [{"id": "s1", "image": "images/s1.png", "prompt": "p", "reference": "red",
             "outputs": {n: {"output": "red", "score": 1.0, "latency_s": 0.1, "new_tokens": 2} for n in ("a", "b")}}]  # fmt: skip
    summary = [
        {"checkpoint": "a", "step": 250, "accuracy": 0.6041666, "ci_low": 0.5104166, "ci_high": 0.7083333, "n_scored": 96,
         "n_samples": 96, "mean_latency_s": 0.0352551, "tokens_per_s": 3630.701719, "mean_new_tokens": 2.6666667,
         "peak_memory_bytes": 673608, "memory_kind": "cpu_weights", "from_cache": 0},
        {"checkpoint": "b", "step": None, "accuracy": None, "ci_low": None, "ci_high": None, "n_scored": 0, "n_samples": 96,
         "mean_latency_s": 0.02, "tokens_per_s": 100.0, "mean_new_tokens": 8.0, "peak_memory_bytes": None,
         "memory_kind": None, "from_cache": 96},
    ]  # fmt: skip
    refs = [{"name": n, "spec": n, "step": None} for n in ("a", "b")]
    return ComparisonResult(config={}, checkpoints=["a", "b"], refs=refs, rows=rows, summary=summary, output_dir=tmp_path)


def test_summary_table_shows_percentages_units_and_dashes(tmp_path):
    """summary_frame() keeps the raw numbers (0.604167, 673608 bytes); the table a person reads rounds them."""
    table = _result(tmp_path).summary_table()
    columns = ["checkpoint", "step", "accuracy", "ci_low", "ci_high", "n_scored", "mean_latency_s", "tokens_per_s",
               "mean_new_tokens", "peak_memory_bytes", "memory_kind", "from_cache"]  # fmt: skip
    assert table[columns].values.tolist() == [
        ["a", "250", "60.4%", "51.0%", "70.8%", "96/96", "0.0353", "3631", "2.7", "673.61 kB", "cpu_weights", "0"],
        ["b", "-", "-", "-", "-", "0/96", "0.0200", "100", "8.0", "-", "-", "96"],
    ]


def test_memory_notes_say_what_the_memory_column_measured(tmp_path):
    assert _result(tmp_path).memory_notes() == [
        "peak_memory_bytes: the weights' bytes (on CPU one process's peak cannot be pinned on one model: vlm-lab memory measures it)"
    ]


def test_a_csv_of_an_older_format_is_rebuilt_and_then_left_alone(tmp_path):
    """results.csv was rebuilt only when results.jsonl changed: re-running into a folder whose CSV an older vlm_lab
    wrote (before the meta columns) kept the old CSV. Its format is recorded in summary.json, which save reads."""
    import json

    result = _result(tmp_path)
    result.rows[0]["meta"] = {"question_type": "color"}
    result.save()
    csv, summary = tmp_path / "results.csv", tmp_path / "summary.json"
    # as the older vlm_lab left the folder: the same rows, a CSV without the meta column, no format in summary.json
    csv.write_text(csv.read_text().replace("question_type,", "").replace("color,", ""))
    saved = json.loads(summary.read_text())
    saved.pop("csv_format", None)
    summary.write_text(json.dumps(saved, indent=2) + "\n")
    result.save()
    assert csv.read_text().startswith("id,image,prompt,reference,question_type,a/output,")
    before = csv.stat()
    result.save()  # nothing changed: the CSV is not written again (the cached re-run stays cheap)
    after = csv.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_saved_comparison_is_read_shown_and_saved_without_torch(tmp_path):
    """A notebook that only looks at a finished comparison (load, the table, the HTML view, save) need not import
    torch: seconds on a laptop, more under load. The byte formatter lived beside the model cache, which imports it."""
    import subprocess
    import sys

    _result(tmp_path / "src").save(tmp_path / "saved")
    script = (
        "import sys\n"
        "from vlm_lab.results import ComparisonResult\n"
        f"r = ComparisonResult.load({str(tmp_path / 'saved')!r})\n"
        "r.to_dataframe(); r.summary_table(); r._repr_html_(); r.memory_notes()\n"
        f"r.save({str(tmp_path / 'again')!r})\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_results_csv_cells_a_spreadsheet_would_run_as_formulas_are_quoted(tmp_path):
    """A model's answer (or a user's prompt/reference) starting with = + - @ tab or CR was written to results.csv as
    is, and Excel, LibreOffice and Google Sheets run it as a formula when a person opens the CSV (OWASP's CSV
    injection). Such text cells now start with a single quote in the CSV; results.jsonl keeps the exact text, numbers
    (-0.5) stay numbers, and vlm_lab.spreadsheet_csv.read_csv gives the exact text back. A CR inside an answer was
    not quoted (pandas ended lines with LF only): a spreadsheet began a new row there, with the rest as a formula."""
    import csv
    import json

    result = _result(tmp_path)
    row = result.rows[0]
    row["prompt"], row["reference"], row["meta"] = "@SUM(A1:A2)", ["+1", "\tred"], {"offset": -0.5, "note": "'=quoted"}
    row["outputs"]["a"] |= {"output": '=HYPERLINK("http://x","y")', "latency_s": -0.5}
    row["outputs"]["b"] |= {"output": "-1+2", "score": 0.0}
    second = json.loads(json.dumps(row)) | {"id": "s2", "prompt": "-0.5", "meta": {"offset": 2.0, "note": "\r=x"}}
    second["outputs"]["a"]["output"], second["outputs"]["b"]["output"] = "-3", "ok\r=1+1"
    result.rows.append(second)
    result.save()
    with open(tmp_path / "results.csv", newline="", encoding="utf-8") as f:
        cells = list(csv.DictReader(f))
    assert cells[0]["a/output"] == "'=HYPERLINK(\"http://x\",\"y\")" and cells[0]["b/output"] == "'-1+2"
    assert cells[0]["prompt"] == "'@SUM(A1:A2)" and cells[0]["reference"] == "'+1 | \tred"
    assert len(cells) == 2 and cells[1]["b/output"] == "ok\r=1+1"  # a CR inside an answer: quoted, one cell, no new row
    assert cells[0]["note"] == "''=quoted" and cells[1]["note"] == "'\r=x"  # a leading quote of its own kept apart
    # numbers are not formulas: numeric columns, and text that is one number, as they were
    assert [c["offset"] for c in cells] == ["-0.5", "2.0"] and cells[0]["a/latency_s"] == "-0.5"
    assert cells[0]["b/score"] == "0.0" and cells[1]["prompt"] == "-0.5" and cells[1]["a/output"] == "-3"
    assert json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])["outputs"]["b"]["output"] == "-1+2"
    from vlm_lab.spreadsheet_csv import read_csv

    frame = read_csv(tmp_path / "results.csv")  # the exact text back, as to_dataframe has it
    assert frame.loc[0, "a/output"] == '=HYPERLINK("http://x","y")' and frame.loc[0, "b/output"] == "-1+2"
    assert frame.loc[0, "prompt"] == "@SUM(A1:A2)" and frame.loc[0, "reference"] == "+1 | \tred"
    assert list(frame["note"]) == ["'=quoted", "\r=x"] and list(frame["offset"]) == [-0.5, 2.0]
