"""A finished comparison of a JSONL data set re-run: image files are known by their stat, not read again.

Each image file's sha256 (and its size, checked up front) is memoised on (path, size, mtime_ns, ctime_ns, inode) in
the per-user digest memo (``$VLM_LAB_CACHE``), as checkpoint files are: 20k photos of 150 kB were 3 GB read (and
20k headers parsed) on every re-run. A file changed in any way changes its ctime, so it is read again.
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import pytest
from PIL import Image

from vlm_lab import checkpoints
from vlm_lab.compare import compare
from vlm_lab.config import CompareConfig
from vlm_lab.data import load_samples, write_jsonl
from vlm_lab.model_cache import ModelCache


@pytest.fixture(scope="module")
def models():
    return ModelCache(budget_bytes="1GB")


@pytest.fixture
def data_file(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VLM_LAB_CACHE", str(tmp_path / "user-cache"))
    samples = load_samples("shapes:val:6")
    path = write_jsonl(samples, tmp_path / "data")
    for s in samples:  # uncompressed: another image of the same size is a file of the same size
        s.image.save(tmp_path / "data" / "images" / f"{s.id}.png", compress_level=0)
    return path


def _config(tmp_path, tiny_checkpoints, data_file) -> CompareConfig:
    return CompareConfig(checkpoints=(str(tiny_checkpoints[-2]), str(tiny_checkpoints[-1])), data=str(data_file), batch_size=4,
                         device="cpu", output_dir=str(tmp_path / "out"))


def _opens(monkeypatch, folder: Path) -> list[str]:
    """Every open of a file under ``folder`` from now on (PIL, hashlib and file_digest open through builtins.open)."""
    opened: list[str] = []
    real = builtins.open

    def counting(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file).resolve().is_relative_to(folder.resolve()):
            opened.append(str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting)
    return opened


def test_a_rerun_reads_no_image_file_when_nothing_changed(tmp_path, tiny_checkpoints, models, data_file, monkeypatch):
    config = _config(tmp_path, tiny_checkpoints, data_file)
    first = compare(config, progress=False, cache=models)
    opened = _opens(monkeypatch, data_file.parent / "images")
    again = compare(config, progress=False, cache=models)
    assert opened == []
    assert [s["from_cache"] for s in again.summary] == [6, 6]
    assert [r["outputs"] for r in again.rows] == [r["outputs"] for r in first.rows]


def test_an_image_rewritten_in_place_with_its_old_size_and_mtime_is_read_again(tmp_path, tiny_checkpoints, models, data_file):
    """Same path, size, inode and mtime (set back with os.utime, as ``cp -p`` or a careless tool would):
    only its ctime tells, and it must: its results are generated again, never served stale."""
    config = _config(tmp_path, tiny_checkpoints, data_file)
    first = compare(config, progress=False, cache=models)
    images = sorted((data_file.parent / "images").iterdir())
    target, other = images[0], next(p for p in images[1:] if p.stat().st_size == images[0].stat().st_size
                                     and p.read_bytes() != images[0].read_bytes())
    st = target.stat()
    with open(target, "r+b") as f:  # in place: the same inode
        f.write(other.read_bytes())
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (target.stat().st_size, target.stat().st_mtime_ns, target.stat().st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)

    again = compare(config, progress=False, cache=models)
    assert [s["from_cache"] for s in again.summary] == [5, 5]
    changed = next(i for i, r in enumerate(first.rows) if Path(data_file.parent, "images", target.name).stem == r["id"])
    assert again.rows[changed]["image"] != first.rows[changed]["image"]  # the page shows the new picture
    with Image.open(data_file.parent / "images" / other.name) as a, Image.open(tmp_path / "out" / again.rows[changed]["image"]) as b:
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("memo", ["{not json", '{"a": 5, "b": null}', "[1, 2]"])
def test_a_corrupt_memo_does_not_break_a_compare(tmp_path, tiny_checkpoints, models, data_file, memo):
    config = _config(tmp_path, tiny_checkpoints, data_file)
    first = compare(config, progress=False, cache=models)
    checkpoints.digest_memo_path().write_text(memo)
    again = compare(config, progress=False, cache=models)
    assert [s["from_cache"] for s in again.summary] == [6, 6]
    assert [r["outputs"] for r in again.rows] == [r["outputs"] for r in first.rows]


def test_an_unwritable_memo_does_not_break_a_compare(tmp_path, tiny_checkpoints, models, data_file, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("VLM_LAB_CACHE", str(tmp_path / "a-file" / "cache"))  # cannot be made, even by root
    config = _config(tmp_path, tiny_checkpoints, data_file)
    first = compare(config, progress=False, cache=models)
    again = compare(config, progress=False, cache=models)
    assert [s["from_cache"] for s in again.summary] == [6, 6]
    assert [r["outputs"] for r in again.rows] == [r["outputs"] for r in first.rows]
