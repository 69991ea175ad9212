"""Checkpoint references: what a user can point vlm_lab at, resolved to loadable places.

A reference is one of:

- a local model folder (holds ``config.json``), e.g. ``checkpoints/shapes/checkpoint-300``;
- a training-output folder whose ``checkpoint-N`` subfolders are discovered and
  sorted by N, e.g. ``checkpoints/shapes`` (expands to several references; a final
  model saved at its root comes after them);
- a hub id ``org/name``, optionally ``@revision`` and/or ``:subfolder``, e.g.
  ``llava-hf/llava-interleave-qwen-0.5b-hf@main`` or ``me/run:checkpoint-300``. A repo
  a Trainer pushed with ``hub_strategy="all_checkpoints"`` expands like a training-output
  folder: ``me/run[@rev]:checkpoint-N`` by N, then its root model if it has one (never
  when a ``:subfolder`` is named).

An existing folder always wins. A missing one is reported as a missing path, never
tried on the hub, when the reference can only be a path: it starts with ``.``,
``/`` or ``~``, has more than one ``/``, ends in ``checkpoint-N``, or its first
part is a local folder. Only a plain ``org/name`` is read as a hub id; offline
(``HF_HUB_OFFLINE=1``) it must be in the local Hugging Face cache, else the error
names both readings.

The hub half (parsing ``org/name[@revision][:subfolder]``, the commit, expanding a hub run, the hub's and
the local cache's errors) is in ``vlm_lab.hub_refs``; its public names are importable from here too.

``fingerprint`` identifies the *weights* a reference points at, so caches keyed
on it are never served stale results after a checkpoint is re-saved in place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Iterator, MutableMapping

from vlm_lab.errors import CheckpointNotFoundError

_CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
CACHE_ENV = "VLM_LAB_CACHE"  # where per-user caches live; default $XDG_CACHE_HOME/vlm_lab or ~/.cache/vlm_lab
# newest kept; a few KB per checkpoint, ~0.4 KB per image of a JSONL data set (its digest and size): 100k images
DIGEST_MEMO_ENTRIES = 250_000


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


def by_step(names: Iterable[str]) -> list[str]:
    """The ``checkpoint-N`` names among ``names``, sorted by N (not by name)."""
    matches = (_CHECKPOINT_DIR.match(n) for n in names)
    return [m.string for m in sorted(filter(None, matches), key=lambda m: int(m.group(1)))]


def index_shards(index: Path) -> list[str] | None:
    """The shard file names a sharded checkpoint's ``*.index.json`` lists (its ``weight_map``), sorted; None when
    it cannot be read (cut short, not JSON, no ``weight_map``)."""
    try:
        return sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def discover_checkpoints(folder: str | os.PathLike[str]) -> list[Path]:
    """``checkpoint-N`` subfolders of a training output folder that hold a config.json, sorted by N."""
    folder = Path(folder)
    children = folder.iterdir() if folder.is_dir() else ()
    return [folder / n for n in by_step(c.name for c in children if c.is_dir() and (c / "config.json").is_file())]


def _nearby(path: Path) -> str:
    """What does exist near a missing path, for the error message."""
    from vlm_lab.paths import nearby, nearest_existing

    from vlm_lab.hub_cache import listed

    parent = nearest_existing(path)
    ckpts = [p.name for p in discover_checkpoints(parent)] if parent.is_dir() else []
    if ckpts:  # the common case: a wrong step number; the steps nearest the one typed (a run may save hundreds)
        return f"found in {parent}: {listed(ckpts, path.name)}"
    return nearby(path)


def _broken_link(path: Path) -> str:
    """The symbolic link on ``path`` (itself or a parent) whose target does not exist, in words; "" when none."""
    for link in (path, *path.parents):
        if link.is_symlink() and not link.exists():
            return f"{str(link)!r} is a symbolic link to {os.readlink(link)!r}, which does not exist; point the link at a checkpoint folder, or name the folder itself"
    return ""


def _absolute(path: Path) -> Path:
    """``path`` made absolute against the working directory, ``..`` folded, symlinks kept."""
    return Path(os.path.abspath(path))


def _looks_local(spec: str) -> bool:
    """True when ``spec`` can only mean a path (see the module docstring), so a miss is never sent to the hub."""
    repo_part = spec.split(":", 1)[0].split("@", 1)[0]
    return (
        spec.startswith((".", "/", "~"))
        or not _HUB_ID.match(repo_part)  # also: more than one slash, or none
        or bool(_CHECKPOINT_DIR.match(repo_part.rsplit("/", 1)[-1]))
        or Path(repo_part.split("/", 1)[0]).is_dir()
    )


def _not_a_model_folder(spec: str, path: Path) -> str:
    """Why a folder without ``config.json`` (and without loadable ``checkpoint-N`` folders) is not a checkpoint."""
    steps = sorted((int(m.group(1)), c) for c in path.iterdir() if (m := _CHECKPOINT_DIR.match(c.name)) and c.is_dir())
    if not steps:
        from vlm_lab.hub_cache import listed, natural_key

        models = sorted((c for c in path.iterdir() if c.is_dir() and (c / "config.json").is_file()), key=lambda c: natural_key(c.name))
        if models:  # step_500, checkpoint-750-best, final: model folders a Trainer would not have named so
            return (
                f"no checkpoint at {spec!r}: it has no config.json, and its model folders are not named checkpoint-N "
                f"({listed([c.name for c in models], '')}), so their order is unknown; name them one by one, "
                f"e.g. {os.path.join(spec, models[0].name)}, or rename them checkpoint-<step> to compare the run in order"
            )
        return f"no checkpoint at {spec!r}: no config.json and no checkpoint-N folders ({_nearby(path / 'x')})"

    def holds(folder: Path) -> str:
        names = sorted(c.name for c in folder.iterdir() if not c.name.startswith("."))
        return f"it holds {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}" if names else "it is empty"

    shown = "; ".join(f"{c.name} has no config.json ({holds(c)})" for _, c in steps[:3])
    more = f"; {len(steps) - 3} more like them" if len(steps) > 3 else ""
    if any((c / "adapter_config.json").is_file() for _, c in steps):
        fix = ("they are PEFT/LoRA adapters, not models: merge each into its base model "
               "(model.merge_and_unload().save_pretrained(...), plus the processor) and compare the merged folders")  # fmt: skip
    else:
        fix = "point at folders written by save_pretrained (config.json, weights and tokenizer files)"
    return f"no checkpoint at {spec!r}: it has no config.json and its checkpoint-N folders are not model folders: {shown}{more}; {fix}"


def _run_order(checkpoints: list[CheckpointRef], final: CheckpointRef | None) -> list[CheckpointRef]:
    """A Trainer output (a folder or a hub repo): every checkpoint-N by N, then the model saved at
    its root (Trainer.save_model() at the end), which may differ from the last checkpoint."""
    return checkpoints + [final] if final is not None else checkpoints


class IncompleteCheckpointWarning(UserWarning):
    """A training output's ``checkpoint-N`` folder was left out: it cannot be loaded yet while others in
    the same folder can (a Trainer is still writing it, or deleting it to keep ``save_total_limit``)."""


def _incomplete(folder: Path, *, trainer_state: bool) -> str:
    """Why the ``checkpoint-N`` ``folder`` is not complete, in words ("" when it is): a Trainer writes the
    model (config.json first, then the weights), the tokenizer, the optimizer and trainer_state.json last."""
    from vlm_lab.memory_checkpoint import missing_for_loading, read_weights

    if not (folder / "config.json").is_file():
        return "no config.json"
    if missing := missing_for_loading(folder):
        return missing
    index = folder / "model.safetensors.index.json"
    shards = index_shards(index) if index.is_file() else []
    if shards is None:
        return f"{index.name} is not complete"
    if absent := sorted(s for s in shards if not (folder / s).is_file()):
        return f"no {absent[0]}{f' (and {len(absent) - 1} more shards)' if len(absent) > 1 else ''}, which {index.name} lists"
    try:
        read_weights(folder)
    except CheckpointNotFoundError:
        return "a weight file is cut short"
    if trainer_state and not (folder / "trainer_state.json").is_file():
        return "no trainer_state.json, which a Trainer writes last"
    return ""


@contextlib.contextmanager
def unfinished_named(folder: str | os.PathLike[str] | None) -> Iterator[None]:
    """A ``CheckpointNotFoundError`` raised inside about a ``checkpoint-N`` folder (cut-short weights, no
    tokenizer) also says, when other checkpoints beside it are complete, that a trainer may still be writing it."""
    try:
        yield
    except CheckpointNotFoundError as e:
        if folder is not None and (hint := _unfinished_hint(Path(folder))):
            raise CheckpointNotFoundError(f"{e}{hint}") from e
        raise


def _unfinished_hint(folder: Path) -> str:
    """``"; it is not complete (why), unlike checkpoint-M beside it: ..."`` for a checkpoint-N folder; else ""."""
    from vlm_lab.hub_cache import listed

    if not _CHECKPOINT_DIR.match(folder.name) or not folder.parent.is_dir():
        return ""
    others = [folder.parent / n for n in by_step(c.name for c in folder.parent.iterdir() if c.is_dir()) if n != folder.name]
    trainer_state = any((c / "trainer_state.json").is_file() for c in others)
    complete = [c.name for c in others if not _incomplete(c, trainer_state=trainer_state)]
    why = _incomplete(folder, trainer_state=trainer_state)
    if not complete or not why:
        return ""
    return (f"; it is not complete ({why}), unlike {listed(complete, folder.name)} beside it: a trainer may still be "
            "writing it; compare it once it is saved, or name a complete checkpoint")


def _complete_checkpoints(path: Path, found: list[Path], *, matched: bool = False) -> list[Path]:
    """``found`` without the checkpoint-N folders of ``path`` that are not complete while others are
    (each named in an ``IncompleteCheckpointWarning``: the ones of ``found`` when ``matched`` by a pattern,
    else also those without config.json); all of ``found`` when none is complete, so that loading them
    says what is wrong."""
    folders = [path / n for n in by_step(c.name for c in path.iterdir() if c.is_dir())]
    trainer_state = any((c / "trainer_state.json").is_file() for c in folders)
    why = {c: _incomplete(c, trainer_state=trainer_state) for c in folders}
    if all(why.values()):
        return found
    skipped = {c: w for c, w in why.items() if w and (c in found or not matched)}
    if skipped:
        from vlm_lab.hub_cache import listed

        complete = [c.name for c in folders if not why[c]]
        warnings.warn(
            f"skipping {'; '.join(f'{c} ({w})' for c, w in skipped.items())}: "
            f"{'it is' if len(skipped) == 1 else 'they are'} not complete, unlike {listed(complete, next(iter(skipped)).name)}; a trainer may "
            f"still be writing {'it' if len(skipped) == 1 else 'them'} (or deleting old checkpoints): run again once it "
            f"has, or name a complete checkpoint folder",
            IncompleteCheckpointWarning,
            stacklevel=4,
        )
    return [c for c in found if not why[c]]


def _resolve_folder(spec: str, path: Path, *, expand: bool) -> list[CheckpointRef]:
    found = discover_checkpoints(path)
    final = (path / "config.json").is_file()
    if found and (expand or not final):
        found = _complete_checkpoints(path, found)
    if final and not (expand and found):
        return [CheckpointRef(spec=spec, path=str(path))]
    if found and expand:
        refs = [CheckpointRef(spec=str(p), path=str(p)) for p in found]
        if final and (why := _incomplete(path, trainer_state=False)) and not _incomplete(found[-1], trainer_state=False):
            warnings.warn(  # Trainer.save_model() at the end of training, still writing
                f"skipping the final model saved in {path} ({why}): it is not complete, unlike {found[-1].name}; "
                "a trainer may still be saving it: run again once it has",
                IncompleteCheckpointWarning,
                stacklevel=3,
            )
            final = False
        return _run_order(refs, CheckpointRef(spec=spec, path=str(path)) if final else None)
    if found:
        return [CheckpointRef(spec=str(found[-1]), path=str(found[-1]))]
    raise CheckpointNotFoundError(_not_a_model_folder(spec, path))


def _resolve_pattern(spec: str, path: Path, *, expand: bool) -> list[CheckpointRef]:
    """A shell pattern (``runs/*/checkpoint-1000``, ``runs/a/checkpoint-*``, ``runs/**/final``), as notebooks,
    sweep files and the Space's settings pass it unexpanded: each matching folder that holds a model or
    ``checkpoint-N`` folders, in natural order (``checkpoint-50`` before ``checkpoint-500``); other matches
    (``runs/*`` matching a logs folder) are left out."""
    from vlm_lab.hub_cache import listed, natural_key

    matches = sorted((Path(m) for m in glob.glob(str(path), recursive=True) if os.path.isdir(m)), key=lambda m: natural_key(str(m)))
    models = [m for m in matches if (m / "config.json").is_file() or discover_checkpoints(m)]
    if not models:
        if matches:
            what = f"matches only folders without config.json or checkpoint-N folders ({listed([str(m) for m in matches], '')})"
        else:
            what = f"matches no folder ({_nearby(_absolute(path))})"
        raise CheckpointNotFoundError(f"no checkpoint at {spec!r}: the pattern {what}")
    steps = [m for m in models if _CHECKPOINT_DIR.match(m.name)]  # runs/a/checkpoint-*: the run's checkpoints by name
    for parent in dict.fromkeys(m.parent for m in steps):
        named = [m for m in steps if m.parent == parent]
        left_out = set(named) - set(_complete_checkpoints(parent, named, matched=True))
        models = [m for m in models if m not in left_out]
    return [ref for m in models for ref in _resolve_folder(str(m), m, expand=expand)]


def resolve(spec: str, *, expand: bool = True, check_hub: bool = True) -> list[CheckpointRef]:
    """Resolve one reference string into one or more ``CheckpointRef``.

    A training-output folder expands to its ``checkpoint-N`` folders (sorted by N),
    followed by the final model when one is saved at its root, when ``expand``;
    without ``expand`` it resolves to its final model, else its latest checkpoint.
    A hub repo whose revision holds ``checkpoint-N/config.json`` folders expands the same
    way (``org/run[@rev]:checkpoint-N``, listed by the hub online, from the cached snapshot
    offline or when the hub is unreachable). A model folder or other hub id resolves to itself.
    A shell pattern (``runs/*/checkpoint-1000``) resolves each folder it matches that holds a model or
    checkpoint-N folders, in natural order. Offline (``HF_HUB_OFFLINE=1``) a hub
    id must be in the local Hugging Face cache. A hub id with a ``:subfolder`` must have that
    folder's config.json on the hub (or, when it cannot be reached, in the cache) unless ``check_hub`` is
    False (then at load time, for a caller that serves what it can); another one is first asked of the
    hub when it is expanded, when the commit is needed (``fingerprint``) or at load time.

    Raises:
        CheckpointNotFoundError: nothing loadable there; the message lists what exists nearby
            (for a plain ``org/name``: both as a local folder and as a hub id).
    """
    from vlm_lab.hub_refs import (
        _HUB_URL, _check_cached_if_offline, _expand_hub_run, _spec_of_url, check_hub_config, parse_hub_ref,
    )

    spec = str(spec).strip()
    if not spec:
        raise CheckpointNotFoundError("empty checkpoint reference; pass a folder or a hub id org/name")
    path = Path(os.path.expandvars(spec)).expanduser()  # $SCRATCH/runs/x as a notebook or sweep file passes it
    if path.is_dir():
        return _resolve_folder(spec, path, expand=expand)
    if path.is_file():
        holder = f"its folder, {str(path.parent)!r}" if (path.parent / "config.json").is_file() else "the folder that holds config.json"
        raise CheckpointNotFoundError(f"{spec!r} is a file; pass {holder}")
    if glob.has_magic(spec):
        return _resolve_pattern(spec, path, expand=expand)
    if (url := _HUB_URL.match(spec)) is not None:
        raise CheckpointNotFoundError(f"{spec!r} is a hub address, not a reference vlm_lab reads; write it as {_spec_of_url(url)}")
    if broken := _broken_link(path):
        raise CheckpointNotFoundError(f"no checkpoint at {spec!r}: {broken}")
    if _looks_local(spec):
        where = _absolute(path)
        unset = "".join(f"; ${name} is not set" for name in dict.fromkeys(re.findall(r"\$\{?(\w+)", str(path))))
        if spec.endswith("/") and not _looks_local(bare := spec.rstrip("/")):  # org/run/ pasted
            unset += f"; for the hub model, write it without the trailing slash: {bare}"
        raise CheckpointNotFoundError(f"no checkpoint at {str(where)!r} ({_nearby(where)}{unset})")
    ref = parse_hub_ref(spec)
    if ":" in spec:  # a subfolder named (even ":.") is one model: its config.json is checked now, with the other references
        if check_hub:
            check_hub_config(ref)
        else:
            _check_cached_if_offline(ref)
        return [ref]
    if expand and (run := _expand_hub_run(ref)):
        return run
    _check_cached_if_offline(ref)
    return [ref]


def resolve_all(specs: list[str] | tuple[str, ...] | str, *, check_hub: bool = True) -> list[CheckpointRef]:
    """Resolve several references (or one comma-separated string), keeping order, dropping repeats.

    Local folders are the same when their resolved paths are (``runs/x`` and ``/abs/runs/x``),
    hub refs when they name the same repo, revision and subfolder (``org/x`` and ``org/x@main:.``);
    the first spelling is kept. ``check_hub``: as ``resolve``'s.

    Raises:
        CheckpointNotFoundError: a reference resolves to nothing (several: one error that names each,
            so one run shows every typo); or none is given.
    """
    specs = _split(specs)
    refs, failed = _resolve_specs(specs, check_hub=check_hub)
    if failed or not refs:
        raise _not_resolved(failed, len(specs))
    return refs


def resolve_each(
    specs: list[str] | tuple[str, ...] | str, *, check_hub: bool = True,
) -> tuple[list[CheckpointRef], dict[str, CheckpointNotFoundError]]:
    """``resolve_all``, where a reference that fails does not stop the others (an explorer shows what it
    can): the checkpoints found, and each failed reference's error by its spelling.

    Raises:
        CheckpointNotFoundError: none given, or none resolves to anything.
    """
    specs = _split(specs)
    refs, failed = _resolve_specs(specs, check_hub=check_hub)
    if not refs:
        raise _not_resolved(failed, len(specs))
    return refs, failed


def _split(specs: list[str] | tuple[str, ...] | str) -> list[str]:
    return [s for s in specs.split(",") if s.strip()] if isinstance(specs, str) else list(specs)


def _resolve_specs(specs: list[str], *, check_hub: bool = True) -> tuple[list[CheckpointRef], dict[str, CheckpointNotFoundError]]:
    seen: dict[str, CheckpointRef] = {}
    failed: dict[str, CheckpointNotFoundError] = {}
    for spec in specs:
        try:
            found = resolve(spec, check_hub=check_hub)
        except CheckpointNotFoundError as e:
            failed[str(spec).strip()] = _beside_an_earlier_one(e, str(spec).strip(), specs)
            continue
        for ref in found:
            key = str(Path(ref.path).resolve()) if ref.path is not None else f"{ref.repo_id}@{ref.revision or 'main'}:{ref.subfolder or ''}"
            seen.setdefault(key, ref)
    return list(seen.values()), failed


def _beside_an_earlier_one(error: CheckpointNotFoundError, spec: str, specs: list[str]) -> CheckpointNotFoundError:
    """``error``, naming the checkpoint ``spec`` meant when it is a bare name beside (or in) an earlier entry's
    folder: ``runs/x/checkpoint-250,checkpoint-1000`` reads as if the folder carried over to the next entry."""
    if os.path.isabs(spec) or os.sep in spec:
        return error
    for earlier in (Path(e.strip()) for e in specs if e.strip() and e.strip() != spec):
        for candidate in (earlier.parent / spec, earlier / spec):
            if candidate.parent != Path(".") and candidate.exists():
                return CheckpointNotFoundError(f"{error}; each comma-separated entry is a path of its own: did you mean {str(candidate)!r}?")
    return error


def _not_resolved(failed: dict[str, CheckpointNotFoundError], given: int) -> CheckpointNotFoundError:
    """The one error for the references that resolve to nothing: its own when one, each numbered when several."""
    if not failed:
        return CheckpointNotFoundError("no checkpoints given; pass at least one folder or hub id")
    if len(failed) == 1:
        return next(iter(failed.values()))
    each = "; ".join(f"({i}) {e}" for i, e in enumerate(failed.values(), start=1))
    return CheckpointNotFoundError(f"{len(failed)} of {given} checkpoint references resolve to nothing: {each}")


# Files that say how training went, not what the model computes: never part of a fingerprint. Trainer.save_metrics()
# writes all_results.json, train_/eval_/test_/predict_results.json beside the final model at a run's root: in its
# fingerprint they made a final model saved from the last checkpoint generate again, and each evaluation a cache miss.
_TRAINING_STATE = re.compile(r"^(trainer_state\.json|training_args\.bin|optimizer\.\w+|scheduler\.pt|scaler\.pt|rng_state.*\.pth|README\.md"
                             r"|(all|train|eval|test|predict)_results\.json)$")


def model_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The files of a model folder that decide its outputs: weights, configs, tokenizer, processor.

    Raises:
        CheckpointNotFoundError: the folder is gone (a trainer's ``save_total_limit`` deletes old checkpoints
            while a comparison of the run is under way).
    """
    folder = Path(folder)
    try:
        children = list(folder.iterdir())
    except FileNotFoundError as e:
        raise CheckpointNotFoundError(
            f"no checkpoint at {str(folder)!r} any more ({_nearby(_absolute(folder))}): it was removed after it was "
            "found (a trainer keeping save_total_limit checkpoints deletes the oldest); run again to compare what is there now"
        ) from e
    return sorted(p for p in children if p.is_file() and not p.name.startswith(".") and not _TRAINING_STATE.match(p.name))


