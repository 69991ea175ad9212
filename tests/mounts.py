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


@contextlib.contextmanager
def thin_disk(folder: Path, *, lacking: str) -> Iterator[Path]:
    """``folder`` (created) as an ext4 filesystem with free space whose blocks live in a sparse file on a tmpfs that is
    full, as on thin-provisioned storage whose pool ran out: writes succeed (into the page cache) and the disk's
    write-back fails, so ``fsync`` raises ``ENOSPC``. Yields the pool's filler file: removed, the disk works again.

    A real disk error, not a mocked ``os.fsync``: the kernel reports it on the file's next fsync. No journal, and
    inode tables written by mkfs, so nothing but the files' own blocks needs the missing room.
    """
    if not shutil.which("losetup") or not shutil.which("mkfs.ext4"):
        pytest.skip(f"no losetup or mkfs.ext4: {lacking}")
    pool = folder.with_name(folder.name + "-pool")
    with tmpfs(pool, "size=4m", lacking=lacking):
        image = pool / "disk.img"
        with open(image, "wb") as f:
            f.truncate(16 * 2**20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-E", "lazy_itable_init=0", str(image)], check=True)
        filler = pool / "filler"
        with open(filler, "wb", buffering=0) as f:  # the pool's last free bytes
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 4096)
        attached = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True)
        if attached.returncode != 0:
            pytest.skip(f"no loop device can be attached here ({attached.stderr.strip()}): {lacking}")
        loop = attached.stdout.strip()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            subprocess.run(["mount", "-t", "ext4", loop, str(folder)], check=True)
            try:
                yield filler
            finally:
                subprocess.run(["umount", "--lazy", str(folder)], check=True)
        finally:
            subprocess.run(["losetup", "--detach", loop], check=True)
