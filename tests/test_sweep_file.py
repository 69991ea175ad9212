"""``load_sweep``'s errors in the words of its caller: keywords (``runs_dir='DIR'``) for a Python caller
(a notebook, a script), flags (``--runs-dir DIR``) for ``vlm-lab sweep``, the file's keys for the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from test_sweep import write_notebook
from vlm_lab import sweep
from vlm_lab.cli import main
from vlm_lab.errors import ConfigError


@pytest.fixture
def path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWEEP_UNSET", raising=False)
    write_notebook(tmp_path / "nb.ipynb")
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "notebook": "nb.ipynb", "grid": {"x": [1]}}))
    return path


@pytest.mark.parametrize(
    "given, said",
    [
        ({"runs_dir": "$SWEEP_UNSET/runs"}, "runs_dir='$SWEEP_UNSET/runs' uses $SWEEP_UNSET, which is not set here"),
        ({"notebook": "$SWEEP_UNSET/nb.ipynb"}, "notebook='$SWEEP_UNSET/nb.ipynb' uses $SWEEP_UNSET, which is not set"),
        ({"jobs": 0}, "jobs must be a positive integer, got 0 (jobs=0 was given with {path}; the file itself is fine)"),
        ({"runs_dir": 5}, "runs_dir must be text, got 5 (int) (runs_dir=5 was given with {path}; the file itself is fine)"),
        ({"jobs": 2, "shard_index": 3, "shard_count": 2}, "shard 3/2 is out of range; shards are 0-based: 0/2 .. 1/2 "
                                                          "(shard_index=3 was given with {path};"),
    ],
    ids=["unset-runs-dir", "unset-notebook", "jobs", "runs-dir-type", "shard"],
)
def test_a_bad_value_passed_to_load_sweep_is_named_as_a_python_caller_passed_it(path, given, said):
    """A notebook or script calling load_sweep(path, runs_dir=...) was told of '--runs-dir', a flag it has
    no way to pass, and that its value came 'e.g. from the command line'."""
    with pytest.raises(ConfigError) as e:
        sweep.load_sweep(path, **given)
    assert said.format(path=path) in str(e.value), str(e.value)
    assert "--" not in str(e.value) and "command line" not in str(e.value), str(e.value)


def test_an_overridden_path_in_the_file_is_not_expanded(path, tmp_path):
    """`runs_dir: $SCRATCH/runs` in the file and runs_dir= (or --runs-dir) from a crontab line where
    $SCRATCH is not set: the file's value is not used, so it stopped nothing."""
    path.write_text(path.read_text() + "runs_dir: $SWEEP_UNSET/runs\n")
    with pytest.raises(ConfigError, match=r"t\.yaml: runs_dir '\$SWEEP_UNSET/runs' uses \$SWEEP_UNSET"):
        sweep.load_sweep(path)
    assert sweep.load_sweep(path, runs_dir=str(tmp_path / "elsewhere")).runs_dir == str(tmp_path / "elsewhere")
    assert main(["sweep", str(path), "--runs-dir", "elsewhere", "--dry-run"]) == 0


def test_the_command_line_names_its_flags_and_the_file_its_keys(path, capsys):
    assert main(["sweep", str(path), "--runs-dir", "$SWEEP_UNSET/runs", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ConfigError: --runs-dir '$SWEEP_UNSET/runs' uses $SWEEP_UNSET, which is not set here"), err
    # the file's own errors keep its keys, also beside a flag
    path.write_text(path.read_text() + "runs_dir: 5\n")
    assert main(["sweep", str(path), "--jobs", "2", "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith(f"error: ConfigError: {path}: runs_dir must be text, got 5"), path.read_text()
    path.write_text(path.read_text().replace("runs_dir: 5", "jobs: 0"))
    assert main(["sweep", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith(f"error: ConfigError: {path}: jobs must be a positive integer, got 0")


@pytest.mark.parametrize(
    "flag, said",
    [
        (["--jobs", "0"], "--jobs 0 must be a positive integer (runs at once)"),
        (["-j", "-1"], "--jobs -1 must be a positive integer (runs at once)"),
        (["--shard", "3/2"], "--shard 3/2 is out of range; shards are 0-based: 0/2 .. 1/2"),
        (["--shard", "0/0"], "--shard 0/0 has no shards: N must be at least 1"),
    ],
)
def test_a_bad_count_flag_is_refused_once_by_the_parser(path, capsys, flag, said):
    """scripts/run_experiments.py passes its options to each sweep: a bad --jobs or --shard exited 2 for
    every sweep file ('invalid sweep file'), and was said as the file's field ('jobs must be ...')."""
    with pytest.raises(SystemExit) as e:
        main(["sweep", str(path), *flag, "--dry-run"])
    assert e.value.code == 2
    assert said in capsys.readouterr().err
    script = Path(__file__).resolve().parents[1] / "scripts" / "run_experiments.py"
    proc = subprocess.run([sys.executable, str(script), str(path), str(path), *flag], cwd=path.parent,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count(said) == 1, proc.stderr
    assert "sweep file" not in proc.stderr + proc.stdout and not (path.parent / "runs").exists()  # no sweep started


def test_a_file_that_names_its_own_sweep_file_is_refused(path):
    """``sweep_file`` records where load_sweep read the config; a file setting it would be silently overwritten."""
    path.write_text(path.read_text() + "sweep_file: other.yaml\n")
    with pytest.raises(ConfigError, match=r"t\.yaml: sweep_file is not a sweep file key .*remove it"):
        sweep.load_sweep(path)
    path.write_text(path.read_text().replace("sweep_file: other.yaml\n", ""))
    assert sweep.load_sweep(path).sweep_file == str(path)
