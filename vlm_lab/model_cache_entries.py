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
    interrupt comes, the block lets go of exactly what was taken (``entry`` is set before the pin is)."""

    __slots__ = ("entry",)

    def __init__(self) -> None:
        self.entry: _Entry | None = None


class _InUse:
    """``ModelCache.use``'s block: ``take(pin)`` gets the model and pins it as the ``with`` enters, ``unpin(pin)``
    lets go of it as the block is left.

    Each entry is a block of its own, with its own pin: the object may be entered again while it is open, nested in
    one thread (a helper entering the block it was given) or by several threads at once (a Space's module-level
    block), and the model stays in use until the last of those blocks is left. With one pin for the object, the
    inner block's end let go of the model while the outer block still used it. A thread's blocks end innermost
    first, so ``__exit__`` lets go of the last pin this thread took (``_open``: thread id -> its pins in order).

    Whatever ends ``__enter__`` after the model was pinned (an interrupt as ``take`` returns included) lets go of
    it there, since a ``with`` whose ``__enter__`` raises never calls ``__exit__``: with ``@contextmanager``, the
    generator paused at its ``yield`` kept it in use for as long as the interrupt's traceback was kept (a notebook
    keeps its last one). A pin is listed before it can take anything and unlisted only once let go, so an interrupt
    at any moment leaves each pin let go or listed; one that an interrupt left held (as ``__exit__`` begins, or in
    ``__enter__``'s handler before it let go) is let go of by ``__del__``, or by that thread's next ``__exit__`` in
    place of that block's own pin (then let go of by ``__del__``): the block is in use until the object is dropped.
    """

    __slots__ = ("_take", "_unpin", "_open")

    def __init__(self, take: Callable[[_Pin], _Entry], unpin: Callable[[_Pin], None]) -> None:
        self._take, self._unpin = take, unpin
        self._open: dict[int, list[_Pin]] = {}

    def __enter__(self) -> LoadedModel:
        pin, pins = _Pin(), self._open.setdefault(threading.get_ident(), [])  # only this thread changes its list
        try:
            pins.append(pin)
            return self._take(pin).loaded
        except BaseException:
            self._unpin(pin)
            if pin in pins:
                pins.remove(pin)
            raise

    def __exit__(self, *exc_info: object) -> None:
        pins = self._open.get(threading.get_ident(), [])
        while pins:  # the innermost pin still held; pins above it were let go by an exit an interrupt cut short
            pin = pins[-1]
            held = pin.entry is not None
            self._unpin(pin)
            pins.pop()  # after letting go: an interrupt between the two leaves a let-go pin, skipped here next time
            if held:
                break
        if not pins:  # (threads come and go: forget those with no block of it open)
            self._open.pop(threading.get_ident(), None)

    def __del__(self) -> None:
        for pins in self._open.values():
            for pin in pins:
                if pin.entry is not None:
                    self._unpin(pin)


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

