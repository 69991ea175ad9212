"""Checkpoint references: hub-id parsing, checkpoint-N discovery, errors that list what exists, fingerprints."""

from __future__ import annotations

import os
import shutil

import pytest

from vlm_lab import checkpoints
from vlm_lab.checkpoints import CheckpointRef, discover_checkpoints, fingerprint, parse_hub_ref, resolve, resolve_all
from vlm_lab.errors import CheckpointNotFoundError, VlmLabError


@pytest.mark.parametrize(
    "spec, repo_id, revision, subfolder, step",
    [
        ("org/name", "org/name", None, None, None),
        ("llava-hf/llava-interleave-qwen-0.5b-hf@main", "llava-hf/llava-interleave-qwen-0.5b-hf", "main", None, None),
        ("me/run:checkpoint-300", "me/run", None, "checkpoint-300", 300),
        ("me/run@v1.0:runs/a/checkpoint-20", "me/run", "v1.0", "runs/a/checkpoint-20", 20),
        ("HuggingFaceTB/SmolVLM-256M-Instruct@0a1b2c3", "HuggingFaceTB/SmolVLM-256M-Instruct", "0a1b2c3", None, None),
    ],
)
def test_parse_hub_ref(spec, repo_id, revision, subfolder, step):
    ref = parse_hub_ref(spec)
    assert (ref.repo_id, ref.revision, ref.subfolder, ref.step) == (repo_id, revision, subfolder, step)
    assert not ref.is_local and ref.name == spec
    kwargs = ref.pretrained_kwargs()
    assert kwargs["pretrained_model_name_or_path"] == repo_id
    assert kwargs.get("revision") == revision and kwargs.get("subfolder") == subfolder


@pytest.mark.parametrize("spec", ["org/name@", "org/name:", "just-a-name", "a/b/c", "org/na me"])
def test_bad_hub_ref_says_what_form_to_use(spec):
    with pytest.raises(CheckpointNotFoundError, match=r"org/name\[@revision\]\[:subfolder\]"):
        parse_hub_ref(spec)


@pytest.mark.parametrize(
    "spec, right",
    [
        ("org/run:checkpoint-0@main", "org/run@main:checkpoint-0"),
        ("org/run:runs/a/checkpoint-20@v1.0", "org/run@v1.0:runs/a/checkpoint-20"),
    ],
)
def test_a_revision_after_the_subfolder_names_the_right_order(spec, right):
    for call in (parse_hub_ref, resolve):  # never read as a folder named 'checkpoint-0@main'
        with pytest.raises(CheckpointNotFoundError) as caught:
            call(spec)
        assert str(caught.value).startswith(f"{spec!r}: the revision goes before the subfolder: {right} (")


def test_a_folder_named_with_an_at_sign_is_reached_with_the_revision_first():
    ref = parse_hub_ref("org/run@main:ckpt@best")
    assert (ref.revision, ref.subfolder) == ("main", "ckpt@best")
    with pytest.raises(CheckpointNotFoundError, match=r"name the revision first: org/run@main:ckpt@best\)$"):
        parse_hub_ref("org/run:ckpt@best")


def test_discovery_sorts_by_step_number_not_by_name(tmp_path):
    for name, has_config in [("checkpoint-10", True), ("checkpoint-9", True), ("checkpoint-100", True),
                             ("checkpoint-5", False), ("checkpoint-x", True), ("other", True)]:  # fmt: skip
        (tmp_path / name).mkdir()
        if has_config:
            (tmp_path / name / "config.json").write_text("{}")
    assert [p.name for p in discover_checkpoints(tmp_path)] == ["checkpoint-9", "checkpoint-10", "checkpoint-100"]
    assert discover_checkpoints(tmp_path / "missing") == []


def test_training_output_expands_to_its_checkpoints(tiny_dir):
    refs = resolve(str(tiny_dir))
    assert [r.step for r in refs] == [0, 250, 500, 750, 1000]
    assert [r.name for r in refs][:2] == ["checkpoint-0", "checkpoint-250"]
    assert all(r.is_local for r in refs)
    (latest,) = resolve(str(tiny_dir), expand=False)
    assert latest.step == 1000


def test_model_folder_resolves_to_itself(tiny_checkpoints):
    (ref,) = resolve(str(tiny_checkpoints[1]))
    assert ref.path == str(tiny_checkpoints[1]) and ref.step == 250
    assert ref.pretrained_kwargs() == {"pretrained_model_name_or_path": str(tiny_checkpoints[1])}


