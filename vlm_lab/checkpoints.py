"""Checkpoint references: what a user can point vlm_lab at, resolved to loadable places.

A reference is one of:

- a local model folder (holds ``config.json``), e.g. ``checkpoints/shapes/checkpoint-300``;
- a training-output folder whose ``checkpoint-N`` subfolders are discovered and
  sorted by N, e.g. ``checkpoints/shapes`` (expands to several references);
- a hub id ``org/name``, optionally ``@revision`` and/or ``:subfolder``, e.g.
  ``llava-hf/llava-interleave-qwen-0.5b-hf@main`` or ``me/run:checkpoint-300``.

``fingerprint`` identifies the *weights* a reference points at, so caches keyed
on it are never served stale results after a checkpoint is re-saved in place.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import MutableMapping

from vlm_lab.errors import CheckpointNotFoundError

_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
CACHE_ENV = "VLM_LAB_CACHE"  # where per-user caches live; default $XDG_CACHE_HOME/vlm_lab or ~/.cache/vlm_lab
DIGEST_MEMO_ENTRIES = 20_000  # newest kept; a few KB per checkpoint


@dataclasses.dataclass(frozen=True)
class CheckpointRef:
    """A resolved reference: a local folder, or a hub repo at a revision and subfolder."""

    spec: str  # what the user wrote
    path: str | None = None  # local folder holding config.json
    repo_id: str | None = None
    revision: str | None = None
    subfolder: str | None = None

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def name(self) -> str:
        """Short display name: ``checkpoint-300``, ``org/name@rev:sub``."""
        if self.path is not None:
            p = Path(self.path)
            return p.name if _CHECKPOINT_DIR.match(p.name) else self.spec
        return self.spec

    @property
    def step(self) -> int | None:
        """The N of a ``checkpoint-N`` folder (or subfolder), else None."""
        leaf = Path(self.path).name if self.path else (self.subfolder or "").rstrip("/").split("/")[-1]
        m = _CHECKPOINT_DIR.match(leaf)
        return int(m.group(1)) if m else None

    def pretrained_kwargs(self) -> dict:
        """``from_pretrained`` arguments: the first positional plus revision/subfolder."""
        if self.path is not None:
            return {"pretrained_model_name_or_path": self.path}
        kw: dict = {"pretrained_model_name_or_path": self.repo_id}
        if self.revision:
            kw["revision"] = self.revision
        if self.subfolder:
            kw["subfolder"] = self.subfolder
        return kw


def discover_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """``checkpoint-N`` subfolders of a training output folder, sorted by N (not by name)."""
    folder = Path(folder)
    found = []
    for child in folder.iterdir() if folder.is_dir() else []:
        m = _CHECKPOINT_DIR.match(child.name)
        if m and child.is_dir() and (child / "config.json").is_file():
            found.append((int(m.group(1)), child))
    return [p for _, p in sorted(found)]


def parse_hub_ref(spec: str) -> CheckpointRef:
    """Parse ``org/name[@revision][:subfolder]`` into a hub reference."""
    rest, subfolder = spec, None
    if ":" in rest:
        rest, subfolder = rest.split(":", 1)
    revision = None
    if "@" in rest:
        rest, revision = rest.split("@", 1)
    if not _HUB_ID.match(rest) or revision == "" or subfolder == "":
        raise CheckpointNotFoundError(
            f"{spec!r} is neither a local folder nor a hub id; use a path, or org/name[@revision][:subfolder]"
        )
    return CheckpointRef(spec=spec, repo_id=rest, revision=revision, subfolder=subfolder)


def _nearby(path: Path) -> str:
    """What does exist near a missing path, for the error message."""
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.is_file():
        return f"{parent} is a file"
    ckpts = [p.name for p in discover_checkpoints(parent)]
    if ckpts:  # the common case: a wrong step number; list every step there is
        return f"found in {parent}: {', '.join(ckpts)}"
    children = sorted(c.name for c in parent.iterdir() if not c.name.startswith(".")) if parent.is_dir() else []
    if not children:
        return f"{parent} is empty"
    close = difflib.get_close_matches(path.name, children, n=3, cutoff=0.5)
    rest = [c for c in children if c not in close]
    shown = close + rest[: max(0, 8 - len(close))]
    return f"found in {parent}: {', '.join(shown)}" + (" ..." if len(children) > len(shown) else "")


def resolve(spec: str, *, expand: bool = True) -> list[CheckpointRef]:
    """Resolve one reference string into one or more ``CheckpointRef``.

    A training-output folder expands to its ``checkpoint-N`` folders (sorted by N)
    when ``expand``; a model folder or hub id resolves to itself.

    Raises:
        CheckpointNotFoundError: nothing loadable there; the message lists what exists nearby.
    """
    spec = str(spec).strip()
    if not spec:
        raise CheckpointNotFoundError("empty checkpoint reference; pass a folder or a hub id org/name")
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return [CheckpointRef(spec=spec, path=str(path))]
        found = discover_checkpoints(path)
        if found and expand:
            return [CheckpointRef(spec=str(p), path=str(p)) for p in found]
        if found:
            return [CheckpointRef(spec=str(found[-1]), path=str(found[-1]))]
        raise CheckpointNotFoundError(f"no checkpoint at {spec!r}: no config.json and no checkpoint-N folders ({_nearby(path / 'x')})")
    if path.is_file():
        raise CheckpointNotFoundError(f"{spec!r} is a file; pass the folder that holds config.json")
    head = spec.split("/", 1)[0]
    if spec.startswith((".", "/", "~")) or Path(head).is_dir() or not _HUB_ID.match(spec.split("@")[0].split(":")[0]):
        # clearly meant as a local path (or not a valid hub id): say what exists instead
        raise CheckpointNotFoundError(f"no checkpoint at {spec!r} ({_nearby(path)})")
    return [parse_hub_ref(spec)]


def resolve_all(specs: list[str] | tuple[str, ...] | str) -> list[CheckpointRef]:
    """Resolve several references (or one comma-separated string), keeping order, dropping repeats."""
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    seen: dict[str, CheckpointRef] = {}
    for spec in specs:
        for ref in resolve(spec):
            seen.setdefault(ref.path or ref.spec, ref)
    if not seen:
        raise CheckpointNotFoundError("no checkpoints given; pass at least one folder or hub id")
    return list(seen.values())


# Files that say how training went, not what the model computes: never part of a fingerprint.
_TRAINING_STATE = re.compile(r"^(trainer_state\.json|training_args\.bin|optimizer\.\w+|scheduler\.pt|scaler\.pt|rng_state.*\.pth|README\.md)$")


def model_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The files of a model folder that decide its outputs: weights, configs, tokenizer, processor."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and not _TRAINING_STATE.match(p.name))


def file_digest(path: Path, memo: MutableMapping[str, str] | None = None) -> str:
    """sha256 of a file's bytes, memoised on (path, size, mtime_ns, ctime_ns, inode).

    The memo makes repeated fingerprints free; the stat key is only a shortcut to
    the content hash, never a substitute for it. ``ctime`` cannot be set from user
    space, so a copy that preserves mtime (``cp -p``, ``shutil.copy2``, ``rsync -a``)
    still changes the key and the file is re-hashed.
    """
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"
    if memo is not None and key in memo:
        return memo[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    digest = h.hexdigest()
    if memo is not None:
        memo[key] = digest
    return digest


def digest_memo_path() -> Path:
    """The per-user file that remembers file digests across runs and output folders."""
    base = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vlm_lab"
    return Path(base) / "file-digests.json"


def load_digest_memo(path: Path | None = None) -> dict[str, str]:
    """The remembered ``file_digest`` results (empty when missing or unreadable)."""
    try:
        memo = json.loads((path or digest_memo_path()).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def save_digest_memo(memo: MutableMapping[str, str], path: Path | None = None) -> None:
    """Merge ``memo`` into the file (other processes may have added entries) and replace it atomically.

    Only a memo: a lost race or an unwritable cache costs a re-hash later, never an error.
    """
    from vlm_lab.data import atomic_write_text

    path = path or digest_memo_path()
    merged = {**load_digest_memo(path), **memo}
    if len(merged) > DIGEST_MEMO_ENTRIES:
        merged = dict(list(merged.items())[-DIGEST_MEMO_ENTRIES:])
    try:
        atomic_write_text(path, json.dumps(merged))
    except OSError:
        pass


def fingerprint(ref: CheckpointRef, *, memo: MutableMapping[str, str] | None = None) -> str:
    """A short hash that changes whenever what the checkpoint computes changes.

    Local: the sha256 of every model file (weights, config, tokenizer, processor,
    chat template; not trainer state). Content, not size + mtime: a checkpoint
    overwritten by a copy of another one keeps the same sizes and, with ``cp -p``,
    even an older mtime, and must still never be served cached results. Pass a
    ``memo`` (any mutable mapping, e.g. a dict loaded from JSON) to hash each file
    once: hashing runs at ~1 GB/s, a few seconds for a 7 GB model, and a re-run
    with an unchanged stat costs nothing.

    Hub: repo id, the commit the revision resolves to (when huggingface_hub can
    tell) and the subfolder.
    """
    h = hashlib.sha256()
    if ref.path is not None:
        for p in model_files(ref.path):
            h.update(f"{p.name}:{file_digest(p, memo)}\n".encode())
    else:
        h.update(json.dumps([ref.repo_id, _hub_commit(ref), ref.subfolder]).encode())
    return h.hexdigest()[:16]


def processor_fingerprint(ref: CheckpointRef, *, memo: MutableMapping[str, str] | None = None) -> str:
    """A hash of what turns a sample into model inputs: tokenizer, processor, chat template.

    Weights and model/generation configs are left out, so the checkpoints of one
    training run share it (and can share encoded batches). Hub refs: their fingerprint.
    """
    if ref.path is None:
        return fingerprint(ref, memo=memo)
    h = hashlib.sha256()
    for p in model_files(ref.path):
        if p.suffix not in WEIGHT_SUFFIXES and p.name not in ("config.json", "generation_config.json"):
            h.update(f"{p.name}:{file_digest(p, memo)}\n".encode())
    return h.hexdigest()[:16]


def _hub_commit(ref: CheckpointRef) -> str | None:
    """The commit a hub revision points at, from the local cache or the hub; else the revision."""
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(ref.repo_id, revision=ref.revision).sha or ref.revision
    except Exception:  # offline, gated, or unknown: fall back to the name of the revision
        return ref.revision or "main"
