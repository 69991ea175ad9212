"""Project-root discovery: relative paths in notebook parameters mean the same folder everywhere."""

from __future__ import annotations

import os

import pytest

from vlm_lab.errors import VlmLabError
from vlm_lab.paths import ROOT_ENV, enter_project_root, project_root


def test_finds_the_nearest_pyproject_upward(tmp_path, monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks" / "deep").mkdir(parents=True)
    assert project_root(tmp_path / "notebooks" / "deep") == tmp_path.resolve()
    assert project_root(tmp_path) == tmp_path.resolve()


def test_without_a_marker_the_start_folder_is_the_root(tmp_path, monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)
    if any((p / "pyproject.toml").is_file() for p in tmp_path.resolve().parents):
        pytest.skip("a pyproject.toml above the temp folder")
    assert project_root(tmp_path) == tmp_path.resolve()


def test_env_var_wins_and_a_bad_one_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv(ROOT_ENV, str(tmp_path))
    assert project_root("/") == tmp_path.resolve()
    monkeypatch.setenv(ROOT_ENV, str(tmp_path / "nope"))
    with pytest.raises(NotADirectoryError, match=f"unset it or point it") as info:
        project_root()
    assert isinstance(info.value, VlmLabError)  # the CLI and the Space print it as one line, not a traceback


def test_enter_changes_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(ROOT_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert enter_project_root() == tmp_path.resolve()
    assert os.getcwd() == str(tmp_path.resolve())
