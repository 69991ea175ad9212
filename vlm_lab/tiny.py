"""Build and train the embedded tiny VLM on the synthetic shapes data.

The model is a real LLaVA (CLIP vision tower + projector + Llama), about 0.17M
parameters, with its own word-level tokenizer, chat template, image processor
and generation config (``vlm_lab.tiny_model``). Checkpoints are laid out as the HF Trainer does
(``OUT/checkpoint-N`` with ``trainer_state.json``), and each one loads with
nothing but ``AutoProcessor`` + ``AutoModelForImageTextToText`` — the same
path a hub VLM takes, so nothing downstream special-cases it.
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import torch

from vlm_lab import shapes
from vlm_lab.cgroup_memory import CGROUP_ROOT, PROC_SELF_CGROUP, available_memory
from vlm_lab.checkpoints import CheckpointRef
from vlm_lab.config import TrainConfig
from vlm_lab.data import MAX_SHAPES_SAMPLES
from vlm_lab.errors import ConfigError, OutputPathError
from vlm_lab.models import quiet_if_small
from vlm_lab.tiny_checkpoints import (  # noqa: F401 - BUILD_RECORD, FORMAT_VERSION, StaleCheckpointsWarning, build_record, short_list: public API
    BUILD_RECORD,
    FORMAT_VERSION,
    StaleCheckpointsWarning,
    build_record,
    _save_count,
    check_room,
    checkpoint_dirs,
    earlier_builds,
    epochs_seen,
    prepare_out_dir,
    refuse_model_folder,
    refuse_foreign_checkpoints,
    remove_earlier_builds,
    same_config,
    save_checkpoint,
    short_list,
)
from vlm_lab.tiny_lock import SOFT_LOCK_FILE, build_holder, build_lock  # noqa: F401 - SOFT_LOCK_FILE, build_holder: public API
from vlm_lab.tiny_model import END_TOKEN, IMAGE_TOKEN, PAD_TOKEN, build_model, build_processor, encode_training_batch  # noqa: F401 - public API
from vlm_lab.training_log import resumable, trainer_state


def train(config: TrainConfig, *, progress: bool = True, on_save: Callable[[Path], None] | None = None) -> list[Path]:
    """Train the tiny shapes VLM and save ``checkpoint-{0, save_every, ..., steps}`` under ``config.out``.

    Deterministic for ``config.seed`` and a torch build, whatever the core count. Skips
    the work when every checkpoint already exists with the same training config
    (``make demo`` and the tests call this repeatedly). Checkpoints an earlier build
    made with other settings are removed first (with a ``StaleCheckpointsWarning``), so
    the folder holds one run only: comparing it never mixes two.

    Returns:
        The checkpoint folders, sorted by step.

    Raises:
        OutputPathError: ``out`` is a file, not writable or a model folder, a checkpoint could not be saved (a full
            disk: no partial folder is left, the saved ones are kept), or the build would change a
            folder that holds checkpoint-N folders no build made (those are never deleted).
        ConfigError: more training images, or a bigger batch, than memory holds; or the loss diverged.
    """
    if config.train_images > MAX_SHAPES_SAMPLES:  # a zero too many: every image is drawn and held in memory first
        raise ConfigError(f"train_images={config.train_images} is more images than a build holds in memory (at most "
                          f"{MAX_SHAPES_SAMPLES}, ~18 KB each); pass train_images={MAX_SHAPES_SAMPLES} or fewer")
    _refuse_too_many_checkpoints(config)  # before the list of save steps is made: 10**9 of them fill the memory
    if not config.out.strip():  # an unset "$OUT": the checkpoints would land in the current folder
        raise OutputPathError("out must name the folder to save the checkpoints in (it is empty), such as out='checkpoints/shapes'")
    # '~/ck' and '$SCRATCH/ck' (a notebook parameter, a sweep file) are read as `vlm-lab compare` reads them
    out = Path(os.path.expandvars(config.out)).expanduser()
    refuse_model_folder(out)
    save_steps = sorted({0, *range(config.save_every, config.steps + 1, config.save_every), config.steps})
    wanted = [out / f"checkpoint-{s}" for s in save_steps]
    if out.is_dir() and all(same_config(p, config) for p in wanted) and not earlier_builds(out, config):
        return wanted
    _check_memory(config.batch_size, config.train_images)  # not when all is built: a busy machine still gets its checkpoints
    prepare_out_dir(out)
    # Two builds into one folder (make demo beside a test run) would overwrite each
    # other's checkpoints: the second waits, then finds the work done.
    with build_lock(out):
        refuse_foreign_checkpoints(out)
        remove_earlier_builds(out, config)
        for partial in out.glob(".checkpoint-*.tmp"):  # a save cut short (kill -9): never trusted, never resumed from
            shutil.rmtree(partial, ignore_errors=True)
        if all(same_config(p, config) for p in wanted):
            return wanted
        return _one_thread(_train_and_save, config, out, save_steps, progress=progress, on_save=on_save)


# A build saves at most this many checkpoints (~2 MB of disk each; their list alone is ~100 MB of memory).
MAX_CHECKPOINTS = 1_000_000


def _refuse_too_many_checkpoints(config: TrainConfig) -> None:
    """Raise ``ConfigError`` when ``config`` saves more than ``MAX_CHECKPOINTS``, counting them, not listing them."""
    count = _save_count(config.steps, config.save_every)
    if count <= MAX_CHECKPOINTS:
        return
    fewer = -(-config.steps // (MAX_CHECKPOINTS - 1))
    while _save_count(config.steps, fewer) > MAX_CHECKPOINTS:
        fewer += 1
    raise ConfigError(f"steps={config.steps} with save_every={config.save_every} saves {count} checkpoints, "
                      f"more than a build saves (at most {MAX_CHECKPOINTS}, ~2 MB of disk each); "
                      f"pass save_every={fewer} or more")


# Memory one training step takes, measured (peak RSS at --batch-size 64 and 512): the process,
# then each sample's pixels, activations and gradients. Each training image, held through the
# build with its three questions, takes ~18.6 KiB more (measured at 20,000).
_STEP_BASE_BYTES = 380 * 2**20
_STEP_BYTES_PER_SAMPLE = int(2.6 * 2**20)
_BYTES_PER_IMAGE = 19 * 2**10


def _check_memory(batch_size: int, train_images: int, *, cgroup_root: Path = CGROUP_ROOT,
                  proc_self_cgroup: Path = PROC_SELF_CGROUP) -> None:
    """Raise ``ConfigError`` when one step at ``batch_size``, with ``train_images`` held, needs more memory than is available.

    A zero too many (--batch-size 100000: ~250 GiB) would otherwise run the machine (or the
    container: its cgroup limit counts, not the host's memory) out of memory, with the
    out-of-memory killer choosing what dies.
    """
    from vlm_lab.units import human_bytes

    memory = available_memory(cgroup_root=cgroup_root, proc_self_cgroup=proc_self_cgroup)
    available = memory.available
    where = f" under this container's {human_bytes(memory.limit)} memory limit" if memory.limit else ""
    step = _STEP_BASE_BYTES + batch_size * _STEP_BYTES_PER_SAMPLE
    if step > available:
        fits = (available - _STEP_BASE_BYTES) // _STEP_BYTES_PER_SAMPLE
        fix = (f"pass batch_size={fits} or fewer" if fits >= 1 else
               "raise the container's memory limit" if memory.limit else "free some memory")
        raise ConfigError(f"batch_size={batch_size} needs ~{human_bytes(step)} of memory for one training step "
                          f"(~{human_bytes(_STEP_BYTES_PER_SAMPLE)} a sample), and {human_bytes(available)} is available"
                          f"{where}; {fix}")
    images = train_images * _BYTES_PER_IMAGE
    if step + images > available:
        fits = (available - step) // _BYTES_PER_IMAGE
        raise ConfigError(f"train_images={train_images} needs ~{human_bytes(images)} of memory held through the build "
                          f"(~{human_bytes(_BYTES_PER_IMAGE)} an image) besides ~{human_bytes(step)} for a training step, "
                          f"and {human_bytes(available)} is available{where}; pass train_images={fits} or fewer")


def _one_thread(fn, *args, **kwargs):
    """``fn`` with torch on one CPU thread and oneDNN and NNPACK off, then the caller's settings again.

    A matmul splits its sums across threads, so the weights depended on the core count: a laptop,
    a CI runner and a resume on another machine trained different checkpoints from one seed.
    The model is so small that one thread is also faster (2x on 2 busy cores): no work to share.
    The patch embedding's convolution is the one operation whose library sizes its blocks of the sum
    by the CPU's caches: oneDNN's, and NNPACK's, which torch takes instead for a batch of 16 or more
    once oneDNN is off (its implicit GEMM splits the 3x8x8 sum in blocks of its L1 cache share / 28
    floats, so a CPU with another L1 cache per thread can sum in another order; the likely reason an
    Intel Xeon trained other weights than the AMD EPYCs of format 4's golden hashes, not verified on an
    AMD machine since). With both off, torch's own convolution (im2col, then MKL's GEMM) runs it,
    which ``cpu_kernels.pin_cpu_kernels`` pins.
    """
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False  # not mkldnn.flags(): it also sets TF32, and warns that it cannot
    (nnpack,) = torch.backends.nnpack.set_flags(False)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn
        torch.backends.nnpack.set_flags(nnpack)


def _train_and_save(
    config: TrainConfig, out: Path, save_steps: list[int], *, progress: bool, on_save: Callable[[Path], None] | None
) -> list[Path]:
    from tqdm.auto import tqdm

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    processor = build_processor()
    model = build_model(processor, seed=config.seed)
    # each checkpoint: the float32 weights, AdamW's two moments of each (optimizer.pt), and small files
    check_room(out, len(save_steps) - len(checkpoint_dirs(out)), sum(p.numel() for p in model.parameters()) * 4 * 3 + 32_768,
               steps=config.steps)
    data = shapes.make_training_triples(config.train_images, seed=config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 20) * max(0.05, 1 - step / config.steps)
    )
    save = lambda step: save_checkpoint(  # noqa: E731
        model, processor, out, step, log_history, config, optimizer=optimizer, scheduler=scheduler, train_samples=len(data)
    )
    log_history: list[dict] = []
    if not same_config(out / "checkpoint-0", config):  # the initial weights, before a resume loads later ones
        save(0)
    resumed = _resume(out, config, save_steps, model, optimizer, scheduler)
    done = resumed or 0
    if resumed:
        log_history = trainer_state(out / f"checkpoint-{done}")["log_history"]
    paths = [out / f"checkpoint-{s}" for s in save_steps if s <= done]
    saves = set(save_steps)  # looked up each step: a list of 100,000 took longer than the step
    batches = _batch_order(len(data), config)
    for _ in range(done):  # replay the data order up to the resumed step (no training)
        next(batches)
    desc = f"training tiny VLM (resumed at step {done})" if resumed else "training tiny VLM"
    # A terminal or a notebook gets a bar; a log file (make in CI, cron) a plain line per checkpoint
    # instead of a bar redrawn with \r several times a second, all on one line.
    interactive = progress and (sys.stderr.isatty() or "ipykernel" in sys.modules)
    bar = tqdm(total=config.steps, initial=done, desc=desc, unit="step", disable=not interactive)
    log = progress and not interactive
    if log:
        print(f"{desc}: steps {done + 1}-{config.steps} into {out}", file=sys.stderr, flush=True)
    start = time.perf_counter() - (log_history[-1].get("elapsed_s", 0.0) if log_history else 0.0)
    model.train()
    with bar:  # closed (its line ended) before an interrupt or error propagates and is printed
        for step in range(done + 1, config.steps + 1):
            batch = encode_training_batch(processor, [data[i] for i in next(batches)])
            loss = model(**batch).loss
            if not torch.isfinite(loss):  # diverged: every later step and checkpoint would be NaN too
                raise _diverged(config, f"the loss became {loss.item()} at step {step}", paths[-1])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # before clipping, as the Trainer logs it
            optimizer.step()
            scheduler.step()
            # the keys Trainer.log writes, so tools that read a Trainer's log_history read this one
            log_history.append({"step": step, "epoch": epochs_seen(step, config, len(data)), "loss": round(loss.item(), 5),
                                "grad_norm": round(grad_norm.item(), 5), "learning_rate": scheduler.get_last_lr()[0]})
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update(1)
            if step in saves:
                if not all(torch.isfinite(p).all() for p in model.parameters()):
                    raise _diverged(config, f"the weights became nan/inf by step {step}", paths[-1])
                log_history[-1]["elapsed_s"] = round(time.perf_counter() - start, 2)
                paths.append(save(step))
                if log:
                    since = int(paths[-2].name.removeprefix("checkpoint-"))
                    window = [row["loss"] for row in log_history if row["step"] > since]
                    print(f"step {step}/{config.steps}: loss {sum(window) / len(window):.4f} (mean of steps {since + 1}-{step}), "
                          f"saved {paths[-1].name}", file=sys.stderr, flush=True)
                if on_save:
                    on_save(paths[-1])
    return paths


def _diverged(config: TrainConfig, what: str, last_saved: Path) -> ConfigError:
    return ConfigError(
        f"training diverged: {what} with learning_rate={config.learning_rate} "
        f"(saved checkpoints up to {last_saved.name} are kept, none with NaN weights); "
        f"lower it (e.g. learning_rate={config.learning_rate / 10:g}; the default is {TrainConfig().learning_rate})"
    )


def _batch_order(num_samples: int, config: TrainConfig) -> Iterator[list[int]]:
    """Sample indices for each step: shuffled epochs from ``config.seed``, batches running across epoch ends."""
    rng = random.Random(config.seed)
    order: list[int] = []
    while True:
        while len(order) < config.batch_size:  # `while`: a batch bigger than the data spans several epochs
            fresh = list(range(num_samples))
            rng.shuffle(fresh)
            order += fresh
        batch, order = order[: config.batch_size], order[config.batch_size :]
        yield batch


def _resume(out: Path, config: TrainConfig, save_steps: list[int], model, optimizer, scheduler) -> int | None:
    """Load the last checkpoint an interrupted build of ``config`` left into the model, optimizer and
    scheduler, and return its step; ``None`` when there is none to resume from.

    A checkpoint qualifies when it and every earlier one of this build exist with the same
    config, and it holds the optimizer and scheduler states. Training on from it gives the
    same weights as a build that was never interrupted.
    """
    step = None
    for s in save_steps[1:]:
        path = out / f"checkpoint-{s}"
        if not same_config(path, config):
            break
        if resumable(path):
            step = s
    if step is None:
        return None
    path = out / f"checkpoint-{step}"
    # from_pretrained maps the saved (original-format) names back onto the module; the
    # weights are then copied into ``model``, whose parameters the optimizer already holds.
    with quiet_if_small(CheckpointRef(spec=str(path), path=str(path))):
        saved = type(model).from_pretrained(path, dtype=torch.float32)
    model.load_state_dict(saved.state_dict())
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    return step
