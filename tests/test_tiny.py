import json
import math
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from vlm_lab import data, generation, models, scoring, tiny
from vlm_lab.config import TrainConfig
from vlm_lab.errors import OutputPathError

LOAD_AND_ANSWER = r"""
import json, sys
from transformers import AutoModelForImageTextToText, AutoProcessor
from vlm_lab import shapes
path = sys.argv[1]
processor = AutoProcessor.from_pretrained(path)
model = AutoModelForImageTextToText.from_pretrained(path)
answers = []
for s in shapes.make_samples("val", 6):
    messages = [{"role": "user", "content": [{"type": "image", "image": s.image}, {"type": "text", "text": s.prompt}]}]
    inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=6)
    text = processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    answers.append([text.strip(), s.reference])
print(json.dumps({"class": type(model).__name__, "answers": answers}))
"""


def test_checkpoints_are_laid_out_like_the_trainer(tiny_checkpoints):
    assert [p.name for p in tiny_checkpoints] == [f"checkpoint-{n}" for n in (0, 250, 500, 750, 1000)]
    last = tiny_checkpoints[-1]
    for name in ("config.json", "model.safetensors", "generation_config.json", "trainer_state.json",
                 "tokenizer.json", "processor_config.json"):
        assert (last / name).is_file(), name
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] == 1000
    losses = [row["loss"] for row in state["log_history"]]
    assert len(losses) == 1000
    assert sum(losses[-50:]) / 50 < sum(losses[:50]) / 50 / 5  # the loss fell


def test_loads_through_auto_classes_in_a_fresh_offline_process(tiny_checkpoints):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", LOAD_AND_ANSWER, str(tiny_checkpoints[-1])],
                         capture_output=True, text=True, env=env, timeout=300, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["class"] == "LlavaForConditionalGeneration"
    assert sum(text == ref for text, ref in result["answers"]) >= 5


@pytest.mark.slow
def test_accuracy_rises_along_training(tiny_checkpoints):
    samples = data.load_samples("shapes:val:96")
    acc = []
    for path in tiny_checkpoints:
        loaded = models.load_model(str(path), device="cpu")
        outs = generation.generate(loaded, samples)
        acc.append(sum(scoring.exact_match(o.text, s.reference) for o, s in zip(outs, samples)) / len(samples))
    assert acc[0] <= 0.05
    assert acc[-1] >= 0.90
    assert acc[0] < acc[1] < acc[-1]
    assert all(0.05 < a < acc[-1] for a in acc[1:-1])


