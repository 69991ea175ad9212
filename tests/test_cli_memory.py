"""`vlm-lab memory`: JSON per checkpoint, a table, exit codes and one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest


def vlm_lab(*args):
    return subprocess.run([sys.executable, "-m", "vlm_lab.cli", "memory", *args], capture_output=True, text=True, timeout=600)


def test_json_estimate_only_expands_a_training_output(tiny_dir):
    r = vlm_lab(str(tiny_dir), "--no-measure", "--json", "--batch-size", "4")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["checkpoint"] for row in rows] == ["checkpoint-0", "checkpoint-250", "checkpoint-500", "checkpoint-750", "checkpoint-1000"]
    for row in rows:
        assert {"checkpoint", "estimated_bytes", "measured_bytes", "fits", "max_batch_size", "co_resident"} <= set(row)
        assert row["measured_bytes"] is None and row["fits"] is True and row["dtype"] == "float16"
        assert row["batch_size"] == 4 and row["co_resident"] > 1
        assert row["recommended_dtype"] == "float16" and row["suggestion"] is None


@pytest.mark.slow
def test_measured_table_on_cpu(tiny_checkpoints):
    r = vlm_lab(str(tiny_checkpoints[-1]), "--device", "cpu", "--dtype", "float32", "--target", "cpu-basic", "--max-new-tokens", "4", "--json")
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["measured_bytes"] > 0 and row["device"] == "cpu" and row["target"] == "cpu-basic"
    assert row["error_pct"] is not None


def test_table_output(tiny_checkpoints):
    r = vlm_lab(str(tiny_checkpoints[-1]), "--no-measure", "--target", "l4x1")
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[0].split()
    assert header[:9] == ["checkpoint", "dtype", "params_M", "device", "estimated_MiB", "measured_MiB", "error_%", "target", "needs_MiB"]
    row = r.stdout.splitlines()[1].split()
    assert row[3] == "cuda"  # not measured: estimated on the target's device
    assert row[5:7] == ["-", "-"], row  # not measured: blank cells, not Python's "None"
    assert "fits on l4x1" in r.stdout


@pytest.mark.slow
def test_a_folder_that_cannot_be_measured_keeps_its_estimate(tiny_checkpoints, tmp_path):
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    for name in ("config.json", "processor_config.json"):
        shutil.copy(tiny_checkpoints[-1] / name, config_only / name)
    r = vlm_lab(str(config_only), str(tiny_checkpoints[-1]), "--device", "cpu", "--max-new-tokens", "4")
    assert r.returncode == 3, r.stderr  # all fit, one could not be measured
    warning = f"warning: cannot measure {config_only}: no weights or tokenizer in the folder (estimate only; to skip measuring pass measure=False, or --no-measure on the command line)"
    assert warning in r.stderr.splitlines() and "Traceback" not in r.stderr
    table = [line.split() for line in r.stdout.splitlines()[1:3]]
    assert [(row[0], row[5]) for row in table] == [(str(config_only), "-"), ("checkpoint-1000", table[1][5])]
    assert float(table[1][5]) > 0  # the other checkpoint is measured as usual
    assert "not measured: no weights or tokenizer in the folder" in r.stdout
    r = vlm_lab(str(config_only), "--no-measure")
    assert r.returncode == 0 and not r.stderr, r.stderr  # config.json is enough for the estimate


@pytest.mark.parametrize(
    "cut, message",
    [
        (lambda data: b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 680112\n",
         "model.safetensors is a Git-LFS pointer, not the weights; run `git lfs pull`"),
        (lambda data: data[:500], "model.safetensors is not a valid safetensors file (header: invalid header length"),
    ],
    ids=["lfs-pointer", "truncated"],
)
def test_broken_weights_are_one_line_errors(tiny_checkpoints, tmp_path, cut, message):
    folder = shutil.copytree(tiny_checkpoints[-1], tmp_path / "broken")
    weights = folder / "model.safetensors"
    weights.write_bytes(cut(weights.read_bytes()))
    for args in (["--no-measure"], ["--device", "cpu"]):
        # a good checkpoint first: every reference is checked before any is measured (no "measuring ..." line)
        r = vlm_lab(str(tiny_checkpoints[-1]), str(folder), *args)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and not r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dtype", "bfloat16"], "use --dtype float16 (or --dtype auto)"),  # bf16 on the default t4-small
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
    ],
)
def test_bad_options_are_one_line_errors(tiny_checkpoints, args, message):
    """The fix is named as the flag to type (--dtype float16), not as the config field (dtype='float16')."""
    r = vlm_lab(str(tiny_checkpoints[-1]), "--no-measure", *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "dtype='" not in r.stderr and "batch_size" not in r.stderr


def test_folder_without_config_json(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    r = vlm_lab(str(tmp_path), "--no-measure")
    assert r.returncode == 2 and "config.json" in r.stderr and "Traceback" not in r.stderr


def test_unknown_target_names_the_known_ones(tiny_checkpoints):
    r = vlm_lab(str(tiny_checkpoints[-1]), "--target", "t5-small")
    assert r.returncode == 2 and "t4-small" in r.stderr


@pytest.mark.slow
def test_ctrl_c_keeps_what_is_done_and_says_nothing_is_saved(tiny_checkpoints, tmp_path):
    """Ctrl-C while the second checkpoint is measured: the first one's row stays, and the message is true."""
    import os
    import signal

    from vlm_lab import memory_synthetic

    # another architecture (~30M parameters), so it gets its own measuring process: seconds of imports and
    # loading, against the microseconds between reading the first row and sending the signal
    size = memory_synthetic.LlavaSize(text_width=512, text_layers=8, text_heads=8, text_kv_heads=8, text_intermediate=1024)
    slow = memory_synthetic.build_llava(tmp_path / "slow", size)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlm_lab.cli", "memory", str(tiny_checkpoints[-1]), str(slow), "--device", "cpu",
         "--dtype", "float32", "--max-new-tokens", "4", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        first = json.loads(proc.stdout.readline())  # the tiny checkpoint is done; the slow one is being measured
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the CLI and its measuring child
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert first["checkpoint"] == "checkpoint-1000" and first["measured_bytes"] > 0 and not rest
    assert "interrupted after 1 checkpoint(s), shown above; measurements are not saved, so a re-run measures again" in err
    assert "resumes" not in err and "Traceback" not in err


