"""vlm_lab.memory_measure as a user meets it: what is measured, and what is said when it cannot be."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest

from vlm_lab import memory_synthetic
from vlm_lab.config import MemoryConfig
from vlm_lab.units import human_bytes

# a Llama-405B-sized language model behind the tiny vision tower: ~800 GB in float16, more than any test machine holds
HUGE = memory_synthetic.LlavaSize(text_width=16384, text_layers=126, text_heads=128, text_kv_heads=8, text_intermediate=53248)


def _sparse_safetensors(path: Path, nbytes: int) -> None:
    """A valid safetensors file of ``nbytes`` of float16 zeros that takes no disk (a sparse file)."""
    header = json.dumps({"weight": {"dtype": "F16", "shape": [nbytes // 2], "data_offsets": [0, nbytes]}}).encode()
    header += b" " * (-len(header) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + nbytes)


@pytest.fixture
def huge_checkpoint(tiny_checkpoints, tmp_path) -> Path:
    """A folder with all a measurement needs (config, weights, tokenizer, processor) for a model bigger than RAM."""
    tiny = tiny_checkpoints[-1]
    vocab = json.loads((tiny / "config.json").read_text())["text_config"]["vocab_size"]
    folder = memory_synthetic.write_config_only(tmp_path / "huge", memory_synthetic.llava_config(HUGE, vocab_size=vocab))
    for name in ("tokenizer.json", "tokenizer_config.json", "processor_config.json", "chat_template.jinja"):
        if (tiny / name).is_file():
            shutil.copy(tiny / name, folder / name)
    _sparse_safetensors(folder / "model.safetensors", 2 * 400 * 10**9)
    return folder


def test_a_model_bigger_than_the_memory_available_is_not_measured_on_cpu(huge_checkpoint, capfd):
    """Its measuring process would fill the machine and the out-of-memory killer would pick what dies."""
    from vlm_lab import memory_report
    from vlm_lab.cgroup_memory import available_memory

    config = MemoryConfig(checkpoints=(str(huge_checkpoint),), device="cpu", target="a100-large", max_new_tokens=4)
    with pytest.warns(memory_report.NotMeasuredWarning, match="measuring it on cpu needs"):
        [row] = memory_report.profile(config, progress=True)
    assert "measuring " not in capfd.readouterr().err  # no measuring process was started
    need = row.estimate.peak_bytes(device="cpu")
    assert need > available_memory().available
    assert row.measurement is None
    assert row.not_measured.startswith(f"measuring it on cpu needs ~{human_bytes(need)} (the estimate) and ")
    assert row.not_measured.endswith("; measure it where it fits (on a CUDA GPU, or a machine with more memory)")
    assert not row.verdict.fits and row.verdict.suggestion  # the verdict from the estimate stands: 800 GB fits no Space GPU


def test_a_weight_file_larger_than_the_machines_memory_is_estimated(huge_checkpoint):
    """A 7B+ model saved unsharded (one model.safetensors) read on a laptop: only the header is needed.

    safetensors' torch reader maps the whole file copy-on-write, which Linux refuses past RAM + swap
    ('unable to mmap ... Cannot allocate memory'): the estimate, --no-measure included, was a traceback.
    """
    from vlm_lab import memory, memory_checkpoint

    weights = huge_checkpoint / "model.safetensors"
    assert weights.stat().st_size > 2 * 400 * 10**9  # far more than RAM + swap here and on any CI machine
    assert memory_checkpoint.safetensors_header(weights) == {"weight": ("F16", [400 * 10**9])}
    est = memory.estimate(huge_checkpoint, target="a100-large")
    assert est.file_bytes == weights.stat().st_size and est.file_dtype == "float16"
    assert est.num_params > 400 * 10**9


def test_a_measuring_process_killed_by_the_out_of_memory_killer_says_so(tiny_checkpoints):
    """Killed with SIGKILL (what the kernel's out-of-memory killer sends), it said 'failed (exit -9): Loading
    weights: 100%|...', its last progress bar; now the signal and what to do."""
    import signal
    import threading
    import time

    import psutil

    from vlm_lab import memory_measure

    measured = threading.Event()  # set once measure returned: a child that ended unkilled fails the test, never hangs it

    def kill_the_measuring_process() -> None:
        me = psutil.Process()
        while not measured.is_set():
            for child in me.children(recursive=True):
                try:
                    if "vlm_lab.memory_measure" in child.cmdline():
                        child.send_signal(signal.SIGKILL)
                        return
                except psutil.Error:  # gone, or not yet readable
                    pass
            time.sleep(0.01)

    killer = threading.Thread(target=kill_the_measuring_process, daemon=True)
    killer.start()
    try:
        with pytest.raises(memory_measure.MeasurementFailedError) as caught:
            memory_measure.measure(tiny_checkpoints[-1], dtype="float32", max_new_tokens=2)
    finally:
        measured.set()
        killer.join()
    assert caught.value.reason == (
        "the measuring process was killed by SIGKILL (most often the out-of-memory killer: dmesg -T | grep -i oom; "
        "a smaller batch, max_new_tokens or image size needs less memory, measure=False (--no-measure) none)"
    )
    assert str(caught.value) == f"measuring {tiny_checkpoints[-1].name}: {caught.value.reason}"


QUANTIZED_SAID = ("cannot measure dtype='int8': the measurement loads float32, float16 or bfloat16 only (quantizing while loading "
                  "is estimated, never measured, with or without bitsandbytes); use measure=False, or measure a checkpoint saved "
                  "quantized (a quantization_config in its config.json) with device='cuda'")


@pytest.mark.parametrize("options, said", [
    (dict(dtype="int8"), QUANTIZED_SAID),
    (dict(snapshot_dir="snaps"), "rehearsal and memory snapshots need CUDA; use device='cuda'"),
])
def test_what_cannot_be_measured_here_names_the_arguments_a_notebook_passes(tiny_checkpoints, options, said):
    """Notebook 03 passes MemoryConfig fields (measure=False, device='cuda'); it was told --no-measure and --device cuda
    (vlm-lab memory says its flags: test_cli_memory)."""
    from vlm_lab import memory_report
    from vlm_lab.errors import DeviceError

    config = MemoryConfig(checkpoints=(str(tiny_checkpoints[-1]),), device="cpu", **options)
    with pytest.raises(DeviceError) as caught:
        memory_report.profile(config)
    assert str(caught.value) == said
