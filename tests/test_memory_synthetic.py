"""vlm_lab.memory_synthetic: the randomly initialised checkpoints the estimate is checked on."""

from __future__ import annotations

import pytest
import torch

from vlm_lab import memory_synthetic


@pytest.mark.parametrize("build", [
    lambda out, seed: memory_synthetic.build_llava(out, memory_synthetic.LLAVA_TINY, seed=seed),
    lambda out, seed: memory_synthetic.build_llava_next(out, seed=seed),
], ids=["llava", "llava-next"])
def test_building_leaves_the_callers_random_stream_alone_and_its_weights_follow_the_seed(build, tmp_path):
    """A notebook user's seeded work goes on as if nothing was built; the weights depend on ``seed`` alone."""
    from safetensors.torch import load_file

    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    first = build(tmp_path / "a", 0)
    assert torch.equal(torch.rand(4), expected)  # the caller's stream, unchanged by the build

    torch.rand(100)  # another state of the caller's stream: the same weights
    again = build(tmp_path / "b", 0)
    other = build(tmp_path / "c", 1)
    weights = [load_file(folder / "model.safetensors") for folder in (first, again, other)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
