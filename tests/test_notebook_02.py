"""notebooks/02_compare_checkpoints.ipynb through papermill with the odd parameters users pass.

tests/test_notebooks.py runs it with two checkpoints on the shapes data; here: a JSONL
without references (issue 3: "without references it still compares outputs side by
side") and a single checkpoint. Every cell must run and say what it cannot show.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nbformat
import pytest

from vlm_lab import data, shapes

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "02_compare_checkpoints.ipynb"


def _papermill(venv_bin: Path, out_dir: Path, *params: str) -> str:
    """Run the notebook into ``out_dir``; returns the executed notebook's cell outputs as text."""
    out_dir.mkdir(parents=True)
    executed = out_dir / NOTEBOOK.name
    cmd = [str(venv_bin / "papermill"), "--no-progress-bar", str(NOTEBOOK), str(executed), "-p", "output_dir", str(out_dir), *params]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cells = nbformat.read(executed, as_version=4).cells
    return "\n".join(o.get("text", "") for c in cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.slow
def test_a_jsonl_without_references_runs_every_cell(tmp_path, tiny_checkpoints, venv_bin):
    samples = shapes.make_samples("test", 4)
    for s in samples:
        s.reference = None
    path = data.write_jsonl(samples, tmp_path / "mydata")
    out = tmp_path / "run"
    text = _papermill(venv_bin, out, "-p", "checkpoints", f"{tiny_checkpoints[0]},{tiny_checkpoints[-1]}", "-p", "data", str(path), "-p", "num_samples", "0")
    assert "no sample has a reference" in text
    assert "artifacts in" in text  # the cells after the paired comparison ran too
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert [s["accuracy"] for s in summary] == [None, None] and summary[1]["diff"] is None


@pytest.mark.slow
def test_a_single_checkpoint_is_not_paired_with_itself(tmp_path, tiny_checkpoints, venv_bin):
    text = _papermill(venv_bin, tmp_path / "run", "-p", "checkpoints", str(tiny_checkpoints[-1]), "-p", "num_samples", "4")
    assert "one checkpoint, nothing to pair" in text
    assert "checkpoint-1000 vs checkpoint-1000" not in text


@pytest.mark.slow
def test_a_cell_run_again_out_of_order_shows_this_runs_numbers(tmp_path, tiny_checkpoints):
    """A person runs the comparison and the accuracy table, then runs the comparison again and jumps to the speed
    table: it showed the first run's numbers (from_cache 0, though every answer of the re-run came from the cache)."""
    from jupyter_client.manager import start_new_kernel

    cells = {i: c.source for i, c in enumerate(nbformat.read(NOTEBOOK, as_version=4).cells) if c.cell_type == "code"}
    speed = next(i for i, source in cells.items() if "tokens_per_s" in source)
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(NOTEBOOK.parent))
    try:
        def run(source: str) -> str:
            reply = kc.execute_interactive(source, timeout=300, output_hook=lambda m: out.append(m["content"]))
            assert reply["content"]["status"] == "ok", out
            return "".join(c.get("text", "") + c.get("data", {}).get("text/plain", "") for c in out)

        out: list[dict] = []
        run(cells[1] + f"\ncheckpoints = {str(tiny_checkpoints[-1])!r}; num_samples = 2; output_dir = {str(tmp_path)!r}")
        for i in sorted(cells)[1:4]:  # the config, the comparison, the accuracy table
            run(cells[i])
        for i in sorted(cells)[1:3]:  # the config and the comparison again: every answer from the cache
            run(cells[i])
        out = []
        shown = run(cells[speed])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert shown.splitlines()[-1].split()[-1] == "2", shown  # from_cache: both answers of this run
