"""What a checkpoint folder says without loading weights: configs, shapes, weight files.

The memory estimate (``vlm_lab.memory``) reads everything through here: the model
config and the model built from it on the ``meta`` device (every parameter's shape,
no storage), parameter counts per component (vision, projector, language), the
processor settings that decide image tokens, and the weight files' size and dtype
from their safetensors headers.

It is also the one place a weight file's header is read and checked (the model
cache's size estimate and ``models.load_model`` use it too): a Git-LFS pointer or
a truncated download is named as such, with the fix, before anything parses it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

from vlm_lab.checkpoints import CheckpointRef, index_shards, model_files
from vlm_lab.errors import CheckpointNotFoundError

COMPONENTS = ("vision", "projector", "language")
FLOAT_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}  # safetensors code -> torch name
_TORCH_WEIGHTS = (".bin", ".pt", ".pth")  # read when a folder has no safetensors
# A tokenizer's vocabulary, one of which a loadable tokenizer needs; tokenizer_config.json alone holds
# only settings, and transformers then fails with "Couldn't instantiate the backend tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt")
TOKENIZER_PATTERNS = ("*.model", "*.tiktoken")  # sentencepiece and tiktoken vocabularies (tokenizer.model, spiece.model)
# Settings files that loading parses as JSON (a broken one fails as a bare JSONDecodeError)
JSON_FILES = ("config.json", "generation_config.json", "processor_config.json", "preprocessor_config.json",
              "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
Header = dict[str, tuple[str, list[int]]]  # tensor name -> (safetensors dtype code, shape)
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
    """The folder holding config.json: the local path, or the hub cache for a hub id.

    The hub is asked first with one request and no retries (``check_hub_config``, which remembers a hub found
    down for the process): where it cannot be reached or fails (5xx), the files come from the local cache only.
    transformers' lookups have huggingface_hub retry every file the cache lacks for 23 s (an optional
    preprocessor_config.json included), three lookups for each checkpoint a Space plans at start: minutes
    before it served, for a hub that was down. A hub's answer (no such repo, revision or folder) is raised.

    Raises:
        CheckpointNotFoundError: the hub has no such repo, revision or config.json; or it cannot be reached
            (offline: is not asked) and the local cache lacks it. The message names what and the fix.
    """
    if ref.path is not None:
        return Path(ref.path)
    from transformers.utils import cached_file

    from vlm_lab.hub_refs import check_hub_config

    where = dict(revision=ref.revision, subfolder=ref.subfolder or "", local_files_only=check_hub_config(ref))
    try:
        config = cached_file(ref.repo_id, "config.json", **where)
    except OSError as e:
        raise CheckpointNotFoundError(
            f"cannot get config.json of {ref.spec!r} ({str(e).splitlines()[0]}); "
            "download it, or point at a folder holding config.json"
        ) from e
    folder = Path(config).parent
    for name in ("preprocessor_config.json", "processor_config.json"):
        try:  # optional: image-token counts fall back to the model config without them
            cached_file(ref.repo_id, name, **where, _raise_exceptions_for_missing_entries=False)
        except OSError:
            pass
    return folder


def processor_settings(folder: Path) -> dict[str, Any]:
    """preprocessor_config.json and processor_config.json merged (transformers 5 nests the image processor).

    The processor's own keys win over its image processor's, as in the processors: Pixtral's
    processor ``patch_size`` is an int, its image processor's a ``{"height", "width"}`` dict.
    """
    merged = dict(_read_json(folder / "preprocessor_config.json"))
    processor = _read_json(folder / "processor_config.json")
    nested = processor.pop("image_processor", None)
    if isinstance(nested, dict):
        merged.update(nested)
    merged.update(processor)
    return merged


def weight_paths(folder: Path) -> list[Path]:
    """The model's weight files present in ``folder``, as ``from_pretrained`` picks them (``loaded_weight_files``)."""
    return loaded_weight_files(folder)[0]


def loaded_weight_files(folder: Path) -> tuple[list[Path], bool]:
    """``(files, complete)``: the weight files ``from_pretrained`` loads from ``folder`` that are there, and whether
    every one it needs is (a shard an index lists may be missing; in the Hugging Face cache, a link to a blob not
    downloaded is missing). In transformers' order: ``model.safetensors`` (or the shards its index lists), then
    ``pytorch_model.bin`` (or its shards); else any ``*.safetensors``, else torch pickles (never optimizer or
    trainer state). A PEFT ``adapter_model.safetensors`` or a stray shard beside the model's own is not the
    model's weights: counting it over-charged the model cache and the estimate. One rule for local folders
    and cached hub snapshots (``hub_cache.cached_weights``). A folder that is not there has none (a hub
    subfolder not downloaded yet)."""
    if not folder.is_dir():
        return [], False
    for single in ("model.safetensors", "pytorch_model.bin"):
        index = folder / f"{single}.index.json"
        if index.is_file():
            named = index_shards(index)
            if named is None:  # a broken index: invalid_json names it when the folder is checked
                return [], False
            files = [folder / n for n in named]
            present = [f for f in files if f.is_file()]
            return present, len(present) == len(files)
        if (folder / single).is_file():
            return [folder / single], True
    shards = [p for p in sorted(folder.glob("*.safetensors")) if p.is_file()]
    files = shards or [p for p in model_files(folder) if p.suffix in _TORCH_WEIGHTS]
    return files, bool(files)


