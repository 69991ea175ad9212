"""vlm_lab.space_memory: the Space's memory plan counts every generation the serving plan runs at once.

The model cache may hold ``cache_budget_bytes`` of weights; the rest of the target's memory must hold the KV
cache and activations of all the generations that run at once: two on a GPU of 24 GB or more (the Compare
button and the batched API share them), one per core (up to 4) plus one batch on CPU. The checkpoints are
LLaVA-7B-sized ``config.json`` files (estimate only, nothing loaded). There is no GPU here: the GPU cases give
the hardware as an input, or answer torch.cuda's queries of the device (its name and memory), nothing more.
"""

from __future__ import annotations

import types

import pytest
import torch

from vlm_lab import memory, memory_synthetic
from vlm_lab.memory_targets import MIB, budget_bytes, get_target
from vlm_lab.space_memory import plan_memory
from vlm_lab.space_settings import MAX_BEAMS, Hardware, Slots, SpaceSettings, plan_serving

A100 = Hardware(device="cuda", cores=16, gpu_memory=81920 * MIB, gpu_name="NVIDIA A100-SXM4-80GB")


@pytest.fixture(scope="module")
def llava_7b(tmp_path_factory):
    size = memory_synthetic.LlavaSize(text_width=4096, text_layers=32, text_heads=32, text_kv_heads=32,
                                      text_intermediate=11008)
    config = memory_synthetic.llava_config(size, vocab_size=32064)
    return memory_synthetic.write_config_only(tmp_path_factory.mktemp("cfg") / "llava-7b", config)


def promised(plan, est, target: str, slots: Slots) -> int:
    """What the plan lets the process use at once: the cache's weights, every generation's rows, the runtime."""
    device = get_target(target).device
    load_copy = est.load_bytes(device) - est.weight_bytes - est.overhead_bytes(device)
    rows = slots.rows(plan.max_batch_size)
    return plan.cache_budget_bytes + rows * est.per_sample_bytes + est.overhead_bytes(device) + load_copy


@pytest.fixture
def an_a100(monkeypatch):
    """torch.cuda says there is an 80 GB A100 (its queries only: CUDA cannot run here)."""
    props = types.SimpleNamespace(total_memory=A100.gpu_memory, name=A100.gpu_name, major=8, minor=0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: A100.gpu_name)


def test_on_an_a100_the_memory_plan_leaves_room_for_both_generations_the_serving_plan_runs(llava_7b, an_a100):
    """Before, the plan kept room for one batch of 64 beside the cache, and the serving plan ran two at once:
    the cache could fill 74.6 GB of weights while two batches needed 12.6 GB more, past the A100's 81.6 GB."""
    plan = plan_memory([llava_7b], device="cuda", max_new_tokens=64)
    serving = plan_serving(SpaceSettings(checkpoints=(str(llava_7b),), device="cuda"), memory=plan)
    assert plan.target == "a100-large" and serving.generate_limit == 2 and serving.batch_group == "generate"
    est = memory.estimate(llava_7b, device="cuda", target="a100-large", max_new_tokens=64)
    slots = Slots(compare=serving.generate_limit, batch=serving.batch_limit, shared=True)
    assert serving.max_batch_size == plan.max_batch_size == 64
    assert promised(plan, est, "a100-large", slots) <= budget_bytes("a100-large")
    assert plan.cache_budget_bytes >= est.weight_bytes  # and the model still loads


@pytest.mark.parametrize("slots", [Slots(compare=2, batch=2, shared=True), Slots(compare=2, batch=1, shared=False)],
                         ids=["one-group", "two-groups"])
def test_the_batch_shrinks_so_that_every_generation_at_once_fits_beside_the_cache(llava_7b, slots):
    """A 7B model on a T4's 16 GB: one generation fits a batch of 10; at once they share that room."""
    plan = plan_memory([llava_7b], device="cuda", target="t4-small", max_new_tokens=64, slots=slots)
    est = memory.estimate(llava_7b, device="cuda", target="t4-small", max_new_tokens=64)
    assert memory.verdict(est, "t4-small").max_batch_size == 10
    assert plan.slots == slots and 1 <= plan.max_batch_size < 10
    assert promised(plan, est, "t4-small", slots) <= budget_bytes("t4-small")
    assert plan.cache_budget_bytes >= est.weight_bytes
    # the biggest batch that does: one more row each and the model would no longer fit the cache
    more_rows = slots.rows(plan.max_batch_size + 1) - slots.rows(plan.max_batch_size)
    assert plan.cache_budget_bytes - more_rows * est.per_sample_bytes < est.weight_bytes


def test_generations_at_once_are_capped_to_what_memory_holds_and_the_serving_plan_follows(llava_7b):
    """256 new tokens: one generation (a Compare may ask beam(4): 4 rows) fits beside the 7B model on a T4's
    memory, two do not. The plan says one, and the serving plan runs one at a time, saying why."""
    plan = plan_memory([llava_7b], device="cuda", target="t4-small", max_new_tokens=256,
                       slots=Slots(compare=2, batch=2, shared=True))
    est = memory.estimate(llava_7b, device="cuda", target="t4-small", max_new_tokens=256)
    assert plan.slots == Slots(compare=1, batch=1, shared=True)
    assert promised(plan, est, "t4-small", plan.slots) <= budget_bytes("t4-small")
    assert any("1 generation at a time" in note and "2 at a time would not fit" in note for note in plan.notes)
    serving = plan_serving(SpaceSettings(checkpoints=(str(llava_7b),), device="cuda"), memory=plan, hardware=A100)
    assert (serving.generate_limit, serving.batch_limit) == (1, 1)
    assert "1 generation(s) at a time (memory holds 1 of 2)" in serving.why


def test_a_batch_size_set_by_the_owner_is_kept_and_the_generations_at_once_give_way(llava_7b):
    plan = plan_memory([llava_7b], device="cuda", target="t4-small", max_new_tokens=64, batch_size=8,
                       slots=Slots(compare=2, batch=2, shared=True))
    assert plan.max_batch_size == 8 and plan.slots == Slots(compare=1, batch=1, shared=True)


def test_multiple_beams_count_as_rows_of_the_compare_generations():
    assert Slots(compare=2, batch=2, shared=True).rows(1) == 2 * MAX_BEAMS  # either endpoint, in each slot
    assert Slots(compare=2, batch=2, shared=True).rows(16) == 32
    assert Slots(compare=4, batch=1, shared=False).rows(16) == 4 * MAX_BEAMS + 16  # 4 Compares and a batch
