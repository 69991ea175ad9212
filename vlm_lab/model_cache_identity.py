"""What a reference loads, as the model cache keys it: a local folder by its resolved path, a hub reference by
repo, commit and subfolder; the commit a hub revision points at (asked again after ``hub_refresh_s``); the
files' fingerprint.

Moved out of ``model_cache``: ``CacheIdentity`` is a base of ``ModelCache`` and uses its lock, entries and memos.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import torch

from vlm_lab.checkpoints import CheckpointRef, fingerprint, resolve
from vlm_lab.errors import CheckpointNotFoundError
from vlm_lab.hub_refs import hub_commit, hub_fingerprint


class CacheIdentity:
    """``ModelCache``'s keys and fingerprints (see the module docstring)."""

    def _loaded_identity(self, ref: CheckpointRef | str | os.PathLike[str]) -> str | None:
        """``_identity`` without asking the hub; a loaded folder deleted since (a trainer's ``save_total_limit``
        rotation) is still named by its path, so it can be evicted.

        Raises:
            CheckpointNotFoundError: ``ref`` resolves to nothing, and no loaded folder was at that path.
        """
        try:
            return self._identity(_as_ref(ref), ask=False)
        except CheckpointNotFoundError:
            gone = str(Path(os.path.expandvars(str(ref))).expanduser().resolve())
            with self._lock:
                if any(key[0] == gone for key in self._entries):
                    return gone
            raise

    def fingerprint(self, ref: CheckpointRef) -> str:
        """``checkpoints.fingerprint`` with this cache's file-hash memo (hashed outside the lock: seconds for a new 7 GB model).

        Hub refs: the commit their revision resolves to is asked again after
        ``hub_refresh_s`` (a request per ``get`` would slow every call). When asking
        fails (the hub unreachable and the local cache without the revision), the model
        already loaded keeps serving under its last known commit.
        """
        if ref.path is not None:
            return fingerprint(ref, memo=self._fingerprints)
        return hub_fingerprint(ref, self._commit(ref))

    def _commit(self, ref: CheckpointRef) -> str:
        """The commit a hub ref's revision points at now (within ``hub_refresh_s``); one question per
        revision, not per checkpoint folder of it. When it has moved on, the old commit's copies are dropped."""
        if _pinned(ref):  # a commit never moves
            return ref.revision
        key = _revision_key(ref)
        with self._lock:
            known = self._hub.get(key)
        if known is not None and time.monotonic() - known[1] < self.hub_refresh_s:
            return known[0]
        try:
            commit = hub_commit(ref)  # a request: outside the lock
        except CheckpointNotFoundError:
            if known is None:
                raise
            commit = known[0]
        with self._lock:
            self._hub[key] = (commit, time.monotonic())
            dropped = self._drop_commit(ref.repo_id, known[0]) if known is not None and known[0] != commit else []
        self._free(dropped)
        return commit

    def _drop_commit(self, repo_id: str, commit: str) -> list[torch.device]:
        """Evict ``repo_id``'s models at ``commit`` unless another revision still names it (``@v1`` and ``@<commit>``)."""
        if any(key.startswith(f"{repo_id}@") and known == commit for key, (known, _) in self._hub.items()):
            return []
        return [self._drop(key) for key in [k for k in self._entries if k[0].startswith(f"{repo_id}@{commit}:")]]

    def _identity(self, ref: CheckpointRef, *, ask: bool = True) -> str | None:
        """What ``ref`` loads: its resolved folder, or ``repo@commit:subfolder`` (None: a hub revision not
        resolved yet, when not ``ask``-ing)."""
        if ref.path is not None:
            return str(Path(ref.path).resolve())
        if ask:
            commit = self._commit(ref)
        elif _pinned(ref):
            commit = ref.revision
        elif (known := self._hub.get(_revision_key(ref))) is not None:
            commit = known[0]
        else:
            return None
        return f"{ref.repo_id}@{commit}:{ref.subfolder or ''}"


def _as_ref(ref: CheckpointRef | str | os.PathLike[str]) -> CheckpointRef:
    return ref if isinstance(ref, CheckpointRef) else resolve(str(ref), expand=False)[0]


def _revision_key(ref: CheckpointRef) -> str:
    """``repo@revision``: what a commit is asked for (every subfolder shares it; no revision is main)."""
    return f"{ref.repo_id}@{ref.revision or 'main'}"


def _pinned(ref: CheckpointRef) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{40}", ref.revision or ""))
