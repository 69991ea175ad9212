"""The one explicit model cache: loaded checkpoints, LRU-evicted to stay under a byte budget.

The budget is in bytes, not a number of models: "a T4 holds at most two 7 GB
models" is what a 16 GB budget and those models' sizes work out to, never a
hard-coded 2. Before loading, a checkpoint's size is *estimated* (``size_fn``,
by default from its safetensors headers, local, in the Hugging Face cache or on the
hub: parameter counts times the bytes of the dtype it is loaded in), so a model is
loaded only once room is made for it; when loading it would go over the budget, the least
recently used models are evicted first and their memory freed (``gc.collect``
plus ``torch.cuda.empty_cache`` on GPU). After loading, an entry is charged
``max(estimate, measured parameter + buffer bytes)``.

The budget counts weights only. Activations, the KV cache and the CUDA context
need headroom on top: on a 16 GB T4, two 7 GB models fit a 16 GB budget but
leave ~2 GB to generate with. Keep one cache per device.

Entries are keyed by what is loaded, not by how it was written: a local folder by
its resolved path (``runs/x`` and ``/abs/runs/x`` are one model; files changed in
place reload it), a hub reference by repo, commit and subfolder (``org/run``,
``org/run@main`` and ``org/run@<that commit>`` are one model, loaded once and charged
once; when ``main`` moves on, the copy of its old commit is dropped).

A model a caller still holds a reference to cannot be freed by eviction; the
cache drops its own references and leaves the rest to the garbage collector.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import math
import os
import re
import threading
import time
from pathlib import Path
from typing import Callable

import torch

from vlm_lab.checkpoints import CheckpointRef, fingerprint, index_shards, resolve, unfinished_named
from vlm_lab.config import parse_bytes
from vlm_lab.errors import CheckpointNotFoundError, ConfigError, MemoryBudgetError
from vlm_lab.hub_refs import hub_commit, hub_fingerprint
from vlm_lab.hub_cache import cached_weights
from vlm_lab.memory_checkpoint import Header, read_weights, safetensors_header
from vlm_lab.models import LoadedModel, load_model, model_nbytes, resolve_device, resolve_dtype

SizeFn = Callable[[CheckpointRef, torch.dtype], "int | None"]

GB = 10**9
# safetensors dtype codes of floating tensors: these are cast to the load dtype, the rest keep theirs
_FLOAT_CODES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_TORCH_CODES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
                torch.int32: "I32", torch.int16: "I16", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}
_CODE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}


def format_bytes(n: float | None) -> str:
    if n is None or n != n:
        return "-"
    for unit, size in (("GB", GB), ("MB", 10**6), ("kB", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def estimate_nbytes(ref: CheckpointRef, dtype: torch.dtype) -> int | None:
    """Bytes ``ref``'s weights will take once loaded in ``dtype``, before loading anything.

    From the safetensors headers (floating tensors counted at ``dtype``'s size, the rest
    as stored): a local folder's, a hub reference's in the local Hugging Face cache, or,
    when its weights are not all cached yet and the hub can be asked, the hub's (a few kB
    read per file, not the weights); a torch pickle's (``pytorch_model.bin``) read on the meta
    device. From the weight files' sizes when a pickle cannot be read so; None when nothing tells (the cache then charges the measured size after
    loading).

    Raises:
        CheckpointNotFoundError: a weight file is a Git-LFS pointer or not a valid safetensors file.
    """
    if ref.path is None:
        return _hub_nbytes(ref, dtype)
    with unfinished_named(ref.path):
        weights = read_weights(Path(ref.path))
    return _nbytes(weights, dtype)


def _nbytes(weights: dict[Path, Header | None], dtype: torch.dtype) -> int | None:
    """What weight files with these headers take loaded in ``dtype``. A torch pickle (no header) is read on the meta
    device (shapes and dtypes, no data); one that cannot be (an old non-zip pickle) charges every file its size."""
    weights = {path: header if header is not None else _pickle_header(path) for path, header in weights.items()}
    if not weights or None in weights.values():
        return sum(p.stat().st_size for p in weights) or None
    item = torch.empty((), dtype=dtype).element_size()
    return sum(
        math.prod(shape) * (item if code in _FLOAT_CODES else _CODE_BYTES.get(code, 1))
        for header in weights.values()
        for code, shape in header.values()
    )


def _pickle_header(path: Path) -> Header | None:
    """A ``pytorch_model.bin``'s tensors as a safetensors header, read without their data; None when it cannot be."""
    try:
        state = torch.load(path, map_location="meta", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not a zip pickle, or not a state dict of tensors: loading says what is wrong
        return None
    if not isinstance(state, dict):
        return None
    return {name: (_TORCH_CODES.get(t.dtype, "U8"), list(t.shape)) for name, t in state.items() if isinstance(t, torch.Tensor)}


def _hub_nbytes(ref: CheckpointRef, dtype: torch.dtype) -> int | None:
    """``estimate_nbytes`` of a hub reference: its cached weight files, else the hub's safetensors headers."""
    from huggingface_hub import constants, is_offline_mode

    files = cached_weights(ref.repo_id, ref.revision, ref.subfolder, cache_dir=constants.HF_HUB_CACHE)
    if files is not None:
        return _nbytes({f: safetensors_header(f) if f.suffix == ".safetensors" else None for f in files}, dtype)
    if is_offline_mode():
        return None  # nothing to download from: loading says what is missing
    try:
        return _nbytes(_hub_headers(ref), dtype)
    except Exception:  # noqa: BLE001 - no safetensors on the hub, or it did not answer: loading reports what matters
        return None


def _hub_headers(ref: CheckpointRef) -> dict[Path, Header]:
    """The safetensors headers of a hub reference's weights, read from the hub (range requests, not the weights)."""
    from huggingface_hub import HfApi, hf_hub_download

    api, at = HfApi(), {"revision": ref.revision}
    prefix = f"{ref.subfolder.strip('/')}/" if ref.subfolder else ""
    if api.file_exists(ref.repo_id, f"{prefix}model.safetensors", **at):
        names = ["model.safetensors"]
    else:  # sharded (or no safetensors: the download of the index fails)
        index = Path(hf_hub_download(ref.repo_id, f"{prefix}model.safetensors.index.json", **at))
        names = index_shards(index)
        if names is None:
            raise ValueError(f"{index} lists no shards")  # sized by loading, as for any hub failure
    return {
        Path(name): {k: (t.dtype, t.shape) for k, t in api.parse_safetensors_file_metadata(ref.repo_id, prefix + name, **at).tensors.items()}
        for name in names
    }


def max_resident(budget_bytes: int, sizes: list[int]) -> int:
    """How many of the models of ``sizes`` (loaded in this order) fit the budget together."""
    used = count = 0
    for size in sizes:
        if used + size > budget_bytes:
            break
        used += size
        count += 1
    return count


def default_budget(device: torch.device) -> int:
    """90% of the GPU's memory on CUDA; half the machine's RAM on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * 0.9)
    import psutil

    return psutil.virtual_memory().total // 2


@dataclasses.dataclass
class _Entry:
    loaded: LoadedModel
    fingerprint: str
    nbytes: int


class ModelCache:
    """Loaded models, least recently used first out, within ``budget_bytes``.

    Args:
        budget_bytes: the most bytes of weights held at once (an int, or a string
            such as ``"16GB"``); None: 90% of the GPU's memory on CUDA, half the RAM on CPU.
        size_fn: ``(ref, torch_dtype) -> bytes | None``, the estimate made before loading;
            swap in a better one (e.g. a meta-device estimate) without touching the cache.
        loader: ``(ref, dtype=, device=) -> LoadedModel``; ``models.load_model`` by default.
        hub_refresh_s: how long the commit a hub revision (``org/name@main``) resolved to is
            trusted before the hub is asked again; a long-running Space then picks up new
            weights pushed to ``main`` within this time. A 40-hex commit revision never moves.

    Thread-safe: one lock around lookups, loads and evictions (the Space calls it from
    several request threads).
    """

    def __init__(
        self,
        budget_bytes: int | str | None = None,
        *,
        size_fn: SizeFn = estimate_nbytes,
        loader: Callable[..., LoadedModel] = load_model,
        hub_refresh_s: float = 300.0,
    ) -> None:
        self._budget = None if budget_bytes is None else parse_bytes(budget_bytes)
        if self._budget is not None and self._budget <= 0:
            raise ConfigError(f"budget_bytes must be > 0, got {budget_bytes!r}")
        if not hub_refresh_s >= 0:
            raise ConfigError(f"hub_refresh_s must be >= 0 seconds, got {hub_refresh_s!r}")
        self.size_fn = size_fn
        self.loader = loader
        self._entries: collections.OrderedDict[tuple, _Entry] = collections.OrderedDict()  # LRU first
        self._fingerprints: dict[str, str] = {}  # file-hash memo for checkpoints.fingerprint
        self._hub: dict[str, tuple[str, float]] = {}  # repo@revision -> (commit, monotonic time resolved)
        self.hub_refresh_s = hub_refresh_s
        self._lock = threading.RLock()
        self.stats = {"hits": 0, "loads": 0, "evictions": 0}

    # -- introspection -------------------------------------------------------------
    @property
    def budget_bytes(self) -> int | None:
        """The budget; None until the first load picks the device default."""
        return self._budget

    @property
    def used_bytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    @property
    def loaded(self) -> list[str]:
        """Names of the loaded checkpoints, least recently used first."""
        return [e.loaded.ref.name for e in self._entries.values()]

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, ref: CheckpointRef | str) -> bool:
        rid = self._loaded_identity(ref)
        return any(key[0] == rid for key in self._entries)

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
            if any(key[0] == gone for key in self._entries):
                return gone
            raise

    def __repr__(self) -> str:
        return f"ModelCache({len(self)} loaded, {format_bytes(self.used_bytes)} of {format_bytes(self._budget)})"

    def fingerprint(self, ref: CheckpointRef) -> str:
        """``checkpoints.fingerprint`` with this cache's file-hash memo.

        Hub refs: the commit their revision resolves to is asked again after
        ``hub_refresh_s`` (a request per ``get`` would slow every call). When asking
        fails (the hub unreachable and the local cache without the revision), the model
        already loaded keeps serving under its last known commit.
        """
        if ref.path is not None:
            with self._lock:
                return fingerprint(ref, memo=self._fingerprints)
        return hub_fingerprint(ref, self._commit(ref))

    def _commit(self, ref: CheckpointRef) -> str:
        """The commit a hub ref's revision points at now (within ``hub_refresh_s``); one question per
        revision, not per checkpoint folder of it. When it has moved on, the old commit's copies are dropped."""
        with self._lock:
            if _pinned(ref):  # a commit never moves
                return ref.revision
            key = _revision_key(ref)
            known = self._hub.get(key)
            if known is not None and time.monotonic() - known[1] < self.hub_refresh_s:
                return known[0]
            try:
                commit = hub_commit(ref)
            except CheckpointNotFoundError:
                if known is None:
                    raise
                commit = known[0]
            self._hub[key] = (commit, time.monotonic())
            if known is not None and known[0] != commit:
                self._drop_commit(ref.repo_id, known[0])
            return commit

    def _drop_commit(self, repo_id: str, commit: str) -> None:
        """Evict ``repo_id``'s models at ``commit`` unless another revision still names it (``@v1`` and ``@<commit>``)."""
        if any(key.startswith(f"{repo_id}@") and known == commit for key, (known, _) in self._hub.items()):
            return
        for key in [k for k in self._entries if k[0].startswith(f"{repo_id}@{commit}:")]:
            self._drop(key)

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

    # -- the cache -----------------------------------------------------------------
    def get(self, ref: CheckpointRef | str, *, dtype: str = "auto", device: str = "auto") -> LoadedModel:
        """The loaded model for ``ref``, loading it (and evicting LRU models) when needed.

        A checkpoint re-saved with different files at the same path is reloaded.

        Raises:
            MemoryBudgetError: the model alone is bigger than the budget.
            CheckpointNotFoundError, DeviceError: from loading.
        """
        ref = _as_ref(ref)
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        with self._lock:
            if ref.path is None:  # load the very commit the fingerprint names, not wherever the branch is by then
                commit = self._commit(ref)
                fp, ref = hub_fingerprint(ref, commit), dataclasses.replace(ref, revision=commit)
            else:
                fp = self.fingerprint(ref)
            key = (self._identity(ref), str(torch_dtype), str(dev))
            entry = self._entries.get(key)
            if entry is not None and entry.fingerprint == fp:
                self._entries.move_to_end(key)
                self.stats["hits"] += 1
                return entry.loaded
            if entry is not None:  # same path, different files: the old weights are stale
                self._drop(key)
            if self._budget is None:
                self._budget = default_budget(dev)
            estimate = self.size_fn(ref, torch_dtype)
            self._check_fits(ref, estimate or 0)
            self._make_room(estimate or 0)
            loaded = self.loader(ref, dtype=dtype, device=device)
            self.stats["loads"] += 1
            nbytes = max(model_nbytes(loaded.model), estimate or 0)
            try:
                self._check_fits(ref, nbytes)
            except MemoryBudgetError:
                del loaded
                self._free(dev)
                raise
            self._make_room(nbytes)
            self._entries[key] = _Entry(loaded, fp, nbytes)
            return loaded

    def evict(self, ref: CheckpointRef | str | None = None) -> list[str]:
        """Evict ``ref`` (every dtype/device it is loaded in), or the LRU model when None.

        Returns the names evicted.
        """
        with self._lock:
            if ref is None:
                keys = list(self._entries)[:1]
            else:
                rid = self._loaded_identity(ref)
                keys = [k for k in self._entries if k[0] == rid]
            names = [self._entries[k].loaded.ref.name for k in keys]
            for key in keys:
                self._drop(key)
            return names

    def clear(self) -> None:
        """Evict everything and free the memory."""
        with self._lock:
            for key in list(self._entries):
                self._drop(key)

    # -- internals -----------------------------------------------------------------
    def _check_fits(self, ref: CheckpointRef, nbytes: int) -> None:
        assert self._budget is not None
        if nbytes > self._budget:
            raise MemoryBudgetError(
                f"{ref.name} needs {format_bytes(nbytes)} but the model cache budget is {format_bytes(self._budget)}; "
                "raise the budget (ModelCache(budget_bytes=...), --memory-budget) or load in a smaller dtype (--dtype float16)"
            )

    def _make_room(self, nbytes: int) -> None:
        assert self._budget is not None
        while self._entries and self.used_bytes + nbytes > self._budget:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple) -> None:
        entry = self._entries.pop(key)
        device = entry.loaded.device
        self.stats["evictions"] += 1
        del entry
        self._free(device)

    @staticmethod
    def _free(device: torch.device) -> None:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _as_ref(ref: CheckpointRef | str | os.PathLike[str]) -> CheckpointRef:
    return ref if isinstance(ref, CheckpointRef) else resolve(str(ref), expand=False)[0]


def _revision_key(ref: CheckpointRef) -> str:
    """``repo@revision``: what a commit is asked for (every subfolder shares it; no revision is main)."""
    return f"{ref.repo_id}@{ref.revision or 'main'}"


def _pinned(ref: CheckpointRef) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{40}", ref.revision or ""))
