"""Build and train the embedded tiny VLM on the synthetic shapes data.

The model is a real LLaVA (CLIP vision tower + projector + Llama), about 0.17M
parameters, with its own word-level tokenizer, chat template, image processor
and generation config. Checkpoints are laid out as the HF Trainer does
(``OUT/checkpoint-N`` with ``trainer_state.json``), and each one loads with
nothing but ``AutoProcessor`` + ``AutoModelForImageTextToText`` — the same
path a hub VLM takes, so nothing downstream special-cases it.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import math
import os
import random
import re
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import torch
from safetensors import SafetensorError

from vlm_lab import shapes
from vlm_lab.checkpoints import CheckpointRef
from vlm_lab.config import TrainConfig
from vlm_lab.data import Sample, atomic_write_text
from vlm_lab.errors import ConfigError, OutputPathError
from vlm_lab.generation import chat_messages
from vlm_lab.models import quiet_if_small
from vlm_lab.training_log import trainer_state

IMAGE_TOKEN = "<image>"
END_TOKEN = "<|end|>"  # ends every turn; eos for generation
PAD_TOKEN = "<pad>"  # separate from eos so padding is never mistaken for a stop
UNK_TOKEN = "<unk>"
ROLE_TOKENS = ("<|user|>", "<|assistant|>", "<|system|>")
# Bump when the model, tokenizer or data change, so old checkpoints are rebuilt.
FORMAT_VERSION = 1
BUILD_RECORD = "VlmLabTinyBuild"  # trainer_state.json stateful_callbacks key: {"args": TrainConfig, "attributes": {"format"}}
PATCH_SIZE = 8  # 64 / 8 = 8 x 8 = 64 image tokens: fine enough to tell a square from a diamond

# A chat template in the shape real VLM processors use: content is a string or a
# list of {"type": "image"} / {"type": "text", "text": ...} parts. The assistant's answer and its
# end token sit in {% generation %} markers (they render nothing), so return_assistant_tokens_mask
# and assistant-only-loss trainers (TRL) find the tokens to learn.
CHAT_TEMPLATE = (
    "{% macro content(message) %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ content(message) }}<|end|>{% endgeneration %}"
    "{% else %}{{ content(message) }}<|end|>{% endif %}{{ '\\n' }}"  # an expression: trim_blocks eats a newline after a tag
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _vocabulary() -> list[str]:
    words: set[str] = set()
    for color in shapes.COLORS:
        for shape in shapes.SHAPES:
            for text in [*shapes.QUESTIONS.values(), *shapes.answers(color, shape).values()]:
                words.update(_pretokenize(text))
    # a few common words so free-form prompts in the Space are not all <unk>
    words.update("the a an is it what which of in this picture image color shape describe".split())
    return sorted(words)


def _pretokenize(text: str) -> list[str]:
    from tokenizers.pre_tokenizers import Whitespace

    return [w.lower() for w, _ in Whitespace().pre_tokenize_str(text)]


def build_processor():
    """A ``LlavaProcessor`` with a word-level tokenizer built by the ``tokenizers`` library."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import CLIPImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast

    specials = [PAD_TOKEN, UNK_TOKEN, END_TOKEN, IMAGE_TOKEN, *ROLE_TOKENS]
    vocab = {tok: i for i, tok in enumerate([*specials, *_vocabulary()])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        eos_token=END_TOKEN,
        bos_token=None,
        additional_special_tokens=[IMAGE_TOKEN, *ROLE_TOKENS],
        padding_side="left",  # batched generation needs left padding
        model_max_length=128,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": shapes.IMAGE_SIZE},
        crop_size={"height": shapes.IMAGE_SIZE, "width": shapes.IMAGE_SIZE},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS position, dropped by the "default" strategy
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


def build_model(processor, *, seed: int = 0):
    """A freshly initialised tiny ``LlavaForConditionalGeneration`` matching ``processor``."""
    from transformers import CLIPVisionConfig, GenerationConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=shapes.IMAGE_SIZE,  # must equal the processor's crop size
        patch_size=PATCH_SIZE,
        projection_dim=64,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        max_new_tokens=8,
        do_sample=False,
    )
    return model


def _training_messages(sample: Sample) -> list[dict]:
    """The user turn (image + question) followed by the assistant's reference answer."""
    return [*chat_messages(sample.prompt), {"role": "assistant", "content": [{"type": "text", "text": sample.reference}]}]


