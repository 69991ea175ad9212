"""The on-disk result cache of ``compare``: one JSONL per (checkpoint fingerprint, generation key).

It lives in ``config.cache_dir`` (default ``OUTPUT_DIR/.cache``). The fingerprint
hashes the checkpoint's files (see ``checkpoints.fingerprint``), so a checkpoint
re-saved with other weights at the same path is never served stale results. The
generation key covers everything else that changes an output or its timing:
strategy, max_new_tokens, batch size (greedy outputs do not depend on it, but
latency and tokens/s do), seed (sampling only), dtype, device type and the
torch/transformers versions. Each line is
keyed by a hash of the sample's prompt and image (the sha256 of its file when it
was read from one, memoised on the file's stat, so a cached re-run neither decodes
nor reads an unchanged image; else its pixels), not by its id. Each
batch's lines are appended and flushed as it finishes (fsync at most once a
second and at the end); a torn last line from a crash is skipped on read, so
the cache never needs an atomic rewrite. ``compare`` hands the fsyncs to a
``Syncer`` thread: the disk's wait overlaps the next batches (fsync releases
the GIL; on a busy disk one took up to 150 ms, a third of the shapes
checkpoints' whole generate time), and waits for them before it saves any result:
a disk that refuses a line or an fsync (full, failing) stops the comparison with a
``CacheWriteError`` naming the file and the fix, and no result is saved that would
call the cache whole. A line the disk lost reads back torn (skipped), so the next
run generates it again rather than serving it wrong.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shlex
from pathlib import Path
from typing import Callable, MutableMapping, Sequence

from vlm_lab.config import GenerationConfig, parse_strategy
from vlm_lab.data import Sample
from vlm_lab.errors import OutputPathError

__all__ = ["CACHE_FORMAT", "Appender", "CacheWriteError", "ResultCache", "Syncer", "generation_key", "sample_key", "sample_keys"]

# 2: rows with NaN/inf scores end there and are marked (1 kept argmax-of-NaN noise, unmarked)
# 3: a sample read from a file is keyed by the file's bytes, not its decoded pixels
# 4: outputs cut off at max_new_tokens are marked "truncated" (3 did not say)
# 5: no output runs past the checkpoint's context (4 generated noise there) and a pad token emitted mid-answer counts
# 6: a checkpoint's own generation config no longer shapes its outputs (5 applied its repetition penalty, n-gram ban, ...
#    under any strategy), and each file records what of it was set aside
# 7: an encoder-decoder's forced first token (forced_bos_token_id) is applied (6 set it aside: Florence-2's and mBART's
#    answers lacked it; decoder-only answers are the same, it never fires on their prompts), and SET_ASIDE is a record
#    of its own
# 8: a file's key hashes its sha256 (memoised on its stat, so a re-run reads no unchanged image), not its bytes
CACHE_FORMAT = 8
# what the checkpoint's generation config set that the strategy did not use (the same in every run of a file: the
# checkpoint and the strategy decide it): a record of its own, written as a run starts, before its first result (6 kept
# it in the memory record a run writes as it ends: a run killed before that left results a re-run served unsaid)
SET_ASIDE = "generation_set_aside"


def sample_key(sample: Sample, memo: MutableMapping[str, str] | None = None) -> str:
    """A hash of what the output depends on, not the id: the prompt and the image.

    A sample read from a file hashes the file's bytes (nothing is decoded, so a fully
    cached re-run over large photos stays cheap); an in-memory image hashes its pixels.
    ``memo``: the digest memo (``checkpoints.load_digest_memo``), so an unchanged file is not read again.
    """
    return sample_keys(sample, memo)[0]


def sample_keys(sample: Sample, memo: MutableMapping[str, str] | None = None) -> tuple[str, str]:
    """``(sample_key, image_key)``: the image key hashes the image alone, so samples that ask
    several questions of one image (VQA sets do) share it; both from one read of the image.

    A file's sha256 is memoised in ``memo`` on its stat, as checkpoint files are (``checkpoints.file_digest``):
    a re-run over 20k photos read 3 GB to find every result cached. Any write changes the file's ctime, so a file
    changed in place, even with its size and mtime put back, is read again."""
    path = sample.source_file
    if path is not None:
        from vlm_lab.checkpoints import file_digest
        from vlm_lab.errors import DataError

        try:
            digest = file_digest(Path(path), memo)
        except OSError as e:
            raise DataError(f"cannot read image {path}: {e.strerror}") from e
        # never equal to a pixel key; "as-shown": since files are decoded as shown (EXIF orientation,
        # transparency on white), results computed on the raw pixels before are not served; likewise
        # deep grey files (16-bit, float), scaled to 8 bits since, where Pillow clipped them before
        h = hashlib.sha256(f"file-as-shown{'-scaled' if _deep_grey(path, digest, memo) else ''}:{digest}".encode())
    else:
        h = hashlib.sha256()
        img = sample.image
        h.update(f"{img.mode}:{img.size[0]}x{img.size[1]}:".encode())
        h.update(img.tobytes())
    image_key = h.hexdigest()[:24]
    h.update(b"\0" + sample.prompt.encode("utf-8"))
    return h.hexdigest()[:24], image_key


def _deep_grey(path, digest: str, memo: MutableMapping[str, str] | None) -> bool:
    """Whether ``path`` is a 16-bit, 32-bit or float grey image (``data.as_shown`` scales those).
    Reads the header only, once per content (memoised by the file's ``digest``); a JPEG cannot be one."""
    if Path(path).suffix.lower() in (".jpg", ".jpeg"):
        return False
    key = f"deep-grey|{digest}"
    if memo is not None and memo.get(key) in ("0", "1"):
        return memo[key] == "1"
    from PIL import Image

    try:
        with Image.open(path) as img:
            deep = img.mode.startswith("I") or img.mode == "F"
    except Exception:  # noqa: BLE001 - not an image Pillow reads: loading it says why
        return False
    if memo is not None:
        memo[key] = "1" if deep else "0"
    return deep


def generation_key(gen: GenerationConfig, *, dtype: str, device_type: str) -> str:
    """Hash of every generation setting that changes outputs or their timings (only sampling uses the seed)."""
    import torch
    import transformers

    name, value = parse_strategy(gen.strategy)
    key = {
        "format": CACHE_FORMAT,
        "strategy": [name, value],  # parsed: nucleus(.5) and nucleus(0.5) are one strategy
        "max_new_tokens": gen.max_new_tokens,
        # the checkpoint's generation_config.json then shapes the outputs too: it is in the checkpoint's fingerprint
        "checkpoint_generation": gen.checkpoint_generation,
        "batch_size": gen.batch_size,  # the cached latency and tokens/s were measured at this batch size
        "dtype": dtype,
        "device": device_type,
        "torch": torch.__version__,
        "transformers": transformers.__version__,  # module attributes: importlib.metadata scans site-packages (ms per call)
    }
    if name in ("nucleus", "temperature"):  # seeded per batch: the outputs depend on the seed
        key.update(seed=gen.seed)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


class ResultCache:
    """Append-only JSONL of per-sample results for one (fingerprint, generation key)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> tuple[dict[str, dict], dict]:
        """``({sample key: result}, memory record)``; unreadable (torn) lines are skipped. The memory record also
        holds ``generation_set_aside`` (``SET_ASIDE``) once a run has started: what it learnt of its checkpoint, for a
        re-run that loads none (a file without results may hold that alone)."""
        results: dict[str, dict] = {}
        memory: dict = {}
        aside = None
        if not self.path.is_file():
            return results, memory
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a write cut short by a crash
            if "memory" in record:
                if (record["memory"].get("peak_memory_bytes") or 0) >= (memory.get("peak_memory_bytes") or 0):
                    memory = record["memory"]
            elif SET_ASIDE in record:
                aside = record[SET_ASIDE]
            elif "key" in record:
                results[record["key"]] = record
        return results, memory if aside is None else {**memory, SET_ASIDE: aside}

    def appender(self, *, syncer: Syncer | None = None) -> "Appender":
        """The file held open for a run's many appends (one open, not one per batch); ``syncer``: fsync there."""
        return Appender(self.path, syncer=syncer)


class CacheWriteError(OutputPathError):
    """A result cache that could not be written or fsynced (a full disk, a failing one, a quota).

    ``errno``, ``strerror`` and ``filename`` are the OS error's; the message names the fix for that cause.
    """

    def __str__(self) -> str:  # OSError's would be "[Errno 28] ...", without the fix
        return str(self.args[0]) if self.args else ""

    @classmethod
    def of(cls, error: OSError, path: Path) -> CacheWriteError:
        here = shlex.quote(str(path.parent))
        elsewhere = "or give the cache a folder on another disk (cache_dir='DIR')"
        fix = {
            errno.ENOSPC: f"the disk is full: free space on it (`df -h {here}`), {elsewhere}",
            errno.EDQUOT: f"your disk quota there is used up (`quota -s`): free some, {elsewhere}",
            errno.EIO: f"the disk failed to write it: check the disk (`dmesg`, `findmnt -T {here}`), {elsewhere}",
            errno.EROFS: f"its filesystem went read-only (`findmnt -T {here}`; a disk error does that): remount it "
                         f"read-write, {elsewhere}",
        }.get(error.errno, "give the cache a folder you can write to (cache_dir='DIR')")  # fmt: skip
        # nothing is served wrong on the next run: a line the disk lost reads as torn (skipped) and runs again
        made = cls(f"cannot write the result cache {path} ({error.strerror or error}, errno {error.errno}), so the comparison "
                   f"stopped and saved no results; {fix}; then run again: the results that reached the cache are served "
                   "from it, the rest are generated again")
        made.errno, made.strerror, made.filename = error.errno, error.strerror, str(path)
        return made


class Syncer:
    """fsyncs run one after another in a background thread; a context manager that waits for them all.

    Leaving the block raises the first fsync's error (a full or failing disk), unless the block
    itself raised; ``check`` raises it as soon as it is known, ``wait`` once all have ended.
    """

    def __init__(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlm-lab-fsync")
        self._pending: list = []

    def submit(self, fn: Callable[[], object]) -> None:
        self._pending.append(self._pool.submit(fn))

    def check(self) -> None:
        """Raises the first error of the fsyncs that have ended (a disk that failed one fails the next: generating on
        is time lost); waits for none."""
        ended = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]  # the list stays short: one fsync a second at most
        errors = [f.exception() for f in ended]
        if any(errors):
            raise next(e for e in errors if e is not None)

    def wait(self) -> None:
        """Until every fsync submitted so far has ended; raises the first one's error."""
        pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]  # exception() waits for each
        if any(errors):
            raise next(e for e in errors if e is not None)

    def __enter__(self) -> "Syncer":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True)  # also when interrupted: what was handed over reaches the disk


