"""vlm_lab.memory_report: rows, tables and plots of a profile, from real estimates and measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vlm_lab import memory, memory_report, memory_synthetic
from vlm_lab.memory_measure import Measurement


def _ran_out_of_memory(est: memory.MemoryEstimate, *, rehearsal: str, snapshot: str = "") -> Measurement:
    """What the measuring process reports when generate raised torch.OutOfMemoryError (memory_measure._child)."""
    peak = est.peak_bytes() // 2  # the peak reached before the allocation that failed
    return Measurement(checkpoint=est.checkpoint, device="cuda", dtype=est.dtype, batch_size=est.batch_size,
                       sequence_tokens=est.sequence_tokens, prompt_tokens=est.prompt_tokens, load_bytes=peak // 2, peak_bytes=peak,
                       out_of_memory=True, rehearsal_target=rehearsal, snapshot=snapshot)  # fmt: skip


@pytest.mark.parametrize(
    "rehearsal, fits",
    [
        ("t4-small", False),  # capped at the target's memory, it did not fit: that overrules the estimate
        ("", True),  # on some other GPU: says nothing of the target; the estimate's verdict stands
        ("l4x1", True),  # a rehearsal of another target
    ],
)
def test_a_measurement_that_ran_out_of_memory_is_no_measurement(tiny_checkpoints, rehearsal, fits):
    est = memory.estimate(tiny_checkpoints[-1], dtype="float16", device="cuda", target="t4-small", batch_size=8)
    assert memory.verdict(est, "t4-small").fits
    row = memory_report.profile_row("ckpt", est, "t4-small", _ran_out_of_memory(est, rehearsal=rehearsal, snapshot="/snaps/c-oom.pickle"))
    assert row.verdict.fits is fits
    assert row.error_fraction is None  # a peak cut short is not the estimate's error
    assert "OUT OF MEMORY" in row.not_measured and "/snaps/c-oom.pickle" in row.not_measured
    if rehearsal == "t4-small":
        assert row.verdict.suggestion.endswith("rehearsal ran out of memory; try a batch of 4")
    table = memory_report.report_table([row])
    assert str(table["measured_MiB"][0]).startswith("OOM at ") and table["error_%"].isna().all() and bool(table["fits"][0]) is fits
    line = memory_report.summary([row])
    assert "OUT OF MEMORY" in line and "% off" not in line
    out = row.to_dict()
    assert out["out_of_memory"] is True and out["error_pct"] is None and out["fits"] is fits and "OUT OF MEMORY" in out["not_measured"]
    json.dumps(out)


@pytest.mark.gpu
def test_a_rehearsal_that_runs_out_of_memory_says_so_and_exits_1(tmp_path):
    model = memory_synthetic.build_llava(tmp_path / "llava-100m")
    est = memory.estimate(model, dtype="float16", device="cuda", max_new_tokens=8)
    too_big = 2 * memory.max_batch_size(est, "t4-small")
    r = subprocess.run([sys.executable, "-m", "vlm_lab.cli", "memory", str(model), "--device", "cuda", "--rehearse", "--max-new-tokens", "8",
                        "--batch-size", str(too_big), "--snapshot-dir", str(tmp_path / "snaps")], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "OUT OF MEMORY in the t4-small rehearsal" in r.stdout and "-oom.pickle" in r.stdout
    assert any(Path(tmp_path / "snaps").glob("*-oom.pickle"))


def test_memory_vs_batch_draws_the_estimate_on_the_measured_device(tiny_checkpoints):
    from vlm_lab.memory_measure import measure

    est = memory.estimate(tiny_checkpoints[-1], dtype="float16", device="cpu", target="t4-small", max_new_tokens=4)
    m = measure(tiny_checkpoints[-1], dtype="float16", device="cpu", max_new_tokens=4, image_side=est.image.side)
    fig = memory_report.plot_memory_vs_batch(est, targets=("t4-small", "l4x1"), measured=[m])
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    # the CPU measurement beside the estimate on CPU, not only beside the GPUs' (which carry a 700 MiB CUDA context)
    assert {"estimate (cuda)", "estimate (cpu)"} <= set(lines)
    x, y = lines["estimate (cpu)"].get_data()
    assert x[0] == 1 and y[0] == pytest.approx(est.peak_bytes(1, "cpu") / memory.MIB)



def test_the_measuring_process_dies_with_a_killed_profiler(tmp_path):
    """SIGTERM (a timeout, a cancelled job) ends `vlm-lab memory` at once; its measuring process must not live on
    (on a GPU it kept the memory, which the next measurement then counted, for up to 15 minutes)."""
    import os
    import signal
    import socket

    import psutil

    hub = socket.socket()  # a hub that takes the connection and never answers: the measuring process waits on it
    hub.bind(("127.0.0.1", 0))
    hub.listen(8)
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": f"http://127.0.0.1:{hub.getsockname()[1]}",
           "HF_HUB_ETAG_TIMEOUT": "600", "HF_HUB_DOWNLOAD_TIMEOUT": "600", "HF_HOME": str(tmp_path / "hf")}  # fmt: skip
    code = "from vlm_lab.memory_measure import measure; measure('org/slow-model', dtype='float32')"
    parent = subprocess.Popen([sys.executable, "-c", code], env=env)
    children: list = []
    try:
        while not children and parent.poll() is None:
            children = [c for c in psutil.Process(parent.pid).children() if "vlm_lab.memory_measure" in " ".join(c.cmdline())]
        (child,) = children
        while len(hub.accept()) != 2:  # the measuring process is waiting for the hub
            pass
        assert child.is_running()
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(60) == -signal.SIGTERM
        _, alive = psutil.wait_procs([child], timeout=60)
        assert not alive, "the measuring process outlived the profiler"
    finally:
        for proc in children:
            if proc.is_running():
                proc.kill()
        parent.kill()
        hub.close()


@pytest.fixture(scope="module")
def llava_7b_config(tmp_path_factory) -> Path:
    """config.json only of a LLaVA with a Llama-7B-sized language model (1024 positions)."""
    size = memory_synthetic.LlavaSize(text_width=4096, text_layers=32, text_heads=32, text_kv_heads=32, text_intermediate=11008)
    return memory_synthetic.write_config_only(tmp_path_factory.mktemp("cfg") / "llava-7b", memory_synthetic.llava_config(size, vocab_size=32064))


@pytest.mark.parametrize("device, batch, new_tokens", [("cpu", 1, 100_000), ("cuda", 8, 64)])
def test_json_says_what_the_verdict_needs_is_made_of(llava_7b_config, device, batch, new_tokens):
    """Whether the weights or the KV cache keep a model off a T4 decides the fix (a smaller batch, a lighter dtype):
    --json gave only the total. Each part is on the target (CUDA context; no CPU conversion copy), whatever
    device the row's estimate is on; the asked max_new_tokens is kept beside the ones the context allows."""
    est = memory.estimate(llava_7b_config, dtype="float16", device=device, batch_size=batch, max_new_tokens=new_tokens)
    row = memory_report.profile_row(str(llava_7b_config), est, "t4-small").to_dict()
    parts = row["required_breakdown_bytes"]
    assert list(parts) == ["weights", "load_copy", "kv_cache", "activations", "overhead"]
    assert row["required_bytes"] == max(parts["weights"] + parts["load_copy"],
                                        parts["weights"] + parts["kv_cache"] + parts["activations"]) + parts["overhead"]
    assert parts["overhead"] == memory.CUDA_CONTEXT_BYTES and parts["load_copy"] == 0
    assert parts["kv_cache"] == est.kv_cache_bytes() > 0
    assert row["asked_max_new_tokens"] == new_tokens
    assert row["max_new_tokens"] == min(new_tokens, est.context_tokens - est.prompt_tokens - est.image.tokens)
