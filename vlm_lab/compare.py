"""Compare checkpoints: N checkpoints x M samples -> ``ComparisonResult``, cached and resumable.

For each checkpoint, the samples without a cached result are generated in
batches (left-padded, ``config.batch_size``) and each finished batch is appended
to that checkpoint's result cache (``vlm_lab.result_cache``) before the next
starts, so an interrupted run resumes where it stopped. A checkpoint whose every
sample is cached is not even loaded: re-running a finished comparison costs
reading a few JSONL files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import sys
import time
import zlib
from pathlib import Path
from typing import Callable, Collection, Sequence

from vlm_lab.checkpoints import CheckpointRef, resolve, resolve_all
from vlm_lab.compare_context import check_context_room
from vlm_lab.compare_messages import (context_message, memory_budget_said, nonfinite_message, out_of_memory_said, truncated_message,
                                     warn_flagged_outputs)
from vlm_lab.config import CompareConfig, GenerationConfig
from vlm_lab.data import Sample, as_shown, load_samples, open_image
from vlm_lab.errors import OutputPathError
from vlm_lab.model_cache import ModelCache
from vlm_lab.paths import probe_write
from vlm_lab.result_cache import SET_ASIDE, ResultCache, Syncer, generation_key, sample_key, sample_keys
from vlm_lab.results import ComparisonResult
from vlm_lab.scoring import bootstrap_accuracy, get_scorer

__all__ = ["BatchEvent", "ComparisonResult", "MemoryProbe", "ResultCache", "compare", "compare_one", "context_message", "nonfinite_message",
           "sample_key",
           "truncated_message", "unique_names", "warn_flagged_outputs"]

SYNC_EVERY_S = 1.0  # fsync the result cache at most this often (and after each checkpoint's last batch), in the Syncer's thread
# copied as they are when they hold one frame (``_one_frame``); others become PNG
WEB_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
# the ones a browser animates (it shows a JPEG's first picture, an MPO's stereo pair too), by the format they open as
ANIMATED_FORMATS = {".png": "PNG", ".gif": "GIF", ".webp": "WEBP"}
# zlib's run-length strategy on PNG's filtered rows: the same pixels, written 2x (shapes) to 6x (a 512x600 photo)
# faster than with the default strategy, in files 3-13% larger (measured: 128 shapes images 24 -> 11 ms, the photo 122 -> 20 ms)
PNG_STRATEGY = zlib.Z_RLE
IMAGE_NAME = re.compile(r"[0-9a-f]{24}\.(?:png|jpe?g|gif|webp)")  # what _write_images names a sample image
ENCODING_CACHE_BYTES = 512 * 2**20  # encoded batches kept for the next checkpoint with the same processor
_WARM_DEVICES: set[str] = set()  # devices this process has already generated on (see _CheckpointRun.warm_up)


@dataclasses.dataclass(frozen=True)
class BatchEvent:
    """Reported to ``compare(on_batch=...)`` after each generated batch has been cached."""

    checkpoint: str
    batch: int  # 0-based, within this checkpoint's batches still to run
    num_batches: int
    sample_ids: tuple[str, ...]


class MemoryProbe:
    """Peak memory of one checkpoint's generation, named for what it measures.

    CUDA: ``torch.cuda.max_memory_allocated`` (weights + activations + KV cache).
    CPU: the weights' bytes only. The process RSS cannot be pinned on one model: the
    first generate in a process adds tens of MB of one-time runtime memory, and later
    models reuse memory earlier ones freed without growing the RSS (measured: 30 MB for
    the first of five 0.7 MB checkpoints, 0 for the rest). ``vlm-lab memory`` measures
    the generate peak on CPU in a fresh process instead.
    """

    def __init__(self, loaded) -> None:
        import torch

        self.loaded = loaded
        self.cuda = loaded.device.type == "cuda"
        if self.cuda:
            torch.cuda.synchronize(loaded.device)
            torch.cuda.reset_peak_memory_stats(loaded.device)
        self.kind = "cuda_max_allocated" if self.cuda else "cpu_weights"

    def peak(self) -> int:
        if self.cuda:
            import torch

            return int(torch.cuda.max_memory_allocated(self.loaded.device))
        return int(self.loaded.nbytes)


class _EncodingCache:
    """Encoded batches (CPU tensors) shared by the checkpoints with the same processor.

    The processor (chat template, tokenizer, image preprocessing) costs as much as a
    tiny model's generate; checkpoints of one run share it, so each batch is encoded
    once (the context check before generation encodes them: ``compare_context``).
    Bounded by ``ENCODING_CACHE_BYTES`` (past it, each checkpoint encodes a batch again, and the check counts the
    rest row by row instead); a processor's batches are dropped once its last checkpoint ran.
    """

    def __init__(self) -> None:
        self._batches: dict[tuple[str, tuple[str, ...]], dict] = {}
        self._nbytes = 0

    def get(self, processor_fp: str, keys: tuple[str, ...], encode: Callable[[], dict]) -> dict:
        if (processor_fp, keys) in self._batches:
            return self._batches[processor_fp, keys]
        encoded = encode()
        size = _nbytes(encoded)
        if self._nbytes + size <= ENCODING_CACHE_BYTES:
            self._batches[processor_fp, keys] = encoded
            self._nbytes += size
        return encoded

    def holds(self, processor_fp: str, keys: tuple[str, ...]) -> bool:
        return (processor_fp, keys) in self._batches

    def drop(self, processor_fp: str) -> None:
        for key in [k for k in self._batches if k[0] == processor_fp]:
            self._nbytes -= _nbytes(self._batches.pop(key))


def _nbytes(encoded: dict) -> int:
    return sum(v.numel() * v.element_size() for v in encoded.values() if hasattr(v, "numel"))


def unique_names(refs: Sequence[CheckpointRef]) -> list[str]:
    """Display names: ``checkpoint-300`` of two runs becomes ``runA/checkpoint-300`` and ``runB/...``.

    Names still equal take more of their folders (``a/run/checkpoint-5``, ``b/run/checkpoint-5``)
    until they differ, so each says where it lives; only names that cannot (hub ids) are numbered.
    """
    names = [r.name for r in refs]
    # the folders a local checkpoint's name can take, innermost last (never the root "/" itself)
    folders = [Path(r.path).parts[bool(Path(r.path).anchor) :] if r.path is not None and r.name == Path(r.path).name else () for r in refs]
    depth = [0] * len(refs)
    while True:
        grow = [i for i, name in enumerate(names) if names.count(name) > 1 and depth[i] < len(folders[i]) - 1]
        if not grow:
            break
        for i in grow:
            depth[i] += 1
            names[i] = "/".join(folders[i][-1 - depth[i] :])
    counts = {name: names.count(name) for name in names}
    seen: dict[str, int] = {}
    numbered = []
    for name in names:  # still equal: number them all
        seen[name] = seen.get(name, 0) + 1
        numbered.append(f"{name}#{seen[name]}" if counts[name] > 1 else name)
    return numbered


def _prepare_folder(path: Path, field: str, value: str, *, cache_in_it: bool = False) -> None:
    """Create ``path``, the folder ``field=value`` names, and write in it, or raise ``OutputPathError`` naming that
    field as a notebook and a sweep pass it (``output_dir='runs/x'``; ``vlm-lab compare`` says ``--out runs/x``:
    flags_in_config_errors).

    ``cache_in_it``: ``path`` is the result cache compare keeps in that folder (``cache_dir=''``), named by the folder.
    """
    named = f"{field}={value!r}"
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{named} holds a file {path.name} where its result cache goes; move that file away, or give "
                              "the cache a folder of its own (cache_dir='DIR')" if cache_in_it else
                              f"{named} is a file; {field} must name a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe_write(path)  # a folder that exists on a read-only mount (or chmod'ed) failed only once results were saved
    except OSError as e:
        what = (f"{named} cannot hold its result cache {path.name}" if cache_in_it else
                f"{named} is not writable" if path.is_dir() else f"{named} cannot be created")
        raise OutputPathError(f"{what} ({e.strerror}); {field} must name a folder you can write to") from e


def _write_images(samples: Sequence[Sample], image_keys: Sequence[str], out: Path) -> list[str]:
    """Each image once under ``out/images/<image key>.<ext>``; returns each sample's path relative to ``out``.

    Samples that ask several questions of one image (VQA sets do) share its file.

    An image read from a file a browser shows (PNG, JPEG, GIF, WebP) is copied byte for byte
    (a JPEG stays a JPEG: no re-encoding of large photos) unless it is animated; any other (TIFF, BMP, ...),
    an animated one (as the frame the model saw) and one made in memory (the shapes set) is written as PNG. Each file is
    written to a temp name and renamed, so an interrupted run never leaves half an image.
    Images an earlier comparison left in this folder (another data set, ``output_dir`` reused)
    are removed: the folder holds what its results show, nothing more. Only files named
    as this function names them are touched.
    """
    import shutil

    folder = out / "images"
    folder.mkdir(parents=True, exist_ok=True)
    listed = {entry.name: entry for entry in os.scandir(folder)}  # one listing, not a stat per sample (20k samples: 0.3 s of a re-run)
    targets = _image_targets(samples, image_keys, written=listed.keys())
    keep = {name for name, _ in targets}
    present = set()
    for name, entry in listed.items():
        if name not in keep and IMAGE_NAME.fullmatch(name) and entry.is_file(follow_symlinks=False):
            os.unlink(entry.path)
        elif name in keep:
            present.add(name)
    for sample, (name, source) in zip(samples, targets):
        target = folder / name
        if name not in present:
            present.add(name)
            tmp = target.with_name(f".{target.name}.tmp")
            if source is not None:
                shutil.copyfile(source, tmp)
            else:
                sample.image.save(tmp, format="PNG", compress_type=PNG_STRATEGY)
            os.replace(tmp, target)
    return [f"images/{name}" for name, _ in targets]


def _image_targets(
    samples: Sequence[Sample], image_keys: Sequence[str], *, written: Collection[str] = ()
) -> list[tuple[str, Path | None]]:
    """Per sample: its file name under ``images/`` and the file to copy there (None: write PNG).

    ``written``: the names already in ``images/``. Keys are content-addressed, so a file an earlier run wrote for
    the same key settles copy-or-PNG without opening the source again (a re-run reads no image file)."""
    targets = []
    one_frame: dict[Path, bool] = {}  # VQA sets ask several questions of one file: its header is read once
    for sample, key in zip(samples, image_keys):
        source = Path(sample.image_path) if sample.image_path else None
        if source is not None and source.suffix.lower() in WEB_IMAGE_SUFFIXES and source not in one_frame:
            suffix = source.suffix.lower()
            if f"{key}{suffix}" in written or (suffix != ".png" and f"{key}.png" in written):
                one_frame[source] = f"{key}{suffix}" in written
            else:
                one_frame[source] = _one_frame(source)
        if source is not None and one_frame.get(source):
            targets.append((f"{key}{source.suffix.lower()}", source))
        else:
            targets.append((f"{key}.png", None))
    return targets


def _one_frame(path: Path) -> bool:
    """Whether the file is one picture: the page would play an animated GIF, WebP or PNG (APNG) whose later frames
    the model never saw (it reads the first), so such a file is saved as PNG of that frame (the same pixels, lossless).
    False for what is not a file or cannot be opened (then it is written from the decoded image, which says why)."""
    from PIL import Image

    if not os.path.isfile(path):
        return False
    if path.suffix.lower() not in ANIMATED_FORMATS:
        return True
    try:
        with Image.open(path, formats=[ANIMATED_FORMATS[path.suffix.lower()]]) as img:  # the header (a WebP: its frame index; a GIF: up to its second frame)
            return not getattr(img, "is_animated", False)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def compare(
    config: CompareConfig,
    *,
    progress: bool = True,
    cache: ModelCache | None = None,
    on_batch: Callable[[BatchEvent], None] | None = None,
) -> ComparisonResult:
    """Run every checkpoint of ``config`` on its samples, score, summarise and save.

    Args:
        config: which checkpoints, data, generation settings and output folder.
        progress: a tqdm bar over (checkpoint x batch) on stderr, and one while a large data file is read.
        cache: the model cache to load through (one is made from ``config.memory_budget`` if None).
        on_batch: called after each generated batch is cached (raising from it stops the run;
            a re-run resumes after the last cached batch).

    Returns:
        The ``ComparisonResult``, already saved under ``config.output_dir``.

    Raises:
        CheckpointNotFoundError, DataError, DeviceError, OutputPathError, MemoryBudgetError.
    """
    from tqdm.auto import tqdm

    from vlm_lab.generation import check_prompts
    from vlm_lab.models import resolve_device, resolve_dtype

    refs = resolve_all(config.checkpoints)
    names = unique_names(refs)
    # the data set's own draw, whatever the seed: the seed is the sampling's and the CIs' (as --seed says), and runs
    # over seeds must ask the same questions (their results are paired by sample id: same id, same image)
    from vlm_lab.checkpoints import fingerprint, hub_commit, hub_fingerprint, load_digest_memo, processor_fingerprint, save_digest_memo

    # per user: a new output folder does not re-hash unchanged weights, nor a re-run read unchanged images
    memo = load_digest_memo()
    known = dict(memo)
    samples = load_samples(config.data, config.num_samples or None, progress=progress, memo=memo)  # a large file: its images checked
    out = Path(config.output_dir)
    _prepare_folder(out, "output_dir", config.output_dir)
    both = [sample_keys(s, memo) for s in samples]  # (sample key, image key)
    keys, image_keys = [k for k, _ in both], [i for _, i in both]

    device = resolve_device(config.device)
    dtype_name = str(resolve_dtype(config.dtype, device)).removeprefix("torch.")
    gen = config.generation()
    gen_key = generation_key(gen, dtype=dtype_name, device_type=device.type)
    cache_dir = Path(config.cache_dir) if config.cache_dir else out / ".cache"
    if config.use_cache:
        _prepare_folder(cache_dir, *(("cache_dir", config.cache_dir) if config.cache_dir else ("output_dir", config.output_dir)),
                        cache_in_it=not config.cache_dir)  # before any model loads
    models = cache if cache is not None else ModelCache(config.memory_budget or None)

    first: dict[str, Sample] = {}
    for key, sample in zip(keys, samples):
        first.setdefault(key, sample)  # identical image+prompt: generate once
    unique = list(first.items())
    plans = []
    first_plan: dict[str, tuple] = {}  # fingerprint -> its plan: the same weights under two refs run once
    commits: dict[tuple, str] = {}  # one question per revision, not per checkpoint folder of a hub run
    processors: dict[str, str] = {}  # weights fingerprint -> processor fingerprint (checkpoints of one run share it)
    for i, (ref, name) in enumerate(zip(refs, names)):
        if ref.path is None:  # pinned: what loads later is the commit the results are cached under
            revision = (ref.repo_id, ref.revision)
            if revision not in commits:
                commits[revision] = hub_commit(ref)
            refs[i] = ref = dataclasses.replace(ref, revision=commits[revision])
        fp = fingerprint(ref, memo=memo) if ref.path is not None else hub_fingerprint(ref, ref.revision)
        if fp in first_plan:  # e.g. a Trainer's final model, saved from its last checkpoint: share its results
            _, _, _, store, found, memory, _, n_cached = first_plan[fp]
            plans.append((ref, name, fp, store, found, memory, [], n_cached))
            continue
        processors[fp] = processor_fingerprint(ref, memo=memo) if ref.path is not None else fp  # hub: its pinned commit
        store = ResultCache(cache_dir / f"{fp}-{gen_key}.jsonl")
        found, memory = store.read() if config.use_cache else ({}, {})
        chunks = _batches_to_run(unique, found, gen)
        missing = {key for chunk, _ in chunks for key, _ in chunk}
        plans.append(first_plan.setdefault(fp, (ref, name, fp, store, found, memory, chunks, sum(key not in missing for key in keys))))
    if memo.keys() != known.keys():
        save_digest_memo({k: v for k, v in memo.items() if k not in known})  # what this run learnt, merged into the file

    encodings = _EncodingCache()
    ids: dict[str, list[str]] = {}
    for key, sample in zip(keys, samples):
        ids.setdefault(key, []).append(sample.id)
    runs = [(ref, name, processors[fp], chunks) for ref, name, fp, *_, chunks, _ in plans if chunks]
    # its processors are held until their last checkpoint has loaded: each model load takes the one the check loaded
    checked = check_context_room([(ref, name, proc, [chunk for chunk, _ in chunks]) for ref, name, proc, chunks in runs], ids,
                                 encodings, {s.id: s.line for s in samples if s.line})
    last_use = {proc: i for i, (*_, proc, _) in enumerate(runs)}  # a processor's batches are let go after its last checkpoint

    # the bar reads the whole comparison (each distinct checkpoint's batches), a resumed one starting at what is cached
    # (initial=: its rate and ETA count this run's batches only); nothing left to run (all cached): no bar at all
    left = sum(len(chunks) for *_, chunks, _ in plans)
    whole = max(left, -(-len(unique) // gen.batch_size) * len(first_plan))
    bar = tqdm(total=whole, initial=whole - left, desc="compare", unit="batch", disable=not progress or left == 0, file=sys.stderr)
    # All in this thread but the result cache's fsyncs: on a tiny model, generate is bound by Python, so helper
    # threads for encoding and image writes only contend for the GIL (measured: slower, not faster); an fsync
    # waits for the disk without the GIL (the Syncer's thread), and all have ended before compare returns
    with Syncer() as syncer:
        try:
            for i, (ref, name, fp, store, found, memory, chunks, _) in enumerate(p for p in plans if p[6]):
                syncer.check()  # an earlier checkpoint's cache failed its fsync: stop before loading this one
                bar.set_description(f"compare {name}")
                # in use while it generates (a load in another thread waits for its room), and let go before the next
                # checkpoint loads: still held then, it stays in memory beside the next one, past a budget for one
                with memory_budget_said(cache is None), models.use(ref, dtype=config.dtype, device=config.device) as loaded:
                    _refuse_edited_processor(name, loaded)
                    check_prompts(loaded.processor, [sample for chunk, _ in chunks for _, sample in chunk])  # before any batch runs
                    run = _CheckpointRun(name, loaded, gen, store if config.use_cache else None, encodings, processors[fp], syncer)
                    try:
                        others = None if cache is None else lambda on=loaded.device, ref=ref: [held for held in models.resident(on) if held[0] != ref]
                        with out_of_memory_said(name, gen, loaded.device, others):
                            if str(loaded.device) not in _WARM_DEVICES:
                                run.warm_up(chunks[0][0])
                                _WARM_DEVICES.add(str(loaded.device))
                            found.update(run.generate(chunks, on_batch=lambda event: (bar.update(1), on_batch and on_batch(event))))
                    finally:
                        if run.memory:  # also after an interruption: a smaller, fully cached re-run still knows it
                            memory.clear()
                            memory.update(run.memory)
                        memory[SET_ASIDE] = run.set_aside
                        del run, loaded
                if cache is None:  # this call's own cache: a model it has finished with is never asked for again, and
                    models.evict(ref)  # kept, it stayed beside the next (3 checkpoints of 4 GB: 12 GB for one at a time)
                if last_use[processors[fp]] == i:
                    encodings.drop(processors[fp])
                    checked.pop(processors[fp], None)
        finally:
            bar.close()
        images = _write_images(samples, image_keys, out)  # content-addressed: never claims more than it holds

        result = _build_result(config, refs, names, plans, samples, keys, images, out, dtype_name)
        # before the results are saved: they would say "all cached" of a cache the disk failed to keep (raised
        # after them, the error read as if the save had failed). A re-run then serves what reached the disk
        syncer.wait()
        result.save(out)
    warn_flagged_outputs(result, stacklevel=3)
    return result


def _refuse_edited_processor(name: str, loaded) -> None:
    """A model of the cache whose processor a notebook edited (``loaded.processor.tokenizer.padding_side = "right"``)
    would cache its outputs under the checkpoint's files, to be served later as theirs. Once per checkpoint."""
    from vlm_lab.errors import ConfigError
    from vlm_lab.processor_memo import edits

    changed = edits(loaded.ref, loaded.processor)
    if changed:
        where = repr(loaded.ref.path) if loaded.ref.path else "'FOLDER'"
        raise ConfigError(
            f"{name}: the processor of its model in the model cache was edited after it was loaded ({'; '.join(changed)[:300]}); "
            "compare caches results by the checkpoint's files, so it runs on the processor they make. To compare with "
            f"the edit, save it into a checkpoint folder (loaded.processor.save_pretrained({where}), or a copy of the "
            "folder); to compare without it, drop that model from the cache (cache.clear())"
        )


