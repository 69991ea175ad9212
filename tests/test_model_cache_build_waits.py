"""A load whose turn to build waits for another thread's model build (``model_construction``) is told which, and
stops when cancelled, before its own ``from_pretrained`` begins.

Real tiny checkpoints, real loads and real threads: the first load is held inside transformers' own
``from_pretrained`` (its build turn taken) by a trace in its thread, never by sleeping.
"""

from __future__ import annotations

import sys
import threading

import pytest
from model_cache_refs import refs  # noqa: F401 - a fixture
from test_model_cache_threads import Run

from vlm_lab.model_cache import CacheWait, ModelCache, WaitCancelled
from vlm_lab.models import load_model

pytestmark = pytest.mark.timeout(180)
HOLD_S = 60  # only so a broken wait fails the test instead of hanging it; never reached when it works


class HeldInFromPretrained:
    """The real loader; the load of ``name`` stops inside ``from_pretrained`` (as it loads the weights) until ``release``."""

    def __init__(self, name: str) -> None:
        self.name, self.inside, self.release = name, threading.Event(), threading.Event()
        self.loading: list[str] = []  # the checkpoints whose from_pretrained went as far as loading weights

    def __call__(self, ref, **kwargs):
        previous = sys.gettrace()  # (coverage's, when it runs)

        def trace(frame, event, _arg):
            if event == "call" and frame.f_code.co_name == "_load_pretrained_model":
                self.loading.append(ref.name)
                if ref.name == self.name and not self.inside.is_set():
                    self.inside.set()
                    assert self.release.wait(HOLD_S), "the test never released the load"
            return previous

        sys.settrace(trace)
        try:
            return load_model(ref, **kwargs)
        finally:
            sys.settrace(previous)


def held_load(cache: ModelCache, ref) -> tuple[Run, HeldInFromPretrained]:
    """A get of ``ref`` in a thread of its own, returned once it is inside from_pretrained."""
    cache.loader = held = HeldInFromPretrained(ref.name)
    first = Run(lambda: cache.get(ref, device="cpu").ref.name)
    assert held.inside.wait(HOLD_S)
    return first, held


def test_a_load_waiting_for_another_threads_build_is_told_which_and_stops_when_cancelled(refs):
    """Before, the status said 'Loading checkpoint-250' while it waited for checkpoint-0's build, and Stop waited too."""
    cache = ModelCache(budget_bytes="1GB")
    first, held = held_load(cache, refs[0])
    waits, loads, told, stop = [], [], threading.Event(), threading.Event()
    second = Run(lambda: cache.get(refs[1], device="cpu", cancel=stop, on_wait=lambda w: (waits.append(w), told.set()),
                                   on_load=lambda ref: loads.append(ref.name)))
    assert told.wait(HOLD_S), "a load waiting for another thread's build was told nothing"
    assert waits == [CacheWait("checkpoint-250", "build", loader=first.name, building="checkpoint-0")]
    assert loads == ["checkpoint-250"]  # its room was reserved: the loader began, and waits for its build turn
    stop.set()
    cache.wake()
    second.join(HOLD_S)
    assert isinstance(second.error, WaitCancelled), second.error
    assert str(second.error) == ("checkpoint-250 stopped waiting for checkpoint-0's load in thread "
                                 f"{first.name!r} in the model cache (models in use: none)")
    held.release.set()
    first.join(HOLD_S)
    assert first.value == "checkpoint-0" and cache.loaded == ["checkpoint-0"] and cache.stats["loads"] == 1
    assert held.loading == ["checkpoint-0"]  # checkpoint-250's from_pretrained never built anything
    assert cache.get(refs[1], device="cpu").ref.name == "checkpoint-250"  # nothing was left held: it loads now


def test_a_load_told_its_build_turn_came_after_waiting_is_told_it_loads_again(refs):
    cache = ModelCache(budget_bytes="1GB")
    first, held = held_load(cache, refs[0])
    told, waiting = [], threading.Event()

    def on_wait(wait):
        told.append(("wait", wait.reason, wait.building))
        waiting.set()

    second = Run(lambda: cache.get(refs[1], device="cpu", on_wait=on_wait, on_load=lambda ref: told.append(("load", ref.name))))
    assert waiting.wait(HOLD_S)
    held.release.set()
    second.join(HOLD_S)
    first.join(HOLD_S)
    assert second.value.ref.name == "checkpoint-250" and second.error is None
    assert told == [("load", "checkpoint-250"), ("wait", "build", "checkpoint-0"), ("load", "checkpoint-250")]


def test_an_interrupt_while_waiting_for_a_build_turn_leaves_nothing_held(refs):
    """A Ctrl-C (here raised by the wait's hook, in the waiting thread) as it waits: no turn taken, no load in flight."""
    cache = ModelCache(budget_bytes="1GB")
    first, held = held_load(cache, refs[0])

    def interrupt(wait):
        raise KeyboardInterrupt

    second = Run(lambda: cache.get(refs[1], device="cpu", on_wait=interrupt))
    second.join(HOLD_S)
    assert isinstance(second.error, KeyboardInterrupt), second.error
    held.release.set()
    first.join(HOLD_S)
    third = Run(lambda: cache.get(refs[1], device="cpu").ref.name)  # would wait for ever for a turn the interrupt kept
    third.join(HOLD_S)
    assert third.value == "checkpoint-250" and cache.loaded == ["checkpoint-0", "checkpoint-250"]