def encode_training_batch(processor, samples: list[Sample]) -> dict[str, torch.Tensor]:
    """Tokenize prompt+answer pairs; labels are masked (-100) everywhere but the answer."""
    full = [processor.apply_chat_template(_training_messages(s), tokenize=False) for s in samples]
    prompts = [processor.apply_chat_template(chat_messages(s.prompt), tokenize=False, add_generation_prompt=True) for s in samples]
    enc = processor(images=[s.image for s in samples], text=full, return_tensors="pt", padding=True)
    # the prompt's length after image-token expansion, to mask everything before the answer
    prompt_enc = processor(images=[s.image for s in samples], text=prompts, padding=False)
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    for i, ids in enumerate(prompt_enc["input_ids"]):
        pad = int((enc["attention_mask"][i] == 0).sum())  # left padding
        labels[i, : pad + len(ids)] = -100
    enc["labels"] = labels
    return dict(enc)


def _prepare_out_dir(out: Path) -> None:
    """Create ``out`` and prove it is writable, or raise ``OutputPathError`` naming the fix."""
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"--out {str(out)!r} is a file, not a folder; pass a folder path such as checkpoints/shapes")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OutputPathError(f"--out {str(out)!r} is not writable ({reason}); pick a folder you can write to") from e


def _save_checkpoint(model, processor, out: Path, step: int, log_history: list[dict], config: TrainConfig, *,
                     optimizer, scheduler, train_samples: int) -> Path:
    """Save ``checkpoint-<step>`` atomically: write to a temp folder, then rename.

    Besides the model, processor and ``trainer_state.json``, the optimizer and scheduler
    states go where the HF Trainer puts them (``optimizer.pt``, ``scheduler.pt``), so an
    interrupted build resumes from its last checkpoint (``_resume``).
    """
    final = out / f"checkpoint-{step}"
    tmp = out / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        _write_checkpoint(model, processor, tmp, step, log_history, config,
                          optimizer=optimizer, scheduler=scheduler, train_samples=train_samples)
    except (OSError, SafetensorError) as e:  # a full disk or quota: the partial folder would only hold the space
        shutil.rmtree(tmp, ignore_errors=True)
        raise _save_failed(e, out, step) from e
    _discard(final)
    tmp.rename(final)
    return final


def _write_checkpoint(model, processor, tmp: Path, step: int, log_history: list[dict], config: TrainConfig, *,
                      optimizer, scheduler, train_samples: int) -> None:
    from transformers import TrainerState

    from vlm_lab.models import no_transformers_bars

    with no_transformers_bars():  # the one tiny shard writes in a millisecond: no "Writing model shards" bar
        model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    # A real TrainerState, so TrainerState.load_from_json (Trainer's resume) reads it; the build's
    # own record rides in stateful_callbacks, where the Trainer keeps its callbacks' state.
    state = TrainerState(
        epoch=_epoch(step, config, train_samples),
        global_step=step,
        max_steps=config.steps,
        logging_steps=1,
        save_steps=config.save_every,
        train_batch_size=config.batch_size,
        num_train_epochs=math.ceil(config.steps * config.batch_size / train_samples),
        log_history=log_history,
        stateful_callbacks={BUILD_RECORD: {"args": config.to_dict(), "attributes": {"format": FORMAT_VERSION}}},
    )
    atomic_write_text(tmp / "trainer_state.json", json.dumps(dataclasses.asdict(state), indent=2, sort_keys=True) + "\n")
    # safetensors writes its file 0600: give every file the mode the umask gives the folder
    # (less execute), so another user of a shared checkpoints folder can load it.
    file_mode = tmp.stat().st_mode & 0o666
    for f in tmp.iterdir():
        f.chmod(file_mode)


def _save_failed(error: Exception, out: Path, step: int) -> OutputPathError:
    """The error for a checkpoint that could not be written, naming the cause, what is kept and the fix."""
    code = getattr(error, "errno", None)
    if code is None:  # safetensors reports an OSError as text: "... I/O error: No space left on device (os error 28)"
        found = re.search(r"\(os error (\d+)\)", str(error))
        code = int(found.group(1)) if found else None
    reason = f"{os.strerror(code)} (errno {code})" if code else str(error)
    kept = [p for p in _checkpoint_dirs(out) if int(p.name.removeprefix("checkpoint-")) < step]
    if kept:
        then = f"{kept[-1].name} and earlier are kept: "
        resume = f" to resume from {kept[-1].name}"
    else:
        then, resume = "", ""
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free space there (or pass another --out)"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make it writable (or pass another --out)"
    else:
        fix = "pass another --out"
    advice = f"{then}{fix} and run again{resume}"
    return OutputPathError(f"could not save checkpoint-{step} in {out}: {reason}. {advice[0].upper()}{advice[1:]}")


