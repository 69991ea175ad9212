"""What the model cache keeps per model: a loaded model's entry, a ``use`` block and its pin on it, a load in flight.

Moved out of ``model_cache`` (``ModelCache`` holds and changes them under its lock).
"""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import Future
from typing import Callable

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


class _InUse:
    """``ModelCache.use``'s block: ``take(pin)`` gets the model and pins it as the ``with`` enters, ``unpin(pin)``
    lets go of it as the block is left.

    Whatever ends ``__enter__`` after the model was pinned (an interrupt as ``take`` returns included) lets go of
    it there, since a ``with`` whose ``__enter__`` raises never calls ``__exit__``: with ``@contextmanager``, the
    generator paused at its ``yield`` kept it in use for as long as the interrupt's traceback was kept (a notebook
    keeps its last one). ``unpin`` lets go only once; ``__del__`` lets go of a pin an interrupt in ``__exit__`` left.
    """

    __slots__ = ("_take", "_unpin", "_pin")

    def __init__(self, take: Callable[[_Pin], _Entry], unpin: Callable[[_Pin], None]) -> None:
        self._take, self._unpin, self._pin = take, unpin, _Pin()

    def __enter__(self) -> LoadedModel:
        try:
            return self._take(self._pin).loaded
        except BaseException:
            self._unpin(self._pin)
            raise

    def __exit__(self, *exc_info: object) -> None:
        self._unpin(self._pin)

    def __del__(self) -> None:
        if self._pin.entry is not None:
            self._unpin(self._pin)


@dataclasses.dataclass
class _Load:
    """A load in flight: the files it loads, the bytes the budget holds for it, and its outcome for the gets waiting."""

    fingerprint: str
    name: str = ""  # the checkpoint's, for what a wait is told (``CacheWait``)
    future: Future = dataclasses.field(default_factory=Future)
    thread: int = dataclasses.field(default_factory=threading.get_ident)  # the thread loading it
    reserved: int = 0
    # the threads with ``use`` blocks open whose gets wait for it: it must not wait for those (a set, so that
    # letting go is the same whether or not an interrupt came before the thread was added)
    pinned_waiters: set = dataclasses.field(default_factory=set)

