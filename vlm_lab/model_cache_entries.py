"""What the model cache keeps per model: a loaded model's entry, a ``use`` block's pin on it, a load in flight.

Moved out of ``model_cache`` (``ModelCache`` holds and changes them under its lock).
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future

from vlm_lab.models import LoadedModel


@dataclasses.dataclass
class _Entry:
    loaded: LoadedModel
    fingerprint: str
    nbytes: int
    pins: dict = dataclasses.field(default_factory=dict)  # its ``use`` blocks (_Pin -> thread id): not evicted for room


class _Pin:
    """One ``use`` block's hold on its entry: made before the block's ``try``, so that whatever the moment an
    interrupt comes, its ``finally`` lets go of exactly what was taken (``entry`` is set before the pin is)."""

    __slots__ = ("entry",)

    def __init__(self) -> None:
        self.entry: _Entry | None = None


@dataclasses.dataclass
class _Load:
    """A load in flight: the files it loads, the bytes the budget holds for it, and its outcome for the gets waiting."""

    fingerprint: str
    name: str = ""  # the checkpoint's, for what a wait is told (``CacheWait``)
    future: Future = dataclasses.field(default_factory=Future)
    thread: int = dataclasses.field(default_factory=threading.get_ident)  # the thread loading it
    reserved: int = 0
    pinned_waiters: int = 0  # gets waiting for it from threads with ``use`` blocks open: it must not wait for those