def test_resolve_all_keeps_order_and_drops_repeats(tiny_dir, tiny_checkpoints):
    refs = resolve_all([str(tiny_checkpoints[-1]), str(tiny_dir)])
    assert [r.step for r in refs] == [1000, 0, 250, 500, 750]
    assert [r.step for r in resolve_all(f"{tiny_checkpoints[0]},{tiny_checkpoints[0]}")] == [0]


@pytest.mark.parametrize(
    "make_spec, expected",
    [
        (lambda d: str(d / "checkpoint-999"), "checkpoint-0, checkpoint-250, checkpoint-500, checkpoint-750, checkpoint-1000"),
        (lambda d: str(d.parent / "shapez"), "shapes"),  # a typo in the run folder: close matches first
        (lambda d: str(d / "checkpoint-1000" / "config.json"), "is a file"),
        (lambda d: "./no/such/run", f"no checkpoint at {os.path.abspath('no/such/run')!r}"),
        (lambda d: "  ", "empty checkpoint reference"),
    ],
)
def test_missing_reference_lists_what_exists(tiny_dir, make_spec, expected):
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve(make_spec(tiny_dir))
    assert expected in str(info.value)
    assert isinstance(info.value, (VlmLabError, FileNotFoundError))


def test_empty_training_folder_is_an_error(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no config.json and no checkpoint-N folders"):
        resolve(str(tmp_path))


@pytest.mark.parametrize(
    "spec, where",
    [
        ("runz/checkpoint-500", "runz/checkpoint-500"),  # a checkpoint-N leaf: a path, not a hub repo
        ("checkpoints/shapes/checkpoint-300", "checkpoints/shapes/checkpoint-300"),  # two slashes
        ("./shapes", "shapes"),
        ("../work/runz", "runz"),
        ("~/runs/x", "../home/runs/x"),
        ("org/name/", "org/name"),  # a tab-completed folder
    ],
)
def test_path_like_references_are_local_paths(spec, where, tmp_path, monkeypatch):
    (tmp_path / "work" / "runs").mkdir(parents=True)
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve(spec)
    message = str(info.value)
    assert message.startswith(f"no checkpoint at {os.path.abspath(where)!r} (")  # absolute: no guessing the cwd
    assert "found in" in message or "is empty" in message
    assert "huggingface" not in message  # never tried on the hub
    assert ("hub" in message) == spec.endswith("/")  # only a tab-completed org/name/ also says how to write the hub id


def test_resolve_all_drops_a_checkpoint_spelled_two_ways(tiny_dir, monkeypatch):
    monkeypatch.chdir(tiny_dir.parent)
    rel = f"{tiny_dir.name}/checkpoint-0"
    refs = resolve_all([rel, str(tiny_dir / "checkpoint-0"), f"./{rel}/", str(tiny_dir)])
    assert [r.step for r in refs] == [0, 250, 500, 750, 1000]
    assert refs[0].spec == rel  # the first spelling is kept


def test_training_output_with_a_final_model_expands_to_checkpoints_then_the_final_model(tiny_checkpoints, tmp_path):
    from vlm_lab.compare import unique_names

    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoints[-1], run)  # Trainer.save_model() at the end: the final model at the root
    for ckpt in tiny_checkpoints[:2]:
        shutil.copytree(ckpt, run / ckpt.name)
    refs = resolve(str(run))
    assert [r.step for r in refs] == [0, 250, None] and refs[-1].path == str(run)
    assert unique_names(refs) == ["checkpoint-0", "checkpoint-250", str(run)]
    (final,) = resolve(str(run), expand=False)  # one model asked for: the final one, as before
    assert final.path == str(run)
    assert [r.step for r in resolve_all([str(run), str(run / "checkpoint-250")])] == [0, 250, None]


def test_a_final_model_beside_the_trainers_metrics_files_has_the_weights_fingerprint(tiny_checkpoints, tmp_path):
    """Trainer.save_metrics() writes all_results.json, train_results.json, eval_results.json at the run's root,
    beside the final model: they entered its fingerprint, so a final model saved from the last checkpoint was
    generated again instead of once, and every later evaluation (a new eval_results.json) threw its cache away."""
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoints[-1], run)
    shutil.copytree(tiny_checkpoints[-1], run / "checkpoint-1000")
    for name in ("all_results.json", "train_results.json", "eval_results.json", "test_results.json", "predict_results.json"):
        (run / name).write_text('{"epoch": 3.0, "train_loss": 0.41}')
    *_, last, final = resolve(str(run))
    assert final.path == str(run) and fingerprint(final) == fingerprint(last)
    assert not {p.name for p in checkpoints.model_files(run)} & {"all_results.json", "eval_results.json"}


