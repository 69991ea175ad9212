"""Load any VLM checkpoint through the generic Auto classes, on a chosen device and dtype.

One path for everything: ``AutoProcessor`` + ``AutoModelForImageTextToText``,
the same for the embedded tiny checkpoints, a user's own training output and a
hub model (llava-hf, SmolVLM, Qwen2-VL). No model-specific branches here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vlm_lab.checkpoints import CheckpointRef, resolve, unfinished_named
from vlm_lab.errors import CheckpointNotFoundError, DeviceError
from vlm_lab.hub_cache import cached_weights
from vlm_lab.hub_weights import download_weights
from vlm_lab.model_construction import building_models
from vlm_lab.transformers_bars import no_transformers_bars
from vlm_lab.hub_refs import check_hub_config, offline_cache_hint
from vlm_lab.memory_checkpoint import invalid_json, missing_for_loading, read_weights, weight_paths

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
QUIET_LOAD_BYTES = 256 * 2**20  # local weights smaller than this load in well under a second: no progress bar


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without CUDA is an error.

    Errors name the argument (``device='cpu'``), as a notebook or the explorer passes it; the CLI says its
    flag instead (``--device cpu``: ``vlm_lab.cli.flags_in_config_errors``).
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device={device!r} but CUDA is not available here; use device='cpu' (or device='auto')")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise DeviceError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def supports_bfloat16(device: torch.device) -> bool:
    """Native bfloat16 needs compute capability >= 8.0 (Ampere); a T4 (7.5) only emulates it, slowly."""
    if device.type != "cuda":
        return True
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Pick the torch dtype; refuse bfloat16 where the GPU has no native support.

    ``auto``: float32 on CPU; bfloat16 on GPUs that support it natively, else float16.
    """
    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32
        return torch.bfloat16 if supports_bfloat16(device) else torch.float16
    if dtype not in TORCH_DTYPES:
        raise DeviceError(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16")
    if dtype == "bfloat16" and not supports_bfloat16(device):
        raise no_native_bfloat16(torch.cuda.get_device_name(device), ".".join(map(str, torch.cuda.get_device_capability(device))))
    return TORCH_DTYPES[dtype]


def no_native_bfloat16(gpu: str, capability: str) -> DeviceError:
    """The error for bfloat16 on ``gpu`` (compute capability ``capability``, e.g. ``"7.5"``), which emulates it slowly."""
    return DeviceError(f"bfloat16 on {gpu} (compute capability {capability}) has no native support and runs slowly; "
                       "use dtype='float16' (or dtype='auto')")


@dataclasses.dataclass
class LoadedModel:
    """A model with its processor, and where/how it was loaded.

    ``processor`` is shared: every model loaded in this process from the same processor files and config.json (the
    checkpoints of one training run) holds the same object (``processor_memo``). Editing it (``processor.tokenizer
    .padding_side = "right"``, ``processor.chat_template = ...``) edits it for those already loaded too; a model
    loaded after the edit gets an unedited one, read from its files. To change one model's processor alone, give
    it a copy first (``loaded.processor = copy.deepcopy(loaded.processor)``, a few ms); to change a checkpoint's,
    save the edit into its folder (``processor.save_pretrained(path)``). ``compare`` refuses a model whose processor
    was edited: it caches results by the checkpoint's files.
    """

    ref: CheckpointRef
    model: Any
    processor: Any  # shared with the other models loaded from the same processor files (see above)
    device: torch.device
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return model_nbytes(self.model)


def model_nbytes(model: torch.nn.Module) -> int:
    """Bytes held by parameters and buffers (what loading the model costs)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def load_model(ref: CheckpointRef | str | os.PathLike[str], *, dtype: str = "auto", device: str = "auto", token: str | None = None) -> LoadedModel:
    """Load processor + model for ``ref`` on ``device`` in ``dtype``, in eval mode.

    Raises:
        CheckpointNotFoundError: nothing loadable at the reference: no weights or no
            tokenizer in a local folder, a settings file that is not valid JSON, a weight
            file that is a Git-LFS pointer or not a valid safetensors file (truncated,
            corrupt), a config that is not an image-text-to-text model, a processor
            without a chat template, weights that do not match config.json.
        DeviceError: the device or dtype cannot be used here.
    """
    from safetensors import SafetensorError

    if not isinstance(ref, CheckpointRef):
        ref = resolve(str(ref), expand=False)[0]
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    cache_only = False  # the hub cannot be reached: the cached files only, without a retried request per file
    if ref.path is not None:
        _check_folder(ref)
    else:
        cache_only = check_hub_config(ref, token=token)
    kwargs = ref.pretrained_kwargs() | {"trust_remote_code": False}  # refused below, never asked on stdin (a CLI hangs, a notebook waits)
    if token:
        kwargs["token"] = token
    if cache_only:
        kwargs["local_files_only"] = True
    try:
        with quiet_if_small(ref):
            config = _check_config(ref, kwargs)
            processor = load_processor(ref, kwargs)
            model = _load_weights(ref, kwargs, torch_dtype, config)
    except CheckpointNotFoundError:  # already says what and the fix (and is an OSError too)
        raise
    except OSError as e:  # transformers reports missing repos/files as OSError
        first = f"cannot load {ref.spec!r}: {e}".splitlines()[0].rstrip(".")
        raise CheckpointNotFoundError(first + offline_cache_hint(ref, cache_only=cache_only)) from e
    except SafetensorError as e:  # a hub download cut short (local folders are checked above)
        raise CheckpointNotFoundError(
            f"cannot load {ref.spec!r}: a weight file is not a valid safetensors file ({e}); download it again"
        ) from e
    model.to(dev).eval()
    if dev.type == "cpu" and ref.path is not None:
        _copy_out_of_files(model, weight_paths(Path(ref.path)))
    return LoadedModel(ref=ref, model=model, processor=processor, device=dev, dtype=torch_dtype)


def _copy_out_of_files(model: torch.nn.Module, files: list[Path]) -> None:
    """Copy into the process's own memory the CPU tensors that are memory-mapped views of ``files``.

    transformers maps safetensors files and, when the dtype is unchanged, keeps the mapped pages as the
    weights: a checkpoint saved again in place (``save_pretrained`` or ``cp`` over the folder) then changed
    the loaded model's weights under it, and a file truncated while being rewritten killed the process
    (SIGBUS) at the next forward. Where the mappings cannot be read (no ``/proc``), every CPU tensor is copied.
    """
    mapped = _mapped_ranges(files)
    copies: dict[int, torch.Tensor] = {}  # id of a tensor seen -> what stands for it now (itself when not mapped)
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for name, tensor in store.items():
                if tensor is None or tensor.device.type != "cpu":
                    continue
                if id(tensor) in copies:  # tied: one tensor in two modules; a Parameter was copied in place, a buffer replaced
                    store[name] = copies[id(tensor)]
                    continue
                copies[id(tensor)] = tensor
                if mapped is not None and not any(start <= tensor.data_ptr() < end for start, end in mapped):
                    continue
                if isinstance(tensor, torch.nn.Parameter):
                    tensor.data = tensor.data.clone()
                else:
                    store[name] = copies[id(tensor)] = tensor.clone()


def _mapped_ranges(files: list[Path]) -> list[tuple[int, int]] | None:
    """The address ranges at which ``files`` are mapped into this process (Linux ``/proc/self/maps``); None when unknown."""
    names = {str(f.resolve()) for f in files}
    try:
        lines = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    ranges = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] in names:
            start, end = fields[0].split("-")
            ranges.append((int(start, 16), int(end, 16)))
    return ranges


def _check_folder(ref: CheckpointRef) -> None:
    """A local folder holds weights, a tokenizer, valid JSON settings and valid weight files, or a
    clear error says what is wrong.

    Without this, transformers fails deep inside: a Git-LFS pointer as a ``MemoryError``
    or "header too large", a folder without tokenizer files (tokenizer_config.json alone
    included) as "Couldn't instantiate the backend tokenizer ... install sentencepiece",
    a broken config.json as a bare ``JSONDecodeError``.
    """
    folder = Path(ref.path)
    with unfinished_named(folder):  # checkpoint-N of a run a trainer is writing: not a broken file
        missing = missing_for_loading(folder)
        if missing and (sharded := _sharded_training_state(folder)):
            raise CheckpointNotFoundError(f"cannot load {ref.spec!r}: {missing}: {sharded}")
        if missing:
            raise CheckpointNotFoundError(
                f"cannot load {ref.spec!r}: {missing} (it needs weights, *.safetensors or *.bin, and tokenizer files, "
                "e.g. tokenizer.json); point at a complete model folder, e.g. one written by save_pretrained, "
                "or copy the missing files from the model it was trained from"
            )
        broken = invalid_json(folder)
        if broken:
            raise CheckpointNotFoundError(
                f"cannot load {ref.spec!r}: {broken}; fix the file, or save the checkpoint again with save_pretrained"
            )
        read_weights(folder)


def _sharded_training_state(folder: Path) -> str:
    """The weights of a checkpoint a sharded trainer saved without gathering them, and how to write them; "" when none.

    DeepSpeed ZeRO-3 (without ``stage3_gather_16bit_weights_on_model_save``) leaves ``global_stepN/`` and its
    ``zero_to_fp32.py``; FSDP with ``SHARDED_STATE_DICT`` leaves ``pytorch_model_fsdp_0/``.
    """
    if steps := sorted(p.name for p in folder.glob("global_step*") if p.is_dir()):
        converter = folder / "zero_to_fp32.py"
        how = f"python {converter} {folder} {folder} --safe_serialization" if converter.is_file() else "DeepSpeed's zero_to_fp32.py"
        return f"it holds a DeepSpeed ZeRO checkpoint ({steps[-1]}); write the model's weights with the zero_to_fp32.py beside it ({how})"
    if shards := sorted(p.name for p in folder.glob("pytorch_model_fsdp_*") if p.is_dir()):
        return (f"it holds an FSDP sharded checkpoint ({shards[0]}); merge it into the model's weights "
                f"(accelerate merge-weights {folder / shards[0]} {folder})")
    return ""


def _check_config(ref: CheckpointRef, kwargs: dict) -> Any:
    """The model config, readable and one ``AutoModelForImageTextToText`` can build a model from."""
    from transformers import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING, AutoConfig

    try:
        config = AutoConfig.from_pretrained(**kwargs)
    except ValueError as e:  # no model_type, or one this transformers does not know
        _refuse_remote_code(ref, e, kwargs)
        raise CheckpointNotFoundError(
            f"cannot load {ref.spec!r}: config.json is not usable ({str(e).splitlines()[0]}); "
            "fix its model_type, or upgrade transformers if the model is newer than it"
        ) from e
    if type(config) not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING:  # the check from_pretrained makes, before any weights load
        raise CheckpointNotFoundError(
            f"cannot load {ref.spec!r}: not an image-text-to-text model: AutoModelForImageTextToText cannot load "
            f"model_type {config.model_type!r}; point at a vision-language checkpoint (e.g. llava, idefics3, qwen2_vl) "
            "or fix model_type in config.json"
        )
    return config


def _refuse_remote_code(ref: CheckpointRef, error: ValueError, kwargs: dict) -> None:
    """Raise the fix when ``error`` is transformers refusing a checkpoint's own Python code (``auto_map``)."""
    if "custom code" not in str(error):  # transformers: "... contains custom code which must be executed ..."
        return
    from transformers import PretrainedConfig

    try:
        auto_map = PretrainedConfig.get_config_dict(**kwargs)[0].get("auto_map") or {}
    except Exception:  # noqa: BLE001 - only to name the classes
        auto_map = {}
    classes = sorted({v if isinstance(v, str) else next((c for c in v if c), "") for v in auto_map.values()} - {""})
    named = f" ({', '.join(classes[:3])})" if classes else ""
    raise CheckpointNotFoundError(
        f"cannot load {ref.spec!r}: it needs Python code shipped with the checkpoint{named}, which vlm_lab does not run "
        "(no trust_remote_code); point at a version of the model that transformers supports natively (often a '-hf' "
        "repo), or upgrade transformers if it has added this model"
    ) from error


def load_processor(ref: CheckpointRef, kwargs: dict) -> Any:
    """The processor as generation uses it: refused without a chat template (generation lays out image and
    prompt with it), its tokenizer left-padding (batched generation must left-pad).

    Loaded once per process for the same files (``processor_memo``): a comparison's context check, the model
    cache's load of each checkpoint and the other checkpoints of its run get the same processor.

    ``kwargs``: ``from_pretrained``'s (``ref.pretrained_kwargs()`` and the token, cache-only and remote-code settings).
    """
    from vlm_lab.processor_memo import shared_processor

    return shared_processor(ref, lambda: _load_processor(ref, kwargs))


def _load_processor(ref: CheckpointRef, kwargs: dict) -> Any:
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(**kwargs)
    except ValueError as e:
        _refuse_remote_code(ref, e, kwargs)
        if not str(e).startswith("Couldn't instantiate the backend tokenizer"):
            raise
        raise CheckpointNotFoundError(
            f"cannot load {ref.spec!r}: its tokenizer cannot be built from its files (no tokenizer.json, and the "
            "others are incomplete or need sentencepiece/tiktoken to convert); add tokenizer.json "
            "(processor.save_pretrained writes it), or pip install sentencepiece" + offline_cache_hint(ref, cache_only=kwargs.get("local_files_only", False))
        ) from e
    if not getattr(processor, "chat_template", None) and not _places_image_itself(processor):  # a bare tokenizer has the attribute too
        raise CheckpointNotFoundError(
            f"cannot load {ref.spec!r}: its processor has no chat template and does not place the image in a plain "
            "prompt itself (as PaliGemma's and BLIP-2's do); add chat_template.jinja to the folder (e.g. from the "
            "base model), or set processor.chat_template and save the processor again"
        )
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.padding_side = "left"
    return processor


def _places_image_itself(processor: Any) -> bool:
    """Whether a processor without a chat template puts its image tokens into a plain prompt (PaliGemma, BLIP-2).

    Tried on one small image: the encoded prompt must hold the processor's image token.
    """
    from PIL import Image

    token = getattr(processor, "image_token", None)
    tokenizer = getattr(processor, "tokenizer", None)
    if token is None or tokenizer is None or not hasattr(processor, "image_processor"):
        return False
    token_id = getattr(processor, "image_token_id", None)
    if token_id is None:
        token_id = tokenizer.convert_tokens_to_ids(str(token))
    try:
        ids = processor(images=[Image.new("RGB", (64, 64))], text=["a"], return_tensors="pt")["input_ids"]
    except Exception:  # noqa: BLE001 - any refusal of a plain prompt means the same thing
        return False
    return bool((ids == token_id).any())


def _load_weights(ref: CheckpointRef, kwargs: dict, dtype: torch.dtype, config: Any) -> Any:
    """The model (built from ``config``, read once), with weights whose shapes do not fit config.json named as such.

    transformers logs its load report (a table of missing, unexpected and mismatched
    tensors) just before it raises on a size mismatch: the report is held during the
    load, and let through unless the one-line error below replaces it.
    """
    from transformers import AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    logger = hf_logging.get_logger("transformers.modeling_utils")
    held = _HeldRecords()
    logger.addFilter(held)
    try:
        kwargs, hub_failed = download_weights(ref, kwargs, config)  # before the turn: no other thread's build waits for a download
        try:
            with building_models(ref.name):  # transformers swaps process-wide state while it loads (model_construction says what)
                return AutoModelForImageTextToText.from_pretrained(**kwargs, config=config, dtype=dtype)
        except OSError as e:  # asked again, the hub failed again: transformers would say the weights are not there
            if hub_failed is None:
                raise
            raise hub_failed from e
        except RuntimeError as e:
            if "ignore_mismatched_sizes" not in str(e):  # transformers' size-mismatch errors name this option
                raise
        # Only after a failed load, and outside its except block, so the failed load's traceback (and
        # the tensors its frames hold) is gone: load again for transformers' own list of mismatches.
        gc.collect()
        with building_models(ref.name):
            model, info = AutoModelForImageTextToText.from_pretrained(
                **kwargs, config=config, dtype=dtype, ignore_mismatched_sizes=True, output_loading_info=True
            )
        del model
        held.records.clear()
        mismatched = sorted(info.get("mismatched_keys", ()))
        first = ""
        if mismatched:
            name, saved, built = mismatched[0]
            first = (
                f" ({len(mismatched)} tensors differ, first {name}: {_shape(saved)} in the weights, "
                f"{_shape(built)} from config.json)"
            )
        raise CheckpointNotFoundError(
            f"cannot load {ref.spec!r}: the weights do not match config.json{first}; "
            "restore the config.json the weights were saved with, or point at the weights for this config"
        )
    finally:
        logger.removeFilter(held)
        for record in held.records:
            logger.handle(record)


class _HeldRecords(logging.Filter):
    """Holds a logger's records instead of letting them through."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False


def _shape(shape: Any) -> str:
    return "x".join(map(str, shape)) or "scalar"


@contextlib.contextmanager
def quiet_if_small(ref: CheckpointRef) -> Iterator[None]:
    """No transformers progress bar ("Loading weights", "Writing model shards") while a small
    checkpoint already on disk loads or saves (notebook and log noise).

    A local folder, or a hub reference whose weights are all in the local Hugging Face cache.
    Large weights, and hub weights that will be downloaded, keep transformers' bars: they take
    long enough to want one. Only transformers' own bars are touched (through its tqdm hook),
    never huggingface_hub's settings.
    """
    weights = _weights_on_disk(ref)
    if weights is None or sum(f.stat().st_size for f in weights) >= QUIET_LOAD_BYTES:
        yield
        return
    with no_transformers_bars():
        yield


def _weights_on_disk(ref: CheckpointRef) -> list[Path] | None:
    """The weight files ``ref`` loads from, when every one is on disk here; None when some would be downloaded."""
    if ref.path is not None:
        return weight_paths(Path(ref.path))
    from huggingface_hub import constants

    return cached_weights(ref.repo_id, ref.revision, ref.subfolder, cache_dir=constants.HF_HUB_CACHE)