def test_training_is_deterministic_for_a_seed(tmp_path):
    a = tiny.train(TrainConfig(out=str(tmp_path / "a"), steps=4, save_every=2, seed=7), progress=False)
    b = tiny.train(TrainConfig(out=str(tmp_path / "b"), steps=4, save_every=2, seed=7), progress=False)
    from safetensors.torch import load_file

    wa, wb = load_file(a[-1] / "model.safetensors"), load_file(b[-1] / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [p.name for p in a] == ["checkpoint-0", "checkpoint-2", "checkpoint-4"]


def test_rebuild_is_skipped_when_present(tmp_path):
    config = TrainConfig(out=str(tmp_path / "c"), steps=2, save_every=2)
    first = tiny.train(config, progress=False)
    stamp = (first[-1] / "model.safetensors").stat().st_mtime_ns
    again = tiny.train(config, progress=False)
    assert again == first
    assert (first[-1] / "model.safetensors").stat().st_mtime_ns == stamp


def test_rebuild_with_other_settings_removes_the_earlier_build(tmp_path):
    out = tmp_path / "ck"
    tiny.train(TrainConfig(out=str(out), steps=4, save_every=2), progress=False)
    (out / "notes.txt").write_text("mine")  # not a checkpoint: never touched
    with pytest.warns(tiny.StaleCheckpointsWarning, match=r"removed checkpoint-0, checkpoint-2, checkpoint-4 .*"
                      r"made them with steps=4, save_every=2, seed=0; now steps=2, save_every=1, seed=1, so"):
        paths = tiny.train(TrainConfig(out=str(out), steps=2, save_every=1, seed=1), progress=False)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-0", "checkpoint-1", "checkpoint-2"]
    assert [p.name for p in paths] == ["checkpoint-0", "checkpoint-1", "checkpoint-2"]
    assert all(tiny.build_record(p)[0]["seed"] == 1 for p in paths)
    assert (out / "notes.txt").read_text() == "mine"


def test_a_checkpoint_of_an_older_format_is_rebuilt(tmp_path):
    config = TrainConfig(out=str(tmp_path / "ck"), steps=2, save_every=2)
    first = tiny.train(config, progress=False)
    state = json.loads((first[-1] / "trainer_state.json").read_text())
    state["stateful_callbacks"][tiny.BUILD_RECORD]["attributes"]["format"] = tiny.FORMAT_VERSION - 1
    (first[-1] / "trainer_state.json").write_text(json.dumps(state))
    with pytest.warns(tiny.StaleCheckpointsWarning, match=rf"removed checkpoint-2 .*made them in checkpoint format {tiny.FORMAT_VERSION - 1}, now {tiny.FORMAT_VERSION}"):
        again = tiny.train(config, progress=False)
    assert again == first and tiny.build_record(first[-1])[1] == tiny.FORMAT_VERSION


def test_a_checkpoint_the_build_did_not_make_stops_it_untouched(tmp_path):
    out = tmp_path / "ck"
    tiny.train(TrainConfig(out=str(out), steps=2, save_every=2), progress=False)
    theirs = out / "checkpoint-2"  # a user's own training output at a step the new build would write
    (theirs / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    with pytest.raises(OutputPathError, match=r"^out=.* holds checkpoint-2, which no tiny build made; it replaces only its own builds: move those folders elsewhere or build into another folder$"):
        tiny.train(TrainConfig(out=str(out), steps=2, save_every=1), progress=False)
    assert json.loads((theirs / "trainer_state.json").read_text()) == {"global_step": 2}
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-0", "checkpoint-2"]  # nothing removed


def test_processor_pads_left_and_stops_at_end_token(tiny_checkpoints):
    loaded = models.load_model(str(tiny_checkpoints[-1]), device="cpu")
    tok = loaded.processor.tokenizer
    assert tok.padding_side == "left"
    assert tok.eos_token == tiny.END_TOKEN and tok.pad_token == tiny.PAD_TOKEN
    assert loaded.model.generation_config.eos_token_id == tok.eos_token_id


def _weights(checkpoint):
    from safetensors.torch import load_file

    return load_file(checkpoint / "model.safetensors")


def test_an_interrupted_build_resumes_from_its_last_checkpoint(tmp_path):
    config = TrainConfig(out=str(tmp_path / "ck"), steps=6, save_every=2, seed=3)

    def interrupt_after_step_2(path):
        if path.name == "checkpoint-2":
            raise KeyboardInterrupt  # Ctrl-C right after checkpoint-2 was saved

    with pytest.raises(KeyboardInterrupt):
        tiny.train(config, progress=False, on_save=interrupt_after_step_2)
    out = tmp_path / "ck"
    (out / ".checkpoint-4.tmp").mkdir()  # a save cut short by kill -9
    kept = {n: (out / n / "model.safetensors").stat().st_mtime_ns for n in ("checkpoint-0", "checkpoint-2")}
    saved = []
    resumed = tiny.train(config, progress=False, on_save=saved.append)
    assert [p.name for p in saved] == ["checkpoint-4", "checkpoint-6"]  # steps 1-2 were not trained again
    assert {n: (out / n / "model.safetensors").stat().st_mtime_ns for n in kept} == kept
    assert not list(out.glob(".checkpoint-*.tmp"))
    straight = tiny.train(config.replace(out=str(tmp_path / "straight")), progress=False)
    a, b = _weights(resumed[-1]), _weights(straight[-1])
    assert all(torch.equal(a[k], b[k]) for k in b)  # the same weights as a build never interrupted
    history = lambda p: json.loads((p / "trainer_state.json").read_text())["log_history"]  # noqa: E731
    assert [r["loss"] for r in history(resumed[-1])] == [r["loss"] for r in history(straight[-1])]


def test_trainer_state_loads_with_transformers(tmp_path):
    from transformers import TrainerState

    config = TrainConfig(out=str(tmp_path / "ck"), steps=4, save_every=2)
    paths = tiny.train(config, progress=False)
    state = TrainerState.load_from_json(str(paths[-1] / "trainer_state.json"))  # what Trainer(resume_from_checkpoint=) reads
    assert (state.global_step, state.max_steps, state.save_steps, state.train_batch_size) == (4, 4, 2, 32)
    assert [row["step"] for row in state.log_history] == [1, 2, 3, 4] and state.epoch > 0
    assert (paths[-1] / "optimizer.pt").is_file() and (paths[-1] / "scheduler.pt").is_file()
    again = tiny.train(config, progress=False)  # still recognised as this build: skipped
    assert again == paths


def test_a_build_saved_with_the_older_trainer_state_layout_is_kept(tmp_path):
    config = TrainConfig(out=str(tmp_path / "ck"), steps=2, save_every=2)
    paths = tiny.train(config, progress=False)
    for path in paths:  # vlm_lab's own keys at the top level, as builds before this change wrote them
        state = json.loads((path / "trainer_state.json").read_text())
        legacy = {"global_step": state["global_step"], "log_history": state["log_history"],
                  "vlm_lab_train_config": config.to_dict(), "vlm_lab_format": tiny.FORMAT_VERSION}
        (path / "trainer_state.json").write_text(json.dumps(legacy))
    stamp = (paths[-1] / "model.safetensors").stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tiny.train(config, progress=False) == paths
    assert (paths[-1] / "model.safetensors").stat().st_mtime_ns == stamp


def test_out_under_home_is_where_compare_looks(tmp_path, monkeypatch):
    from vlm_lab.checkpoints import resolve

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    paths = tiny.train(TrainConfig(out="~/ck", steps=1, save_every=1), progress=False)
    assert paths[-1] == tmp_path / "home" / "ck" / "checkpoint-1" and paths[-1].is_dir()
    assert not (tmp_path / "~").exists()  # not a folder literally named '~'
    assert [r.path for r in resolve("~/ck")] == [str(p) for p in paths]


def test_out_with_an_environment_variable_is_where_compare_looks(tmp_path, monkeypatch):
    from vlm_lab.checkpoints import resolve

    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))  # as a notebook parameter or sweep file passes it
    monkeypatch.chdir(tmp_path)
    paths = tiny.train(TrainConfig(out="$SCRATCH/ck", steps=1, save_every=1, train_images=4), progress=False)
    assert paths[-1] == tmp_path / "scratch" / "ck" / "checkpoint-1" and paths[-1].is_dir()
    assert not (tmp_path / "$SCRATCH").exists()  # not a folder literally named '$SCRATCH'
    assert [r.path for r in resolve("$SCRATCH/ck")] == [str(p) for p in paths]