def test_checkpoint_folders_that_are_not_models_say_what_they_lack(tmp_path):
    lora = tmp_path / "lora"
    for step in (200, 100):
        (lora / f"checkpoint-{step}").mkdir(parents=True)
        (lora / f"checkpoint-{step}" / "adapter_config.json").write_text("{}")
        (lora / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"")
    for expand in (True, False):
        with pytest.raises(CheckpointNotFoundError) as info:
            resolve(str(lora), expand=expand)
        message = str(info.value)
        assert "checkpoint-100 has no config.json (it holds adapter_config.json, adapter_model.safetensors)" in message
        assert message.index("checkpoint-100") < message.index("checkpoint-200")
        assert "no checkpoint-N folders" not in message and "merge_and_unload" in message  # a LoRA adapter: merge it


def _copy_model(src, dst):
    shutil.copytree(src, dst)
    return CheckpointRef(spec=str(dst), path=str(dst))


def test_fingerprint_follows_content_not_paths_or_times(tiny_checkpoints, tmp_path):
    first, last = tiny_checkpoints[0], tiny_checkpoints[-1]
    a = _copy_model(last, tmp_path / "a")
    b = _copy_model(last, tmp_path / "b")
    assert fingerprint(a) == fingerprint(b)  # same files in two places: same fingerprint
    before = fingerprint(a)
    # Overwrite the weights with another checkpoint's, keeping size *and* mtime (cp -p):
    # a size+mtime fingerprint would not notice; the content hash does.
    weights = a.path + "/model.safetensors"
    old = os.stat(weights)
    shutil.copy2(first / "model.safetensors", weights)
    os.utime(weights, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert os.stat(weights).st_size == old.st_size and os.stat(weights).st_mtime_ns == old.st_mtime_ns
    assert fingerprint(a) != before
    # training state is not part of what a model computes
    (tmp_path / "b" / "trainer_state.json").write_text("{}")
    assert fingerprint(b) == before


def test_fingerprint_memo_hashes_each_file_once(tiny_checkpoints):
    ref = resolve(str(tiny_checkpoints[-1]))[0]
    memo: dict[str, str] = {}
    fp = fingerprint(ref, memo=memo)
    assert len(memo) == len(checkpoints.model_files(ref.path)) >= 3
    assert fingerprint(ref, memo=memo) == fp == fingerprint(ref)
    assert not any("trainer_state" in k for k in memo)


def test_digest_memo_is_kept_per_user_and_merged(tiny_checkpoints, tmp_path, monkeypatch):
    monkeypatch.setenv("VLM_LAB_CACHE", str(tmp_path / "cache"))
    ref = resolve(str(tiny_checkpoints[-1]))[0]
    memo = checkpoints.load_digest_memo()
    assert memo == {}
    fp = fingerprint(ref, memo=memo)
    checkpoints.save_digest_memo({"other-process|1|2|3|4": "abc"})  # written meanwhile by another run
    checkpoints.save_digest_memo(memo)
    saved = checkpoints.load_digest_memo()
    assert saved["other-process|1|2|3|4"] == "abc" and memo.items() <= saved.items()
    assert fingerprint(ref, memo=saved) == fp


def test_unreadable_or_unwritable_digest_memo_is_not_an_error(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("VLM_LAB_CACHE", str(tmp_path / "cache"))
    assert checkpoints.load_digest_memo() == {}
    checkpoints.save_digest_memo({"k": "v"})  # cannot write: the next run re-hashes, nothing fails
    (tmp_path / "cache").unlink()
    (tmp_path / "cache").mkdir()
    checkpoints.digest_memo_path().write_text("{not json")
    assert checkpoints.load_digest_memo() == {}


def test_a_wrong_step_in_a_long_run_lists_the_nearest_steps_not_all(tmp_path):
    for step in range(0, 5001, 10):  # a run saved every 10 steps: 501 folders
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "config.json").write_text("{}")
    with pytest.raises(CheckpointNotFoundError) as caught:
        resolve(str(tmp_path / "checkpoint-2525"))
    message = str(caught.value)
    assert message.endswith(
        f"(found in {tmp_path}: checkpoint-2490, checkpoint-2500, checkpoint-2510, checkpoint-2520, checkpoint-2530, "
        "checkpoint-2540, checkpoint-2550, checkpoint-2560 and 493 more (checkpoint-0 to checkpoint-5000))"
    )


def test_a_broken_symbolic_link_is_named_with_its_target(tmp_path, tiny_checkpoints):
    (tmp_path / "latest").symlink_to(tmp_path / "gone" / "run-7")  # the run it pointed at was deleted
    for spec in (tmp_path / "latest", tmp_path / "latest" / "checkpoint-500"):
        with pytest.raises(CheckpointNotFoundError) as caught:
            resolve(str(spec))
        assert str(caught.value) == (
            f"no checkpoint at {str(spec)!r}: {str(tmp_path / 'latest')!r} is a symbolic link to {str(tmp_path / 'gone' / 'run-7')!r}, "
            "which does not exist; point the link at a checkpoint folder, or name the folder itself"
        )
    (tmp_path / "best").symlink_to(tiny_checkpoints[-1])  # a working link is followed
    assert [r.path for r in resolve(str(tmp_path / "best"))] == [str(tmp_path / "best")]


def test_model_folders_not_named_checkpoint_n_are_named_in_the_error(tmp_path, tiny_checkpoints):
    run = tmp_path / "run"
    for name in ("step_500", "final", "checkpoint-750-best"):
        shutil.copytree(tiny_checkpoints[0], run / name)
    (run / "logs").mkdir()
    with pytest.raises(CheckpointNotFoundError) as caught:
        resolve(str(run))
    assert str(caught.value) == (
        f"no checkpoint at {str(run)!r}: it has no config.json, and its model folders are not named checkpoint-N "
        "(checkpoint-750-best, final, step_500), so their order is unknown; name them one by one, "
        f"e.g. {run / 'checkpoint-750-best'}, or rename them checkpoint-<step> to compare the run in order"
    )


def test_a_shell_pattern_resolves_the_model_folders_it_matches(tmp_path, tiny_checkpoints, monkeypatch):
    for run, steps in (("run-b", (0, 1000)), ("run-a", (250, 1000))):
        for step in steps:
            shutil.copytree(tiny_checkpoints[0], tmp_path / "runs" / run / f"checkpoint-{step}")
    (tmp_path / "runs" / "logs" / "events").mkdir(parents=True)  # matched by runs/*, holds no model
    monkeypatch.chdir(tmp_path)  # as a notebook, a sweep file or VLM_LAB_CHECKPOINTS passes it: unexpanded
    assert [r.spec for r in resolve_all("runs/*/checkpoint-1000")] == ["runs/run-a/checkpoint-1000", "runs/run-b/checkpoint-1000"]
    assert [r.spec for r in resolve("runs/run-a/checkpoint-*")] == ["runs/run-a/checkpoint-250", "runs/run-a/checkpoint-1000"]
    assert [r.spec for r in resolve("runs/*")] == [f"runs/{run}/checkpoint-{s}" for run, steps in (("run-a", (250, 1000)), ("run-b", (0, 1000))) for s in steps]
    with pytest.raises(CheckpointNotFoundError) as caught:
        resolve("runs/*/checkpoint-99*")
    assert str(caught.value) == f"no checkpoint at 'runs/*/checkpoint-99*': the pattern matches no folder (found in {tmp_path / 'runs'}: logs, run-a, run-b)"
    with pytest.raises(CheckpointNotFoundError, match=r"^no checkpoint at 'runs/l\*': the pattern matches only folders without config.json or checkpoint-N folders \(runs/logs\)$"):
        resolve("runs/l*")


def test_a_file_of_a_checkpoint_names_its_folder(tiny_checkpoints):
    with pytest.raises(CheckpointNotFoundError) as caught:
        resolve(str(tiny_checkpoints[0] / "model.safetensors"))
    assert str(caught.value) == f"{str(tiny_checkpoints[0] / 'model.safetensors')!r} is a file; pass its folder, {str(tiny_checkpoints[0])!r}"


def test_environment_variables_in_a_path_are_expanded(tiny_dir, monkeypatch):
    monkeypatch.setenv("RUNS", str(tiny_dir.parent))  # a notebook parameter or sweep file: no shell expands it
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    assert [r.path for r in resolve(f"$RUNS/{tiny_dir.name}/checkpoint-500")] == [str(tiny_dir / "checkpoint-500")]
    assert [r.step for r in resolve(f"${{RUNS}}/{tiny_dir.name}")] == [0, 250, 500, 750, 1000]
    with pytest.raises(CheckpointNotFoundError, match=r"; \$NOT_SET_HERE is not set\)$"):
        resolve("$NOT_SET_HERE/run/checkpoint-5")


def test_every_reference_that_resolves_to_nothing_is_named_at_once(tiny_dir):
    specs = [str(tiny_dir / "checkpoint-25"), str(tiny_dir / "checkpoint-500"), str(tiny_dir / "checkpoint-75")]
    with pytest.raises(CheckpointNotFoundError) as caught:
        resolve_all(specs)
    message = str(caught.value)
    assert message.startswith(f"2 of 3 checkpoint references resolve to nothing: (1) no checkpoint at {str(tiny_dir / 'checkpoint-25')!r} (found in ")
    assert f"; (2) no checkpoint at {str(tiny_dir / 'checkpoint-75')!r} (found in " in message
    with pytest.raises(CheckpointNotFoundError, match=r"^no checkpoint at '.*checkpoint-25' \(found in "):  # one: its own error
        resolve_all(specs[:2])


def test_a_hub_id_with_a_trailing_slash_says_how_to_write_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match=r"; for the hub model, write it without the trailing slash: org/run\)$"):
        resolve("org/run/")


