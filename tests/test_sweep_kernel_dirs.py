"""The kernels' socket folders in the temp folder: none left behind by a sweep killed outright, none of a live
run's removed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from test_sweep import _wait_for, sweep_file  # noqa: F401 - the fixture
from vlm_lab import sweep, sweep_kernel_dirs
from vlm_lab.cli import main

PREFIX = "vlm-lab-kernel-"


@pytest.fixture
def tmpdir_short(monkeypatch):
    """A temp folder of the test's own, short (a unix socket path holds ~107 bytes), for this process and its children."""
    folder = Path(tempfile.mkdtemp(prefix="k", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _kernel_dirs(folder: Path) -> list[Path]:
    return sorted(folder.glob(PREFIX + "*"))


def test_the_kernel_folders_of_a_sweep_killed_outright_are_removed_by_the_next_invocation(
    sweep_file, tmp_path, tmpdir_short  # noqa: F811
):
    """SIGKILL (the OOM killer choosing the sweep, a CI job past its limit) skips the cleanup of the kernel's
    socket folder: each killed sweep left a vlm-lab-kernel-* folder in /tmp for ever."""
    slow = sweep_file({"x": [1]}, {"sleep_s": 60.0}, name="slow")
    (run,) = sweep.plan(sweep.load_sweep(slow))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlm_lab.cli", "sweep", str(slow), "--quiet"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(lambda: run.status()["state"] == "running" and _kernel_dirs(tmpdir_short), proc, "the run's kernel starting")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (left,) = _kernel_dirs(tmpdir_short)

    assert main(["sweep", str(sweep_file({"x": [1]}, name="fast")), "--quiet"]) == 0
    assert not left.exists() and not _kernel_dirs(tmpdir_short)


def test_a_live_runs_kernel_folder_is_kept(tmpdir_short):
    """Another process (another sweep, a scripts/run_notebook.py run) using its folder keeps it; once it is gone, it goes."""
    code = (
        "import sys\nfrom vlm_lab.sweep_kernel_dirs import kernel_dir\n"
        "with kernel_dir() as folder:\n    print(folder, flush=True)\n    sys.stdin.read()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        folder = Path(holder.stdout.readline().strip())
        with sweep_kernel_dirs.kernel_dir() as mine:  # this process's own, in use
            assert sweep_kernel_dirs.remove_leftovers() == []
            assert folder.is_dir() and mine.is_dir()
    finally:
        holder.kill()
        holder.wait()
    assert folder.is_dir()  # killed: its folder stays until the next cleanup
    assert sweep_kernel_dirs.remove_leftovers() == [folder] and not folder.exists()


def test_a_folder_without_an_owner_is_removed_only_when_no_kernel_listens_on_its_sockets(tmpdir_short):
    """Folders made before the owner lock (earlier vlm_lab) hold the kernel's sockets: dead ones are removed,
    a folder with a socket something listens on, an empty one (being made) and another user's are kept."""
    dead, live, empty = (Path(tempfile.mkdtemp(prefix=PREFIX)) for _ in range(3))
    listening = []
    for folder in (dead, live):
        for name in ("k-1", "k-2"):
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(folder / name))
            server.listen()
            listening.append(server)
    for server in listening[:2]:
        server.close()  # the files stay and nobody listens: a killed kernel's
    try:
        assert sweep_kernel_dirs.remove_leftovers() == [dead]
        assert live.is_dir() and empty.is_dir()
    finally:
        for server in listening[2:]:
            server.close()
    if os.getuid() == 0:  # another user's folder (its kernel dead too) is not ours to remove
        os.chown(live, 12345, -1)
        assert sweep_kernel_dirs.remove_leftovers() == [] and live.is_dir()
