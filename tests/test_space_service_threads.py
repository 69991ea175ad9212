"""The Space's service under visitors served at once (Gradio concurrency > 1) with a model cache budget for one model.

Real tiny checkpoints, real loads, real threads. A visitor is held inside its generation by a forward pre-hook
(an Event the test sets); the tests wait on Events and on the cache's own counters, never by sleeping. A
deadlock fails by pytest-timeout.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from test_model_cache_threads import Run, one, refs, until  # noqa: F401 - one and refs are fixtures
from vlm_lab import space_service as ss
from vlm_lab.errors import CheckpointNotFoundError
from vlm_lab.space_settings import SpaceSettings

pytestmark = pytest.mark.timeout(180)

EXAMPLES = Path(__file__).resolve().parents[1] / "space" / "examples"
IMAGE, COLOR = str(EXAMPLES / "red-circle.png"), "What color is the shape?"


@pytest.fixture
def service(tiny_dir, one):
    return ss.ComparisonService(SpaceSettings(checkpoints=(str(tiny_dir),), device="cpu", cache_budget=str(one)))


class Generating:
    """Holds the first forward pass of ``model`` (a visitor generating with it) until ``release`` is set."""

    def __init__(self, model) -> None:
        self.inside, self.release = threading.Event(), threading.Event()
        self.handle = model.register_forward_pre_hook(self._hold)

    def _hold(self, _module, _args) -> None:
        if not self.inside.is_set():
            self.inside.set()
            self.release.wait()


class Loads:
    """The service's loader, noting each load as it begins: its name, the models loaded, and the bytes of evicted
    models a visitor still holds (memory the budget no longer counts). ``fail[name]``: raised by that load, once."""

    def __init__(self, cache) -> None:
        self.cache, self.real = cache, cache.loader
        self.seen: list[tuple[str, list[str], int]] = []
        self.fail: dict[str, Exception] = {}
        cache.loader = self

    def __call__(self, ref, **kwargs):
        self.seen.append((ref.name, self.cache.loaded, self.cache.retained_bytes))
        if ref.name in self.fail:
            raise self.fail.pop(ref.name)
        return self.real(ref, **kwargs)


@pytest.fixture
def generating():
    """``generating(service, label)``: ``label`` loaded now and its next generation held (the model is not kept
    here); every hold is released at the end, also when the test fails while a visitor is held."""
    holds = []

    def hold(service, label: str) -> Generating:
        holds.append(Generating(service.cache.get(service.refs[label], device="cpu").model))
        return holds[-1]

    yield hold
    for h in holds:
        h.release.set()


def test_a_visitor_generating_keeps_its_model_while_another_visitors_model_waits_for_the_room(service, generating):
    """Budget for one model: visitor 2's checkpoint-250 is loaded only once visitor 1 is done with checkpoint-1000.
    Loaded at once, checkpoint-1000 (evicted but still generating) and checkpoint-250 are both in memory: on a
    T4, past the budget, CUDA out of memory."""
    hold = generating(service, "checkpoint-1000")
    loads = Loads(service.cache)
    first = Run(lambda: service.compare(IMAGE, COLOR, ["checkpoint-1000"]))
    hold.inside.wait()
    second = Run(lambda: service.compare(IMAGE, COLOR, ["checkpoint-250"]))
    until(lambda: loads.seen or service.cache.stats["waits"] >= 1)
    assert not loads.seen, f"loaded while checkpoint-1000 still generates with it (retained bytes): {loads.seen}"
    hold.release.set()
    first.join(), second.join()
    assert first.error is None and first.value[0].text == "red" and not first.value[0].error
    assert second.error is None and second.value[0].checkpoint == "checkpoint-250" and not second.value[0].error
    assert service.cache.loaded == ["checkpoint-250"] and service.cache.retained_bytes == 0


def test_a_visitors_load_that_fails_while_another_waits_for_its_room_fails_only_that_visitor(service, generating):
    """Visitor 2's load waits for visitor 1's model, then fails (a cut-off download); visitor 3 waits for that very
    load and gets its error too; visitor 1 is answered, and the Space then serves checkpoint-250 again."""
    hold = generating(service, "checkpoint-1000")
    loads = Loads(service.cache)
    loads.fail["checkpoint-250"] = CheckpointNotFoundError("cannot load 'checkpoint-250': the download was cut off")
    first = Run(lambda: service.compare(IMAGE, COLOR, ["checkpoint-1000"]))
    hold.inside.wait()
    second = Run(lambda: service.compare(IMAGE, COLOR, ["checkpoint-250"]))
    until(lambda: loads.seen or service.cache.stats["waits"] >= 1)
    assert not loads.seen, "loaded while checkpoint-1000 still generates with it"  # it waits for checkpoint-1000's room
    third = Run(lambda: service.answer_batch([IMAGE], [COLOR], ["checkpoint-250"]))
    until(lambda: service.cache.stats["waits"] >= 2)  # for visitor 2's load
    hold.release.set()
    for run in (first, second, third):
        run.join()
    assert first.error is None and first.value[0].text == "red"
    assert isinstance(second.error, CheckpointNotFoundError) and "download was cut off" in str(second.error)
    assert third.error is None and "download was cut off" in third.value[0].error
    assert [name for name, *_ in loads.seen] == ["checkpoint-250"]  # loaded once for both
    again = service.compare(IMAGE, COLOR, ["checkpoint-250", "checkpoint-1000"])  # still serving; tried again
    assert [(a.checkpoint, a.error) for a in again] == [("checkpoint-250", ""), ("checkpoint-1000", "")]
    assert service.cache.used_bytes <= service.cache.budget_bytes and service.cache.retained_bytes == 0


def test_out_of_memory_in_one_visitors_answer_keeps_the_model_another_visitor_is_answering_with(service, generating):
    """Emptying the whole cache after one visitor's out-of-memory evicted the model another visitor was still
    generating with: not freed (that visitor holds it) but no longer counted, so the next visitor's model was
    loaded beside it, past the budget (on a GPU, the next out of memory)."""
    import torch

    from vlm_lab.errors import MemoryBudgetError

    hold = generating(service, "checkpoint-1000")
    first = Run(lambda: service.compare(IMAGE, COLOR, ["checkpoint-1000"]))
    hold.inside.wait()

    def out_of_memory(_module, _args) -> None:  # what a full GPU raises in the second visitor's forward pass
        if threading.current_thread() is not first:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    oom = service.cache.get(service.refs["checkpoint-1000"], device="cpu").model.register_forward_pre_hook(out_of_memory)
    with pytest.raises(MemoryBudgetError, match="out of memory while checkpoint-1000 answered"):
        service.compare(IMAGE, COLOR, ["checkpoint-1000"])
    assert service.cache.loaded == ["checkpoint-1000"] and service.cache.retained_bytes == 0  # still counted
    loads = Loads(service.cache)
    third = Run(lambda: service.compare(IMAGE, COLOR, ["checkpoint-250"]))
    until(lambda: loads.seen or service.cache.stats["waits"] >= 1)
    assert not loads.seen, "checkpoint-250 loaded beside checkpoint-1000, which the first visitor still generates with"
    oom.remove()
    hold.release.set()
    first.join(), third.join()
    assert first.error is None and first.value[0].text == "red"
    assert third.error is None and not third.value[0].error and service.cache.loaded == ["checkpoint-250"]
