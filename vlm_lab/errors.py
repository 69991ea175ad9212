"""Errors that say what went wrong, with which value, and how to fix it.

Each subclass also inherits the matching builtin, so callers that catch
``FileNotFoundError`` or ``ValueError`` keep working. The CLI maps
``VlmLabError`` to a one-line message and a non-zero exit code instead of a
traceback, and a notebook cell shows that message alone.
"""

from __future__ import annotations


class VlmLabError(Exception):
    """Base class for every error vlm_lab raises on purpose."""

    exit_code: int = 2

    def _render_traceback_(self) -> list[str]:
        """What IPython (a notebook cell, papermill's output notebook) shows for it: the message, which names the
        value and the fix, without the frames of vlm_lab code around it; a real bug still gets its traceback."""
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}", *getattr(self, "__notes__", ())]


class ConfigError(VlmLabError, ValueError):
    """A config value or combination of values is invalid."""


class DataError(VlmLabError, ValueError):
    """Input data (a JSONL file, an image, a data spec) is unusable."""


class CheckpointNotFoundError(VlmLabError, FileNotFoundError):
    """A checkpoint reference points at nothing loadable."""


class DeviceError(VlmLabError, RuntimeError):
    """The requested device or dtype cannot be used on this machine."""


class OutputPathError(VlmLabError, OSError):
    """An output location is a file, or cannot be written."""


class MemoryBudgetError(VlmLabError, MemoryError):
    """A model cannot fit the memory budget even after evicting everything."""


class SweepError(VlmLabError, RuntimeError):
    """A sweep file is invalid or a sweep could not run."""


class PublishError(VlmLabError, RuntimeError):
    """Publishing to a Hugging Face Space failed; the message names the fix."""




class TruncatedOutputWarning(UserWarning):
    """Outputs stopped at ``max_new_tokens`` before the model's end token: their text is cut off.

    Not an error: the comparison finishes and marks them (``truncated`` per sample,
    ``n_truncated`` per checkpoint); a cut-off answer usually scores as wrong, so the
    warning names the fix (a larger ``--max-new-tokens``). The CLI prints it as one line.
    """


class NonFiniteWarning(RuntimeWarning):
    """A checkpoint's next-token scores held NaN or +inf (float16 overflow, broken weights).

    Not an error: the comparison finishes and marks the outputs concerned
    (``nonfinite`` per sample, ``n_nonfinite`` per checkpoint). The CLI prints it as one line.
    """
