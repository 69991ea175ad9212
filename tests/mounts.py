"""Small filesystems for tests (tmpfs): a disk that fills up, or a folder nobody can write to.

These tests run as root, which chmod does not stop: only a read-only mount refuses root's writes (EROFS).
Where mounting is refused (no CAP_SYS_ADMIN), the test is skipped with the reason.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(folder: Path, options: str, *, lacking: str) -> Iterator[Path]:
    """``folder`` (created) as a tmpfs mounted with ``options`` (``size=4m``, ``ro,size=1m``) for the block, unmounted
    after; ``lacking`` says what the test goes without when no tmpfs can be mounted (the skip's reason)."""
    if not shutil.which("mount"):
        pytest.skip(f"no mount command: {lacking}")
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"no tmpfs can be mounted here ({mounted.stderr.strip()}): {lacking}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)  # lazy: a process the test started may still be in it


@pytest.fixture
def read_only_folder(tmp_path) -> Iterator[Path]:
    """An empty folder on a read-only filesystem: writing in it fails with EROFS, for root too."""
    with tmpfs(tmp_path / "read-only", "ro,size=1m", lacking="no read-only folder to try") as folder:
        yield folder
