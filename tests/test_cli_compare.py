"""``vlm-lab compare`` as a user runs it: a real subprocess on the tiny checkpoints."""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys

import pytest

SUMMARY_KEYS = {"checkpoint", "accuracy", "ci_low", "ci_high", "mean_latency_s", "tokens_per_s", "peak_memory_bytes"}


def vlm_lab(*args, **kw):
    return subprocess.run([sys.executable, "-m", "vlm_lab.cli", *args], capture_output=True, text=True, timeout=600, **kw)


def test_json_summary_on_stdout_only(tiny_checkpoints, tmp_path):
    out = tmp_path / "cmp"
    r = vlm_lab(
        "compare", str(tiny_checkpoints[0]), str(tiny_checkpoints[-1]), "--data", "shapes:val:6",
        "--batch-size", "3", "--max-new-tokens", "6", "--device", "cpu", "--out", str(out), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)  # nothing but JSON on stdout; progress went to stderr
    assert [s["checkpoint"] for s in summary] == ["checkpoint-0", "checkpoint-1000"]
    assert all(SUMMARY_KEYS <= s.keys() for s in summary)
    assert summary[1]["accuracy"] == 1.0 and summary[1]["ci_low"] <= 1.0 and summary[0]["accuracy"] == 0.0
    assert summary[1]["n_samples"] == 6  # the N of shapes:val:N
    assert summary[1]["vs"] == "checkpoint-0" and summary[1]["n_wrong_to_right"] == 6 and summary[1]["diff"] == 1.0
    for name in ("results.jsonl", "results.csv", "summary.json", "comparison.html"):
        assert (out / name).is_file()
    assert "compare" in r.stderr  # the progress bar
    shown = vlm_lab("show", str(out), "--json")  # a saved comparison, read back without any model
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == summary
    missing = vlm_lab("show", str(tmp_path / "nothing-here"))
    assert missing.returncode == 2 and "run vlm-lab compare" in missing.stderr


