"""The embedded checkpoints a publish builds when its default ``checkpoints`` folder holds none.

``tiny.train`` speaks to its caller in ``TrainConfig``'s fields (``out='checkpoints/shapes' is a file``,
``pass save_every=500``, ``build into another folder``); a publisher passed ``PublishConfig.checkpoints`` (or nothing),
and a publish builds only into that default folder, with default settings. Its errors here name the folder as the
publish's field (``checkpoints='checkpoints/shapes'``; scripts/publish_space.py says ``--checkpoints``, through
``vlm_lab.cli.flags_in_config_errors``), the build's settings as the flags of ``vlm-lab checkpoints build`` (the
command that builds them anywhere, with any settings), and how to publish what that command built.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

from vlm_lab.config import TrainConfig
from vlm_lab.errors import ConfigError, OutputPathError

__all__ = ["build_embedded_checkpoints"]

_SETTINGS = "|".join(f.name for f in dataclasses.fields(TrainConfig) if f.name != "out")
_PY_STR = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""  # a str's repr: in either quotes, with escapes
_REPR, _PLAIN = "\0folder-repr\0", "\0folder\0"  # where the folder's path stands while the rest is reworded


def build_embedded_checkpoints(folder: Path, *, progress: bool = False) -> list[Path]:
    """Train the embedded tiny shapes checkpoints into ``folder`` (the default ``checkpoints``); their paths.

    Raises:
        OutputPathError, ConfigError: the build cannot run there (as ``tiny.train``), said in publish terms.
    """
    from vlm_lab import tiny

    try:
        return tiny.train(TrainConfig(out=str(folder)), progress=progress)
    except (OutputPathError, ConfigError) as e:
        e.args = (in_publish_terms(str(e), str(folder)),)  # its type (and exit code) kept
        raise


def in_publish_terms(message: str, folder: str) -> str:
    """A build error's ``message`` as a publisher reads it, with what to do instead of a build the publish cannot make."""
    build = f"vlm-lab checkpoints build --out {shlex.quote(folder)}"
    message = re.sub(r"; pass a folder(?: of its own)?,? such as out='[^']*'", "", message)  # a publish builds no other: below
    # The folder is set aside while the build's words are reworded: its path may hold anything (`it's`, `a\b`,
    # ` steps=100 `). Its repr first: that is how `out=` names it (in double quotes when it holds a ');
    # a failed save names it plainly, as a word of its own (`in DIR: ...`, `DIR has ...`, `DIR/build.lock`).
    message = message.replace(f"out={folder!r}", f"checkpoints={_REPR}").replace(repr(folder), _REPR)
    message = re.sub(rf"(?<!\S){re.escape(folder)}(?=[\s:/]|$)", lambda _: _PLAIN, message)
    message = re.sub(rf"\bout=({_PY_STR})", r"checkpoints=\1", message)  # a folder named otherwise ('~/x' expanded)
    # a setting is said as a word of its own (`steps=1000 with`, `(e.g. learning_rate=...`): not inside a path
    # (a sweep's run folder `.../steps=100/checkpoints/shapes`)
    message, settings = re.subn(rf"(?<![^\s(])({_SETTINGS})=(\S+?)(?=[\s,;)]|$)",
                                lambda m: f"--{m[1].replace('_', '-')} {m[2]}", message)
    # publishing again would publish the checkpoints saved so far: the build command resumes the build
    message = re.sub(r"\brun again( to resume from checkpoint-\d+)?", lambda m: f"run `{build}`{m[1] or ''}", message)
    message = message.replace(_REPR, repr(folder)).replace(_PLAIN, folder)
    return (f"{message}; a publish builds the embedded checkpoints into checkpoints={folder!r} (the default) only when "
            f"it holds none: build them with `vlm-lab checkpoints build --out DIR`{' (with the flags named here)' * bool(settings)} "
            "and publish with checkpoints='DIR', or pass embed_checkpoints=False; nothing was uploaded")