def file_digest(path: Path, memo: MutableMapping[str, str] | None = None) -> str:
    """sha256 of a file's bytes, memoised on (path, size, mtime_ns, ctime_ns, inode).

    The memo makes repeated fingerprints free; the stat key is only a shortcut to
    the content hash, never a substitute for it. ``ctime`` cannot be set from user
    space, so a copy that preserves mtime (``cp -p``, ``shutil.copy2``, ``rsync -a``)
    still changes the key and the file is re-hashed.
    """
    key = stat_key(path)
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


def stat_key(path: str | os.PathLike[str]) -> str:
    """``path``'s memo key: (resolved path, size, mtime_ns, ctime_ns, inode); any write to the file changes its ctime."""
    st = os.stat(path)
    # os.path.realpath is Path.resolve without building Path objects: a third of a 20k-image re-run's data side
    return f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def digest_memo_path() -> Path:
    """The per-user file that remembers file digests across runs and output folders."""
    base = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vlm_lab"
    return Path(base) / "file-digests.json"


def load_digest_memo(path: Path | None = None) -> dict[str, str]:
    """The remembered ``file_digest`` results (empty when missing or unreadable; entries not text are left out)."""
    try:
        memo = json.loads((path or digest_memo_path()).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in memo.items() if isinstance(v, str)} if isinstance(memo, dict) else {}


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

    Hub: repo id, the commit the revision resolves to, and the subfolder. The commit
    comes from the hub when it can be reached, else from the local Hugging Face cache
    (``refs/<revision>``, as transformers resolves it to load offline); a 40-hex
    revision is already one. The commit names the cached snapshot exactly (its files
    are stored by content hash), so the snapshot is not hashed again. When neither the
    hub nor the cache knows the commit, nothing can be loaded either, and the revision's
    name ("main") would let different weights share cached results: that raises.

    Raises:
        CheckpointNotFoundError: a hub reference whose commit cannot be found.
    """
    if ref.path is None:
        from vlm_lab.hub_refs import hub_commit, hub_fingerprint

        return hub_fingerprint(ref, hub_commit(ref))
    h = hashlib.sha256()
    for p in model_files(ref.path):
        h.update(f"{p.name}:{file_digest(p, memo)}\n".encode())
    return h.hexdigest()[:16]


def processor_fingerprint(ref: CheckpointRef, *, memo: MutableMapping[str, str] | None = None) -> str:
    """A hash of what turns a sample into model inputs: tokenizer, processor, chat template, and config.json.

    config.json is in because ``AutoProcessor`` reads it when no processor file names a processor class
    (hand-assembled folders, repos saved before processors were): its ``model_type`` (or ``processor_class``,
    ``tokenizer_class``) then picks the class, so the same processor files beside a LLaVA config make a
    ``LlavaProcessor`` and beside a Llama config a bare tokenizer. The whole file, not those keys: which keys a
    processor class reads is its own business. The checkpoints of one training run have one config.json, so they
    still share the fingerprint (and encoded batches). Weights and generation_config.json are left out.
    Hub refs: their fingerprint.
    """
    if ref.path is None:
        return fingerprint(ref, memo=memo)
    h = hashlib.sha256()
    for p in model_files(ref.path):
        if p.suffix not in WEIGHT_SUFFIXES and p.name != "generation_config.json":
            h.update(f"{p.name}:{file_digest(p, memo)}\n".encode())
    return h.hexdigest()[:16]


# The hub half lives in vlm_lab.hub_refs (which imports from here); its public names stay importable from here.
_HUB_NAMES = ("parse_hub_ref", "hub_commit", "hub_fingerprint", "check_hub_config", "offline_cache_hint",
              "HubUnreachableWarning", "CachedListingWarning", "HUB_LISTING_ENTRIES")  # fmt: skip


def __getattr__(name: str):
    if name in _HUB_NAMES:
        from vlm_lab import hub_refs

        return getattr(hub_refs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