def _live_run(tiny_checkpoints, tmp_path, stage: str):
    """A run folder a Trainer is still writing: checkpoint-0 and checkpoint-250 saved, checkpoint-500 at ``stage``."""
    run = tmp_path / "run"
    for done in tiny_checkpoints[:2]:
        shutil.copytree(done, run / done.name)
    live = run / "checkpoint-500"
    live.mkdir()
    source = tiny_checkpoints[2]
    if stage == "config only":  # save_pretrained writes config.json first
        shutil.copy(source / "config.json", live)
    elif stage == "weights cut short":
        shutil.copy(source / "config.json", live)
        (live / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes()[:4000])
    elif stage == "no trainer state":  # the model is saved, the optimizer state is being written
        shutil.copytree(source, live, dirs_exist_ok=True)
        (live / "trainer_state.json").unlink()
    return run


@pytest.mark.parametrize("stage, why", [
    ("config only", "no weights or tokenizer in the folder"),
    ("weights cut short", "no tokenizer in the folder"),
    ("no trainer state", "no trainer_state.json, which a Trainer writes last"),
])  # fmt: skip
def test_a_checkpoint_a_trainer_is_still_writing_is_skipped_with_a_warning(tiny_checkpoints, tmp_path, stage, why):
    run = _live_run(tiny_checkpoints, tmp_path, stage)
    with pytest.warns(checkpoints.IncompleteCheckpointWarning) as caught:
        assert [r.step for r in resolve(str(run))] == [0, 250]
    (message,) = [str(w.message) for w in caught]
    assert message.startswith(f"skipping {run / 'checkpoint-500'} ({why}): it is not complete, unlike checkpoint-0, checkpoint-250;")
    with pytest.warns(checkpoints.IncompleteCheckpointWarning):
        assert [r.step for r in resolve(str(run), expand=False)] == [250]  # the latest complete one
    assert [r.step for r in resolve(str(run / "checkpoint-500"))] == [500]  # named: loading it says what is wrong


