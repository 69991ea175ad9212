"""The tiny build's checkpoint folders: saving one atomically, telling which build made one, replacing an earlier build's.

A build's checkpoints are laid out as the HF Trainer lays them out (``OUT/checkpoint-N`` with
``trainer_state.json``, ``optimizer.pt``, ``scheduler.pt``); the build's own record (its
``TrainConfig`` and ``FORMAT_VERSION``) rides in ``trainer_state.json``'s ``stateful_callbacks``.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import math
import os
import re
import shutil
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError

from vlm_lab.config import TrainConfig
from vlm_lab.data import atomic_write_text
from vlm_lab.errors import OutputPathError
from vlm_lab.paths import probe_write
from vlm_lab.training_log import trainer_state

# Bump when the model, tokenizer or data change, so old checkpoints are rebuilt.
FORMAT_VERSION = 5  # 2: one-thread training (4cd413a); 3: oneDNN off, kernels pinned (cpu_kernels); 4: MKL's COMPATIBLE branch (AMD too); 5: NNPACK off (its blocks follow the L1 cache): earlier builds hold other weights
BUILD_RECORD = "VlmLabTinyBuild"  # trainer_state.json stateful_callbacks key: {"args": TrainConfig, "attributes": {"format"}}


def refuse_model_folder(out: Path) -> None:
    """Raise ``OutputPathError`` when ``out`` holds a model, or is a path no folder can have."""
    try:
        holds_model = (out / "config.json").is_file()
    except OSError as e:  # is_file passes over a missing folder, not a name too long or a folder it may not enter
        fix = "pass a shorter folder path" if e.errno == errno.ENAMETOOLONG else "pick a folder you can write to"
        raise OutputPathError(f"out={str(out)!r} cannot be used ({e.strerror}); {fix}") from e
    if holds_model:  # a checkpoint or a run's final model: compare would list both as one run
        raise OutputPathError(
            f"out={str(out)!r} holds a model (config.json): its checkpoint-N folders would be read as one run "
            "with that model; pass a folder of its own, such as out='checkpoints/mine'"
        )


def prepare_out_dir(out: Path) -> None:
    """Create ``out`` and prove it is writable, or raise ``OutputPathError`` naming the fix."""
    if out.is_symlink() and not out.exists():  # mkdir would say "File exists"
        raise OutputPathError(f"out={str(out)!r} is a link to {os.readlink(out)!r}, which does not exist; "
                              "create that folder or build into another one")
    if out.exists() and not out.is_dir():
        raise OutputPathError(f"out={str(out)!r} is a file, not a folder; pass a folder such as out='checkpoints/shapes'")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe_write(out)
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise OutputPathError(f"out={str(out)!r} is not writable ({reason}); pick a folder you can write to") from e


def _save_count(steps: int, save_every: int) -> int:
    """How many checkpoints ``train`` saves: step 0, every ``save_every`` steps, and the last step."""
    return 1 + steps // save_every + (steps % save_every != 0)


def check_room(out: Path, to_save: int, each: int, *, steps: int) -> None:
    """Raise ``OutputPathError`` when ``to_save`` checkpoints of about ``each`` bytes cannot fit in ``out``;
    it names the smallest ``save_every`` whose checkpoints of a ``steps``-step build fit, if one does.

    A full disk midway stops a build cleanly, but only once the disk is full, for everyone on it.
    """
    from vlm_lab.units import human_bytes

    need, free = to_save * each, shutil.disk_usage(out).free
    if need > free:
        fits = free // each
        # 1 + ceil(steps / every) checkpoints fit when every >= steps / (fits - 1); step 0 and the last at least
        fix = (f"pass save_every={-(-steps // (fits - 1))} or more (or free space, or build into another folder)"
               if fits >= _save_count(steps, steps) else "free space there, or build into another folder")
        raise OutputPathError(
            f"this build saves {to_save} checkpoints of ~{human_bytes(each)} each ({human_bytes(need)}), and {out} has "
            f"{human_bytes(free)} free; {fix}"
        )


def save_checkpoint(model, processor, out: Path, step: int, log_history: list[dict], config: TrainConfig, *,
                     optimizer, scheduler, train_samples: int) -> Path:
    """Save ``checkpoint-<step>`` atomically and durably: write to a temp folder, fsync it, rename, fsync ``out``.

    Besides the model, processor and ``trainer_state.json``, the optimizer and scheduler
    states go where the HF Trainer puts them (``optimizer.pt``, ``scheduler.pt``), so an
    interrupted build resumes from its last checkpoint (``tiny._resume``).
    """
    final = out / f"checkpoint-{step}"
    tmp = out / f".checkpoint-{step}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        _write_checkpoint(model, processor, tmp, step, log_history, config,
                          optimizer=optimizer, scheduler=scheduler, train_samples=train_samples)
        # On disk before the name is: after a power loss a renamed folder could otherwise hold
        # empty or cut files (ext4, xfs write data later than the rename) that a resume would trust.
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
    except (OSError, SafetensorError) as e:  # a full disk or quota: the partial folder would only hold the space
        shutil.rmtree(tmp, ignore_errors=True)
        raise _save_failed(e, out, step) from e
    _discard(final)
    tmp.rename(final)
    _fsync(out)  # the rename (and the discard before it) survive a power loss too
    return final


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        # some network and FUSE filesystems cannot fsync a folder: they write its entries at once
        if not (path.is_dir() and e.errno in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP)):
            raise
    finally:
        os.close(fd)


def _write_checkpoint(model, processor, tmp: Path, step: int, log_history: list[dict], config: TrainConfig, *,
                      optimizer, scheduler, train_samples: int) -> None:
    from transformers import TrainerState

    from vlm_lab.transformers_bars import no_transformers_bars

    with no_transformers_bars():  # the one tiny shard writes in a millisecond: no "Writing model shards" bar
        model.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    _torch_save(optimizer.state_dict(), tmp / "optimizer.pt")
    _torch_save(scheduler.state_dict(), tmp / "scheduler.pt")
    # A real TrainerState, so TrainerState.load_from_json (Trainer's resume) reads it; the build's
    # own record rides in stateful_callbacks, where the Trainer keeps its callbacks' state.
    state = TrainerState(
        epoch=epochs_seen(step, config, train_samples),
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


def _torch_save(state: dict, path: Path) -> None:
    """``torch.save`` through Python's own file writes: a full disk is an ``OSError`` naming its errno.

    Given a path, torch writes in C++ and a full disk came out as ``RuntimeError: [enforce fail at
    inline_container.cc] ... unexpected pos``, which no caller can tell from a bug.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.write_bytes(buffer.getbuffer())


