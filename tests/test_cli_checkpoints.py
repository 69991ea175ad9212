import os
import shlex
import subprocess
import sys

import pytest

from mounts import read_only_folder  # noqa: F401 - a fixture


def vlm_lab(*args, **kw):
    return subprocess.run([sys.executable, "-m", "vlm_lab.cli", *args], capture_output=True, text=True, timeout=600, **kw)


def test_build_out_pointing_at_a_file_is_a_clear_error(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("x")
    r = vlm_lab("checkpoints", "build", "--out", str(target), "--steps", "2", "--save-every", "1")
    assert r.returncode == 2
    assert "is a file" in r.stderr and "Traceback" not in r.stderr


def test_build_out_not_writable_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/vlm-lab-cannot-write-here"  # even root cannot create folders in /proc
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        target = str(locked / "out")
    r = vlm_lab("checkpoints", "build", "--out", target, "--steps", "2", "--save-every", "1")
    assert r.returncode == 2
    assert "not writable" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("inside", [False, True])
def test_build_out_on_a_read_only_mount_is_refused_before_training(read_only_folder, inside):
    """A folder that exists but takes no writes (the case above only has one that cannot be created, as root)."""
    target = str(read_only_folder / "shapes" if inside else read_only_folder)
    r = vlm_lab("checkpoints", "build", "--out", target, "--steps", "2", "--save-every", "1")
    assert (r.returncode, r.stdout, r.stderr) == (2, "", f"error: OutputPathError: --out {shlex.quote(target)} is not writable "
                                                        "(Read-only file system); pick a folder you can write to\n")


def test_eval_prints_accuracy_table(tiny_checkpoints):
    r = vlm_lab("checkpoints", "eval", str(tiny_checkpoints[0]), str(tiny_checkpoints[-1]), "--data", "shapes:val:12", check=True)
    lines = r.stdout.strip().splitlines()
    assert "accuracy" in lines[0]
    assert lines[1].split()[0] == "checkpoint-0" and lines[2].split()[0] == "checkpoint-1000"


def test_eval_names_its_own_flags_in_the_errors_of_the_comparison_it_runs(tiny_checkpoints, tmp_path):
    """eval runs compare(), whose errors name CompareConfig's fields (output_dir='...', memory_budget='1MB',
    dtype='float16'): eval's user typed --out, and had no flag to raise the budget or load in float16 with."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = vlm_lab("checkpoints", "eval", str(tiny_checkpoints[-1]), "--data", "shapes:val:1", "--out", str(afile))
    assert r.returncode == 2 and r.stderr == f"error: OutputPathError: --out {shlex.quote(str(afile))} is a file; --out must name a folder\n", r.stderr
    # 500 kB: the tiny model (673 kB in float32) does not fit, in float16 (337 kB) it would: both fixes are named
    r = vlm_lab("checkpoints", "eval", str(tiny_checkpoints[-1]), "--data", "shapes:val:1", "--memory-budget", "500kB",
                "--device", "cpu", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and r.stderr.startswith("error: MemoryBudgetError: checkpoint-1000 needs "), r.stderr
    assert r.stderr.endswith("raise the budget (--memory-budget 1MB) or load in a smaller dtype (--dtype float16)\n"), r.stderr
    r = vlm_lab("checkpoints", "eval", str(tiny_checkpoints[-1]), "--data", "shapes:val:1", "--dtype", "float16",
                "--device", "cpu", "--batch-size", "1", "--max-new-tokens", "4", "--out", str(tmp_path / "x"))
    assert r.returncode == 0, r.stderr  # the flags the errors name are eval's: they run the comparison as asked


def test_eval_names_a_cache_flag_it_has_when_its_cache_cannot_go_in_out(tiny_checkpoints, tmp_path):
    """A file .cache in --out, where the result cache goes: the fix named was compare()'s cache_dir='DIR', a field eval's
    user cannot set; eval takes --cache-dir as compare does, and a cache folder given that way is used."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ".cache").write_text("x")
    r = vlm_lab("checkpoints", "eval", str(tiny_checkpoints[-1]), "--data", "shapes:val:1", "--out", str(out))
    assert r.returncode == 2 and r.stderr == (
        f"error: OutputPathError: --out {shlex.quote(str(out))} holds a file .cache where its result cache goes; move that "
        "file away, or give the cache a folder of its own (--cache-dir DIR)\n"), r.stderr
    r = vlm_lab("checkpoints", "eval", str(tiny_checkpoints[-1]), "--data", "shapes:val:1", "--device", "cpu", "--out", str(out),
                "--cache-dir", str(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr
    assert any((tmp_path / "cache").iterdir())


def test_unknown_checkpoint_lists_what_exists(tiny_dir):
    r = vlm_lab("checkpoints", "eval", str(tiny_dir / "checkpoint-999"))
    assert r.returncode == 2
    assert "checkpoint-1000" in r.stderr and "Traceback" not in r.stderr


def test_quiet_rebuild_says_what_it_removed_and_draws_no_bars(tmp_path):
    out = str(tmp_path / "ck")
    vlm_lab("checkpoints", "build", "--out", out, "--steps", "2", "--save-every", "2", "--quiet", check=True)
    r = vlm_lab("checkpoints", "build", "--out", out, "--steps", "2", "--save-every", "1", "--seed", "1", "--quiet", check=True)
    assert r.stderr.splitlines() == [
        f"warning: removed checkpoint-0, checkpoint-2 from {out}: an earlier build made them "
        "with save_every=2, seed=0; now save_every=1, seed=1, so they do not belong to this run"
    ]  # and no "Writing model shards" bar
    assert r.stdout.splitlines()[0] == f"3 checkpoints in {out}: checkpoint-0, checkpoint-1, checkpoint-2"


def test_eval_help_shows_a_plain_percent_sign():
    r = vlm_lab("checkpoints", "eval", "--help", check=True)
    assert "95% bootstrap" in " ".join(r.stdout.split()) and "%%" not in r.stdout


def test_a_build_waiting_for_another_says_so(tmp_path):
    import fcntl
    import threading

    out = tmp_path / "ck"
    out.mkdir()
    lock = open(out / ".build.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)  # another build is running into this folder
    # safety net, not a timing: a build that waits silently still ends (and the test fails)
    release = threading.Timer(120, lock.close)
    release.start()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "vlm_lab.cli", "checkpoints", "build", "--out", str(out),
                                 "--steps", "1", "--save-every", "1", "--quiet"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = proc.stderr.readline()  # what the waiting build says while the other holds the folder
    finally:
        release.cancel()
        lock.close()
    rest, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert first.startswith(f"waiting for another build into {out} to finish"), first
    assert rest.startswith("2 checkpoints in")


def test_build_takes_the_model_and_data_sizes(tmp_path):
    import json

    out = tmp_path / "ck"
    vlm_lab("checkpoints", "build", "--out", str(out), "--steps", "2", "--save-every", "2", "--batch-size", "4",
            "--learning-rate", "0.01", "--train-images", "8", "--quiet", check=True)
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["train_batch_size"] == 4
    saved = state["stateful_callbacks"]["VlmLabTinyBuild"]["args"]
    assert (saved["batch_size"], saved["learning_rate"], saved["train_images"]) == (4, 0.01, 8)
    r = vlm_lab("checkpoints", "build", "--out", str(out), "--batch-size", "0", "--quiet")
    assert r.returncode == 2 and "--batch-size" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--learning-rate", "0"], "--learning-rate must be a finite number > 0"),
    (["--save-every", "0"], "--save-every must be a positive integer"),
    (["--seed", "-1"], "--seed must be a whole number from 0"),
])
def test_build_names_a_bad_option_as_its_flag(args, message, tmp_path):
    r = vlm_lab("checkpoints", "build", "--out", str(tmp_path / "ck"), *args, "--quiet")
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "ck").exists()  # refused before anything was written


def test_eval_of_a_run_being_written_skips_the_unfinished_checkpoint_and_says_so(tiny_checkpoints, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoints[0], run / "checkpoint-0")
    (run / "checkpoint-250").mkdir()
    shutil.copy(tiny_checkpoints[1] / "config.json", run / "checkpoint-250")  # save_pretrained has just begun
    r = vlm_lab("checkpoints", "eval", str(run), "--data", "shapes:val:4", "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()[1:2]] == ["checkpoint-0"] and "checkpoint-250" not in r.stdout
    (warning,) = [line for line in r.stderr.splitlines() if "checkpoint-250" in line]
    assert warning.startswith(f"warning: skipping {run / 'checkpoint-250'} (no weights or tokenizer in the folder): it is not complete")


def test_build_says_whether_it_trained_resumed_or_found_the_work_done(tmp_path):
    import json
    import shutil

    out = tmp_path / "ck"
    build = ("checkpoints", "build", "--out", str(out), "--steps", "4", "--save-every", "2", "--quiet")
    first = vlm_lab(*build, check=True).stdout.splitlines()
    losses = [row["loss"] for row in json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]]
    assert first[1] == (f"trained steps 1-4: loss {losses[0]:.4g} at step 1, {losses[-1]:.4g} at step 4 "
                        f"(every step's loss: {out / 'checkpoint-4' / 'trainer_state.json'})")
    again = vlm_lab(*build, check=True).stdout.splitlines()
    assert again[1] == f"already built with these settings: nothing trained (loss {losses[-1]:.4g} at step 4)"
    shutil.rmtree(out / "checkpoint-4")  # as a kill before the last save leaves it
    resumed = vlm_lab(*build, check=True).stdout.splitlines()
    assert resumed[1].startswith("resumed from checkpoint-2, trained steps 3-4: loss ")
    assert len(resumed) == 2


def test_build_into_an_empty_out_is_refused_not_written_into_the_current_folder(tmp_path):
    r = vlm_lab("checkpoints", "build", "--out", "", "--steps", "1", "--quiet", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    # the library names the field (out must ..., out='checkpoints/shapes': test_tiny); the command its flag
    assert r.stderr.strip() == ("error: OutputPathError: --out must name the folder to save the checkpoints in (it is empty), "
                                "such as --out checkpoints/shapes")
    assert list(tmp_path.iterdir()) == []


def test_list_shows_each_checkpoints_step_epoch_loss_size_and_whether_it_can_resume(tmp_path):
    import json

    out = tmp_path / "ck"
    vlm_lab("checkpoints", "build", "--out", str(out), "--steps", "4", "--save-every", "2", "--train-images", "16",
            "--quiet", check=True)
    (out / "checkpoint-2" / "optimizer.pt").unlink()  # pruned to save space: compare still loads it, a build cannot resume
    history = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    loss = [row["loss"] for row in history]
    r = vlm_lab("checkpoints", "list", str(out), check=True)
    lines = r.stdout.splitlines()
    assert lines[0] == (f"{out}: built by `vlm-lab checkpoints build` with steps=4, save_every=2, seed=0, "
                        "batch_size=32, learning_rate=0.003, train_images=16")
    assert [line.split() for line in lines[1:5]] == [
        ["checkpoint", "step", "epoch", "loss", "weights", "resumable"],
        ["checkpoint-0", "0", "0.00", "-", "664.17", "KiB", "yes"],
        ["checkpoint-2", "2", "1.33", f"{(loss[0] + loss[1]) / 2:.4f}", "664.17", "KiB", "no"],
        ["checkpoint-4", "4", "2.67", f"{(loss[2] + loss[3]) / 2:.4f}", "664.17", "KiB", "yes"],
    ]
    one = vlm_lab("checkpoints", "list", str(out / "checkpoint-4"), check=True).stdout.splitlines()
    assert one[2] == lines[4]  # alone, a checkpoint's loss is still over its own save interval
    rows = json.loads(vlm_lab("checkpoints", "ls", str(out), "--json", check=True).stdout)
    assert [(row["name"], row["step"], row["resumable"]) for row in rows] == [
        ("checkpoint-0", 0, True), ("checkpoint-2", 2, False), ("checkpoint-4", 4, True)]
    assert rows[2]["loss"] == pytest.approx((loss[2] + loss[3]) / 2) and rows[2]["weights_bytes"] > 0


def test_list_reads_a_trainer_run_it_did_not_build_and_shows_its_eval_loss(tiny_checkpoints, tmp_path):
    import json
    import shutil

    import torch

    run = tmp_path / "trainer-run"
    for step, source in ((500, tiny_checkpoints[2]), (1000, tiny_checkpoints[4])):
        # resumable: the optimizer and scheduler state are there (given to 1000 only, whatever the build kept)
        shutil.copytree(source, run / f"checkpoint-{step}", ignore=shutil.ignore_patterns("trainer_state.json", "optimizer.pt", "scheduler.pt"))
    for name in ("optimizer.pt", "scheduler.pt"):
        torch.save({}, run / "checkpoint-1000" / name)
    # logging_steps=250, eval_steps=500, as a Trainer writes them (the loss row, then the eval row, of a step)
    log = [{"step": 250, "epoch": 0.5, "loss": 1.0}, {"step": 500, "epoch": 1.0, "loss": 0.5},
           {"step": 500, "epoch": 1.0, "eval_loss": 0.75}, {"step": 750, "epoch": 1.5, "loss": 0.25}]
    for step, rows in ((500, log[:3]), (1000, log)):
        state = {"global_step": step, "epoch": step / 500, "save_steps": 500, "log_history": rows}
        (run / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps(state))
    r = vlm_lab("checkpoints", "list", str(run), check=True)
    lines = [line.split() for line in r.stdout.splitlines()]
    assert lines[:3] == [["checkpoint", "step", "epoch", "loss", "eval_loss", "weights", "resumable"],
                         ["checkpoint-500", "500", "1.00", "0.7500", "0.7500", "664.17", "KiB", "no"],
                         ["checkpoint-1000", "1000", "2.00", "0.2500", "-", "664.17", "KiB", "yes"]]


def test_list_of_a_folder_with_no_checkpoints_names_what_is_there(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    r = vlm_lab("checkpoints", "list", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "notes.txt" in r.stderr


@pytest.mark.parametrize("inside", ["checkpoint-1000", "."])
def test_build_into_a_model_folder_is_refused(tiny_checkpoints, tmp_path, inside):
    import shutil

    run = tmp_path / "my-run"  # a training output: its final model at the root, and a checkpoint
    shutil.copytree(tiny_checkpoints[-1], run / "checkpoint-1000")
    for f in (tiny_checkpoints[-1] / "config.json", tiny_checkpoints[-1] / "model.safetensors"):
        shutil.copy(f, run)
    before = sorted(p.name for p in (run / inside).iterdir())
    r = vlm_lab("checkpoints", "build", "--out", str(run / inside), "--steps", "1", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == (
        f"error: OutputPathError: --out {shlex.quote(str(run / inside))} holds a model (config.json): its checkpoint-N "
        "folders would be read as one run with that model; pass a folder of its own, such as --out checkpoints/mine")
    assert sorted(p.name for p in (run / inside).iterdir()) == before  # nothing written


INTERRUPTED_WITH_A_BAR = r"""
import sys
from vlm_lab import tiny
from vlm_lab.config import TrainConfig

def ctrl_c(path):
    if path.name == "checkpoint-2":
        raise KeyboardInterrupt

try:
    tiny.train(TrainConfig(out=sys.argv[1], steps=4, save_every=2, train_images=8), progress=True, on_save=ctrl_c)
except KeyboardInterrupt:
    print("interrupted; a re-run resumes", file=sys.stderr)
"""


def test_an_interrupted_builds_bar_ends_its_line_before_the_message(tmp_path):
    r = subprocess.run([sys.executable, "-c", INTERRUPTED_WITH_A_BAR, str(tmp_path / "ck")], capture_output=True, text=True,
                       timeout=300, check=True)
    before, message, after = r.stderr.rpartition("interrupted; a re-run resumes")
    assert message and after == "\n", repr(r.stderr[-300:])  # the bar was not drawn again after it
    assert before.endswith("\n") and "2/4" in before.splitlines()[-1], repr(before[-300:])  # its own line, at step 2


@pytest.mark.parametrize("action", ["eval", "list"])
def test_the_default_folder_missing_here_says_where_it_is_or_how_to_build_it(action, tmp_path):
    r = vlm_lab("checkpoints", action, cwd=tmp_path)  # a fresh clone before make checkpoints, or run from notebooks/
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "hf download" not in r.stderr, r.stderr  # it is no hub id
    assert r.stderr.startswith(f"error: CheckpointNotFoundError: no checkpoints at 'checkpoints/shapes' (relative to {tmp_path}); ")
    assert "run from the project root" in r.stderr or "vlm-lab checkpoints build --out checkpoints/shapes" in r.stderr


def test_a_build_with_many_checkpoints_names_the_first_and_last_and_how_to_see_all(tmp_path):
    out = tmp_path / "ck"
    r = vlm_lab("checkpoints", "build", "--out", str(out), "--steps", "12", "--save-every", "1", "--train-images", "4",
                "--quiet", check=True)
    assert r.stdout.splitlines()[0] == (
        f"13 checkpoints in {out}: checkpoint-0, checkpoint-1, checkpoint-2, ..., checkpoint-11, checkpoint-12 "
        f"(each with its loss: vlm-lab checkpoints list {out})")


# What flock answers where the filesystem keeps no locks: NFS without lockd (ENOLCK), Lustre mounted without
# -o flock (ENOSYS). No such filesystem can be mounted in a test, so the build runs with flock answering so.
BUILD_WITHOUT_FILE_LOCKS = r"""
import errno, fcntl, os, sys
code = getattr(errno, sys.argv[1])
def flock(*args):
    raise OSError(code, os.strerror(code))
fcntl.flock = flock
from vlm_lab.cli import main
sys.exit(main(["checkpoints", "build", "--out", sys.argv[2], "--steps", "1", "--save-every", "1",
               "--train-images", "4", "--quiet"]))
"""

HOLD_THE_SOFT_LOCK = r"""
import sys
from filelock import SoftFileLock
with SoftFileLock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes it
"""


@pytest.mark.parametrize("code", ["ENOLCK", "ENOSYS"])
def test_on_a_filesystem_without_locks_a_second_build_still_waits_for_the_first(tmp_path, code):
    out = tmp_path / "ck"
    out.mkdir()
    marker = out / ".build.lock.soft"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_THE_SOFT_LOCK, str(marker)],  # the first build, running
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        build = subprocess.Popen([sys.executable, "-c", BUILD_WITHOUT_FILE_LOCKS, code, str(out)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = build.stderr.readline()  # a traceback's first line, before the fix
    finally:
        holder.stdin.close()  # the first build ends
        holder.wait(timeout=60)
    rest, err = build.communicate(timeout=600)
    assert build.returncode == 0 and "Traceback" not in err, first + err
    assert first == (f"waiting for another build into {out} to finish ({out} has no file locks, so its marker {marker} "
                     "stands for the lock: if no build is running there, delete it)\n"), first
    assert rest.startswith("2 checkpoints in")
    assert not marker.exists()  # released


def test_a_lock_that_fails_otherwise_is_one_clear_error(tmp_path):
    out = tmp_path / "ck"
    done = subprocess.run([sys.executable, "-c", BUILD_WITHOUT_FILE_LOCKS, "EIO", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (f"error: OutputPathError: cannot lock {out / '.build.lock'} (Input/output error, errno 5), "
                           "which keeps two builds out of one folder; build into another folder\n")
    assert not list(out.glob("checkpoint-*"))


INTERRUPT_A_BUILD = r"""
import sys
from vlm_lab import tiny
from vlm_lab.config import TrainConfig

def ctrl_c(path):
    if path.name == "checkpoint-2":
        raise KeyboardInterrupt

try:
    tiny.train(TrainConfig(out=sys.argv[1], steps=6, save_every=2, seed=3, train_images=4), progress=False, on_save=ctrl_c)
except KeyboardInterrupt:
    print("interrupted")
"""


def test_list_of_an_interrupted_build_says_so_and_gives_the_command_that_finishes_it(tmp_path):
    out = tmp_path / "my ck"  # a space: the command must still run when pasted
    done = subprocess.run([sys.executable, "-c", INTERRUPT_A_BUILD, str(out)], capture_output=True, text=True, timeout=600)
    assert done.stdout == "interrupted\n", done.stderr
    listed = vlm_lab("checkpoints", "list", str(out), check=True).stdout.splitlines()
    command = f"vlm-lab checkpoints build --out {shlex.quote(str(out))} --steps 6 --save-every 2 --seed 3 --train-images 4"
    assert listed[-1] == f"incomplete: the build stopped at checkpoint-2 of 6 steps; `{command}` finishes it", listed
    resumed = vlm_lab(*shlex.split(command)[1:], "--quiet", check=True).stdout
    assert "resumed from checkpoint-2, trained steps 3-6" in resumed
    assert not any(line.startswith("incomplete") for line in vlm_lab("checkpoints", "list", str(out), check=True).stdout.splitlines())


# vlm-lab with flock answering as where the filesystem keeps no locks (NFS without lockd)
VLM_LAB_WITHOUT_FILE_LOCKS = r"""
import errno, fcntl, os, sys
def flock(*args):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
fcntl.flock = flock
from vlm_lab.cli import main
sys.exit(main(sys.argv[1:]))
"""

KILLED_HOLDING_THE_SOFT_LOCK = r"""
import os, signal, sys
from filelock import SoftFileLock
lock = SoftFileLock(sys.argv[1])
lock.acquire()
os.kill(os.getpid(), signal.SIGKILL)  # kill -9 mid-build, an OOM kill, a crash: the marker stays
"""


def without_file_locks(*args, **kw):
    return subprocess.run([sys.executable, "-c", VLM_LAB_WITHOUT_FILE_LOCKS, *args], capture_output=True, text=True,
                          timeout=600, **kw)


def test_list_without_file_locks_says_a_killed_build_stopped_not_that_it_runs_forever(tmp_path):
    out = tmp_path / "ck"
    command = f"vlm-lab checkpoints build --out {out} --steps 6 --save-every 2 --seed 3 --train-images 4"
    done = subprocess.run([sys.executable, "-c", INTERRUPT_A_BUILD, str(out)], capture_output=True, text=True, timeout=600)
    assert done.stdout == "interrupted\n", done.stderr
    marker = out / ".build.lock.soft"
    killed = subprocess.run([sys.executable, "-c", KILLED_HOLDING_THE_SOFT_LOCK, str(marker)], timeout=60)
    assert killed.returncode == -9 and marker.read_text().split("\n")[0].isdigit()  # left behind, naming the dead pid
    listed = without_file_locks("checkpoints", "list", str(out), check=True).stdout.splitlines()
    assert listed[-1] == f"incomplete: the build stopped at checkpoint-2 of 6 steps; `{command}` finishes it", listed
    resumed = without_file_locks(*command.split()[1:], "--quiet")  # and it does: the dead builder's marker is taken over
    assert resumed.returncode == 0 and "resumed from checkpoint-2, trained steps 3-6" in resumed.stdout, resumed.stderr
    assert not marker.exists()


def test_list_without_file_locks_names_the_host_whose_marker_holds_the_lock_and_how_to_clear_it(tmp_path):
    out = tmp_path / "ck"
    done = subprocess.run([sys.executable, "-c", INTERRUPT_A_BUILD, str(out)], capture_output=True, text=True, timeout=600)
    assert done.stdout == "interrupted\n", done.stderr
    marker = out / ".build.lock.soft"
    marker.write_text("4242\nnode-17\n")  # a build on another node of the shared filesystem: no pid there to probe
    command = f"vlm-lab checkpoints build --out {out} --steps 6 --save-every 2 --seed 3 --train-images 4"
    listed = without_file_locks("checkpoints", "list", str(out), check=True).stdout.splitlines()
    assert listed[-1] == (f"a build into {out} is running on node-17 (pid 4242), as its marker {marker} says: checkpoint-2 "
                          f"of 6 steps is saved so far; if no build is running there, delete {marker} and `{command}` "
                          "finishes it"), listed
    build = subprocess.Popen([sys.executable, "-c", VLM_LAB_WITHOUT_FILE_LOCKS, *command.split()[1:], "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    waiting = build.stderr.readline()
    marker.unlink()  # as the message says, once node-17 runs no build
    rest, err = build.communicate(timeout=600)
    assert waiting == (f"waiting for another build into {out} to finish ({out} has no file locks, so its marker {marker} "
                       "stands for the lock, held by a build on node-17 (pid 4242): if no build is running there, delete it)\n")
    assert build.returncode == 0 and "resumed from checkpoint-2" in rest, err


@pytest.mark.parametrize("out, message", [
    ("a" * 300, r"--out a{300} cannot be used \(File name too long\); pass a shorter folder path"),
    ("dangling", r"--out dangling is a link to '.*nowhere/x', which does not exist; create that folder or build into another one"),
])
def test_build_into_an_odd_out_is_one_clear_error(tmp_path, out, message):
    import re

    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere" / "x")
    r = vlm_lab("checkpoints", "build", "--out", out, "--steps", "1", "--quiet", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert re.fullmatch(f"error: OutputPathError: {message}\n", r.stderr), r.stderr


def test_list_while_a_build_runs_says_it_runs_not_that_it_stopped(tmp_path):
    import fcntl

    out = tmp_path / "ck"
    done = subprocess.run([sys.executable, "-c", INTERRUPT_A_BUILD, str(out)], capture_output=True, text=True, timeout=600)
    assert done.stdout == "interrupted\n", done.stderr
    with open(out / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a build resumed it and is training now
        listed = vlm_lab("checkpoints", "list", str(out), check=True).stdout.splitlines()
    assert listed[-1] == f"a build into {out} is running: checkpoint-2 of 6 steps is saved so far", listed
    assert vlm_lab("checkpoints", "list", str(out), check=True).stdout.splitlines()[-1].startswith("incomplete: ")


def test_a_build_logged_to_a_file_writes_plain_lines_not_a_redrawn_bar(tmp_path):
    import re

    out = tmp_path / "ck"
    r = vlm_lab("checkpoints", "build", "--out", str(out), "--steps", "4", "--save-every", "2", "--train-images", "4",
                check=True)  # stderr is a pipe, as under make in CI or cron: no terminal to redraw a bar in
    assert "\r" not in r.stderr, repr(r.stderr[:300])  # a 1000-step build wrote tens of kB of redrawn bar, one line
    assert re.fullmatch(f"training tiny VLM: steps 1-4 into {re.escape(str(out))}\n"
                        r"step 2/4: loss \d\.\d{4} \(mean of steps 1-2\), saved checkpoint-2\n"
                        r"step 4/4: loss \d\.\d{4} \(mean of steps 3-4\), saved checkpoint-4\n", r.stderr), r.stderr


def test_more_training_images_than_memory_holds_is_refused_before_anything_is_made(tmp_path):
    from vlm_lab.data import MAX_SHAPES_SAMPLES

    out = tmp_path / "ck"
    # a typo'd zero too many: the images are drawn and held in memory first (3.3 GB within 20 s, and growing)
    r = vlm_lab("checkpoints", "build", "--out", str(out), "--train-images", "100000000", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr == (f"error: ConfigError: --train-images 100000000 is more images than a build holds in memory "
                        f"(at most {MAX_SHAPES_SAMPLES}, ~18 KB each); pass --train-images {MAX_SHAPES_SAMPLES} or fewer\n")
    assert not out.exists()


def test_a_build_that_cannot_fit_on_the_disk_is_refused_before_it_fills_it(tmp_path):
    import re
    import shutil

    out = tmp_path / "ck"
    steps = shutil.disk_usage(tmp_path).free // 1_000_000 + 1  # a checkpoint a step, ~2 MB each: twice the free space
    r = vlm_lab("checkpoints", "build", "--out", str(out), "--steps", str(steps), "--save-every", "1",
                "--train-images", "4", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert re.fullmatch(rf"error: OutputPathError: this build saves {steps + 1} checkpoints of ~1\.\d\d MiB each \([\d.]+ [GT]iB\), "
                        rf"and {re.escape(str(out))} has [\d.]+ [GMT]iB free; pass --save-every \d+ or more \(or free space, or "
                        r"build into another folder\)\n", r.stderr), r.stderr
    assert not list(out.glob("checkpoint-*"))  # nothing written, not even checkpoint-0


def test_list_does_not_call_a_checkpoint_with_a_cut_short_optimizer_state_resumable(tmp_path):
    out = tmp_path / "ck"
    vlm_lab("checkpoints", "build", "--out", str(out), "--steps", "2", "--save-every", "2", "--train-images", "4",
            "--quiet", check=True)
    state = out / "checkpoint-2" / "optimizer.pt"
    data = state.read_bytes()
    state.write_bytes(data[: len(data) // 2])  # a power loss, a copy cut short: neither a build nor a Trainer resumes from it
    rows = [line.split() for line in vlm_lab("checkpoints", "list", str(out), check=True).stdout.splitlines()]
    assert [(row[0], row[-1]) for row in rows[2:4]] == [("checkpoint-0", "yes"), ("checkpoint-2", "no")]


def test_a_batch_too_big_for_the_memory_is_refused_before_anything_is_made(tmp_path):
    import re

    import psutil

    out = tmp_path / "ck"
    batch = psutil.virtual_memory().available // (1 << 20)  # ~2.6 MiB a sample: more than twice the memory there is
    r = vlm_lab("checkpoints", "build", "--out", str(out), "--batch-size", str(batch), "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert re.fullmatch(rf"error: ConfigError: --batch-size {batch} needs ~[\d.]+ [GT]iB of memory for one training step "
                        r"\(~2\.60 MiB a sample\), and [\d.]+ [GT]iB is available; pass --batch-size \d+ or fewer\n", r.stderr), r.stderr
    assert not out.exists()


def test_a_build_saving_an_absurd_number_of_checkpoints_is_refused_before_it_lists_them(tmp_path):
    import resource

    out = tmp_path / "ck"

    def at_most_8_gib():  # before the fix the list of a billion save steps took ~60 GB: here a MemoryError instead
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    r = subprocess.run([sys.executable, "-m", "vlm_lab.cli", "checkpoints", "build", "--out", str(out), "--steps", "1000000000",
                        "--save-every", "1", "--quiet"], capture_output=True, text=True, timeout=600, preexec_fn=at_most_8_gib)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr == ("error: ConfigError: --steps 1000000000 with --save-every 1 saves 1000000001 checkpoints, more than "
                        "a build saves (at most 1000000, ~2 MB of disk each); pass --save-every 1001 or more\n")
    assert not out.exists()


def lock_file_others_cannot_write(path):
    """Make ``path`` a lock file this user cannot open for writing: another user's, in effect."""
    path.touch()
    if os.geteuid() != 0:
        path.chmod(0o444)
        return lambda: path.chmod(0o644)
    # root writes any file whatever its mode or owner; an immutable one it cannot (and still reads it)
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root where chattr +i is refused: no file here is unwritable to this user")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_build_lock_another_user_made_does_not_stop_the_build(tmp_path):
    # a shared checkpoints folder: another user's build left .build.lock with that user's umask (0644)
    out = tmp_path / "ck"
    out.mkdir()
    writable_again = lock_file_others_cannot_write(out / ".build.lock")
    try:
        r = vlm_lab("checkpoints", "build", "--out", str(out), "--steps", "1", "--save-every", "1", "--train-images", "4",
                    "--quiet")
    finally:
        writable_again()
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]  # PermissionError before
    assert r.stdout.startswith(f"2 checkpoints in {out}")


def test_a_build_lock_that_can_only_be_read_where_locks_need_writes_is_one_clear_error(tmp_path):
    # NFS locks through fcntl, which refuses a file opened read-only (EBADF); no NFS here, so flock answers so
    out = tmp_path / "ck"
    out.mkdir()
    lock = out / ".build.lock"
    writable_again = lock_file_others_cannot_write(lock)
    try:
        r = subprocess.run([sys.executable, "-c", BUILD_WITHOUT_FILE_LOCKS, "EBADF", str(out)], capture_output=True,
                           text=True, timeout=600)
    finally:
        writable_again()
    assert r.returncode == 2, r.stderr[-2000:]
    owner = "root" if os.geteuid() == 0 else __import__("pwd").getpwuid(os.geteuid()).pw_name
    assert r.stderr == (f"error: OutputPathError: cannot open the build lock {lock} (Permission denied; it belongs to "
                        f"{owner}), which keeps two builds out of one folder; let every user of {out} read and write it "
                        f"(chmod a+rw {lock}), or, when no build is running there, delete it (it holds no data); "
                        "or build into another folder\n")
    assert not list(out.glob("checkpoint-*"))


def test_replacing_a_build_of_many_checkpoints_names_the_first_and_last_not_all(tmp_path):
    out = str(tmp_path / "ck")
    vlm_lab("checkpoints", "build", "--out", out, "--steps", "12", "--save-every", "1", "--train-images", "4", "--quiet",
            check=True)
    r = vlm_lab("checkpoints", "build", "--out", out, "--steps", "2", "--save-every", "2", "--train-images", "4", "--quiet",
                check=True)
    assert r.stderr.splitlines() == [  # every one of a thousand names, on one line, before
        f"warning: removed checkpoint-0, checkpoint-1, checkpoint-2, ..., checkpoint-11, checkpoint-12 from {out}: an "
        "earlier build made them with steps=12, save_every=1; now steps=2, save_every=2, so they do not belong to this run"
    ]


def test_a_diverging_build_names_the_flag_to_lower(tmp_path):
    """tiny.train names learning_rate= (test_tiny); the build command wraps it, so its user reads --learning-rate."""
    r = vlm_lab("checkpoints", "build", "--out", str(tmp_path / "ck"), "--steps", "8", "--save-every", "1",
                "--learning-rate", "1e6", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    (line,) = r.stderr.splitlines()
    assert line.startswith("error: ConfigError: training diverged: ") and "with --learning-rate 1000000.0 " in line, line
    assert line.endswith("; lower it (e.g. --learning-rate 100000; the default is 0.003)") and "learning_rate" not in line, line