class _CheckpointRun:
    """One checkpoint's missing samples: batches encoded (once per processor), generated, cached as they finish."""

    def __init__(self, name, loaded, gen: GenerationConfig, store: ResultCache | None, encodings: _EncodingCache, processor_fp: str,
                 syncer: Syncer | None = None) -> None:
        self.name, self.loaded, self.gen, self.store, self.encodings = name, loaded, gen, store, encodings
        self.processor_fp, self.syncer = processor_fp, syncer
        self.memory: dict = {}
        from vlm_lab.generation_settings import set_aside

        # what its generation_config.json sets that this strategy does not use: said in the summary and a warning
        self.set_aside = set_aside(loaded.model.generation_config, gen.generate_kwargs(), checkpoint_generation=gen.checkpoint_generation)

    def _encode(self, chunk) -> dict:
        from vlm_lab.generation import encode_inputs

        return self.encodings.get(self.processor_fp, tuple(k for k, _ in chunk),
                                  lambda: encode_inputs(self.loaded.processor, [s for _, s in chunk]))

    def warm_up(self, chunk: list[tuple[str, Sample]]) -> None:
        """One untimed generate before the first timed one.

        The process's first generate pays one-time costs (lazy initialisation, the allocator's
        first blocks, CUDA kernel loading; measured +60% on the first batch on CPU): timed,
        they would make whichever checkpoint runs first look slower than the others.
        Once per process and device: later models' first batches are not slower (measured:
        +60% for the process's first batch, under 10% for each later model's first).
        Outputs are unaffected: sampling reseeds every batch.
        """
        from vlm_lab.generation import generate_batch

        short = dataclasses.replace(self.gen, max_new_tokens=min(2, self.gen.max_new_tokens))
        generate_batch(self.loaded, [s for _, s in chunk], short, encoded=self._encode(chunk), name=self.name)

    def generate(self, chunks: list[tuple[list[tuple[str, Sample]], str | None]], *, on_batch: Callable[[BatchEvent], object]) -> dict[str, dict]:
        """Run ``chunks``: batches of (key, sample), each with its batch id when sampling (seeds it), else None."""
        from vlm_lab.generation import generate_batch

        probe = MemoryProbe(self.loaded)
        done: dict[str, dict] = {}
        last_sync = time.monotonic()
        with self.store.appender(syncer=self.syncer) if self.store is not None else contextlib.nullcontext() as appender:
            if appender is not None:  # before any result: a re-run served from them (this one killed) still says it
                appender.write([{SET_ASIDE: self.set_aside}])
            try:
                for i, (chunk, batch_id) in enumerate(chunks):
                    seed = None if batch_id is None else int(batch_id, 16)
                    outputs = generate_batch(self.loaded, [s for _, s in chunk], self.gen, encoded=self._encode(chunk), seed=seed,
                                             name=self.name)
                    records = [
                        {"key": key, "text": o.text, "new_tokens": o.new_tokens, "latency_s": o.latency_s, "batch_size": o.batch_size}
                        | ({"nonfinite": True} if o.nonfinite else {})
                        | ({"truncated": True} if o.truncated else {})
                        | ({"at_context": True} if o.at_context else {})
                        | ({"batch": batch_id} if batch_id is not None else {})
                        for (key, _), o in zip(chunk, outputs)
                    ]
                    if appender is not None:
                        # each batch reaches the OS at once (a killed process loses nothing); fsync at most
                        # every SYNC_EVERY_S (and on close), so a power cut loses at most the last second
                        sync = time.monotonic() - last_sync >= SYNC_EVERY_S
                        appender.write(records, sync=sync)
                        last_sync = time.monotonic() if sync else last_sync
                    done.update((r["key"], r) for r in records)
                    on_batch(BatchEvent(self.name, i, len(chunks), tuple(s.id for _, s in chunk)))
            finally:  # also when interrupted: a smaller re-run served wholly from the cache still knows the memory
                if done:
                    self.memory = {"peak_memory_bytes": probe.peak(), "memory_kind": probe.kind}
                    if appender is not None:
                        appender.write([{"memory": self.memory}])
        return done


