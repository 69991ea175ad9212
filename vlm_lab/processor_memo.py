"""One processor per process for the same files: loaded once, whoever asks for it.

A real VLM's processor costs 0.1-0.5 s to load (tokenizer files, chat template, image processor settings).
A comparison's context check loads it before any weights; the model cache loaded it again with each model;
the checkpoints of one training run (the same tokenizer, processor and chat template files) each loaded their
own. Here a processor is kept under what it is built from, and whoever loads those files again gets the one
already loaded: the check takes a loaded model's, a model load takes the check's, a run's checkpoints share one.

It is keyed by content, as the model cache keys weights (``checkpoints.fingerprint``): a local folder by the
sha256 of its processor files and config.json (``checkpoints.processor_fingerprint``: tokenizer, processor
settings, chat template; ``AutoProcessor`` can read the model type from config.json); a hub checkpoint by its
commit, only when pinned to one (a branch name says nothing of the files), and by the names of that snapshot's
files already in the local cache: the context check reads what is cached (``local_files_only``), and from a
snapshot a download left partial (tokenizer.json without tokenizer_config.json) a processor loads with no eos or
pad token; the model load that fetches the rest must not be handed that one. A checkpoint saved again with other
files is another key: it gets a new processor, whatever still holds the old one. File hashes are memoised on
each file's stat (path, size, mtime, ctime, inode: ``checkpoints.file_digest``), so asking again costs a stat
per file.

Holds nothing alive: processors are referenced weakly, and one that its users (a comparison, the model cache's
entries) have dropped is loaded again when next asked for.
"""

from __future__ import annotations

import os
import re
import threading
import weakref
from pathlib import Path
from typing import Any, Callable

from vlm_lab.checkpoints import CheckpointRef, processor_fingerprint
from vlm_lab.hub_refs import hub_fingerprint

DIGEST_ENTRIES = 4096  # file digests remembered (a few processor files per checkpoint), then forgotten and re-hashed

_live: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_digests: dict[str, str] = {}  # file_digest's memo: stat key -> sha256
_lock = threading.Lock()


def shared_processor(ref: CheckpointRef, load: Callable[[], Any]) -> Any:
    """The processor already loaded from ``ref``'s files (by anyone in this process), else ``load()``'s, kept for the next.

    ``load`` runs without a lock held; what it raises goes to the caller, and nothing is kept. Two threads asking
    at once for a processor not loaded yet may both load it; both get the one kept first.
    """
    key = processor_key(ref)
    if key is not None:
        with _lock:
            processor = _live.get(key)
        if processor is not None:
            return processor
    processor = load()
    if key is None or processor_key(ref) != key:  # files changed while it loaded: which ones it read is unknown
        return processor
    with _lock:
        try:
            return _live.setdefault(key, processor)
        except TypeError:  # an object that cannot be referenced weakly: used, not kept
            return processor


def processor_key(ref: CheckpointRef) -> str | None:
    """What ``ref``'s processor is built from (see the module docstring); None when it cannot be told."""
    if ref.path is None:
        if not re.fullmatch(r"[0-9a-f]{40}", ref.revision or ""):
            return None
        return f"hub:{hub_fingerprint(ref, ref.revision)}:{_cached_files(ref)}"
    global _digests
    if len(_digests) > DIGEST_ENTRIES:
        # only a memo: the next ask hashes again. A new dict, not clear(): another thread may be between
        # file_digest's `key in memo` and `memo[key]` on this one (it raised KeyError there)
        _digests = {}
    memo = _digests
    try:
        # the memo is read and written without the lock (a dict's lookups and sets are atomic, and it is never
        # cleared): hashing a tokenizer.json of tens of MB must not hold up another thread's processor
        return f"local:{processor_fingerprint(ref, memo=memo)}"
    except OSError:  # removed or unreadable: its load says what is wrong
        return None


def _cached_files(ref: CheckpointRef) -> str:
    """The non-weight files of a pinned hub ref's snapshot (its subfolder) in the local cache: what a load reads."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    from vlm_lab.checkpoints import WEIGHT_SUFFIXES

    folder = Path(constants.HF_HUB_CACHE, repo_folder_name(repo_id=ref.repo_id, repo_type="model"), "snapshots", ref.revision or "",
                  (ref.subfolder or "").strip("/"))
    try:  # is_file follows the cache's links to its blobs (a dangling one is not there)
        with os.scandir(folder) as entries:
            return ",".join(sorted(e.name for e in entries if e.is_file() and not e.name.endswith(WEIGHT_SUFFIXES)))
    except OSError:  # nothing cached yet
        return ""