def test_saved_files_are_readable_by_others_as_the_umask_allows(tmp_path):
    old = os.umask(0o022)
    try:
        paths = tiny.train(TrainConfig(out=str(tmp_path / "ck"), steps=1, save_every=1), progress=False)
    finally:
        os.umask(old)
    modes = {f.name: oct(f.stat().st_mode & 0o777) for f in paths[-1].iterdir()}
    assert set(modes.values()) == {"0o644"}, modes  # safetensors writes 0600: another user could not load it


def test_a_diverging_build_stops_with_the_fix_instead_of_saving_nan_weights(tmp_path):
    from vlm_lab.errors import ConfigError

    import re

    from safetensors.torch import load_file

    out = tmp_path / "ck"
    with pytest.raises(ConfigError, match=r"training diverged: the (loss|weights) became nan.* step \d+ with learning_rate=1000000.0 .*lower it \(e\.g\. learning_rate=100000; the default is 0\.\d+\)") as caught:
        tiny.train(TrainConfig(out=str(out), steps=8, save_every=1, learning_rate=1e6), progress=False)
    diverged_at = int(re.search(r" step (\d+) ", str(caught.value)).group(1))
    saved = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    assert saved == list(range(diverged_at)), (saved, diverged_at)  # nothing trained into NaN was saved
    assert all(t.isfinite().all() for p in out.glob("checkpoint-*") for t in load_file(p / "model.safetensors").values())