class Appender:
    """Whole JSON lines appended to one open file; a context manager that fsyncs on close.

    Each ``write`` reaches the OS before it returns, so a crashed or interrupted
    *process* loses nothing; with ``sync=False`` only a machine crash could lose it.
    With a ``syncer``, the fsyncs (and the close after the last) run in its thread.
    """

    def __init__(self, path: Path, *, syncer: Syncer | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._syncer = syncer
        self._closing = False
        self._failed = False
        self._file = open(path, "a+b")
        self._lead = b""
        if self._file.tell() > 0:  # a torn last line must not swallow the first new record
            self._file.seek(-1, os.SEEK_END)
            if self._file.read(1) != b"\n":
                self._lead = b"\n"

    def write(self, records: Sequence[dict], *, sync: bool = False) -> None:
        """Raises ``CacheWriteError`` when the disk refuses the lines (or refused an earlier fsync, told by now)."""
        if self._failed:  # the error is on its way up; a record written after it (the memory's) is not worth a second one
            return
        try:
            self._file.write(self._lead + "".join(json.dumps(r) + "\n" for r in records).encode("utf-8"))
            self._lead = b""
            self._file.flush()
        except OSError as e:
            self._failed = True
            raise CacheWriteError.of(e, self.path) from e
        if sync:
            if self._syncer is not None:
                self._syncer.check()
            fd = self._file.fileno()
            self._run(lambda: self._fsync(fd))

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            if self._failed:  # its unwritten lines stay in the buffer: closing would fail on them again
                try:
                    self._file.close()
                except OSError:
                    pass
                return
            try:
                self._file.flush()
            except OSError as e:
                raise CacheWriteError.of(e, self.path) from e
            self._run(self._fsync_and_close)  # after the fsyncs handed over before it (one thread, in order)

    def _fsync(self, fd: int) -> None:
        try:
            os.fsync(fd)
        except OSError as e:
            raise CacheWriteError.of(e, self.path) from e

    def _fsync_and_close(self) -> None:
        try:
            self._fsync(self._file.fileno())
        finally:
            self._file.close()

    def _run(self, fsync: Callable[[], object]) -> None:
        if self._syncer is None:
            fsync()
        else:
            self._syncer.submit(fsync)

    def __enter__(self) -> "Appender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
