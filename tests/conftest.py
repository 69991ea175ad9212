"""Shared fixtures: the tiny shapes checkpoints, built once and reused.

Everything runs offline (HF_HUB_OFFLINE=1), on CPU, against real transformers
models that the suite trains itself.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Built once per machine (the build is skipped when the folder already holds the same
# training config and format), so repeated test runs don't retrain.
CHECKPOINT_CACHE = ROOT / ".cache" / "test-checkpoints" / "shapes"
ARTIFACTS = ROOT / "test-artifacts"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# per-user caches (file-digest memo) go to a throwaway folder, not the user's ~/.cache
os.environ.setdefault("VLM_LAB_CACHE", str(ROOT / ".cache" / "test-user-cache"))
# the same checkpoints and checked numbers on every x86 CPU with AVX2 (before torch's first operation)
from vlm_lab.cpu_kernels import pin_cpu_kernels  # noqa: E402

pin_cpu_kernels()

# The suite checks what Ctrl-C and a closed terminal do to vlm_lab. A shell starts a background job
# (`make test &`, nohup, a cron script) with SIGINT (and, under nohup, SIGHUP) ignored, which Python and
# every process the tests start would inherit: Ctrl-C would then do nothing and those tests fail. Ignoring
# is the launcher's choice, not vlm_lab's behaviour, so the suite takes the usual handlers back.
import signal  # noqa: E402

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGHUP) is signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_checkpoints() -> list[Path]:
    """``checkpoint-{0,250,500,750,1000}`` of the default tiny shapes training run."""
    from vlm_lab import tiny
    from vlm_lab.config import TrainConfig

    return tiny.train(TrainConfig(out=str(CHECKPOINT_CACHE)), progress=False)


@pytest.fixture(scope="session")
def tiny_dir(tiny_checkpoints) -> Path:
    """The training-output folder holding the checkpoint-N folders."""
    return tiny_checkpoints[0].parent


@pytest.fixture(scope="session")
def overflowing_checkpoint(tiny_checkpoints, tmp_path_factory) -> Path:
    """checkpoint-1000 with its token embeddings x 3e4: finite in float32, past float16's
    range (65504), the way some real VLMs overflow in float16 on a T4."""
    import torch

    from vlm_lab import models

    loaded = models.load_model(tiny_checkpoints[-1], device="cpu", dtype="float32")
    with torch.no_grad():
        loaded.model.get_input_embeddings().weight.mul_(3e4)
    path = tmp_path_factory.mktemp("overflowing") / "checkpoint-1000"
    loaded.model.save_pretrained(path)
    loaded.processor.save_pretrained(path)
    return path


@pytest.fixture
def mismatched_checkpoint(tiny_checkpoints, tmp_path) -> Path:
    """checkpoint-1000 whose processor puts one image token fewer than the model's image features:
    it loads, and transformers raises a plain ValueError inside generate (not a vlm_lab error)."""
    import json
    import shutil

    path = tmp_path / "mismatched" / "checkpoint-1000"
    shutil.copytree(tiny_checkpoints[-1], path)
    config = json.loads((path / "processor_config.json").read_text())
    config["num_additional_image_tokens"] = 0
    (path / "processor_config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (screenshots, executed notebooks)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def venv_bin() -> Path:
    """The folder of the running interpreter's console scripts (vlm-lab, papermill, jupyter)."""
    return Path(sys.executable).parent
