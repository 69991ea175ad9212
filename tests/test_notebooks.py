"""The notebooks: house style, papermill parameters that are CompareConfig's fields, real runs.

Each run happens in a scratch project root (``pyproject.toml`` + ``notebooks/`` +
``checkpoints/shapes`` linked to the test checkpoints), the layout a fresh clone has
after ``make checkpoints``, so the notebooks' defaults are exercised as written.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from vlm_lab.config import CompareConfig

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXPLORE = "01_explore.ipynb"
COMPARE = "02_compare_checkpoints.ipynb"


def _code_cells(name: str) -> list:
    return [c for c in nbformat.read(NOTEBOOKS / name, as_version=4).cells if c.cell_type == "code"]


def _parameters(name: str) -> dict[str, tuple[str, str]]:
    """``{name: (type, help)}`` of the ``parameters``-tagged cell."""
    (cell,) = [c for c in _code_cells(name) if "parameters" in c.metadata.get("tags", [])]
    params = {}
    for line in cell.source.splitlines():
        code, _, help_text = line.partition("  # ")
        node = ast.parse(code).body[0]
        assert isinstance(node, ast.AnnAssign) and help_text.strip(), f"{name}: want `name: type = default  # help`, got {line!r}"
        assert line.count("=") == 1, f"{name}: papermill cannot parse a line with two '=' (reword the help): {line!r}"
        params[node.target.id] = (ast.unparse(node.annotation), help_text)
    return params


@pytest.fixture
def project(tmp_path, tiny_dir) -> Path:
    """A scratch project root holding the notebooks and the embedded checkpoints."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    shutil.copytree(NOTEBOOKS, tmp_path / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "shapes").symlink_to(tiny_dir, target_is_directory=True)
    return tmp_path


@pytest.mark.parametrize("name", [EXPLORE, COMPARE])
def test_house_style(name):
    cells = _code_cells(name)
    assert _parameters(name)
    for cell in cells:
        tree = ast.parse(cell.source)
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        assert not defs, f"{name}: no def/class in notebooks; move {defs[0].name} into vlm_lab"
        if "NBVAL_CHECK_OUTPUT" not in cell.source:
            assert not cell.outputs, (f"{name}: commit outputs only for cells nbval checks (saved from JupyterLab? "
                                      f"scripts/refresh_checked_outputs.py notebooks/{name} clears the others):\n{cell.source}")  # fmt: skip
    assert any("NBVAL_CHECK_OUTPUT" in c.source and c.outputs for c in cells)


def test_compare_parameters_are_exactly_the_config_fields():
    params = {k: v for k, v in _parameters(COMPARE).items() if not k.startswith("wandb_")}  # W&B options, set by sweeps
    fields = {f.name: f for f in dataclasses.fields(CompareConfig)}
    # every CompareConfig field, in order; parameters after them (W&B logging) are not the config's
    assert list(params)[: len(fields)] == list(fields)
    defaults = {}
    exec(next(c.source for c in _code_cells(COMPARE) if "parameters" in c.metadata.get("tags", [])), {}, defaults)
    CompareConfig(**{k: v for k, v in defaults.items() if k in fields})  # the defaults are a valid config


@pytest.mark.slow
def test_papermill_runs_the_comparison_with_parameters(project, tiny_checkpoints, venv_bin, artifacts_dir):
    first, last = tiny_checkpoints[0], tiny_checkpoints[-1]
    out_dir = project / "runs" / "pm"
    executed = out_dir / COMPARE
    out_dir.mkdir(parents=True)  # papermill writes the executed notebook into an existing folder

    def run(*papermill: str) -> str:
        cmd = [
            *papermill, "--no-progress-bar", str(project / "notebooks" / COMPARE), str(executed),
            "-p", "checkpoints", f"{first},{last}", "-p", "num_samples", "12", "-p", "output_dir", str(out_dir),
        ]  # fmt: skip
        r = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stderr

    # as make demo runs it: papermill's CLI with the kernel on unix sockets, so no TCP warning
    stderr = run(sys.executable, str(ROOT / "scripts" / "run_notebook.py"))
    assert "Executing notebook" in stderr and "TCP" not in stderr
    shutil.copy(executed, artifacts_dir / f"papermill-{COMPARE}")
    summary = json.loads((out_dir / "summary.json").read_text())
    assert [c["name"] for c in summary["checkpoints"]] == ["checkpoint-0", "checkpoint-1000"]
    assert summary["config"]["num_samples"] == 12 and summary["config"]["output_dir"] == str(out_dir)
    acc = [s["accuracy"] for s in summary["summary"]]
    assert acc[1] > acc[0]
    assert len((out_dir / "results.jsonl").read_text().splitlines()) == 12
    assert len((out_dir / "results.csv").read_text().strip().splitlines()) == 12 + 1
    assert (out_dir / "accuracy.png").stat().st_size > 0
    page = (out_dir / "comparison.html").read_text()
    assert "checkpoint-0" in page and "checkpoint-1000" in page and "<img" in page
    text = executed.read_text()
    assert "wrong->right" in text and "disagree" in text

    run(str(venv_bin / "papermill"))  # papermill's own CLI; the run is served from the result cache
    summary = json.loads((out_dir / "summary.json").read_text())
    assert [s["from_cache"] for s in summary["summary"]] == [12, 12]


@pytest.mark.slow
def test_nbval_checks_both_notebooks(project):
    shutil.copy(ROOT / "tests" / "nbval_sanitize.cfg", project / "nbval_sanitize.cfg")
    cmd = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
        f"notebooks/{EXPLORE}", f"notebooks/{COMPARE}", "--nbval-sanitize-with", "nbval_sanitize.cfg",
    ]  # fmt: skip
    r = subprocess.run(cmd, cwd=project, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-5000:] + r.stderr[-2000:]
    assert "failed" not in r.stdout.splitlines()[-1]
