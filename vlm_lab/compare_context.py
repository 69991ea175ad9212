"""Before a comparison generates anything: does every sample leave room for an answer in every checkpoint?

A sample whose image and prompt fill the checkpoint's context (``generation.context_room``) cannot be
answered. Found when its batch runs, it would stop a comparison after many minutes of earlier checkpoints
and batches, and name only that one sample. Here each checkpoint's config (its context length) and its
processor (what each sample's tokens are) are read, no weights loaded, every sample still to run is
counted, and every sample that does not fit is named, with the fix, in one error.

The batches encoded for the count go into the comparison's encoding cache (``compare.ENCODING_CACHE_BYTES``,
512 MiB), so generation reuses them. The check encodes each batch once per processor and keeps its rows' lengths,
the same for every checkpoint with that processor (a training run's).

Past the cache's bound (about 380 LLaVA-336 images: any real evaluation set) a batch the check encodes is not kept,
and each checkpoint's generation encodes it again: encoded in full by the check too, each such batch was encoded 4
times for 3 checkpoints where 3 are needed (18% of a 20k-photo first run). So once the cache has refused a batch,
the check counts the rest row by row, each distinct (prompt, image size as shown, image mode) once, from one row of
it. A row's tokens are the chat template's and the processor's image tokens, which follow the image's size
(Idefics3's tiles, Qwen2-VL's patches), never its pixels (checked for each family in tests/test_compare_context.py);
a file's size is read from its header and EXIF orientation, without decoding it. Measured (bench/compare_encodes.py:
2048 photos, 3 shapes checkpoints, a quarter of the batches held, 2 shared cores): 22% fewer samples encoded,
encoding 31 -> 22 s, outputs the same. The trade-off: a VQA set's questions differ, so there each row is its own
(prompt, size) and the check costs what it did, no less; a damaged image that passed the data file's check is found
when its batch runs, as the check no longer decodes every image; and were a processor's count ever to depend on the
pixels, generation's own check of each batch (``generation._limits``) would still refuse the sample, when its batch
runs rather than up front.

The processors are the ones the models load with (``processor_memo``: a model already loaded lends its own, and
the check's are returned, for the comparison to hold until its checkpoints have loaded), so the check loads no
processor twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Protocol, Sequence

from vlm_lab.checkpoints import CheckpointRef


class Encodings(Protocol):
    """The comparison's encoding cache (``compare._EncodingCache``)."""

    def get(self, processor_fp: str, keys: tuple[str, ...], encode: Callable[[], dict]) -> dict: ...

    def holds(self, processor_fp: str, keys: tuple[str, ...]) -> bool: ...


def check_context_room(
    runs: Sequence[tuple[CheckpointRef, str, str, Sequence[Sequence[tuple[str, Any]]]]],
    ids: Mapping[str, Sequence[str]],
    encodings: Encodings,
    lines: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Refuse, before any generation, the samples whose image and prompt leave a checkpoint no room to answer.

    Args:
        runs: per checkpoint to run: its ref, display name, processor fingerprint, and its batches of (key, sample).
        ids: per sample key, the ids of the samples with that content (identical image and prompt run once).
        encodings: the comparison's encoding cache; once it refuses a batch, the rest are counted row by row.
        lines: per sample id, its data file's line (``Sample.line``), named in the error.

    Returns:
        The processors it used, by processor fingerprint: held, the model loads take them instead of loading their own.

    Raises:
        ContextOverflowError: naming every sample that does not fit, its tokens and each checkpoint's limit.
    """
    from vlm_lab.generation import ContextOverflowError, context_length, context_room, encode_inputs

    processors: dict[str, Any] = {}
    lengths: dict[tuple[str, tuple[str, ...]], list[int]] = {}  # (processor, batch keys) -> each row's tokens
    counted: dict[tuple[str, Hashable], int] = {}  # (processor, row's prompt and image shape) -> its tokens, past the bound
    full = False  # the cache has refused a batch: the ones after it would not be kept either
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
                rows = [sample for _, sample in chunk]
                if full:
                    lengths[processor_fp, keys] = _count_rows(processor, processor_fp, rows, config, counted)
                else:
                    batch = encodings.get(processor_fp, keys, lambda rows=rows: encode_inputs(processor, rows))
                    lengths[processor_fp, keys] = [context - left for left in context_room(config, batch)[1]]  # type: ignore[index]
                    if not encodings.holds(processor_fp, keys):
                        full = True
                        counted.update(((processor_fp, _shape(s)), n) for s, n in zip(rows, lengths[processor_fp, keys]))
            overflows += [(sample_id, tokens, context, name)
                          for key, tokens in zip(keys, lengths[processor_fp, keys]) if tokens >= context for sample_id in ids[key]]
    if overflows:
        raise ContextOverflowError(*overflows[0], others=overflows[1:], lines=lines)
    return processors


def _count_rows(processor: Any, processor_fp: str, rows: Sequence[Any], config: Any, counted: dict[tuple[str, Hashable], int]) -> list[int]:
    """Each row's tokens, encoding only one row of each (prompt, image shape) not yet ``counted`` (as one batch:
    a row's tokens do not depend on the rows beside it, only its padding does)."""
    from vlm_lab.generation import context_length, context_room, encode_inputs

    shapes = [(processor_fp, _shape(sample)) for sample in rows]
    new: dict[tuple[str, Hashable], Any] = {}
    for shape, sample in zip(shapes, rows):
        if shape not in counted:
            new.setdefault(shape, sample)
    if new:
        context = context_length(config)
        batch = encode_inputs(processor, list(new.values()))
        counted.update(zip(new, [context - left for left in context_room(config, batch)[1]]))  # type: ignore[index, operator]
    return [counted[shape] for shape in shapes]


def _shape(sample: Any) -> Hashable:
    """What a row's tokens depend on: its prompt and its image's size and mode as the model gets it (``data.as_shown``:
    upright RGB), read for a file from its header and EXIF orientation; a file that cannot be opened is its own."""
    from PIL import ExifTags, Image

    path = sample.source_file
    if path is None:
        image = sample.image
        return sample.prompt, image.size, image.mode
    try:
        with Image.open(path) as image:
            # as ImageOps.exif_transpose reads it (a PNG whose EXIF follows its pixels is decoded for it)
            turned = image.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8)
            size = image.size[::-1] if turned else image.size
    except Exception:  # noqa: BLE001 - its own shape: decoding it for the count raises the data's own error
        return sample.prompt, "file", str(path)
    return sample.prompt, size, "RGB"


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