class StaleCheckpointsWarning(UserWarning):
    """A build removed the checkpoint-N folders an earlier build with other settings left in ``out``."""


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
    """
    if not config.out.strip():  # an unset "$OUT": the checkpoints would land in the current folder
        raise OutputPathError("--out is empty; pass the folder to save the checkpoints in, such as checkpoints/shapes")
    # '~/ck' and '$SCRATCH/ck' (a notebook parameter, a sweep file) are read as `vlm-lab compare` reads them
    out = Path(os.path.expandvars(config.out)).expanduser()
    if (out / "config.json").is_file():  # a checkpoint or a run's final model: compare would list both as one run
        raise OutputPathError(
            f"--out {str(out)!r} holds a model (config.json): its checkpoint-N folders would be read as one run "
            "with that model; pass a folder of its own, such as checkpoints/mine"
        )
    save_steps = sorted({0, *range(config.save_every, config.steps + 1, config.save_every), config.steps})
    wanted = [out / f"checkpoint-{s}" for s in save_steps]
    if out.is_dir() and all(_same_config(p, config) for p in wanted) and not _earlier_builds(out, config):
        return wanted
    _prepare_out_dir(out)
    # Two builds into one folder (make demo beside a test run) would overwrite each
    # other's checkpoints: the second waits, then finds the work done.
    with open(out / ".build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another build into {out} to finish (it holds {out / '.build.lock'})", file=sys.stderr, flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        _refuse_foreign_checkpoints(out)
        _remove_earlier_builds(out, config)
        for partial in out.glob(".checkpoint-*.tmp"):  # a save cut short (kill -9): never trusted, never resumed from
            shutil.rmtree(partial, ignore_errors=True)
        if all(_same_config(p, config) for p in wanted):
            return wanted
        return _one_thread(_train_and_save, config, out, save_steps, progress=progress, on_save=on_save)


def _one_thread(fn, *args, **kwargs):
    """``fn`` with torch on one CPU thread, then the caller's setting again.

    A matmul splits its sums across threads, so the weights depended on the core count: a laptop,
    a CI runner and a resume on another machine trained different checkpoints from one seed.
    The model is so small that one thread is also faster (2x on 2 busy cores): no work to share.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def _checkpoint_dirs(out: Path) -> list[Path]:
    """Every ``checkpoint-N`` folder in ``out``, loadable or not."""
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.removeprefix("checkpoint-").isdigit()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("checkpoint-")))


def _made_by_build(path: Path) -> bool:
    """Whether ``train`` saved this folder: its trainer_state.json records the training config."""
    return build_record(path)[0] is not None


def _earlier_builds(out: Path, config: TrainConfig) -> list[Path]:
    """checkpoint-N folders an earlier build made with other settings (or an older format)."""
    return [p for p in _checkpoint_dirs(out) if _made_by_build(p) and not _same_config(p, config)]


def _discard(path: Path) -> None:
    """Remove a checkpoint folder: renamed away first, so a kill midway leaves a ``.checkpoint-*.tmp``
    (cleared by the next build), never a half-deleted ``checkpoint-N`` that looks like someone else's."""
    if not path.exists():
        return
    doomed = path.with_name(f".{path.name}.removed-{os.getpid()}.tmp")
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _refuse_foreign_checkpoints(out: Path) -> None:
    foreign = [p.name for p in _checkpoint_dirs(out) if not _made_by_build(p)]
    if foreign:
        raise OutputPathError(
            f"--out {str(out)!r} holds {', '.join(foreign)}, which `vlm-lab checkpoints build` did not make; "
            "it replaces only its own builds: move those folders elsewhere or pick another --out"
        )


def _remove_earlier_builds(out: Path, config: TrainConfig) -> None:
    stale = _earlier_builds(out, config)
    if not stale:
        return
    then, then_format = build_record(stale[-1])
    now = config.to_dict()
    changed = [k for k in now if k != "out" and then.get(k) != now[k]]
    if then_format != FORMAT_VERSION:
        why = f"in checkpoint format {then_format}, now {FORMAT_VERSION}"
    elif changed:
        why = "with " + ", ".join(f"{k}={then.get(k)!r}" for k in changed) + "; now " + ", ".join(f"{k}={now[k]!r}" for k in changed)
    else:
        why = f"incomplete (no {_missing(stale[-1]) or 'config.json'})"
    for path in stale:
        _discard(path)
    warnings.warn(
        f"removed {', '.join(p.name for p in stale)} from {out}: an earlier build made them {why}, "
        "so they do not belong to this run",
        StaleCheckpointsWarning,
        stacklevel=3,
    )


