"""A sweep's kernels divide the machine's cores: with ``--jobs 2`` each kernel's torch runs usable cores // 2
threads (at least 1), not torch's default of one per core, whose OpenMP threads spin and take the cores from the
other kernel (40x slower on 2 cores: bench/sweep_jobs.py). A thread count the user set is kept.

Real sweeps (``vlm-lab sweep``), real kernels importing torch; the notebook reports what its kernel got."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from vlm_lab import sweep
from vlm_lab.cli import main
from vlm_lab.kernel_threads import THREAD_VARS, describe_threads

PARAMETERS = """\
x: int = 1  # a grid value
output_dir: str = "out"  # set by the sweep
"""
REPORT = """\
import json, os, pathlib
import torch
names = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY"]
seen = {"torch": torch.get_num_threads(), "env": {n: os.environ.get(n) for n in names}}
pathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)
(pathlib.Path(output_dir) / "threads.json").write_text(json.dumps(seen))
"""


@pytest.fixture
def sweep_file(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in THREAD_VARS:
        monkeypatch.delenv(name, raising=False)
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(REPORT)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "nb.ipynb")
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "notebook": "nb.ipynb", "grid": {"x": [1, 2]}}, sort_keys=False))
    return path


def _seen(sweep_file: Path) -> list[dict]:
    """What each run's kernel reported: its torch threads and its environment's thread variables."""
    runs = sweep.plan(sweep.load_sweep(sweep_file))
    assert all(r.completed for r in runs), [r.status() for r in runs]
    return [json.loads((r.dir / "threads.json").read_text()) for r in runs]


def test_two_kernels_at_once_divide_the_cores_and_the_log_says_so(sweep_file, capsys):
    """Each kernel ran torch's default (one thread per core) beside the other: 2 x 2 spinning threads on 2 cores."""
    assert main(["sweep", str(sweep_file), "--jobs", "2"]) == 0
    each = max(1, len(os.sched_getaffinity(0)) // 2)
    for seen in _seen(sweep_file):
        assert seen["torch"] == each
        assert seen["env"] == {"OMP_NUM_THREADS": str(each), "MKL_NUM_THREADS": str(each),
                               "OPENBLAS_NUM_THREADS": str(each), "OMP_WAIT_POLICY": None}  # fmt: skip
    said = capsys.readouterr().err
    assert f"2 at a time, {each} torch thread{'s' if each > 1 else ''} each;" in said, said


def test_a_thread_count_the_user_set_is_kept(sweep_file, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert main(["sweep", str(sweep_file), "--jobs", "2"]) == 0
    # What torch makes of 3 in a process of its own (torch 2.13 runs at most one thread per core: 2 on 2 cores).
    alone = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], check=True,
                           capture_output=True, text=True).stdout  # fmt: skip
    for seen in _seen(sweep_file):
        assert seen["torch"] == int(alone)
        # None of the others either: torch takes MKL_NUM_THREADS over OMP_NUM_THREADS.
        assert seen["env"] == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": None, "OPENBLAS_NUM_THREADS": None,
                               "OMP_WAIT_POLICY": None}  # fmt: skip
    assert "2 at a time, OMP_NUM_THREADS=3 from the environment;" in capsys.readouterr().err


def test_one_run_left_gets_every_core(sweep_file):
    """--jobs 2 with one run to do: one kernel runs, and it gets the cores of both."""
    sweep_file.write_text(yaml.safe_dump({"name": "t", "notebook": "nb.ipynb", "grid": {"x": [1]}}, sort_keys=False))
    assert main(["sweep", str(sweep_file), "--jobs", "2", "--quiet"]) == 0
    [seen] = _seen(sweep_file)
    assert seen["torch"] == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("kernels, cores, environ, said", [
    (2, 2, {}, "1 torch thread each"),
    (2, 8, {}, "4 torch threads each"),
    (1, 2, {}, "2 torch threads"),
    (3, 2, {}, "1 torch thread each"),  # never 0
    (2, 2, {"OMP_NUM_THREADS": "3"}, "OMP_NUM_THREADS=3 from the environment"),
    (2, 2, {"MKL_NUM_THREADS": "2", "OMP_NUM_THREADS": "4"}, "OMP_NUM_THREADS=4, MKL_NUM_THREADS=2 from the environment"),
])
def test_what_the_log_says(kernels, cores, environ, said):
    assert describe_threads(kernels, environ, cores=cores) == said
