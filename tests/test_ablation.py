"""vlm_lab/ablation.py on sweep folders laid out as `vlm-lab sweep` leaves them: summary files and the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest

from vlm_lab import sweep
from vlm_lab.ablation import Ablation, write_summary
from vlm_lab.config import SweepConfig
from vlm_lab.data import atomic_write_text

STEPS = (0, 500, 1000)
NOTEBOOK = "notebooks/02_compare_checkpoints.ipynb"


def lay_out_sweep(
    tmp_path: Path,
    grid: dict[str, list],
    *,
    parameters: dict[str, Any] | None = None,
    accuracy: Callable[..., float | None] = lambda step, **varied: step / 1000,
    failed: Callable[..., bool] = lambda **varied: False,
    ci: float = 0.0,
    name: str = "shapes-ablation",
) -> Path:
    """A sweep folder as `vlm-lab sweep` leaves it: per run a status.json and, for completed runs, the
    comparison's summary.json (``accuracy(step=, **varied)``, its CI +-``ci``), then summary.csv/.md."""
    config = SweepConfig(name=name, notebook=NOTEBOOK, runs_dir=str(tmp_path / "runs"), parameters=parameters or {}, grid=grid)
    runs = sweep.plan(config)
    for run in runs:
        bad = failed(**run.varied)
        status = {"run_id": run.run_id, "state": "failed" if bad else "completed", "duration_s": 1.5}
        if bad:
            status["error"] = {"exec_count": 5, "ename": "RuntimeError", "evalue": "CUDA out of memory"}
        else:
            summary = []
            for s in STEPS:
                acc = accuracy(step=s, **run.varied)
                low, high = (None, None) if acc is None else (max(acc - ci, 0.0), min(acc + ci, 1.0))
                summary.append({"checkpoint": f"checkpoint-{s}", "step": s, "accuracy": acc, "ci_low": low, "ci_high": high,
                                "mean_latency_s": 0.01, "tokens_per_s": 500.0, "peak_memory_bytes": 10**6})  # fmt: skip
            atomic_write_text(run.dir / "summary.json", json.dumps({"config": run.parameters, "summary": summary}))
        atomic_write_text(run.dir / "status.json", json.dumps(status))
    folder = sweep.sweep_dir(config)
    atomic_write_text(folder / "sweep.json", json.dumps({**config.to_dict(), "notebook_fingerprint": sweep.notebook_fingerprint(config)}))
    write_summary(folder, runs)
    return folder


def test_parameters_named_like_report_columns_keep_their_values_beside_them(tmp_path):
    """A notebook whose parameters are called state, error, run_id, wandb, checkpoint: summary.csv held
    `{"run_id": ..., **parameters, "state": ...}`, so run_id=5 replaced every run's id (the report then found
    no results at all) and the run's state/error/W&B replaced the parameters'. Each now keeps its own column."""
    folder = lay_out_sweep(
        tmp_path, {"state": ["draft", "final"], "checkpoint": ["a", "b"]}, parameters={"run_id": 5, "wandb": "on", "error": 0.1},
        accuracy=lambda step, state, checkpoint: step / 1000 * (0.9 if state == "final" else 0.5),
        failed=lambda state, checkpoint: (state, checkpoint) == ("draft", "b"),
    )  # fmt: skip
    csv = pd.read_csv(folder / "summary.csv")
    assert all("," in rid for rid in csv["run_id"]), list(csv["run_id"])  # the run ids, not the parameter 5
    assert list(csv["params.run_id"]) == [5] * 4 and list(csv["params.wandb"]) == ["on"] * 4
    assert sorted(csv["params.state"]) == ["draft", "draft", "final", "final"]
    assert sorted(csv["state"]) == ["completed", "completed", "completed", "failed"]
    assert list(csv["params.error"]) == [0.1] * 4 and csv["error"].fillna("").str.contains("CUDA out of memory").sum() == 1

    ablation = Ablation.load(folder)
    assert ablation.columns() == ["params.state", "params.checkpoint"]
    assert len(ablation.results) == 3 * len(STEPS)  # every completed run's checkpoints, found by their run id
    assert set(ablation.results["params.checkpoint"]) == {"a", "b"}
    assert set(ablation.results["checkpoint"]) == {f"checkpoint-{s}" for s in STEPS}
    failures = ablation.failures()
    assert list(failures[["params.state", "params.checkpoint", "state"]].iloc[0]) == ["draft", "b", "failed"]
    best = ablation.best()
    assert (best["params.state"], best["checkpoint"], best["accuracy"]) == ("final", "checkpoint-1000", 0.9)
    assert ablation.describe_best().startswith("best variant: checkpoint-1000 with state=final, checkpoint=")
    assert list(ablation.table().columns.names) == ["params.state", "params.checkpoint"]
    assert "| params.state | params.checkpoint |" in (folder / "summary.md").read_text()