@pytest.mark.slow
def test_a_hub_model_with_only_its_config_cached_is_estimated_not_measured(tiny_checkpoints, tmp_path):
    """`hf download org/name config.json` is enough for the estimate; measuring says what else to download."""
    import os

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--acme--tiny-vlm"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "processor_config.json"):
        shutil.copy(tiny_checkpoints[-1] / name, repo / "snapshots" / commit / name)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    run = [sys.executable, "-m", "vlm_lab.cli", "memory", "acme/tiny-vlm", "--device", "cpu", "--json"]
    r = subprocess.run(run, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 3, r.stderr  # it fits; it could not be measured
    row = json.loads(r.stdout)
    assert row["estimated_bytes"] > 0 and row["measured_bytes"] is None
    assert row["not_measured"] == "no weights or tokenizer in the local Hugging Face cache (hf download acme/tiny-vlm)"
    assert "measuring acme" not in r.stderr and "OSError" not in r.stderr  # no process started to fail on a missing file


@pytest.mark.parametrize("flags, named", [
    (["--rehearse"], "--rehearse needs"),
    (["--snapshot-dir", "snaps"], "--snapshot-dir snaps needs"),
    (["--rehearse", "--snapshot-dir", "my snaps"], "--rehearse and --snapshot-dir 'my snaps' need"),
])
def test_what_needs_a_measurement_is_refused_with_no_measure(tiny_checkpoints, flags, named):
    """--rehearse and --snapshot-dir do nothing without a measurement: refused, not silently ignored."""
    r = vlm_lab(str(tiny_checkpoints[-1]), "--no-measure", *flags, "--json")
    assert r.returncode == 2 and r.stdout == ""
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"error: ConfigError: {named} a measurement, which --no-measure skips; drop --no-measure to measure"), line



