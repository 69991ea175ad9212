"""Fixtures for the W&B tests: an isolated W&B directory tree and a real tiny comparison to log.

Import them into a test module: ``from wandb_fixtures import comparison, wandb_home  # noqa: F401``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vlm_lab import tracking

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def wandb_home(tmp_path, monkeypatch) -> Path:
    """An isolated W&B directory tree; offline because there is no key and no mode."""
    root = tmp_path / "wandb-home"
    for name, value in tracking.local_env(root).items():
        monkeypatch.setenv(name, value)
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    return root


@pytest.fixture(scope="module")
def comparison(tiny_checkpoints, tmp_path_factory):
    """A real comparison of the first and last tiny checkpoints on a few shapes samples."""
    from vlm_lab.compare import compare
    from vlm_lab.config import CompareConfig

    config = CompareConfig(
        checkpoints=(str(tiny_checkpoints[0]), str(tiny_checkpoints[-1])), data="shapes:val", num_samples=6,
        device="cpu", output_dir=str(tmp_path_factory.mktemp("compare")),
    )
    return compare(config, progress=False), config
