#!/usr/bin/env python
"""Run the notebooks on the embedded checkpoints and store the outputs nbval checks.

    .venv/bin/python scripts/refresh_checked_outputs.py [notebooks/02_compare_checkpoints.ipynb ...]

Only cells marked ``# NBVAL_CHECK_OUTPUT`` keep outputs in git (``tests/test_notebooks.py``); this
executes each notebook with papermill, its defaults, from the project root, with torch's CPU kernels
pinned as ``make test`` pins them, copies those cells' outputs back into the notebook and clears the
others' (a notebook saved from JupyterLab holds them all). For when the checked numbers change on
purpose (new tiny weights, another table), or after saving a notebook from JupyterLab: review the
diff, and README's numbers with it. Without arguments: every notebook.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "NBVAL_CHECK_OUTPUT"


def refresh(notebook: Path) -> int:
    """Clear the outputs of ``notebook``'s unchecked cells, execute it and copy its checked cells' outputs into it;
    returns how many checked cells changed."""
    import nbformat
    import papermill

    from vlm_lab.data import atomic_write_text
    from vlm_lab.sweep_papermill import kernel_transport

    stored = nbformat.read(notebook, as_version=4)
    for cell in stored.cells:  # a notebook saved from JupyterLab holds every cell's outputs: git keeps the checked ones
        if cell.cell_type == "code" and MARK not in cell.source:
            cell.outputs, cell.execution_count = [], None
    checked = [c for c in stored.cells if c.cell_type == "code" and MARK in c.source]
    if not checked:  # nothing to run (notebook 04 reads a sweep that may not be there)
        atomic_write_text(notebook, nbformat.writes(stored) + "\n")
        return 0
    with tempfile.TemporaryDirectory() as tmp, kernel_transport() as options:  # as make demo runs it
        executed = papermill.execute_notebook(str(notebook), str(Path(tmp) / notebook.name), cwd=str(ROOT),
                                              progress_bar=False, kernel_name="python3", **options)
    ran = {c.source: c.outputs for c in executed.cells if c.cell_type == "code" and MARK in c.source}
    changed = 0
    for cell in checked:
        outputs = ran[cell.source]
        changed += cell.outputs != outputs
        cell.outputs = outputs
    atomic_write_text(notebook, nbformat.writes(stored) + "\n")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("notebooks", nargs="*", type=Path)
    args = parser.parse_args(argv)
    from vlm_lab.cpu_kernels import pin_cpu_kernels

    pin_cpu_kernels()  # the kernels papermill starts inherit it: the weights' and numbers' code path
    for notebook in args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb")):
        print(f"{notebook}: {refresh(notebook)} checked cell(s) changed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