@pytest.mark.parametrize("flags, said", [
    (["--dtype", "int8"], "error: DeviceError: cannot measure --dtype int8: the measurement loads float32, float16 or bfloat16 "
     "only (quantizing while loading is estimated, never measured, with or without bitsandbytes); use --no-measure, or "
     "measure a checkpoint saved quantized (a quantization_config in its config.json) with --device cuda"),
    (["--snapshot-dir", "snaps"], "error: DeviceError: rehearsal and memory snapshots need CUDA; use --device cuda"),
])
def test_what_cannot_be_measured_here_names_the_flags_to_type(tiny_checkpoints, flags, said):
    """The library names MemoryConfig's fields (test_memory_measure); a shell user types flags."""
    r = vlm_lab(str(tiny_checkpoints[-1]), "--device", "cpu", *flags)
    assert r.returncode == 2 and not r.stdout and r.stderr == said + "\n", r.stderr


def test_a_max_batch_at_the_search_cap_reads_as_a_lower_bound(tiny_checkpoints):
    """The tiny model fits far more than 4096 rows on a T4: the search stops there, so it is '>= 4096', not 4096."""
    r = vlm_lab(str(tiny_checkpoints[-1]), "--no-measure", "--json")
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert (row["max_batch_size"], row["max_batch_capped"]) == (4096, True)
    r = vlm_lab(str(tiny_checkpoints[-1]), "--no-measure")
    # the row ends: max_batch (">= 4096"), co_resident, image, image_tokens
    assert r.stdout.splitlines()[1].split()[-5:-3] == [">=", "4096"] and "max batch >= 4096," in r.stdout, r.stdout


@pytest.mark.parametrize("make", [
    lambda: __import__("transformers").GPT2Config(n_layer=2, n_embd=64, n_head=2),
    lambda: __import__("transformers").BertConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=64),
], ids=["gpt2", "bert"])
def test_a_text_only_model_is_refused_naming_what_is_profiled(tiny_checkpoints, tmp_path, make):
    """A text-only config got a 'fits' verdict for no image at all; it is refused before anything is measured."""
    config = make()
    folder = tmp_path / config.model_type
    config.save_pretrained(folder)
    for args in (["--no-measure"], ["--device", "cpu", "--json"]):
        r = vlm_lab(str(tiny_checkpoints[-1]), str(folder), *args)
        assert r.returncode == 2 and "Traceback" not in r.stderr and not r.stdout, (r.stdout, r.stderr)
        assert f"{str(folder)!r} is not a vision-language model: config.json says model_type {config.model_type!r}" in r.stderr
        assert "image-text-to-text models: llava, llava_next, idefics3" in r.stderr and "measuring" not in r.stderr


def test_cpu_basic_counts_the_space_process_itself(tiny_checkpoints):
    """On cpu-basic the Space's own process (Python, torch, transformers, gradio, the server: ~470 MiB resident, measured)
    shares the 16 GB with the models. At a batch that leaves the model less than that below the 5% kept free, the verdict
    said "fits" for a Space that would be OOM-killed."""
    from vlm_lab import memory
    from vlm_lab.memory_targets import MIB, SAFETY_FRACTION, get_target

    t = get_target("cpu-basic")
    est = memory.estimate(tiny_checkpoints[-1], dtype="float32", device="cpu", target=t)
    without_process = int(t.memory_bytes * (1 - SAFETY_FRACTION))
    batch = (without_process - est.generate_bytes(1)) // est.per_sample_bytes + 1  # the largest batch that fit before
    assert without_process - 400 * MIB < est.generate_bytes(batch) <= without_process  # a thin margin: under the process's size
    r = vlm_lab(str(tiny_checkpoints[-1]), "--no-measure", "--target", "cpu-basic", "--batch-size", str(batch), "--json")
    assert r.returncode == 1, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert row["fits"] is False and row["budget_bytes"] == without_process - row["process_bytes"] and row["process_bytes"] >= 400 * MIB
    r = vlm_lab(str(tiny_checkpoints[-1]), "--no-measure", "--target", "cpu-basic", "--batch-size", str(batch))
    verdict = r.stdout.splitlines()[-1]
    assert "does NOT fit on cpu-basic" in verdict and "less 5% kept free and 470.00 MiB for the Space's own process" in verdict, verdict
    assert "without the Space's own process it would fit" in verdict, verdict
