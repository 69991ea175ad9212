"""The tiny checkpoints the model cache's tests load, resolved: ``from model_cache_refs import refs``."""

from __future__ import annotations

import pytest

from vlm_lab.checkpoints import CheckpointRef, resolve


def tiny_refs(tiny_checkpoints, n: int) -> list[CheckpointRef]:
    """The first ``n`` of checkpoint-0, -250, -500, -750 and -1000 (the same size each), as the cache resolves them."""
    return [resolve(str(p))[0] for p in tiny_checkpoints[:n]]


@pytest.fixture(scope="module")
def refs(tiny_checkpoints) -> list[CheckpointRef]:
    """checkpoint-0, -250 and -500."""
    return tiny_refs(tiny_checkpoints, 3)
