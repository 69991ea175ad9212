"""A sweep that cannot write its files: the OS error's cause is kept and each cause names its own fix."""

from __future__ import annotations

import contextlib
import errno

import pytest
import yaml

from mounts import tmpfs
from test_sweep import write_notebook
from vlm_lab import sweep
from vlm_lab.cli import main


@pytest.fixture
def sweep_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_notebook(tmp_path / "nb.ipynb")
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "notebook": "nb.ipynb", "grid": {"x": [1, 2, 3]}}))
    return path


@pytest.fixture
def mount(tmp_path):
    """``mount(name, options)``: a tmpfs at tmp_path/name, unmounted after (skips where mounting is not allowed)."""
    with contextlib.ExitStack() as mounted:
        yield lambda name, options: mounted.enter_context(tmpfs(tmp_path / name, options, lacking="no such filesystem to try"))


@pytest.mark.parametrize(
    "options, cause, fix, elsewhere",
    [("ro,size=1m", errno.EROFS, "is on a filesystem mounted read-only (`findmnt -T ", "remount it read-write, or pass {}, a writable folder"),
     ("size=64k", errno.ENOSPC, "The disk is full: free space on it (`df -h ", "or pass {} on another disk")],
)  # fmt: skip
def test_a_read_only_filesystem_and_a_full_disk_name_their_own_fix_and_keep_the_cause(sweep_file, mount, capsys, options, cause, fix, elsewhere):
    """Before, a read-only mount was told to make the folder writable for this user (no chmod can), and the
    error the CLI and a caller of run_sweep got had no errno: a full disk and a read-only mount read alike.
    A caller of run_sweep is told the argument it passes (``runs_dir='DIR'``), a shell user the flag (it was told
    ``--runs-dir``, which no Python caller can type)."""
    runs_dir = mount("runs", options)
    with pytest.raises(sweep.SweepWriteError) as caught:
        sweep.run_sweep(sweep.load_sweep(sweep_file, runs_dir=str(runs_dir)), progress=False)
    assert caught.value.errno == cause and caught.value.strerror, caught.value
    assert fix in str(caught.value) and str(caught.value).startswith("cannot write "), caught.value
    assert elsewhere.format("runs_dir='DIR'") in str(caught.value) and "--runs-dir" not in str(caught.value), caught.value
    assert main(["sweep", str(sweep_file), "--runs-dir", str(runs_dir), "--quiet"]) == sweep.WRITE_EXIT_CODE
    err = capsys.readouterr().err
    assert f"(errno {cause}); the sweep stopped starting runs. " in err and fix in err, err
    assert elsewhere.format("--runs-dir DIR") in err and "runs_dir=" not in err, err
    assert ("writable for this user" in err) == (cause == errno.EACCES), err


def test_a_runs_dir_that_is_a_file_names_the_argument_a_python_caller_passes(sweep_file, tmp_path):
    """A notebook or script calling run_sweep was told to pass --runs-dir, a flag it has no way to type."""
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(sweep.SweepWriteError) as caught:
        sweep.run_sweep(sweep.load_sweep(sweep_file, runs_dir="a-file"), progress=False)
    said = str(caught.value)
    assert "Pass runs_dir='DIR', a folder that can hold the runs (or set runs_dir: in the sweep file); then run the " \
           "sweep again" in said and "--" not in said, said  # fmt: skip


def test_a_file_size_limit_is_not_called_a_full_disk():
    """EFBIG comes from `ulimit -f` (or the filesystem's largest file): freeing space does nothing."""
    error = sweep.SweepWriteError.of(OSError(errno.EFBIG, "File too large", "runs/t/x/nb.ipynb"), sweep.Path("runs/t/x"))
    assert "`ulimit -f`" in str(error) and "Free space" not in str(error) and error.errno == errno.EFBIG