def test_a_removal_cut_short_does_not_leave_a_folder_that_blocks_the_next_build(tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "ck"
    tiny.train(TrainConfig(out=str(out), steps=2, save_every=2), progress=False)
    real_rmtree = shutil.rmtree

    def killed_midway(path, *args, **kwargs):  # kill -9 while a stale checkpoint is being deleted
        (Path(path) / "trainer_state.json").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        tiny.train(TrainConfig(out=str(out), steps=2, save_every=1), progress=False)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    with pytest.warns(tiny.StaleCheckpointsWarning, match="removed checkpoint-2"):  # the one the kill spared
        paths = tiny.train(TrainConfig(out=str(out), steps=2, save_every=1), progress=False)  # not refused as foreign
    assert [p.name for p in paths] == ["checkpoint-0", "checkpoint-1", "checkpoint-2"]
    assert sorted(p.name for p in out.iterdir() if p.name.startswith((".checkpoint", "checkpoint"))) == [
        "checkpoint-0", "checkpoint-1", "checkpoint-2"]


SAVE_ONTO_A_FULL_DISK = r"""
import resource, signal, sys
from vlm_lab import tiny
from vlm_lab.config import TrainConfig
from vlm_lab.errors import OutputPathError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as past a quota

def fill_the_disk(path):
    if path.name == "checkpoint-2":
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), resource.RLIM_INFINITY))

try:
    tiny.train(TrainConfig(out=sys.argv[1], steps=4, save_every=2), progress=False, on_save=fill_the_disk)
except OutputPathError as e:
    print(f"OutputPathError: {e}")
"""


# Where the space runs out: in model.safetensors (680 kB), or in optimizer.pt (1.4 MB), which torch.save writes
# in C++ and reported as "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos", a traceback.
@pytest.mark.parametrize("file_limit", [100_000, 1_000_000], ids=["in-the-weights", "in-the-optimizer-state"])
def test_a_save_that_runs_out_of_space_says_so_and_leaves_no_partial_folder(tmp_path, file_limit):
    out = tmp_path / "ck"
    done = subprocess.run([sys.executable, "-c", SAVE_ONTO_A_FULL_DISK, str(out), str(file_limit)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert re.fullmatch(
        r"OutputPathError: could not save checkpoint-4 in .*ck: File too large \(errno 27\)\. Checkpoint-2 and "
        r"earlier are kept: free space there \(or build into another folder\) and run again to resume from checkpoint-2\n",
        done.stdout,
    ), done.stdout
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-0", "checkpoint-2"]  # no partial
    saved = []
    tiny.train(TrainConfig(out=str(out), steps=4, save_every=2), progress=False, on_save=saved.append)
    assert [p.name for p in saved] == ["checkpoint-4"]  # resumed once there was room


@pytest.mark.parametrize("samples, batch_size", [(3, 8), (3, 3), (10, 4), (3600, 32)])
def test_every_batch_holds_batch_size_samples_even_when_an_epoch_holds_fewer(samples, batch_size):
    order = tiny._batch_order(samples, TrainConfig(batch_size=batch_size))
    batches = [next(order) for _ in range(samples)]  # batch_size epochs in all
    assert {len(b) for b in batches} == {batch_size}  # --train-images 1 --batch-size 8 trained on 3 a step
    seen = [i for b in batches for i in b]
    assert sorted(seen) == sorted(list(range(samples)) * batch_size)  # each sample once per epoch


def test_log_history_rows_have_the_keys_the_trainer_logs(tmp_path):
    from transformers import TrainerState

    paths = tiny.train(TrainConfig(out=str(tmp_path / "ck"), steps=3, save_every=3, train_images=16), progress=False)
    state = TrainerState.load_from_json(str(paths[-1] / "trainer_state.json"))
    for row in state.log_history:  # Trainer.log: loss, grad_norm, learning_rate, epoch, step
        assert {"loss", "grad_norm", "learning_rate", "epoch", "step"} <= row.keys(), row
        assert row["grad_norm"] > 0 and math.isfinite(row["grad_norm"])
    assert [row["epoch"] for row in state.log_history] == [0.6667, 1.3333, 2.0]  # 32 a step of 48 samples
    assert state.epoch == 2.0


BUILD_WITH_THREADS = r"""
import sys, torch
from vlm_lab import tiny
from vlm_lab.config import TrainConfig
before = torch.get_num_threads()
tiny.train(TrainConfig(out=sys.argv[1], steps=3, save_every=3, train_images=16), progress=False)
print(before, torch.get_num_threads())
"""


def test_the_same_seed_gives_the_same_weights_whatever_the_thread_count(tmp_path):
    threads = {}
    for n in (1, 2):  # a laptop, a CI runner and a 64-core box train the same checkpoints
        env = {**os.environ, "OMP_NUM_THREADS": str(n)}
        done = subprocess.run([sys.executable, "-c", BUILD_WITH_THREADS, str(tmp_path / f"t{n}")], env=env,
                              capture_output=True, text=True, timeout=300, check=True)
        threads[n] = done.stdout.split()
    assert threads == {1: ["1", "1"], 2: ["2", "2"]}  # the caller's torch thread setting is left as it was
    a, b = _weights(tmp_path / "t1" / "checkpoint-3"), _weights(tmp_path / "t2" / "checkpoint-3")
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_a_deleted_checkpoint_0_is_saved_again_without_training_again(tmp_path):
    import shutil

    config = TrainConfig(out=str(tmp_path / "ck"), steps=4, save_every=2, train_images=16)
    first = tiny.train(config, progress=False)
    initial = _weights(first[0])
    later = (first[-1] / "model.safetensors").stat().st_mtime_ns
    shutil.rmtree(first[0])  # the untrained model, removed so a comparison leaves it out
    saved = []
    again = tiny.train(config, progress=False, on_save=saved.append)
    assert again == first and all(p.is_dir() for p in again)  # every path it returns is there
    assert saved == [] and (first[-1] / "model.safetensors").stat().st_mtime_ns == later  # nothing trained again
    assert all(torch.equal(initial[k], t) for k, t in _weights(first[0]).items())  # the same initial weights


def test_the_chat_template_renders_turns_and_marks_the_assistants_tokens(tmp_path):
    from transformers import AutoProcessor

    paths = tiny.train(TrainConfig(out=str(tmp_path / "ck"), steps=1, save_every=1, train_images=4), progress=False)
    processor = AutoProcessor.from_pretrained(paths[-1])
    sample = data.load_samples("shapes:val:1")[0]
    user = {"role": "user", "content": [{"type": "image", "image": sample.image}, {"type": "text", "text": "What shape is it?"}]}
    answer = {"role": "assistant", "content": [{"type": "text", "text": "a red circle"}]}
    system = {"role": "system", "content": "Answer briefly."}
    assert processor.apply_chat_template([user], add_generation_prompt=True) == "<|user|>\n<image>\nWhat shape is it?<|end|>\n<|assistant|>\n"
    assert processor.apply_chat_template([system, user, answer]) == (
        "<|system|>\nAnswer briefly.<|end|>\n<|user|>\n<image>\nWhat shape is it?<|end|>\n<|assistant|>\na red circle<|end|>\n")
    # assistant-only loss (TRL's assistant_only_loss, transformers' assistant_masks) needs {% generation %} markers
    enc = processor.apply_chat_template([user, answer], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = [t for t, m in zip(enc["input_ids"][0], enc["assistant_masks"][0]) if m]
    assert processor.tokenizer.convert_ids_to_tokens(marked) == ["a", "red", "circle", tiny.END_TOKEN]


def test_a_checkpoint_whose_weights_are_gone_is_trained_again_not_called_built(tmp_path):
    config = TrainConfig(out=str(tmp_path / "ck"), steps=4, save_every=2, train_images=8)
    first = tiny.train(config, progress=False)
    before = _weights(first[-1])
    (first[-1] / "model.safetensors").unlink()  # pruned by hand, or lost: the folder no longer loads
    saved = []
    with pytest.warns(tiny.StaleCheckpointsWarning, match=r"removed checkpoint-4 .*incomplete \(no model\.safetensors\)"):
        again = tiny.train(config, progress=False, on_save=saved.append)
    assert [p.name for p in saved] == ["checkpoint-4"]  # resumed from checkpoint-2
    after = _weights(again[-1])
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_saved_checkpoint_is_on_disk_before_its_name_is(tmp_path, monkeypatch):
    """Power loss after the rename must not leave a checkpoint-N whose files are empty: every file and the
    temp folder are fsynced before the rename, and the output folder (which records the rename) after it."""
    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(src, dst, *args, **kwargs):
        events.append(("rename", str(src), str(dst)))
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)  # recorded, then done for real
    monkeypatch.setattr(os, "rename", rename)
    out = (tmp_path / "ck").resolve()
    paths = tiny.train(TrainConfig(out=str(out), steps=2, save_every=2, train_images=4), progress=False)
    for final in paths:
        tmp = out / f".{final.name}.tmp"
        moved = events.index(("rename", str(tmp), str(final)))
        synced_before = {e[1] for e in events[:moved] if e[0] == "fsync"}
        assert {str(tmp / f.name) for f in final.iterdir()} | {str(tmp)} <= synced_before, final.name
        assert ("fsync", str(out)) in events[moved + 1:], final.name  # the rename itself is durable


def _cut_short(path):
    """Half of ``path`` left, in a new file (a power loss, a copy cut short): tensors mapped from the old one stay whole."""
    data = path.read_bytes()
    path.unlink()
    path.write_bytes(data[: len(data) // 2])


def test_a_checkpoint_whose_weights_are_cut_short_is_trained_again_not_called_built(tmp_path):
    config = TrainConfig(out=str(tmp_path / "ck"), steps=4, save_every=2, train_images=8)
    first = tiny.train(config, progress=False)
    before = _weights(first[-1])
    _cut_short(first[-1] / "model.safetensors")
    saved = []
    with pytest.warns(tiny.StaleCheckpointsWarning, match=r"removed checkpoint-4 .*incomplete \(model\.safetensors is cut short\)"):
        again = tiny.train(config, progress=False, on_save=saved.append)
    assert [p.name for p in saved] == ["checkpoint-4"]  # resumed from checkpoint-2
    assert all(torch.equal(before[k], t) for k, t in _weights(again[-1]).items())


def test_a_resume_passes_over_an_optimizer_state_cut_short(tmp_path):
    config = TrainConfig(out=str(tmp_path / "ck"), steps=6, save_every=2, train_images=8)
    first = tiny.train(config, progress=False)
    before = _weights(first[-1])
    shutil.rmtree(first[-1])  # interrupted before checkpoint-6 ...
    _cut_short(first[-2] / "optimizer.pt")  # ... and checkpoint-4's optimizer state lost to a power loss
    saved = []
    again = tiny.train(config, progress=False, on_save=saved.append)  # an EOFError traceback, on every run, before
    assert [p.name for p in saved] == ["checkpoint-4", "checkpoint-6"]  # resumed from checkpoint-2
    assert all(torch.equal(before[k], t) for k, t in _weights(again[-1]).items())


PREPARE_OUT_MANY_TIMES = r"""
import sys, time
from pathlib import Path
from vlm_lab.errors import OutputPathError
from vlm_lab.tiny_checkpoints import prepare_out_dir
out, go = Path(sys.argv[1]), Path(sys.argv[2])
while not go.exists():  # both start together
    time.sleep(0.001)
failed = []
for _ in range(20_000):
    try:
        prepare_out_dir(out)
    except OutputPathError as e:
        failed.append(str(e))
print(len(failed), failed[:1])
"""


def test_two_builds_starting_at_once_both_find_the_folder_writable(tmp_path):
    out, go = tmp_path / "ck", tmp_path / "go"
    out.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", PREPARE_OUT_MANY_TIMES, str(out), str(go)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    go.touch()
    results = [p.communicate(timeout=300)[0] for p in procs]
    # each checked writability with one shared probe file, which the other could delete first: "not writable
    # (No such file or directory)" for hundreds of the 40,000 checks
    assert results == ["0 []\n", "0 []\n"], results
    assert sorted(p.name for p in out.iterdir()) == []  # no probe left behind


@pytest.mark.parametrize("limit_mib, batch, message", [
    # tiny.train's caller passes TrainConfig fields (batch_size=); `vlm-lab checkpoints build` says its flags (test_cli_checkpoints)
    (400, 32, r"batch_size=32 needs ~463\.\d\d MiB of memory for one training step \(~2\.60 MiB a sample\), and "
          r"300\.00 MiB is available under this container's 400\.00 MiB memory limit; raise the container's memory limit"),
    (1024, 300, r"batch_size=300 needs ~1\.13 GiB of memory for one training step \(~2\.60 MiB a sample\), and "
           r"924\.00 MiB is available under this container's 1\.00 GiB memory limit; pass batch_size=209 or fewer"),
])
def test_the_memory_check_counts_a_container_limit_below_the_machines_memory(tmp_path, limit_mib, batch, message):
    # a Docker container or a Space: /proc/meminfo tells the host's memory, the cgroup the container's limit
    (tmp_path / "memory.max").write_text(f"{limit_mib << 20}\n")
    (tmp_path / "memory.current").write_text(f"{100 << 20}\n")
    (tmp_path / "self").write_text("0::/\n")
    with pytest.raises(tiny.ConfigError) as e:
        tiny._check_memory(batch, 1200, cgroup_root=tmp_path, proc_self_cgroup=tmp_path / "self")
    assert re.fullmatch(message, str(e.value)), str(e.value)


def test_the_memory_check_counts_the_training_images_held_through_the_build(tmp_path):
    # --train-images 100000 passes the count limit (1.8 GiB of images): in a 1 GiB container it was OOM-killed
    (tmp_path / "memory.max").write_text(f"{1 << 30}\n")
    (tmp_path / "memory.current").write_text(f"{100 << 20}\n")
    (tmp_path / "self").write_text("0::/\n")
    with pytest.raises(tiny.ConfigError) as e:
        tiny._check_memory(32, 100_000, cgroup_root=tmp_path, proc_self_cgroup=tmp_path / "self")
    assert str(e.value) == ("train_images=100000 needs ~1.81 GiB of memory held through the build (~19.00 KiB an image) "
                            "besides ~463.20 MiB for a training step, and 924.00 MiB is available under this container's "
                            "1.00 GiB memory limit; pass train_images=24834 or fewer")
    tiny._check_memory(32, 24_834, cgroup_root=tmp_path, proc_self_cgroup=tmp_path / "self")  # what it says fits does


@pytest.mark.parametrize("fields, said", [
    (dict(train_images=100_000_000), "train_images=100000000 is more images than a build holds in memory (at most 100000, "
                                     "~18 KB each); pass train_images=100000 or fewer"),
    (dict(steps=10**9, save_every=1), "steps=1000000000 with save_every=1 saves 1000000001 checkpoints, more than a build "
                                      "saves (at most 1000000, ~2 MB of disk each); pass save_every=1001 or more"),
])
def test_a_build_too_big_names_the_fields_a_python_caller_passes(tmp_path, fields, said):
    """It said --train-images / --save-every to tiny.train(TrainConfig(...)); `vlm-lab checkpoints build` says them
    (test_cli_checkpoints: test_more_training_images_than_memory_holds..., test_a_billion_steps...)."""
    with pytest.raises(tiny.ConfigError) as caught:
        tiny.train(TrainConfig(out=str(tmp_path / "ck"), **fields), progress=False)
    assert str(caught.value) == said and not (tmp_path / "ck").exists()


def _model_folder(path: Path) -> str:
    path.mkdir()
    (path / "config.json").write_text("{}")
    return str(path)


@pytest.mark.parametrize("make_out, said", [
    (lambda tmp: "", "out must name the folder to save the checkpoints in (it is empty), such as out='checkpoints/shapes'"),
    (lambda tmp: (tmp / "f").write_text("x") and str(tmp / "f"),
     "out='{out}' is a file, not a folder; pass a folder such as out='checkpoints/shapes'"),
    (lambda tmp: _model_folder(tmp / "run"),
     "out='{out}' holds a model (config.json): its checkpoint-N folders would be read as one run with that model; "
     "pass a folder of its own, such as out='checkpoints/mine'"),
    (lambda tmp: (tmp / "link").symlink_to(tmp / "nowhere") or str(tmp / "link"),
     "out='{out}' is a link to '{tmp}/nowhere', which does not exist; create that folder or build into another one"),
])
def test_an_unusable_out_names_the_field_a_python_caller_passes(tmp_path, make_out, said):
    """It said --out to tiny.train(TrainConfig(out=...)); `vlm-lab checkpoints build` says --out
    (test_cli_checkpoints: test_build_into_an_odd_out..., test_build_into_a_model_folder...)."""
    out = make_out(tmp_path)
    with pytest.raises(OutputPathError) as caught:
        tiny.train(TrainConfig(out=out, steps=1), progress=False)
    assert str(caught.value) == said.format(out=out, tmp=tmp_path)


def test_a_build_that_cannot_fit_on_the_disk_names_the_save_every_that_fits(tmp_path):
    """It said 'pass a larger --save-every (or ... another --out)' to a Python caller; now the field, with a value
    that fits (the CLI's words: test_cli_checkpoints' test_a_build_that_cannot_fit_on_the_disk...)."""
    out = tmp_path / "ck"
    steps = shutil.disk_usage(tmp_path).free // 1_000_000 + 1  # a checkpoint a step, ~2 MB each: twice the free space
    with pytest.raises(OutputPathError) as caught:
        tiny.train(TrainConfig(out=str(out), steps=steps, save_every=1, train_images=4), progress=False)
    said = str(caught.value)
    found = re.fullmatch(rf"this build saves {steps + 1} checkpoints of ~(1\.\d\d) MiB each \([\d.]+ [GT]iB\), and "
                         rf"{re.escape(str(out))} has [\d.]+ [GMT]iB free; pass save_every=(\d+) or more \(or free space, "
                         r"or build into another folder\)", said)
    assert found, said
    every, free = int(found[2]), shutil.disk_usage(tmp_path).free
    each = float(found[1]) * 2**20  # the smallest save_every whose checkpoints fit (others write to this disk too: 1%)
    assert tiny._save_count(steps, every) * each <= free * 1.01 and tiny._save_count(steps, every - 1) * each >= free * 0.99
    assert not list(out.glob("checkpoint-*"))
