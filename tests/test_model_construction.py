"""Concurrent model loads leave what transformers swaps while loading (default dtype, tie_weights) as it was."""

import threading

import pytest
import torch

from vlm_lab.memory_checkpoint import meta_model
from vlm_lab.models import load_model

TRIALS = 20  # the unguarded race left bfloat16 behind in 4 of 10 pairs: 20 clean pairs by chance is ~1e-4


def together(*calls):
    """Run ``calls`` in threads released at once; re-raise the first error."""
    start, errors = threading.Barrier(len(calls)), []

    def run(call):
        start.wait()
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.fixture
def default_float32():
    assert torch.get_default_dtype() == torch.float32
    yield
    torch.set_default_dtype(torch.float32)  # a failure must not leak bfloat16 into later tests


def test_two_bfloat16_loads_at_once_leave_the_default_dtype_float32(tiny_checkpoints, default_float32):
    from transformers import PreTrainedModel

    tie_weights = PreTrainedModel.tie_weights
    a, b = (str(p) for p in tiny_checkpoints[:2])
    for trial in range(TRIALS):
        together(lambda: load_model(a, dtype="bfloat16", device="cpu"), lambda: load_model(b, dtype="bfloat16", device="cpu"))
        assert torch.get_default_dtype() == torch.float32, f"pair {trial}: the process default is now {torch.get_default_dtype()}"
        assert torch.randn(1).dtype == torch.float32
        assert PreTrainedModel.tie_weights is tie_weights, f"pair {trial}: tie_weights is left swapped out"


def test_a_model_built_from_its_config_beside_a_load_keeps_its_own_dtype(tiny_checkpoints, default_float32):
    """memory's estimate builds from config (float32 default) while a visitor's bfloat16 load runs."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_checkpoints[0])
    built = []
    for trial in range(TRIALS):
        together(lambda: load_model(str(tiny_checkpoints[1]), dtype="bfloat16", device="cpu"),
                 lambda: built.append(meta_model(config)))  # fmt: skip
        assert torch.get_default_dtype() == torch.float32, f"pair {trial}: the process default is now {torch.get_default_dtype()}"
    assert {p.dtype for m in built for p in m.parameters()} == {torch.float32}
