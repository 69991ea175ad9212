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

Shared means one object: a user who edits ``loaded.processor`` (``processor.tokenizer.padding_side = "right"``, a
``chat_template``, an image size) edits it for every model loaded with it so far. It is no longer what its files
make, so it is not handed out again: each processor's settings (``_settings``: the public attributes of it and
of its tokenizer and image processor, the tokenizer's vocabulary size and special tokens) are kept as it was
loaded and compared when it is next asked for, once per model load, never per batch; an edited one is left to
its holders and the next asker gets one read from the files.
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
_loaded_as: dict[str, str] = {}  # key -> the settings of the processor kept under it, as loaded
_digests: dict[str, str] = {}  # file_digest's memo: stat key -> sha256
_lock = threading.Lock()


def shared_processor(ref: CheckpointRef, load: Callable[[], Any]) -> Any:
    """The processor already loaded from ``ref``'s files (by anyone in this process), else ``load()``'s, kept for the next.

    ``load`` runs without a lock held; what it raises goes to the caller, and nothing is kept. Two threads asking
    at once for a processor not loaded yet may both load it; both get the one kept first. One its holders edited
    since is not handed out: ``load()``'s takes its place.
    """
    key = processor_key(ref)
    if key is not None:
        with _lock:
            kept = _unedited(key)
        if kept is not None:
            return kept
    processor = load()
    if key is None or processor_key(ref) != key:  # files changed while it loaded: which ones it read is unknown
        return processor
    with _lock:
        kept = _unedited(key)  # another thread's, kept while this one loaded
        if kept is not None:
            return kept
        try:
            _live[key] = processor  # in place of an edited one: its holders keep it
        except TypeError:  # an object that cannot be referenced weakly: used, not kept
            return processor
        _loaded_as[key] = _settings(processor)
        return processor


def edits(ref: CheckpointRef, processor: Any) -> list[str]:
    """The settings of ``processor`` (``_settings``' lines) that differ from those of ``ref``'s processor as its
    files made it; [] when none do, or when that is not known here (no processor kept for ``ref`` yet)."""
    key = processor_key(ref)
    with _lock:
        loaded_as = _loaded_as.get(key) if key is not None and key in _live else None
    if loaded_as is None:
        return []
    now = _settings(processor)
    if now == loaded_as:
        return []
    before = set(loaded_as.splitlines())
    return [line for line in now.splitlines() if line not in before] or ["(a setting removed)"]


def _unedited(key: str) -> Any:
    """The processor kept under ``key`` if it is still as loaded, else None (call with the lock held)."""
    processor = _live.get(key)
    if processor is None:
        _loaded_as.pop(key, None)
        return None
    return processor if _settings(processor) == _loaded_as.get(key) else None


def _settings(processor: Any) -> str:
    """What a user can change of a processor by setting attributes: the public ones of it and of its parts
    (tokenizer, image processor, ...), and a tokenizer's vocabulary size and special tokens (``add_tokens``,
    ``add_special_tokens``). About 0.3 ms for the shapes checkpoints' LLaVA processor. Left out: what a call changes by
    itself (the Rust tokenizer's padding state, warnings already given)."""
    parts, seen, out = [processor], set(), []
    while parts:
        part = parts.pop()
        if id(part) in seen:
            continue
        seen.add(id(part))
        out.append(type(part).__name__)
        for name, value in sorted(getattr(part, "__dict__", {}).items()):
            if name.startswith("_") or name in _VOLATILE:
                continue
            if hasattr(value, "save_pretrained"):  # a part: its own settings, not its repr
                parts.append(value)
            else:
                out.append(f"{name}={value!r}")
        if hasattr(part, "special_tokens_map") and hasattr(part, "__len__"):
            out.append(f"len={len(part)} special={part.special_tokens_map!r}")
    return "\n".join(out)


_VOLATILE = frozenset({"deprecation_warnings"})  # filled as warnings are given


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
