"""scripts/refresh_checked_outputs.py: a notebook saved from JupyterLab (every cell's outputs) goes back to
what git keeps, the outputs of the cells nbval checks and nothing else."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("refresh_checked_outputs", ROOT / "scripts" / "refresh_checked_outputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_notebook_saved_with_every_output_keeps_only_the_checked_ones(tmp_path):
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [
        nbformat.v4.new_code_cell("x = 40", execution_count=7),
        nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nx + 2"),
        nbformat.v4.new_code_cell("print('a run of its own')", execution_count=9,
                                  outputs=[nbformat.v4.new_output("stream", name="stdout", text="a run of its own\n")]),
    ]  # as JupyterLab saves it after Run All
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert _script().refresh(path) == 1
    cells = nbformat.read(path, as_version=4).cells
    assert cells[1].outputs[0]["data"]["text/plain"] == "42"
    assert [c.outputs for c in (cells[0], cells[2])] == [[], []]
    assert [cells[0].execution_count, cells[2].execution_count] == [None, None]  # as git keeps them


def test_a_notebook_without_checked_cells_is_cleared_without_running(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("raise SystemExit('not run')", execution_count=3,
                                          outputs=[nbformat.v4.new_output("stream", name="stdout", text="x\n")])]  # fmt: skip
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert _script().refresh(path) == 0
    (cell,) = nbformat.read(path, as_version=4).cells
    assert cell.outputs == [] and cell.execution_count is None