def test_table_and_training_output_folder(tiny_dir, tmp_path):
    r = vlm_lab("compare", str(tiny_dir), "--data", "shapes:val:3", "--out", str(tmp_path / "cmp"), "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "accuracy" in lines[0] and "ci_low" in lines[0]
    assert [line.split()[0] for line in lines[1:6]] == [f"checkpoint-{s}" for s in (0, 250, 500, 750, 1000)]
    assert "comparison.html" in r.stdout and r.stderr.count("compare") == 0
    assert "checkpoint-1000 vs checkpoint-750: " in r.stdout and "wrong->right" in r.stdout  # the paired comparison


def test_a_device_this_machine_lacks_is_named_as_the_flag_to_type(tiny_checkpoints, tmp_path):
    """The library names the argument (device='cpu'); compare's and memory's one-line error named it so too, or as
    the flag in Python (test_compare_errors): each now says what its user types."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    ref = str(tiny_checkpoints[-1])
    for args in (["compare", ref, "--data", "shapes:val:1", "--out", str(tmp_path / "cmp")], ["memory", ref, "--max-new-tokens", "2"]):
        r = vlm_lab(*args, "--device", "cuda")
        assert r.returncode == 2 and not r.stdout, (args, r.stderr)
        assert r.stderr == "error: DeviceError: --device cuda but CUDA is not available here; use --device cpu (or --device auto)\n", (args, r.stderr)


def test_errors_are_one_line_with_the_fix(tiny_dir, tmp_path):
    r = vlm_lab("compare", str(tiny_dir / "checkpoint-999"), "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "checkpoint-1000" in r.stderr and "Traceback" not in r.stderr
    r = vlm_lab("compare", str(tiny_dir), "--strategy", "nucleus(2)", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "nucleus(0.9)" in r.stderr and "Traceback" not in r.stderr



@pytest.mark.parametrize("args, message, field", [
    (["--max-new-tokens", "0"], "--max-new-tokens must be a positive integer, got 0", "max_new_tokens"),
    (["--num-samples", "-1"], "--num-samples must be a whole number >= 0", "num_samples"),
    (["--seed", "-1"], "--seed must be a whole number from 0", "seed must"),
    (["--memory-budget", "0"], "--memory-budget 0 leaves no room for a model", "memory_budget"),
    (["--memory-budget", "16G"], "--memory-budget 16G is ambiguous: write 16GB", "memory_budget"),
])
def test_a_bad_flag_is_named_as_the_flag_not_the_config_field(args, message, field, tmp_path):
    """The error names what the user typed (--max-new-tokens), not CompareConfig's field (max_new_tokens)."""
    r = vlm_lab("compare", "ckpt", "--out", str(tmp_path / "x"), *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert field not in r.stderr.replace(message, ""), r.stderr

def test_a_model_over_the_memory_budget_names_the_flags_to_type(tiny_checkpoints, tmp_path):
    """The model cache names the argument (dtype='float16', test_model_cache); this command says its flag."""
    # 500 kB: the tiny model (673 kB in float32) does not fit, in float16 (337 kB) it would: both fixes are named
    r = vlm_lab("compare", str(tiny_checkpoints[-1]), "--data", "shapes:val:1", "--memory-budget", "500KB", "--device", "cpu",
                "--out", str(tmp_path / "x"), "--quiet")
    assert r.returncode == 2 and r.stderr.startswith("error: MemoryBudgetError: checkpoint-1000 needs "), r.stderr
    assert r.stderr.endswith("raise the budget (--memory-budget 1MB) or load in a smaller dtype (--dtype float16)\n"), r.stderr
    assert "dtype=" not in r.stderr and "ModelCache" not in r.stderr and "memory_budget" not in r.stderr


@pytest.mark.parametrize("flag", ["--out", "--cache-dir"])
def test_an_unusable_folder_names_the_flag_to_type(tiny_checkpoints, tmp_path, flag):
    """compare() names CompareConfig's output_dir= / cache_dir= (test_compare); this command says its flags."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    folders = ["--out", str(afile)] if flag == "--out" else ["--out", str(tmp_path / "x"), "--cache-dir", str(afile)]
    r = vlm_lab("compare", str(tiny_checkpoints[-1]), "--data", "shapes:val:1", "--device", "cpu", *folders, "--quiet")
    assert r.returncode == 2 and not r.stdout, r.stderr
    assert r.stderr == f"error: OutputPathError: {flag} {shlex.quote(str(afile))} is a file; {flag} must name a folder\n", r.stderr


def test_data_without_references_shows_dashes_not_none(tiny_checkpoints, tmp_path):
    from vlm_lab import data, shapes

    samples = [dataclasses.replace(s, reference=None) for s in shapes.make_samples("val", 3)]
    path = data.write_jsonl(samples, tmp_path / "mine")
    r = vlm_lab("compare", str(tiny_checkpoints[-1]), "--data", str(path), "--out", str(tmp_path / "cmp"), "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr
    header, row = r.stdout.splitlines()[:2]
    assert "None" not in r.stdout and "nan" not in r.stdout
    assert row.split()[:4] == ["checkpoint-1000", "-", "-", "-"]  # accuracy and its CI: no references


@pytest.mark.parametrize("signum, code, said", [(2, 130, "interrupted"), (15, 143, "terminated (SIGTERM)")])  # SIGINT, SIGTERM
def test_stopped_says_what_is_kept_and_the_command_that_resumes(tiny_checkpoints, tmp_path, signum, code, said):
    """Ctrl-C, and SIGTERM (`timeout`, `docker stop`, `systemctl stop`, a cancelled CI job): one line saying what was
    kept and the command to run again, the exit code a shell gives for that signal, and a re-run that resumes.
    SIGTERM ended the process on the spot: nothing said, a half-written file's temp left behind."""
    import os
    import re
    import time

    for flags, expected in (([], "a re-run resumes from it: "), (["--no-cache"], "nothing was cached (--no-cache)")):
        command = ["compare", str(tiny_checkpoints[-1]), "--data", "shapes:val:1000", "--batch-size", "1", "--device", "cpu",
                   "--out", str(tmp_path / "cmp"), *flags]  # fmt: skip
        proc = subprocess.Popen([sys.executable, "-m", "vlm_lab.cli", *command], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
        seen, deadline = b"", time.monotonic() + 300
        while not re.search(rb"\| [1-9]\d*/1000 \[", seen) and time.monotonic() < deadline:  # the bar: batches are done
            chunk = os.read(proc.stderr.fileno(), 4096)
            assert chunk, f"vlm-lab ended before a batch was done: {seen.decode()[-500:]}"
            seen += chunk
        proc.send_signal(signum)
        said_all = (seen + proc.communicate(timeout=120)[1]).decode()
        assert proc.returncode == code, said_all[-500:]  # mid-run (1000 batches), never as the process exits
        last = said_all.strip().splitlines()[-1]
        assert last.startswith(f"{said}; ") and expected in last and "Traceback" not in said_all, said_all[-500:]
        if not flags:
            assert last.endswith(shlex.join(["vlm-lab", *command])), last
            cached = [line for path in (tmp_path / "cmp" / ".cache").glob("*.jsonl") for line in path.open()]
            assert cached, "the finished batches were not kept"
    r = vlm_lab(*command[:command.index("shapes:val:1000")], "shapes:val:4", *command[command.index("shapes:val:1000") + 1:-1],
                "--quiet", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert not [p for p in (tmp_path / "cmp").rglob("*") if "tmp" in p.name], "a temp file left behind"


def test_float16_overflow_is_one_warning_line(overflowing_checkpoint, tmp_path):
    r = vlm_lab("compare", str(overflowing_checkpoint), "--data", "shapes:val:2", "--dtype", "float16", "--device", "cpu",
                "--out", str(tmp_path / "cmp"), "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    (line,) = [line for line in r.stderr.splitlines() if line.strip()]
    assert line.startswith("warning: checkpoint-1000: NaN or infinite") and "--dtype float32" in line


def test_show_repeats_the_warnings_compare_gave(tiny_checkpoints, overflowing_checkpoint, tmp_path):
    """A saved comparison read back says what compare said of its outputs: NaN/inf scores, answers cut off."""
    out = tmp_path / "cmp"
    r = vlm_lab("compare", str(tiny_checkpoints[-1]), str(overflowing_checkpoint), "--data", "shapes:val:3", "--dtype", "float16",
                "--max-new-tokens", "3", "--device", "cpu", "--out", str(out), "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(said) == 2 and "NaN or infinite" in said[1] and "in float16" in said[1], said
    assert said[0].startswith("warning: shapes/checkpoint-1000: 1 of 3 output(s) stopped at max_new_tokens=3"), said
    for args in ((), ("--json",)):
        shown = vlm_lab("show", str(out), *args)
        assert shown.returncode == 0, shown.stderr
        assert [line for line in shown.stderr.splitlines() if line.strip()] == said  # on stderr, word for word
    json.loads(shown.stdout)  # stdout stays nothing but the JSON
    quiet = vlm_lab("show", str(tmp_path / "clean"))  # nothing cut off, nothing NaN: nothing said
    assert quiet.returncode == 2
    r = vlm_lab("compare", str(tiny_checkpoints[-1]), "--data", "shapes:val:3", "--device", "cpu", "--out", str(tmp_path / "clean"), "--quiet")
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    shown = vlm_lab("show", str(tmp_path / "clean"))
    assert shown.returncode == 0 and not shown.stderr.strip(), shown.stderr


def test_a_jsonl_named_like_the_embedded_set_is_read_whole(tmp_path):
    from vlm_lab.cli import build_parser
    from vlm_lab.cli.compare import config_from_args

    parse = lambda *argv: config_from_args(build_parser().parse_args(["compare", "ckpt", *argv]))  # noqa: E731
    from vlm_lab.config import CompareConfig
    from vlm_lab.data import load_samples

    for data in ("shapes.jsonl", "shapes:val", "shapes:val:10"):  # the CLI and the library agree: all the data gives
        assert parse("--data", data).num_samples == CompareConfig(data=data).num_samples == 0
    assert len(load_samples("shapes:val:96", CompareConfig().num_samples or None)) == 96  # the count is in the spec
    assert len(load_samples("shapes:val", None)) == 64  # the embedded set without a count
    assert len(load_samples("shapes:val:96", 10)) == 10  # an explicit cap still caps


def test_git_lfs_pointer_weights_are_one_line_with_the_fix(tiny_checkpoints, tmp_path):
    import shutil

    folder = shutil.copytree(tiny_checkpoints[-1], tmp_path / "cloned-without-lfs")
    (folder / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 684000\n")
    r = vlm_lab("compare", str(folder), "--data", "shapes:val:2", "--device", "cpu", "--out", str(tmp_path / "cmp"), "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "Git-LFS pointer" in r.stderr and "git lfs pull" in r.stderr


def test_table_says_how_many_samples_the_accuracy_is_over(capsys, tmp_path):
    from vlm_lab.cli.compare import print_summary
    from vlm_lab.results import ComparisonResult

    rows = [
        {"id": i, "image": f"images/{i}.png", "prompt": "p", "reference": ref,
         "outputs": {"a": {"output": "red", "score": None if ref is None else 1.0, "latency_s": 0.1, "new_tokens": 2}}}
        for i, ref in (("s1", "red"), ("s2", None), ("s3", None), ("s4", None))
    ]  # fmt: skip
    summary = [{"checkpoint": "a", "step": None, "accuracy": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n_scored": 1, "n_samples": 4,
                "mean_latency_s": 0.1, "tokens_per_s": 20.0, "peak_memory_bytes": 10**6, "memory_kind": "cpu_weights"}]  # fmt: skip
    result = ComparisonResult(config={}, checkpoints=["a"], refs=[{"name": "a", "spec": "a", "step": None}], rows=rows,
                              summary=summary, output_dir=tmp_path)  # fmt: skip
    print_summary(result, as_json=False)
    printed = capsys.readouterr().out
    header, line = printed.splitlines()[:2]
    assert "n_scored" in header and "1/4" in line.split()  # 100% of one sample, not of four
    assert "paired" not in printed  # one checkpoint: no paired-comparison line
    assert "peak_memory_bytes: the weights' bytes" in printed  # what the memory column measured, in words



def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(tmp_path):
    """`vlm-lab runs DIR | head -1`: no BrokenPipeError traceback, the shell's SIGPIPE code."""
    proc = subprocess.Popen([sys.executable, "-m", "vlm_lab.cli", "runs", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()  # the reader is gone before the command writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