def _batches_to_run(unique: list[tuple[str, Sample]], found: dict[str, dict], gen: GenerationConfig) -> list:
    """The batches a checkpoint still has to generate, as ``(batch, batch id or None)``.

    Greedy and beam search: the missing samples, batched (their outputs do not depend on
    the batch). Sampling: the random draws depend on the batch's members, so batches are
    fixed slices of the whole sample list, each seeded from the seed and its members (the
    batch id, kept with each cached result); a batch runs again unless every member's
    cached result came from that same batch. The outputs then depend on the data, seed and
    batch size only, never on what an earlier run happened to cache.
    """
    from vlm_lab.config import parse_strategy
    from vlm_lab.generation import batches

    if parse_strategy(gen.strategy)[0] not in ("nucleus", "temperature"):
        return [(list(chunk), None) for chunk in batches([item for item in unique if item[0] not in found], gen.batch_size)]
    out = []
    for chunk in batches(unique, gen.batch_size):
        batch_id = hashlib.sha256(f"{gen.seed}:{','.join(k for k, _ in chunk)}".encode()).hexdigest()[:15]
        if any(found.get(key, {}).get("batch") != batch_id for key, _ in chunk):
            out.append((list(chunk), batch_id))
    return out


def _build_result(config, refs, names, plans, samples, keys, images, out, dtype_name: str) -> ComparisonResult:
    score = get_scorer(config.metric)
    rows = [
        {"id": s.id, "image": img, **({"image_file": s.image_file} if s.image_file else {}), "prompt": s.prompt,
         "reference": s.reference, **({"meta": s.meta} if s.meta else {}), "outputs": {}}
        for s, img in zip(samples, images)
    ]
    summary = []
    for ref, name, _, _, found, memory, _, n_cached in plans:
        hits, tokens, batch_time, latencies, nonfinite, truncated, at_context = [], 0, 0.0, [], 0, 0, 0
        for row, key, sample in zip(rows, keys, samples):
            r = found[key]
            hit = None if sample.reference is None else float(score(r["text"], sample.reference))
            row["outputs"][name] = {
                "output": r["text"], "score": hit, "latency_s": r["latency_s"],
                "new_tokens": r["new_tokens"], "batch_size": r["batch_size"], "nonfinite": r.get("nonfinite", False),
                "truncated": r.get("truncated", False), "at_context": r.get("at_context", False),
            }  # fmt: skip
            nonfinite += r.get("nonfinite", False)
            truncated += r.get("truncated", False)
            at_context += r.get("at_context", False)
            if hit is not None:
                hits.append(hit)
            tokens += r["new_tokens"]
            batch_time += r["latency_s"] / r["batch_size"]  # each batch's time, shared by its samples
            latencies.append(r["latency_s"])
        acc = bootstrap_accuracy(hits, seed=config.seed) if hits else None
        summary.append(
            {
                "checkpoint": name,
                "step": ref.step,
                "accuracy": acc.value if acc else None,
                "ci_low": acc.ci_low if acc else None,
                "ci_high": acc.ci_high if acc else None,
                "n_scored": len(hits),
                "n_samples": len(samples),
                "mean_latency_s": sum(latencies) / len(latencies),  # wall time of the batch each sample ran in
                "tokens_per_s": tokens / batch_time if batch_time > 0 else None,
                "mean_new_tokens": tokens / len(samples),
                "peak_memory_bytes": memory.get("peak_memory_bytes"),
                "memory_kind": memory.get("memory_kind"),
                "n_nonfinite": nonfinite,
                "n_truncated": truncated,  # cut off before the end token: at max_new_tokens or at the context
                "n_at_context": at_context,  # ... of them, where the checkpoint reads no further
                "from_cache": min(n_cached, len(samples)),
                # the checkpoint's own generation settings it did not decode with (generation_settings); None: not recorded
                "generation_set_aside": memory.get(SET_ASIDE),
            }
        )
    # revision: the commit a hub checkpoint was pinned to (what "org/run@main" meant that day); None for a folder.
    # dtype: what it ran in ("auto" resolved), for what a saved comparison's NaN/inf warning says
    # final_step: a run's final model at its root (no checkpoint-N name), where its trainer_state.json says (the plot
    # and the summary table place it on the step axis: results_plot.final_steps)
    from vlm_lab.training_log import final_step

    ref_info = [{"name": n, "spec": r.spec, "step": r.step, "fingerprint": p[2], "revision": r.revision, "dtype": dtype_name,
                 **({"final_step": at} if (at := final_step(r)) is not None else {})}
                for n, r, p in zip(names, refs, plans)]
    result = ComparisonResult(config=config.to_dict(), checkpoints=names, refs=ref_info, rows=rows, summary=summary, output_dir=out)
    result.add_paired_columns()
    return result