def test_a_run_whose_checkpoints_are_all_incomplete_is_not_skipped_away(tiny_checkpoints, tmp_path):
    """No complete sibling: nothing tells a checkpoint being written from a broken run, so loading says what is wrong."""
    run = tmp_path / "run"
    for done in tiny_checkpoints[:2]:
        shutil.copytree(done, run / done.name, ignore=shutil.ignore_patterns("tokenizer.json"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.step for r in resolve(str(run))] == [0, 250]


def test_a_pattern_over_a_run_being_written_skips_its_unfinished_checkpoint(tiny_checkpoints, tmp_path):
    run = _live_run(tiny_checkpoints, tmp_path, "weights cut short")
    with pytest.warns(checkpoints.IncompleteCheckpointWarning, match=r"^skipping .*checkpoint-500 \(no tokenizer in the folder\)"):
        assert [r.step for r in resolve(str(run / "checkpoint-*"))] == [0, 250]


def test_a_final_model_still_being_saved_at_the_root_of_a_run_is_skipped_with_a_warning(tiny_checkpoints, tmp_path):
    run = _live_run(tiny_checkpoints, tmp_path, "no trainer state")
    (run / "checkpoint-500" / "trainer_state.json").write_text("{}")  # its checkpoints are all saved ...
    shutil.copy(tiny_checkpoints[-1] / "config.json", run)  # ... and Trainer.save_model() has begun at the root
    with pytest.warns(checkpoints.IncompleteCheckpointWarning) as caught:
        assert [r.step for r in resolve(str(run))] == [0, 250, 500]
    (message,) = [str(w.message) for w in caught]
    assert message == (f"skipping the final model saved in {run} (no weights or tokenizer in the folder): it is not complete, "
                       "unlike checkpoint-500; a trainer may still be saving it: run again once it has")
    for name in ("model.safetensors", "tokenizer.json"):
        shutil.copy(tiny_checkpoints[-1] / name, run)
    assert [r.step for r in resolve(str(run))] == [0, 250, 500, None]  # saved: the final model comes last


def test_a_checkpoint_deleted_after_its_run_was_listed_is_named_with_what_is_left(tiny_checkpoints, tmp_path):
    """A trainer with save_total_limit deletes old checkpoints while a comparison of the run goes on."""
    from vlm_lab.model_cache import ModelCache

    run = tmp_path / "run"
    for done in tiny_checkpoints[:2]:
        shutil.copytree(done, run / done.name)
    first, _ = resolve(str(run))
    shutil.rmtree(first.path)
    for call in (fingerprint, lambda ref: ModelCache().get(ref, device="cpu")):
        with pytest.raises(CheckpointNotFoundError) as caught:
            call(first)
        assert str(caught.value) == (f"no checkpoint at {first.path!r} any more (found in {run}: checkpoint-250): it was removed after it "
                                     "was found (a trainer keeping save_total_limit checkpoints deletes the oldest); run again to "
                                     "compare what is there now")


def test_the_processor_fingerprint_tells_apart_configs_that_make_another_processor(tiny_checkpoints, tmp_path):
    """``AutoProcessor`` reads config.json when no processor file names a processor class (hand-assembled folders,
    repos saved before processors were): its model type then picks the class. Two folders with the same processor
    files got one fingerprint, so a comparison shared the first one's encoded batches and context check with the
    second, whose own processor is another. Here one config is a VLM's (a LlavaProcessor) and one a text model's
    (a bare tokenizer)."""
    import json

    import transformers

    folders = []
    for name, text_only in (("vlm", False), ("text", True)):
        copy = tmp_path / name
        shutil.copytree(tiny_checkpoints[-1], copy, ignore=shutil.ignore_patterns("*.pt", "*.safetensors", "trainer_state.json"))
        for file in ("processor_config.json", "tokenizer_config.json"):
            settings = json.loads((copy / file).read_text())
            del settings["processor_class"]
            (copy / file).write_text(json.dumps(settings))
        if text_only:
            settings = json.loads((copy / "config.json").read_text())
            (copy / "config.json").write_text(json.dumps(settings["text_config"] | {"model_type": "llama"}))
        folders.append(copy)
    made = [type(transformers.AutoProcessor.from_pretrained(folder)).__name__ for folder in folders]
    assert made == ["LlavaProcessor", "TokenizersBackend"]
    first, second = (checkpoints.processor_fingerprint(resolve(str(folder))[0]) for folder in folders)
    assert first != second


@pytest.mark.parametrize("earlier", ["shapes/checkpoint-250", "shapes"])
def test_a_bare_name_after_a_path_names_the_checkpoint_beside_it(tiny_dir, monkeypatch, earlier):
    """Notebook 02 with checkpoints="checkpoints/shapes/checkpoint-250,checkpoint-1000" said no checkpoint at
    '<root>/checkpoint-1000' and listed the project root: the user meant the one beside the first."""
    monkeypatch.chdir(tiny_dir.parent)
    meant = os.path.join(tiny_dir.name, "checkpoint-1000")
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_all(f"{earlier.replace('shapes', tiny_dir.name)},checkpoint-1000")
    assert f"each comma-separated entry is a path of its own: did you mean {meant!r}?" in str(info.value), str(info.value)
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_all("checkpoint-1000")
    assert "did you mean" not in str(info.value)