def _refuse_lfs_pointer(path: Path) -> None:
    with path.open("rb") as f:
        if f.read(len(_LFS_POINTER)) == _LFS_POINTER:
            raise CheckpointNotFoundError(
                f"{path} is a Git-LFS pointer, not the weights; run `git lfs pull` in its repository (or download the file)"
            )


def safetensors_header(path: Path) -> Header:
    """``{tensor name: (dtype code, shape)}`` of a safetensors file, reading only its header.

    Through the ``safetensors`` library, which checks the header length against the
    file, the JSON and that the tensors cover the data exactly: a truncated or
    corrupt file is refused before anything is allocated.

    Raises:
        CheckpointNotFoundError: a Git-LFS pointer, or not a valid safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    _refuse_lfs_pointer(path)
    header: Header = {}
    try:
        # numpy, not pt: the torch reader maps the whole file copy-on-write, which Linux refuses for a file larger
        # than RAM + swap ("unable to mmap ... Cannot allocate memory": one unsharded 30 GB model on a 16 GB laptop)
        with safe_open(path, framework="numpy") as f:
            for name in f.keys():
                tensor = f.get_slice(name)  # a view on the read-only mapped file: nothing is read
                header[name] = (tensor.get_dtype(), tensor.get_shape())
    except SafetensorError as e:  # e.g. "Error while deserializing header: invalid header length"
        detail = str(e).removeprefix("Error while deserializing header: ")
        raise CheckpointNotFoundError(
            f"{path} is not a valid safetensors file (header: {detail}; truncated or corrupt); "
            "re-download it (or save the checkpoint again)"
        ) from e
    return header


def read_weights(folder: Path) -> dict[Path, Header | None]:
    """Every weight file with its safetensors header (None for a torch pickle), each one checked.

    Raises:
        CheckpointNotFoundError: a weight file is a Git-LFS pointer or not a valid safetensors file.
    """
    weights: dict[Path, Header | None] = {}
    for path in weight_paths(folder):
        if path.suffix == ".safetensors":
            weights[path] = safetensors_header(path)
        else:
            _refuse_lfs_pointer(path)
            weights[path] = None
    return weights


def missing_for_loading(folder: Path) -> str:
    """What loading the model needs and ``folder`` lacks ("no weights or tokenizer in the folder"); "" when nothing."""
    missing = []
    if not weight_paths(folder):
        missing.append("weights")
    has_vocabulary = any((folder / name).is_file() for name in TOKENIZER_FILES) or any(
        any(folder.glob(pattern)) for pattern in TOKENIZER_PATTERNS
    )
    if not has_vocabulary:
        missing.append("tokenizer")
    if not missing:
        return ""
    why = f"no {' or '.join(missing)} in the folder"
    if not has_vocabulary and (folder / "tokenizer_config.json").is_file():
        why += ": tokenizer_config.json without tokenizer.json"
    return why


def invalid_json(folder: Path) -> str:
    """The first settings file in ``folder`` that is not valid JSON ("config.json is not valid JSON (why)"); "" when none."""
    for name in JSON_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return f"{name} is not valid JSON ({e})"
    return ""


def weight_files(folder: Path) -> tuple[int, str | None, int]:
    """Total bytes of the weight files, their float dtype and how many values they hold (from the safetensors headers).

    The values are 0 when a file is a torch pickle (only loading it would tell).

    Raises:
        CheckpointNotFoundError: a weight file is a Git-LFS pointer or not a valid safetensors file.
    """
    weights = read_weights(folder)
    dtypes = {FLOAT_DTYPES.get(code, code) for header in weights.values() for code, _ in (header or {}).values()}
    floats = [d for d in dtypes if d in FLOAT_DTYPES.values()]
    values = 0 if None in weights.values() else sum(math.prod(shape) for header in weights.values() for _, shape in header.values())
    return sum(p.stat().st_size for p in weights), (floats[0] if len(floats) == 1 else None), values


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


def require_vision_language(config, where: str) -> None:
    """Refuse a config that ``AutoModelForImageTextToText`` cannot build (a text-only LM, an encoder, a CLIP).

    Its estimate would have no image tokens and no vision tower: a verdict for a workload
    nobody runs, and the measurement (which loads through that Auto class) would fail.

    Raises:
        CheckpointNotFoundError: naming the model_type, what is profiled and the fix.
    """
    from transformers import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    from vlm_lab.memory_tokens import COUNTED_FAMILIES

    if type(config) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING:
        return
    raise CheckpointNotFoundError(
        f"{where} is not a vision-language model: config.json says model_type {config.model_type!r}, which "
        "AutoModelForImageTextToText cannot build (a text-only or vision-only model); vlm-lab memory profiles "
        f"image-text-to-text models: {', '.join(COUNTED_FAMILIES)} with their processor's image-token rule, and any other "
        f"model_type AutoModelForImageTextToText loads ({len(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING)} in this transformers) "
        "with the image-token count its config states, else one guessed; point at such a checkpoint, or fix model_type in config.json"
    )


def meta_model(config):
    """The model built on the ``meta`` device: every parameter's shape, no storage, no init cost."""
    import torch
    from transformers import AutoModelForImageTextToText

    from vlm_lab.model_construction import building_models

    with building_models("a model from its config (memory estimate)"), torch.device("meta"):  # another thread's load swaps the default dtype and tie_weights meanwhile
        return AutoModelForImageTextToText.from_config(config)


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


