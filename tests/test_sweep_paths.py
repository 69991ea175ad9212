"""The paths a sweep file names (its notebook, its runs_dir) as a cron job or a cluster meets them:
``~`` and ``$VARS`` that no shell expanded, and a notebook file that is not a notebook."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from test_sweep import write_notebook
from vlm_lab import sweep
from vlm_lab.cli import main


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _sweep_file(folder: Path, **values) -> Path:
    path = folder / "t.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "grid": {"x": [1]}, **values}))
    return path


def test_home_and_environment_variables_in_sweep_file_paths_are_expanded(workdir, monkeypatch, capsys):
    """`runs_dir: $SCRATCH/runs` (a cluster's scratch disk) and `notebook: ~/...` in YAML reach no shell:
    they made folders literally named '$SCRATCH' and '~' in the working directory (where
    `rm -rf ~` then deletes the home folder) and filled the disk the user meant to spare."""
    home, scratch = workdir / "home", workdir / "scratch disk"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SWEEP_SCRATCH", str(scratch))
    write_notebook(Path(home.mkdir() or home) / "nb.ipynb")
    path = _sweep_file(workdir, notebook="~/nb.ipynb", runs_dir="${SWEEP_SCRATCH}/runs")

    assert main(["sweep", str(path), "--quiet"]) == 0

    (run,) = sweep.plan(sweep.load_sweep(path))
    assert run.dir.parent == scratch / "runs" / "t"
    assert run.status()["state"] == "completed" and (run.dir / "nb.ipynb").is_file()
    assert sorted(p.name for p in workdir.iterdir()) == ["home", "scratch disk", "t.yaml"]  # no '~', no '$...'
    assert str(scratch / "runs" / "t") in capsys.readouterr().out


def test_an_unset_variable_in_a_sweep_file_path_is_named_before_anything_runs(workdir, monkeypatch, capsys):
    """cron and systemd start with few variables: $SCRATCH set in a login shell is not set there."""
    monkeypatch.delenv("SWEEP_SCRATCH", raising=False)
    write_notebook(workdir / "nb.ipynb")
    path = _sweep_file(workdir, notebook="nb.ipynb", runs_dir="$SWEEP_SCRATCH/runs")

    assert main(["sweep", str(path)]) == 2

    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "t.yaml: runs_dir '$SWEEP_SCRATCH/runs' uses $SWEEP_SCRATCH, which is not set" in err
    assert "crontab" in err  # where to set it
    assert sorted(p.name for p in workdir.iterdir()) == ["nb.ipynb", "t.yaml"]


@pytest.mark.parametrize(
    "text, hint",
    [
        ("", "is empty"),
        ("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 12\n", "git lfs pull"),
        ('{\n<<<<<<< HEAD\n "cells": [],\n=======\n "cells": [{}],\n>>>>>>> other\n}\n', "merge conflict"),
        ('{"cells": [{"cell_type": "code", "source": "x = 1', "not a notebook"),
    ],
    ids=["empty", "lfs-pointer", "merge-conflict", "cut-short"],
)
def test_a_notebook_that_cannot_be_read_is_one_line_and_exit_2(workdir, capsys, text, hint):
    """A notebook left mid-merge, cut short by a crash, or checked out as a Git LFS pointer: a
    50-line nbformat traceback and exit 1, which a CI job reads as 'some run failed'."""
    (workdir / "nb.ipynb").write_text(text)
    path = _sweep_file(workdir, notebook="nb.ipynb")

    assert main(["sweep", str(path)]) == 2
    assert main(["sweep", str(path), "--dry-run"]) == 2

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0] == err[1], err
    assert err[0].startswith("error: SweepError: notebook 'nb.ipynb' ") and hint in err[0], err[0]
    assert not (workdir / "runs").exists()


def test_a_kernel_that_never_starts_is_not_blamed_on_a_cell(workdir, monkeypatch, capsys, caplog):
    """A kernelspec whose Python lost ipykernel (a venv rebuilt, a conda env updated): every run
    reported 'a cell: RuntimeError: Kernel died before replying to kernel_info', sending the reader
    to a notebook in which no cell ran."""
    spec = workdir / "jupyter" / "kernels" / "broken"
    spec.mkdir(parents=True)
    code = "import sys; sys.exit('No module named ipykernel_launcher')"
    (spec / "kernel.json").write_text(
        f'{{"argv": ["{sys.executable}", "-c", "{code}", "{{connection_file}}"], "display_name": "b", "language": "python"}}'
    )
    monkeypatch.setenv("JUPYTER_PATH", str(workdir / "jupyter"))
    write_notebook(workdir / "nb.ipynb")
    path = _sweep_file(workdir, notebook="nb.ipynb", kernel="broken")

    assert main(["sweep", str(path), "--quiet"]) == 1

    out = capsys.readouterr().out
    (run,) = sweep.plan(sweep.load_sweep(path))
    assert run.status()["error"]["stage"] == "before the first cell"
    assert f"FAILED {run.run_id}: before the first cell: RuntimeError: Kernel died before replying to kernel_info" in out, out
    # Why: the kernel's own last words, kept in the run's kernel.log (not the sweep's log).
    assert f"the kernel said: No module named ipykernel_launcher (all it said: {run.dir / 'kernel.log'})" in out, out
    assert "a cell" not in out
    # nbclient's own error for it (a second line per run in the log, naming the kernel's uuid) is dropped.
    assert not [r.getMessage() for r in caplog.records if "starting new kernel client" in r.getMessage()]
