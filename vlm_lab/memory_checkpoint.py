"""What a checkpoint folder says without loading weights: configs, shapes, weight files.

The memory estimate (``vlm_lab.memory``) reads everything through here: the model
config and the model built from it on the ``meta`` device (every parameter's shape,
no storage), parameter counts per component (vision, projector, language), the
processor settings that decide image tokens, and the weight files' size and dtype
from their safetensors headers.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from vlm_lab.checkpoints import CheckpointRef
from vlm_lab.errors import CheckpointNotFoundError

COMPONENTS = ("vision", "projector", "language")
_PROJECTOR_KEYS = ("multi_modal_projector", "connector", "merger", "mm_projector")
_VISION_KEYS = ("vision_tower", "vision_model", "visual", "vision_encoder", "image_encoder")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointNotFoundError(f"cannot read {str(path)!r}: {e}; fix or remove the file") from e


def local_folder(ref: CheckpointRef) -> Path:
    """The folder holding config.json: the local path, or the hub cache for a hub id."""
    if ref.path is not None:
        return Path(ref.path)
    from transformers.utils import cached_file

    try:
        config = cached_file(ref.repo_id, "config.json", revision=ref.revision, subfolder=ref.subfolder or "")
    except OSError as e:
        raise CheckpointNotFoundError(
            f"cannot get config.json of {ref.spec!r} ({str(e).splitlines()[0]}); "
            "download it, or point at a folder holding config.json"
        ) from e
    folder = Path(config).parent
    for name in ("preprocessor_config.json", "processor_config.json"):
        try:  # optional: image-token counts fall back to the model config without them
            cached_file(ref.repo_id, name, revision=ref.revision, subfolder=ref.subfolder or "",
                        _raise_exceptions_for_missing_entries=False)
        except OSError:
            pass
    return folder


def processor_settings(folder: Path) -> dict[str, Any]:
    """preprocessor_config.json and processor_config.json merged (transformers 5 nests the image processor)."""
    merged = dict(_read_json(folder / "preprocessor_config.json"))
    processor = _read_json(folder / "processor_config.json")
    nested = processor.pop("image_processor", None)
    merged.update(processor)
    if isinstance(nested, dict):
        merged.update(nested)
    return merged


def weight_files(folder: Path) -> tuple[int, str | None]:
    """Total bytes of the weight files and their float dtype (from the safetensors headers)."""
    total, dtypes = 0, set()
    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
    for f in sorted(folder.glob("*.safetensors")):
        total += f.stat().st_size
        with f.open("rb") as fh:  # header: u64 length, then JSON {name: {dtype, shape, offsets}}
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        dtypes.update(names.get(v["dtype"], v["dtype"]) for k, v in header.items() if k != "__metadata__")
    if not total:
        total = sum(f.stat().st_size for f in folder.glob("*.bin"))
    floats = [d for d in dtypes if d in names.values()]
    return total, (floats[0] if len(floats) == 1 else None)


def load_config(folder: Path):
    """``AutoConfig`` from a folder, with a clear error when config.json is missing or unknown."""
    from transformers import AutoConfig

    if not (folder / "config.json").is_file():
        raise CheckpointNotFoundError(
            f"no config.json in {str(folder)!r}; point at a model folder (or a training output with checkpoint-N folders)"
        )
    try:
        return AutoConfig.from_pretrained(folder)
    except (ValueError, KeyError, OSError) as e:
        raise CheckpointNotFoundError(f"cannot read the model config in {str(folder)!r}: {str(e).splitlines()[0]}") from e


def meta_model(config):
    """The model built on the ``meta`` device: every parameter's shape, no storage, no init cost."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    with torch.device("meta"):
        try:
            return AutoModelForImageTextToText.from_config(config)
        except ValueError:  # not a VLM the image-text mapping knows: a text-only LM still gets an estimate
            return AutoModelForCausalLM.from_config(config)


def component_of(name: str) -> str:
    """vision | projector | language, from a parameter's qualified name."""
    parts = name.split(".")
    if any(p in _PROJECTOR_KEYS for p in parts):
        return "projector"
    if any(p in _VISION_KEYS for p in parts):
        return "vision"
    return "language"


def count_parameters(model) -> dict[str, int]:
    """Parameters per component; tied weights count once (as ``model.parameters()`` does)."""
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, p in model.named_parameters():
        counts[component_of(name)] += p.numel()
    return counts


def count_quantizable(model) -> dict[str, int]:
    """Per component, parameters in Linear weights outside the output head: what bitsandbytes quantizes."""
    import torch

    counts = dict.fromkeys(COMPONENTS, 0)
    seen: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head") and id(module.weight) not in seen:
            seen.add(id(module.weight))
            counts[component_of(name + ".weight")] += module.weight.numel()
    return counts