def compare_one(
    cache: ModelCache,
    refs: Sequence[CheckpointRef | str],
    image,
    prompt: str,
    gen_config: GenerationConfig | None = None,
    *,
    dtype: str = "auto",
    device: str = "auto",
) -> list[dict]:
    """One image + prompt through each checkpoint, for interactive use (the Space, widgets).

    Args:
        image: a PIL image or a path to one.

    Raises:
        ContextOverflowError: the image and prompt leave no room for an answer.

    Returns:
        One dict per checkpoint, in order: ``checkpoint``, ``text``, ``new_tokens``,
        ``latency_s``, ``memory_bytes`` (peak CUDA memory of the call on GPU; the
        model's weight bytes on CPU), ``memory_kind`` and ``nonfinite`` (NaN/+inf scores:
        the text is noise; ``nonfinite_message`` says why and what to do) and ``truncated``
        (stopped before the end token: the text is cut off) and ``at_context`` (stopped there because
        the checkpoint reads no further, not at ``max_new_tokens``) and ``dtype``
        (what the model runs in; ``nonfinite_message`` takes it).
    """
    from vlm_lab.generation import ContextOverflowError, generate_batch

    gen = gen_config or GenerationConfig()
    # a path is opened as shown; an image already open is shown the same way (upright, on white)
    sample = Sample(id="input", image=as_shown(image) if hasattr(image, "convert") else open_image(image), prompt=prompt)
    results = []
    for ref in refs:
        ref = ref if isinstance(ref, CheckpointRef) else resolve(str(ref), expand=False)[0]
        with cache.use(ref, dtype=dtype, device=device) as loaded:  # as in compare: in use, then let go
            probe = MemoryProbe(loaded)
            try:
                (out,) = generate_batch(loaded, [sample], gen)
            except ContextOverflowError as e:  # one image and prompt, not a data set's sample: no sample id to name
                raise ContextOverflowError(None, e.tokens, e.context, e.checkpoint) from None
            results.append(
                {
                    "checkpoint": ref.name,
                    "text": out.text,
                    "new_tokens": out.new_tokens,
                    "latency_s": out.latency_s,
                    "memory_bytes": probe.peak(),
                    "memory_kind": probe.kind,
                    "nonfinite": out.nonfinite,
                    "truncated": out.truncated,
                    "at_context": out.at_context,
                    "dtype": str(loaded.dtype).removeprefix("torch."),
                }
            )
            del loaded, probe
    return results
