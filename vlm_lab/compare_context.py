"""Before a comparison generates anything: does every sample leave room for an answer in every checkpoint?

A sample whose image and prompt fill the checkpoint's context (``generation.context_room``) cannot be
answered. Found when its batch runs, it would stop a comparison after many minutes of earlier checkpoints
and batches, and name only that one sample. Here each checkpoint's config (its context length) and its
processor (what each sample's tokens are) are read, no weights loaded, every sample still to run is
counted, and every sample that does not fit is named, with the fix, in one error.

The batches encoded for the count go into the comparison's encoding cache (``compare.ENCODING_CACHE_BYTES``,
512 MiB), so generation reuses them. Past that bound (about 380 LLaVA-336 images) the rest are encoded again
when they generate, which for a real VLM is small beside its generation time. The check encodes each batch once
per processor and keeps its rows' lengths, the same for every checkpoint with that processor (a training run's):
re-read from the cache, each batch past its bound was encoded again for each checkpoint. Lengths alone, with no
encodings kept, would instead encode every batch that fits twice (the check's, then generation's).

The processors are the ones the models load with (``processor_memo``: a model already loaded lends its own, and
the check's are returned, for the comparison to hold until its checkpoints have loaded), so the check loads no
processor twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from vlm_lab.checkpoints import CheckpointRef

Encode = Callable[[str, tuple[str, ...], Callable[[], dict]], dict]  # (processor fingerprint, sample keys, encode) -> batch


def check_context_room(
    runs: Sequence[tuple[CheckpointRef, str, str, Sequence[Sequence[tuple[str, Any]]]]],
    ids: Mapping[str, Sequence[str]],
    encoded: Encode,
    lines: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Refuse, before any generation, the samples whose image and prompt leave a checkpoint no room to answer.

    Args:
        runs: per checkpoint to run: its ref, display name, processor fingerprint, and its batches of (key, sample).
        ids: per sample key, the ids of the samples with that content (identical image and prompt run once).
        encoded: the comparison's encoding cache (``compare._EncodingCache.get``).
        lines: per sample id, its data file's line (``Sample.line``), named in the error.

    Returns:
        The processors it used, by processor fingerprint: held, the model loads take them instead of loading their own.

    Raises:
        ContextOverflowError: naming every sample that does not fit, its tokens and each checkpoint's limit.
    """
    from vlm_lab.generation import ContextOverflowError, context_length, context_room, encode_inputs

    processors: dict[str, Any] = {}
    lengths: dict[tuple[str, tuple[str, ...]], list[int]] = {}  # (processor, batch keys) -> each row's tokens
    configs: dict[bytes, Any] = {}  # config.json's bytes -> its config: a training run's checkpoints share one
    overflows: list[tuple[str, int, int, str]] = []
    for ref, name, processor_fp, chunks in runs:
        config = _config(ref, configs)
        if not chunks or config is None or context_length(config) is None:
            continue  # no context to overflow, or nothing readable yet: its load says what is wrong
        if processor_fp not in processors:
            processors[processor_fp] = _processor(ref)
        processor = processors[processor_fp]
        if processor is None:
            continue
        context = context_length(config)
        for chunk in chunks:
            keys = tuple(key for key, _ in chunk)
            if (processor_fp, keys) not in lengths:
                batch = encoded(processor_fp, keys, lambda chunk=chunk: encode_inputs(processor, [s for _, s in chunk]))
                lengths[processor_fp, keys] = [context - left for left in context_room(config, batch)[1]]  # type: ignore[index]
            overflows += [(sample_id, tokens, context, name)
                          for key, tokens in zip(keys, lengths[processor_fp, keys]) if tokens >= context for sample_id in ids[key]]
    if overflows:
        raise ContextOverflowError(*overflows[0], others=overflows[1:], lines=lines)
    return processors


def _config(ref: CheckpointRef, configs: dict[bytes, Any]) -> Any:
    """``AutoConfig`` of ``ref``, parsed once per distinct config.json of a local folder (a few ms each: transformers
    validates every field; 3 checkpoints' configs cost as much as 2% of their generate time on shapes)."""
    if ref.path is None:
        return _read(ref, "AutoConfig")
    try:
        text = (Path(ref.path) / "config.json").read_bytes()
    except OSError:
        return _read(ref, "AutoConfig")  # its load says what is wrong
    if text not in configs:
        configs[text] = _read(ref, "AutoConfig")
    return configs[text]


def _processor(ref: CheckpointRef) -> Any:
    """The processor as ``models.load_model`` loads it (its checks, left padding), or None if it cannot be loaded."""
    from vlm_lab.models import load_processor

    try:
        return load_processor(ref, _kwargs(ref))
    except Exception:  # noqa: BLE001 - a check ahead of the load; the load reports the problem properly
        return None


def _read(ref: CheckpointRef, auto: str) -> Any:
    """``AutoConfig``/``AutoProcessor`` of ``ref`` from files already here (a hub checkpoint not downloaded yet is
    checked by its batches as they run); None when it cannot be read: loading the model says why, with the fix."""
    import transformers

    try:
        return getattr(transformers, auto).from_pretrained(**_kwargs(ref))
    except Exception:  # noqa: BLE001 - a check ahead of the load; the load reports the problem properly
        return None


def _kwargs(ref: CheckpointRef) -> dict:
    """``from_pretrained``'s arguments for the check: never remote code, and only files already here."""
    return ref.pretrained_kwargs() | {"trust_remote_code": False} | ({} if ref.is_local else {"local_files_only": True})