def _train_and_save(
    config: TrainConfig, out: Path, save_steps: list[int], *, progress: bool, on_save: Callable[[Path], None] | None
) -> list[Path]:
    from tqdm.auto import tqdm

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    processor = build_processor()
    model = build_model(processor, seed=config.seed)
    data = shapes.make_training_triples(config.train_images, seed=config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 20) * max(0.05, 1 - step / config.steps)
    )
    save = lambda step: _save_checkpoint(  # noqa: E731
        model, processor, out, step, log_history, config, optimizer=optimizer, scheduler=scheduler, train_samples=len(data)
    )
    log_history: list[dict] = []
    if not _same_config(out / "checkpoint-0", config):  # the initial weights, before a resume loads later ones
        save(0)
    resumed = _resume(out, config, save_steps, model, optimizer, scheduler)
    done = resumed or 0
    if resumed:
        log_history = trainer_state(out / f"checkpoint-{done}")["log_history"]
    paths = [out / f"checkpoint-{s}" for s in save_steps if s <= done]
    batches = _batch_order(len(data), config)
    for _ in range(done):  # replay the data order up to the resumed step (no training)
        next(batches)
    desc = f"training tiny VLM (resumed at step {done})" if resumed else "training tiny VLM"
    bar = tqdm(total=config.steps, initial=done, desc=desc, unit="step", disable=not progress)
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
            log_history.append({"step": step, "epoch": _epoch(step, config, len(data)), "loss": round(loss.item(), 5),
                                "grad_norm": round(grad_norm.item(), 5), "learning_rate": scheduler.get_last_lr()[0]})
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update(1)
            if step in save_steps:
                if not all(torch.isfinite(p).all() for p in model.parameters()):
                    raise _diverged(config, f"the weights became nan/inf by step {step}", paths[-1])
                log_history[-1]["elapsed_s"] = round(time.perf_counter() - start, 2)
                paths.append(save(step))
                if on_save:
                    on_save(paths[-1])
    return paths


def _epoch(step: int, config: TrainConfig, train_samples: int) -> float:
    """Epochs of the training data seen after ``step`` steps (fractional, as the Trainer counts them)."""
    return round(step * config.batch_size / train_samples, 4)


def _diverged(config: TrainConfig, what: str, last_saved: Path) -> ConfigError:
    return ConfigError(
        f"training diverged: {what} with learning_rate={config.learning_rate} "
        f"(saved checkpoints up to {last_saved.name} are kept, none with NaN weights); "
        f"lower --learning-rate (default {TrainConfig().learning_rate})"
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
        if not _same_config(path, config):
            break
        if (path / "optimizer.pt").is_file() and (path / "scheduler.pt").is_file():
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


def build_record(path: Path) -> tuple[dict | None, object]:
    """``(training config, format)`` that ``train`` recorded in a checkpoint; ``(None, None)`` if it made none.

    Read from ``stateful_callbacks`` (where ``_save_checkpoint`` writes it) or from the
    top-level keys that builds before that wrote, so their checkpoints stay recognised.
    """
    saved = trainer_state(path)
    record = (saved.get("stateful_callbacks") or {}).get(BUILD_RECORD)
    if isinstance(record, dict) and isinstance(record.get("args"), dict):
        return record["args"], (record.get("attributes") or {}).get("format")
    if isinstance(saved.get("vlm_lab_train_config"), dict):
        return saved["vlm_lab_train_config"], saved.get("vlm_lab_format")
    return None, None


# What a build's checkpoint needs to count as built (save_pretrained writes each): a folder without one does not load.
_NEEDED = ("config.json", "model.safetensors")


def _missing(path: Path) -> str:
    """The first file of ``_NEEDED`` that ``path`` lacks; "" when it has them all."""
    return next((name for name in _NEEDED if not (path / name).is_file()), "")


def _same_config(path: Path, config: TrainConfig) -> bool:
    if _missing(path):
        return False
    then, then_format = build_record(path)
    if then is None or then_format != FORMAT_VERSION:
        return False
    without_out = lambda d: {k: v for k, v in d.items() if k != "out"}  # noqa: E731 - the same run saved elsewhere
    return without_out(then) == without_out(config.to_dict())
