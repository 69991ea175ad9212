"""One processor is shared by the checkpoints of a run and by every thread (Space visitors, the explorer's
background comparison): vlm_lab's calls must never reconfigure its Rust tokenizer once it has encoded a batch.

transformers' fast tokenizers keep padding and truncation as state of the Rust tokenizer: a call whose settings
differ from the last one's reconfigures it (``set_truncation_and_padding``) and then encodes, two steps another
thread can come between. Since tokenizers 0.23.1 the Rust side is behind a lock (a call that
reconfigures it waits for the encodes under way), so this no longer raises
``RuntimeError: Already borrowed``, but a batch encoded after another thread's unpadded call comes out ragged
("Unable to create tensor ... activate padding") or padded the other call's way (right-padded prompts generate
noise). Measured: a thread encoding vlm_lab's batches beside one tokenizing unpadded failed 158 of 1395 batches
in 20 s. So every call vlm_lab makes on a shared processor uses one setting (left padding to the longest row,
no truncation): the first batch sets it, and nothing changes it afterwards.

Real tiny checkpoints, real processors and real threads; the Rust tokenizer is wrapped only to note the calls
that reconfigure it (the real one does all the work).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from test_processor_memo import run  # noqa: F401 - a fixture: checkpoints of one run, with a processor of their own

from vlm_lab.compare import compare
from vlm_lab.config import CompareConfig
from vlm_lab.data import load_samples
from vlm_lab.generation import encode_inputs
from vlm_lab.model_cache import ModelCache
from vlm_lab.space_service import ComparisonService
from vlm_lab.space_settings import SpaceSettings

pytestmark = pytest.mark.timeout(300)

IMAGE = str(Path(__file__).resolve().parents[1] / "space" / "examples" / "red-circle.png")
RECONFIGURING = frozenset({"enable_padding", "no_padding", "enable_truncation", "no_truncation", "add_tokens",
                           "add_special_tokens"})


class Reconfigured:
    """Stands in for ``tokenizer``'s Rust tokenizer, passing every call to it; ``calls``: those that reconfigure it
    (the methods above, and any attribute set, e.g. ``encode_special_tokens``), in whichever thread they ran."""

    def __init__(self, tokenizer) -> None:
        object.__setattr__(self, "real", tokenizer._tokenizer)
        object.__setattr__(self, "calls", [])
        tokenizer._tokenizer = self

    def __getattr__(self, name: str):
        if name in RECONFIGURING:
            self.calls.append(name)
        return getattr(self.real, name)

    def __setattr__(self, name: str, value) -> None:
        self.calls.append(f"{name}=")
        setattr(self.real, name, value)


@pytest.fixture
def shared(run):
    """The processor the checkpoints of ``run`` share, held (every load below gets this one), its Rust tokenizer
    wrapped, and as a fresh load leaves it: never padded yet."""
    loaded = ModelCache(budget_bytes="1GB").get(run[0], device="cpu")
    spy = Reconfigured(loaded.processor.tokenizer)
    assert spy.real.padding is None
    yield loaded.processor, spy
    loaded.processor.tokenizer._tokenizer = spy.real


def test_after_the_first_batch_no_vlm_lab_call_reconfigures_the_shared_tokenizer(tmp_path, run, shared):
    """A comparison (context check, batches, answers decoded) and the Space's two ways to answer, on the
    checkpoints sharing one processor: the first batch pads it, and nothing reconfigures it afterwards."""
    processor, spy = shared
    encode_inputs(processor, load_samples("shapes:val:2"))
    assert spy.calls == ["enable_padding"]  # the first batch: left padding to the longest row
    spy.calls.clear()

    result = compare(CompareConfig(checkpoints=tuple(map(str, run)), data="shapes:val:6", batch_size=4, max_new_tokens=4,
                                   device="cpu", output_dir=str(tmp_path / "out"), use_cache=False), progress=False)
    assert result.summary[-1]["accuracy"] > 0.5  # the answers are the checkpoints' own
    service = ComparisonService(SpaceSettings(checkpoints=tuple(map(str, run)), device="cpu"))
    labels = service.labels
    answers = service.compare(IMAGE, "What color is the shape?", labels, "greedy", 6)
    answers += service.answer_batch([IMAGE, IMAGE], ["What shape is it?", "What color is the shape?"], labels[:2])
    assert not [a.error for a in answers if a.error]
    assert spy.calls == []


def test_two_threads_encoding_at_once_get_the_batches_each_gets_alone(shared):
    """Two threads encoding and decoding batches of the shared processor at the same moment (a comparison's context
    check and a Space visitor, two visitors), 400 batches each, from a processor as a fresh load leaves it
    (both threads' first batches configure it at once): each gets the batch and the text it gets alone, and no
    ``Already borrowed`` (tokenizers before 0.23.1 raised it when one thread reconfigured while another encoded)."""
    processor, spy = shared
    samples = load_samples("shapes:val:16")
    batches = [samples[:8], samples[8:]]
    alone = [encode_inputs(processor, batch)["input_ids"].tolist() for batch in batches]
    texts = [processor.batch_decode(ids, skip_special_tokens=True) for ids in alone]
    rounds, wrong, errors = 400, [], []
    spy.real.no_padding()  # as loaded: both threads' first batches configure it
    start = threading.Barrier(2)

    def encoding(k: int) -> None:
        start.wait()
        for i in range(rounds):  # no barrier between rounds: each thread's calls fall anywhere between the other's
            try:
                ids = encode_inputs(processor, batches[k])["input_ids"].tolist()
                if ids != alone[k] or processor.batch_decode(ids, skip_special_tokens=True) != texts[k]:
                    wrong.append((k, i))
            except Exception as e:  # noqa: BLE001 - counted, and the first named by the assertion
                errors.append(repr(e))

    threads = [threading.Thread(target=encoding, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not wrong, (errors[:2], f"{len(wrong)} batches differ from alone")
