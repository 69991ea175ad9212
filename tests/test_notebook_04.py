"""notebooks/04_ablation_report.ipynb against a sweep folder the test lays out: papermill and nbval."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_ablation import lay_out_sweep
from wandb_fixtures import wandb_home  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "04_ablation_report.ipynb"


def _accuracy(strategy: str, max_new_tokens: int, step: int) -> float:
    # The made-up truth of this ablation: greedy beats nucleus, 8 tokens beat 4, training helps.
    return round(step / 1000 * (0.9 if strategy == "greedy" else 0.7) * (1.0 if max_new_tokens == 8 else 0.8), 3)


def _lay_out_sweep(tmp_path: Path, *, all_fail: bool = False) -> Path:
    """A 2x2 sweep as `vlm-lab sweep` leaves it: three completed runs and one failed run (or four failed)."""
    return lay_out_sweep(
        tmp_path, {"strategy": ["greedy", "nucleus(0.9)"], "max_new_tokens": [4, 8]}, parameters={"num_samples": 8},
        accuracy=_accuracy, failed=lambda **v: all_fail or v == {"strategy": "nucleus(0.9)", "max_new_tokens": 4},
    )  # fmt: skip


@pytest.fixture
def sweep_dir(tmp_path) -> Path:
    return _lay_out_sweep(tmp_path)


def _text(nb) -> str:
    return "\n".join(
        str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", "")) for c in nb.cells for o in c.get("outputs", [])
    )


def test_report_names_the_best_variant(sweep_dir, tmp_path):
    import papermill

    out = tmp_path / "04.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), parameters={"sweep_dir": str(sweep_dir)}, progress_bar=False, cwd=str(ROOT)
    )
    text = _text(nbformat.read(out, as_version=4))
    assert "sweep shapes-ablation: 4 runs, varied: strategy, max_new_tokens" in text
    assert "best variant: checkpoint-1000 with strategy=greedy, max_new_tokens=8: accuracy 90.0%" in text
    assert "CUDA out of memory" in text  # the failure is shown, not hidden
    assert "   rank      strategy  max_new_tokens  " in text and "0     1        greedy               8  " in text  # the ranking
    assert (sweep_dir / "ablation-accuracy.png").stat().st_size > 1000


def test_tables_show_three_decimals(tmp_path):
    """Accuracies of a real run are counts over 64 samples (39/64 = 0.609375): the report's tables show 0.609,
    as a person reads them; the frames themselves (ablation.runs, .ranking()) keep every digit."""
    import papermill

    folder = lay_out_sweep(
        tmp_path, {"strategy": ["greedy", "nucleus(0.9)"]}, parameters={"num_samples": 64},
        accuracy=lambda strategy, step: (39 if strategy == "greedy" else 37) * step / 1000 / 64,
    )  # fmt: skip
    out = tmp_path / "04.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), parameters={"sweep_dir": str(folder)}, progress_bar=False, cwd=str(ROOT))
    text = _text(nbformat.read(out, as_version=4))
    assert "0.609" in text
    assert not re.findall(r"\d\.\d{4,}", text), re.findall(r".*\d\.\d{4,}.*", text)[:3]


def test_report_says_when_runs_compared_different_checkpoints(sweep_dir, tmp_path):
    """A sweep over a training folder that gained a checkpoint while it ran: the first points compared fewer
    checkpoints, so their best is of less; the best-variant line says which runs lacked which checkpoints."""
    import json

    import papermill

    (run,) = sweep_dir.glob("max_new_tokens=4,strategy=greedy,*")
    meta = json.loads((run / "summary.json").read_text())
    meta["summary"] = [s for s in meta["summary"] if s["checkpoint"] != "checkpoint-1000"]
    (run / "summary.json").write_text(json.dumps(meta))
    out = tmp_path / "04.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), parameters={"sweep_dir": str(sweep_dir)}, progress_bar=False, cwd=str(ROOT))
    text = _text(nbformat.read(out, as_version=4))
    assert ("; not every run compared the same checkpoints (strategy=greedy, max_new_tokens=4 lacks checkpoint-1000): "
            "a run's best is of the checkpoints it had; delete those runs' folders and run the sweep again") in text  # fmt: skip


def test_a_sweep_where_every_run_failed_still_reports_its_failures(tmp_path):
    import papermill

    folder = _lay_out_sweep(tmp_path, all_fail=True)
    out = tmp_path / "04.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), parameters={"sweep_dir": str(folder)}, progress_bar=False, cwd=str(ROOT))
    text = _text(nbformat.read(out, as_version=4))
    assert "no best variant: none of the 4 runs completed with accuracy (4 failed; see the failures below and " in text
    assert text.count("CUDA out of memory") >= 4  # the failures table, the last cell, was reached


def test_report_shows_each_runs_wandb_run_merged_and_how_to_upload_them(sweep_dir, wandb_home, tmp_path):
    """A point whose first execution logged its comparison and whose re-run died while logging into the
    same W&B run (same id): the report must show the run's state as W&B will (the latest start did not
    finish) and one `wandb sync` of every start of every run not uploaded yet."""
    import papermill

    from vlm_lab import offline_runs, tracking
    from vlm_lab.ablation import Ablation

    ablation = Ablation.load(sweep_dir)
    completed = list(ablation.runs.loc[ablation.runs["state"] == "completed", "run_id"])
    folders = {}
    for index, run_id in enumerate(completed[:2]):
        run = tracking.start_run({"run": run_id}, group=ablation.name, id=f"point{index}", resume="allow")
        run.summary.update({"best/accuracy": 0.9})
        tracked = tracking.finish_run(run)
        tracking.write_record(sweep_dir / run_id, tracked)
        folders[run_id] = [tracked.dir]
    rerun = tracking.start_run({"run": completed[1]}, group=ablation.name, id="point1", resume="allow")
    rerun.finish(exit_code=1)  # the re-run's notebook died while logging: wandb.json is still the first one's
    assert offline_runs.wait_until_written(rerun.settings.sync_dir)
    folders[completed[1]].append(Path(rerun.settings.sync_dir))

    frame = Ablation.load(sweep_dir).wandb_runs()
    assert list(frame["run_id"]) == completed[:2] and list(frame["wandb_run"]) == ["point0", "point1"]
    assert list(frame["state"]) == ["finished", "failed (exit 1), latest of 2 starts"]
    assert list(frame["sync_command"]) == ["wandb sync " + " ".join(map(str, folders[r])) for r in completed[:2]]

    out = tmp_path / "04.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(out), parameters={"sweep_dir": str(sweep_dir)}, progress_bar=False, cwd=str(ROOT))
    text = _text(nbformat.read(out, as_version=4))
    every = " ".join(str(f) for r in completed[:2] for f in folders[r])
    assert f"2 run(s) logged to W&B offline, 2 not uploaded yet: wandb sync {every}" in text
    assert "failed (exit 1), latest of 2 starts" in text


@pytest.mark.slow
def test_report_breaks_a_real_sweep_down_by_question_type(tiny_checkpoints, wandb_home, tmp_path):
    """A real sweep of notebook 02 over two tiny checkpoints (greedy and nucleus decoding, and a strategy that fails
    in its cell), then the report: per question type, each run's accuracy at its best checkpoint, read from the
    comparison each run saved, and the failed run listed with why it has no numbers."""
    import papermill

    from vlm_lab import sweep
    from vlm_lab.ablation import Ablation
    from vlm_lab.config import SweepConfig

    config = SweepConfig(
        name="by-type", notebook=str(ROOT / "notebooks" / "02_compare_checkpoints.ipynb"), runs_dir=str(tmp_path / "runs"),
        parameters={"num_samples": 12, "checkpoints": f"{tiny_checkpoints[1]},{tiny_checkpoints[2]}"},
        grid={"strategy": ["greedy", "nucleus(0.9)", "bogus"]},
    )  # fmt: skip
    report = sweep.run_sweep(config, progress=False)
    assert len(report.ran) == 3 and len(report.failures) == 1, report.describe()
    out = tmp_path / "04.ipynb"
    folder = sweep.sweep_dir(config)
    papermill.execute_notebook(str(NOTEBOOK), str(out), parameters={"sweep_dir": str(folder)}, progress_bar=False, cwd=str(ROOT))
    text = _text(nbformat.read(out, as_version=4))
    expected = Ablation.load(folder).accuracy_by("question_type")
    assert len(expected) == 2 * 3 and set(expected["n_scored"]) == {4}  # greedy and nucleus x color, shape, describe
    assert "accuracy by question_type at each run's best checkpoint:\n  question_type=color: best strategy=" in text
    for value in ("shape", "describe"):
        assert f"  question_type={value}: best strategy=" in text
    assert "1 of 3 run(s) without numbers (the note column):\n  failed: cell [3]: ConfigError: unknown strategy 'bogus'" in text
    for row in expected.itertuples():  # the wide table shows each run's numbers
        assert f"{row.accuracy * 100:.0f}% [{row.ci_low * 100:.0f}–{row.ci_high * 100:.0f}]" in text
    assert (folder / "ablation-accuracy-by.png").stat().st_size > 1000


@pytest.mark.slow
def test_nbval_on_a_parameterized_copy(sweep_dir, tmp_path):
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), {"sweep_dir": str(sweep_dir), "metric": "tokens_per_s"})
    copy = tmp_path / "04_ablation_report.ipynb"
    nbformat.write(nb, copy)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q", str(copy)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert (sweep_dir / "ablation-tokens_per_s.png").is_file()


def test_notebook_has_a_parameters_cell_and_no_logic():
    import papermill

    params = papermill.inspect_notebook(str(NOTEBOOK))
    assert params["sweep_dir"]["default"] == '"runs/shapes-ablation"'
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert not any(line.lstrip().startswith(("def ", "class ")) for src in code for line in src.splitlines())
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), (
        "no stale outputs committed: scripts/refresh_checked_outputs.py notebooks/04_ablation_report.ipynb clears them")
