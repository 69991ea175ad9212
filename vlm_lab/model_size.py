"""How many bytes a checkpoint's weights take once loaded, read before loading anything.

From the safetensors headers (a local folder's, a hub snapshot's in the local Hugging Face
cache, or the hub's own by range requests) or a torch pickle read on the meta device: what
``ModelCache`` charges a model before it loads it, so room is made first.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from vlm_lab.checkpoints import CheckpointRef, index_shards, unfinished_named
from vlm_lab.hub_cache import cached_weights
from vlm_lab.memory_checkpoint import Header, read_weights, safetensors_header

# safetensors dtype codes of floating tensors: these are cast to the load dtype, the rest keep theirs
_FLOAT_CODES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_TORCH_CODES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
                torch.int32: "I32", torch.int16: "I16", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2"}
_CODE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2}



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