def _skipped(name: str, skip: tuple[str, ...]) -> bool:
    """``name`` is a module the quantizer leaves alone: a plain entry anywhere in its name (as
    bitsandbytes and AWQ match), or a ``re:`` pattern (compressed-tensors' ``ignore``)."""
    return any(re.match(s[3:], name) if s.startswith("re:") else s in name for s in skip)


def count_quantizable(model, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Per component, parameters in Linear weights outside the output head and ``skip``: what a quantizer shrinks."""
    import torch

    counts = dict.fromkeys(COMPONENTS, 0)
    seen: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head") and id(module.weight) not in seen and not _skipped(name, skip):
            seen.add(id(module.weight))
            counts[component_of(name + ".weight")] += module.weight.numel()
    return counts


# --------------------------------------------------------------------- pre-quantized checkpoints

_SKIP_KEYS = ("llm_int8_skip_modules", "modules_to_not_convert", "ignore", "ignored_layers")


@dataclasses.dataclass(frozen=True)
class StoredQuantization:
    """How a pre-quantized checkpoint stores its weights (config.json's ``quantization_config``).

    Such weights load quantized whatever dtype is asked (that is only the compute dtype),
    so the estimate counts them as stored: ``dtype`` is the closest weight format it knows
    (int4 for 4 bits and fewer, int8 for 8, FP8 included), "" when the bit width is not
    understood (then the weights are counted unquantized, an overestimate).
    """

    dtype: str  # int4 | int8 | ""
    description: str  # "bitsandbytes 4-bit (nf4)", "awq 4-bit"
    skip: tuple[str, ...]  # modules kept unquantized: names, or "re:" patterns
    min_capability: str = ""  # the CUDA compute capability transformers needs to keep the format ("8.9"); "" any
    below: str = ""  # what transformers does on a GPU below it: "dequantize" (to 16 bits) | "refuse" (raises)


# Formats whose transformers quantizer checks the GPU (transformers/quantizers/quantizer_*.py, validate_environment):
# fine-grained FP8 dequantizes to 16 bits below 8.9 (a T4, an A10G, an A100) and on CPU; fbgemm FP8 and NVFP4 raise.
_NEEDS_CAPABILITY = {"fp8": ("8.9", "dequantize"), "fbgemm_fp8": ("9.0", "refuse"), "nvfp4": ("10.0", "refuse")}


def _bits(q: dict[str, Any], method: str) -> int | None:
    if q.get("load_in_4bit") or q.get("_load_in_4bit"):
        return 4
    if q.get("load_in_8bit") or q.get("_load_in_8bit"):
        return 8
    for key in ("bits", "nbits", "w_bit"):  # awq, gptq, hqq, ...
        if isinstance(q.get(key), int):
            return q[key]
    groups = [g.get("weights") or {} for g in (q.get("config_groups") or {}).values() if isinstance(g, dict)]
    widths = [w["num_bits"] for w in groups if isinstance(w, dict) and isinstance(w.get("num_bits"), int)]
    if widths:  # compressed-tensors: the widest group decides
        return max(widths)
    weights = str(q.get("weights", ""))  # quanto: "int8", "int4", "float8"
    for width in (2, 4, 8):
        if weights.endswith(str(width)):
            return width
    if "fp8" in method or "float8" in method:
        return 8
    if "fp4" in method:  # mxfp4
        return 4
    return None


def stored_quantization(config) -> StoredQuantization | None:
    """The checkpoint's stored quantization, from its config; None when its weights are not quantized."""
    q = getattr(config, "quantization_config", None)
    if q is None:
        return None
    if not isinstance(q, dict):
        q = q.to_dict() if hasattr(q, "to_dict") else vars(q)
    method = str(q.get("quant_method", "unknown")).lower()
    bits = _bits(q, method)
    skip = tuple(str(s) for key in _SKIP_KEYS for s in (q.get(key) or ()) if isinstance(q.get(key), (list, tuple)))
    if bits is None or bits > 8:
        return StoredQuantization(dtype="", description=f"{method} (bit width not understood: weights counted unquantized)", skip=skip)
    kind = q.get("bnb_4bit_quant_type") if bits == 4 and method == "bitsandbytes" else None
    capability, below = _NEEDS_CAPABILITY.get(method, ("", ""))
    return StoredQuantization(dtype="int4" if bits <= 4 else "int8", description=f"{method} {bits}-bit" + (f" ({kind})" if kind else ""),
                              skip=skip, min_capability=capability, below=below)
