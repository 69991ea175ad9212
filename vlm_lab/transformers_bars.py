"""Turning transformers' own progress bars off in one thread (a small checkpoint's "Loading weights" bar).

transformers has one process-wide tqdm hook (``transformers.utils.logging.set_tqdm_hook``), and vlm_lab loads models
in several threads at once (Space visitors, the model cache, the explorer's background run). Each load swapping the
hook in and putting back what it found left bars off for the rest of the process when two loads finished in the other
order, and quieted another thread's large download meanwhile. So one hook is installed while any thread is quiet,
and it quiets only the threads inside ``no_transformers_bars``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any


class _QuietBars(threading.local):
    """How deep this thread is inside ``no_transformers_bars``."""

    depth = 0


_quiet = _QuietBars()
_hook_lock = threading.Lock()
_hook_state: dict[str, Any] = {"threads": 0, "previous": None}  # threads inside; the hook ours replaced


def _quiet_hook(factory, args, kwargs):
    previous = _hook_state["previous"]
    if _quiet.depth:
        kwargs = {**kwargs, "disable": True}
    return previous(factory, args, kwargs) if previous else factory(*args, **kwargs)


@contextlib.contextmanager
def no_transformers_bars() -> Iterator[None]:
    """No transformers progress bar made in this thread inside (through its tqdm hook; huggingface_hub's settings are
    left alone). A hook in place before is called for every bar, and is back in place once no thread is inside."""
    from transformers.utils import logging as hf_logging

    with _hook_lock:
        if _quiet.depth == 0:
            if _hook_state["threads"] == 0:
                _hook_state["previous"] = hf_logging.set_tqdm_hook(_quiet_hook)
            _hook_state["threads"] += 1
        _quiet.depth += 1
    try:
        yield
    finally:
        with _hook_lock:
            _quiet.depth -= 1
            if _quiet.depth == 0:
                _hook_state["threads"] -= 1
                if _hook_state["threads"] == 0:
                    current = hf_logging.set_tqdm_hook(_hook_state["previous"])
                    if current is not _quiet_hook:  # set by someone else meanwhile: theirs stays
                        hf_logging.set_tqdm_hook(current)
                    _hook_state["previous"] = None
