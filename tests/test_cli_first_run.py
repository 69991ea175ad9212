"""A newcomer's first commands before the embedded checkpoints exist, or from the wrong folder."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


def vlm_lab(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlm_lab.cli", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize("command", [["compare", "--quiet"], ["compare", "checkpoints/shapes", "--quiet"],
                                     ["memory", "--no-measure"], ["memory", "./checkpoints/shapes/", "--no-measure"]])
def test_the_default_checkpoints_not_built_yet_say_how_to_build_them(tmp_path, command):
    done = vlm_lab(tmp_path, *command)
    assert done.returncode == 2, done.stderr
    assert "vlm-lab checkpoints build --out checkpoints/shapes" in done.stderr
    assert "hf download" not in done.stderr  # it is no hub repo
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_run_from_a_subfolder_names_where_the_checkpoints_are(tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "checkpoints" / "shapes").mkdir(parents=True)
    (tmp_path / "notebooks").mkdir()
    done = vlm_lab(tmp_path / "notebooks", "compare", "--quiet")
    assert done.returncode == 2
    assert f"run from the project root ({tmp_path})" in done.stderr and str(tmp_path / "checkpoints" / "shapes") in done.stderr


def test_other_missing_references_keep_the_librarys_error(tmp_path):
    done = vlm_lab(tmp_path, "compare", "runs/x/checkpoint-5", "--quiet")
    assert done.returncode == 2 and "checkpoints build" not in done.stderr and "runs/x/checkpoint-5" in done.stderr


@pytest.mark.parametrize("command, message", [
    (["compare", "--seed", "-1", "--quiet"], "error: ConfigError: --seed must be a whole number from 0"),
    (["memory", "--batch-size", "0", "--no-measure"], "error: ConfigError: --batch-size must be a positive integer"),
])  # fmt: skip
def test_a_bad_flag_is_named_before_the_missing_checkpoints(tmp_path, command, message):
    """On a fresh clone the flag's error came second: the missing default checkpoints were said instead (and a
    test of --seed passed only where they had been built)."""
    done = vlm_lab(tmp_path, *command)
    assert done.returncode == 2 and done.stderr.startswith(message), done.stderr


def test_the_build_time_said_is_the_readmes(tmp_path):
    """The error said "about a minute" while README.md said three (a full build took 287 s on 2 busy cores)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    said = re.search(r"in (about [\w-]+ minutes?) on 2 CPU cores", readme).group(1)
    done = vlm_lab(tmp_path, "compare", "--quiet")
    assert f"({said} on 2 CPU cores" in done.stderr, done.stderr