def _save_failed(error: Exception, out: Path, step: int) -> OutputPathError:
    """The error for a checkpoint that could not be written, naming the cause, what is kept and the fix."""
    code = getattr(error, "errno", None)
    if code is None:  # safetensors reports an OSError as text: "... I/O error: No space left on device (os error 28)"
        found = re.search(r"\(os error (\d+)\)", str(error))
        code = int(found.group(1)) if found else None
    reason = f"{os.strerror(code)} (errno {code})" if code else str(error)
    kept = [p for p in checkpoint_dirs(out) if int(p.name.removeprefix("checkpoint-")) < step]
    if kept:
        then = f"{kept[-1].name} and earlier are kept: "
        resume = f" to resume from {kept[-1].name}"
    else:
        then, resume = "", ""
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free space there (or build into another folder)"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "make it writable (or build into another folder)"
    else:
        fix = "build into another folder"
    advice = f"{then}{fix} and run again{resume}"
    return OutputPathError(f"could not save checkpoint-{step} in {out}: {reason}. {advice[0].upper()}{advice[1:]}")


class StaleCheckpointsWarning(UserWarning):
    """A build removed the checkpoint-N folders an earlier build with other settings left in ``out``."""


def checkpoint_dirs(out: Path) -> list[Path]:
    """Every ``checkpoint-N`` folder in ``out``, loadable or not."""
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.removeprefix("checkpoint-").isdigit()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("checkpoint-")))


def _made_by_build(path: Path) -> bool:
    """Whether ``train`` saved this folder: its trainer_state.json records the training config."""
    return build_record(path)[0] is not None


def earlier_builds(out: Path, config: TrainConfig) -> list[Path]:
    """checkpoint-N folders an earlier build made with other settings (or an older format)."""
    return [p for p in checkpoint_dirs(out) if _made_by_build(p) and not same_config(p, config)]


def _discard(path: Path) -> None:
    """Remove a checkpoint folder: renamed away first, so a kill midway leaves a ``.checkpoint-*.tmp``
    (cleared by the next build), never a half-deleted ``checkpoint-N`` that looks like someone else's."""
    if not path.exists():
        return
    doomed = path.with_name(f".{path.name}.removed-{os.getpid()}.tmp")
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def short_list(names: list[str]) -> str:
    """``names`` joined by commas; past 8 only the first 3 and the last 2 (--save-every 1: a thousand names on one line)."""
    return ", ".join(names if len(names) <= 8 else [*names[:3], "...", *names[-2:]])


def refuse_foreign_checkpoints(out: Path) -> None:
    foreign = [p.name for p in checkpoint_dirs(out) if not _made_by_build(p)]
    if foreign:
        raise OutputPathError(
            f"out={str(out)!r} holds {short_list(foreign)}, which no tiny build made; "
            "it replaces only its own builds: move those folders elsewhere or build into another folder"
        )


def remove_earlier_builds(out: Path, config: TrainConfig) -> None:
    stale = earlier_builds(out, config)
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
        why = f"incomplete ({_damage(stale[-1]) or 'no config.json'})"
    for path in stale:
        _discard(path)
    warnings.warn(
        f"removed {short_list([p.name for p in stale])} from {out}: an earlier build made them {why}, "
        "so they do not belong to this run",
        StaleCheckpointsWarning,
        stacklevel=3,
    )


def epochs_seen(step: int, config: TrainConfig, train_samples: int) -> float:
    """Epochs of the training data seen after ``step`` steps (fractional, as the Trainer counts them)."""
    return round(step * config.batch_size / train_samples, 4)


def build_record(path: Path) -> tuple[dict | None, object]:
    """``(training config, format)`` that ``train`` recorded in a checkpoint; ``(None, None)`` if it made none.

    Read from ``stateful_callbacks`` (where ``save_checkpoint`` writes it) or from the
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


def _damage(path: Path) -> str:
    """Why ``path`` does not load ("no model.safetensors", "model.safetensors is cut short"); "" when it does."""
    from safetensors import safe_open

    if missing := next((name for name in _NEEDED if not (path / name).is_file()), ""):
        return f"no {missing}"
    try:  # reads the header and checks the file covers every tensor it lists: a power loss, a copy cut short
        with safe_open(path / "model.safetensors", "pt"):
            pass
    except (SafetensorError, OSError):
        return "model.safetensors is cut short"
    return ""


def same_config(path: Path, config: TrainConfig) -> bool:
    if _damage(path):
        return False
    then, then_format = build_record(path)
    if then is None or then_format != FORMAT_VERSION:
        return False
    without_out = lambda d: {k: v for k, v in d.items() if k != "out"}  # noqa: E731 - the same run saved elsewhere
    return without_out(then) == without_out(config.to_dict())
