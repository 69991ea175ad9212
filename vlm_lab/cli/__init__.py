"""The ``vlm-lab`` command: a thin map from subcommand to one library call.

Each capability has its own module here exposing ``register(subparsers)``,
which adds its parser and sets ``func`` to a handler ``(args) -> int``.
Heavy libraries are imported inside the handlers, so ``vlm-lab --help`` is
instant. ``VlmLabError`` becomes a one-line message and exit code 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import os
import re
import shlex
import sys
import warnings
from collections.abc import Iterator

from vlm_lab import __version__
from vlm_lab.errors import ConfigError, DeviceError, MemoryBudgetError, OutputPathError, PublishError, SweepError, VlmLabError

# One module per capability, in the order `vlm-lab --help` lists them.
SUBCOMMAND_MODULES = ("checkpoints", "compare", "memory", "runs", "sweep")


# Shown under `vlm-lab --help`: what a newcomer runs first (tests/test_cli_help.py parses each line).
START_HERE = """\
start here (offline, on the embedded tiny checkpoints; `make checkpoints` trains them):
  vlm-lab checkpoints eval                                 held-out accuracy of each checkpoint
  vlm-lab compare checkpoints/shapes --data shapes:val:96  side by side, written to runs/compare
  vlm-lab show runs/compare --by question_type             a saved comparison again, by question type
  vlm-lab memory checkpoints/shapes --no-measure           will they fit a 16 GB T4 Space?
  vlm-lab sweep sweeps/shapes-ablation.yaml --dry-run      the example sweep's runs and their state
  vlm-lab runs                                             W&B offline runs and their `wandb sync` command

`vlm-lab COMMAND --help` for each command's options and exit codes; README.md for the rest.
An error is one line naming the fix (exit 2); Ctrl-C exits 130."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-lab",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compare VLM checkpoints side by side, profile their memory, log ablations to W&B and\n"
        "run papermill sweeps. Runs offline on the embedded tiny shapes checkpoints by default.",
        epilog=START_HERE,
    )
    parser.add_argument("--version", action="version", version=f"vlm_lab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(f"vlm_lab.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"vlm_lab.cli.{name}":
                raise
            continue  # capability not built yet
        module.register(sub)
    return parser


SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away


def main(argv: list[str] | None = None) -> int:
    """Run ``vlm-lab``; its exit code. A reader that closed the pipe (``| head``) ends it quietly."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not as a traceback at interpreter exit
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return SIGPIPE_EXIT


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from vlm_lab.signals import Terminated, terminate_raises

    try:
        with warnings.catch_warnings(), terminate_raises():  # SIGTERM (docker stop, timeout) stops as Ctrl-C does
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            from vlm_lab.pixel_limit import ignore_pillows_warning

            ignore_pillows_warning()  # an image over the limit is refused with vlm_lab's message, not also Pillow's
            return int(args.func(args) or 0)
    except VlmLabError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        why = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        if getattr(args, "no_cache", False):
            print(f"{why}; nothing was cached (--no-cache), so a re-run starts over", file=sys.stderr)
        else:
            again = shlex.join(["vlm-lab", *(sys.argv[1:] if argv is None else argv)])
            print(f"{why}; finished work is saved and a re-run resumes from it: {again}", file=sys.stderr)
        return e.exit_code if isinstance(e, Terminated) else 130


def _one_line_warnings(show):
    """vlm_lab's own warnings as one ``warning: ...`` line on stderr; others as ``show`` prints them."""

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        if category.__module__.startswith("vlm_lab."):
            from tqdm.auto import tqdm

            tqdm.write(f"warning: {message}", file=sys.stderr)  # above a progress bar, not into its line
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning


def check_embedded_checkpoints(refs: list[str] | tuple[str, ...]) -> None:
    """The embedded default (``checkpoints/shapes``) named but not here: say how to build it, or where it is.

    Without this, a fresh clone's first ``vlm-lab compare`` (or one run from ``notebooks/``) read
    ``checkpoints/shapes`` as a hub id and suggested ``hf download checkpoints/shapes``.

    Raises:
        CheckpointNotFoundError: a ref is the default path and no such folder exists here.
    """
    from pathlib import Path

    from vlm_lab.config import TrainConfig
    from vlm_lab.errors import CheckpointNotFoundError
    from vlm_lab.paths import project_root

    default = TrainConfig().out
    for ref in refs:
        if os.path.normpath(ref) != os.path.normpath(default) or Path(ref).exists():
            continue
        here, root = Path.cwd(), project_root()
        if root != here.resolve() and (root / default).is_dir():
            fix = f"the embedded checkpoints are at {root / default}: run from the project root ({root}) or name that folder"
        else:
            fix = (f"the embedded tiny checkpoints are not built yet: build them with `vlm-lab checkpoints build --out {default}` "
                   "(about three minutes on 2 CPU cores; `make checkpoints` in the project root does the same), or name your own "
                   "checkpoint folders")
        raise CheckpointNotFoundError(f"no checkpoints at {ref!r} (relative to {here}); {fix}")


@contextlib.contextmanager
def flags_in_config_errors(*fields: str, **renamed: str) -> Iterator[None]:
    """Inside, a ``ConfigError``, ``DeviceError``, ``MemoryBudgetError``, ``OutputPathError``, ``SweepError`` or
    ``PublishError`` naming config fields names the command's flags.

    The library speaks in fields (``batch_size must be ...``, ``use dtype='float16'``); a shell user
    types flags (``--batch-size must be ...``, ``use --dtype float16``).

    Args:
        fields: fields whose flag is their name with dashes (``max_new_tokens`` -> ``--max-new-tokens``).
        renamed: fields with another flag (``output_dir="--out"``). A boolean field's flag is the one that
            sets it: ``measure="--no-measure"`` (a ``--no-`` flag sets False, any other True), so
            ``measure=False`` reads ``--no-measure`` and ``rehearse=False`` reads ``no --rehearse``.
    """
    try:
        yield
    except (ConfigError, DeviceError, MemoryBudgetError, OutputPathError, SweepError, PublishError) as e:
        e.args = (_as_flags(str(e), {**{f: "--" + f.replace("_", "-") for f in fields}, **renamed}),)  # its type and fields kept
        raise


# A value as a message writes it: a str's repr (in double quotes when it holds a ', a backslash doubled), or a word
_VALUE = r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\w+"""


def _as_flags(message: str, flags: dict[str, str]) -> str:
    names = "|".join(sorted(map(re.escape, flags), key=len, reverse=True))

    def with_value(m: re.Match) -> str:  # name=value (dtype='float16', measure=False, out="it's")
        flag, value = flags[m.group(1)], m.group(2)
        if value[0] in "'\"":
            try:
                value = ast.literal_eval(value)
            except (SyntaxError, ValueError):  # quoted by hand, not a repr
                value = value[1:-1]
        if value in ("True", "False"):
            return flag if (value == "True") != flag.startswith("--no-") else f"no {flag}"
        return f"{flag} {shlex.quote(value)}"

    message = re.sub(rf"\b({names})\b(?= must\b)", lambda m: flags[m.group(1)], message)  # "batch_size must be ..."
    return re.sub(rf"\b({names})=({_VALUE})", with_value, message)
