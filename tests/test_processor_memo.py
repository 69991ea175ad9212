"""A processor is loaded once per process for the same files: the context check and the model cache share it,
and the checkpoints of one run share it; a checkpoint re-saved with other processor files gets a new one."""

from __future__ import annotations

import json
import shutil

import pytest
from test_checkpoint_refs import add_snapshot, hf_cache  # noqa: F401 - hf_cache is a fixture

from vlm_lab.compare import compare
from vlm_lab.config import CompareConfig
from vlm_lab.model_cache import ModelCache

TRAINING_STATE = shutil.ignore_patterns("optimizer.pt", "scheduler.pt", "trainer_state.json")


@pytest.fixture
def run(tmp_path, tiny_checkpoints):
    """Three checkpoints of one run, whose chat template (a Jinja comment: the same prompts) no other test's has:
    no processor of theirs is alive in this process before the test."""
    folder = tmp_path / "run"
    copies = []
    for source in tiny_checkpoints[1:4]:
        copy = folder / source.name
        shutil.copytree(source, copy, ignore=TRAINING_STATE)
        with open(copy / "chat_template.jinja", "a") as f:
            f.write(f"{{# {tmp_path} #}}")
        copies.append(copy)
    return copies


@pytest.fixture
def loads(monkeypatch):
    """The folders ``AutoProcessor.from_pretrained`` is called for (the real call, counted)."""
    import transformers

    called = []
    real = transformers.AutoProcessor.from_pretrained.__func__

    def counted(cls, *args, **kwargs):
        called.append(str(kwargs.get("pretrained_model_name_or_path", args[0] if args else None)))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", classmethod(counted))
    return called


def _config(tmp_path, checkpoints, **extra) -> CompareConfig:
    return CompareConfig(checkpoints=tuple(map(str, checkpoints)), data="shapes:val:4", batch_size=4, max_new_tokens=4,
                         device="cpu", output_dir=str(tmp_path / "out"), **extra)


@pytest.mark.parametrize("room", [3, 1], ids=["all loaded", "room for one"])
def test_a_comparison_loads_the_processor_its_checkpoints_share_once(tmp_path, run, loads, room):
    """The context check loads it (before any weights), and each checkpoint's model load takes that one
    (before: 1 for the check, and 1 more per checkpoint), also when each model is evicted for the next."""
    import torch

    from vlm_lab.checkpoints import resolve
    from vlm_lab.model_size import estimate_nbytes

    cache = ModelCache(budget_bytes=int((room + 0.5) * estimate_nbytes(resolve(str(run[0]))[0], torch.float32)))
    result = compare(_config(tmp_path, run, use_cache=False), progress=False, cache=cache)
    assert len(loads) == 1, loads
    assert cache.stats["loads"] == 3 and cache.stats["evictions"] == (0 if room == 3 else 2)
    assert result.summary[-1]["accuracy"] > 0.5  # the answers are the engine's own
    if room == 3:
        assert len({id(cache.get(path, device="cpu").processor) for path in run}) == 1


def test_a_comparison_checks_context_with_the_processor_of_a_model_already_loaded(tmp_path, run, loads):
    """The explorer's shared cache holds the model: neither the check nor the comparison loads its processor again."""
    cache = ModelCache(budget_bytes="1GB")
    loaded = cache.get(run[0], device="cpu")
    assert len(loads) == 1
    compare(_config(tmp_path, run[:1]), progress=False, cache=cache)
    assert len(loads) == 1, loads
    assert cache.get(run[0], device="cpu") is loaded


def test_checkpoints_of_one_run_in_a_cache_share_one_processor(run, loads):
    """The Space loads the checkpoints it offers one by one: each after the first takes the processor loaded."""
    cache = ModelCache(budget_bytes="1GB")
    first, second = (cache.get(path, device="cpu") for path in run[:2])
    assert len(loads) == 1 and second.processor is first.processor


def test_a_processor_no_one_holds_is_loaded_again(run, loads):
    """Nothing keeps a processor alive but its users: evicted and dropped, the next load reads the files again."""
    import gc

    cache = ModelCache(budget_bytes="1GB")
    cache.get(run[0], device="cpu")
    cache.clear()
    gc.collect()
    cache.get(run[0], device="cpu")
    assert len(loads) == 2


def _new_chat_template(path) -> str:
    text = (path / "chat_template.jinja").read_text().replace("<|assistant|>", "<|assistant|>\nAnswer:")
    (path / "chat_template.jinja").write_text(text)
    return text


def _new_tokenizer(path) -> str:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.add_tokens(["<|resaved|>"])
    tokenizer.save_pretrained(path)
    return "<|resaved|>"


@pytest.mark.parametrize("resave", [_new_chat_template, _new_tokenizer], ids=["chat template", "tokenizer"])
def test_a_checkpoint_re_saved_with_other_processor_files_gets_its_new_processor(tmp_path, run, loads, resave):
    """Saved again in place (same path, same weights), the model cache and the context check must not keep
    serving the processor of the old files, though the old model is still held."""
    cache = ModelCache(budget_bytes="1GB")
    old = cache.get(run[0], device="cpu")
    new_text = resave(run[0])
    new = cache.get(run[0], device="cpu")
    assert len(loads) == 2 and new.processor is not old.processor
    if resave is _new_chat_template:
        assert new.processor.chat_template == new_text and old.processor.chat_template != new_text
    else:
        assert new_text in new.processor.tokenizer.get_vocab() and new_text not in old.processor.tokenizer.get_vocab()
    compare(_config(tmp_path, run[:1], use_cache=False), progress=False, cache=cache)
    assert len(loads) == 2, loads  # the check took the new model's processor


def test_a_copy_with_another_config_gets_a_processor_of_its_own(tmp_path, run, loads):
    """What a processor is can depend on config.json (``AutoProcessor`` reads its model type): a checkpoint whose
    config differs never shares another's processor."""
    other = tmp_path / "other" / "checkpoint-250"
    shutil.copytree(run[0], other)
    settings = json.loads((other / "config.json").read_text())
    settings["text_config"]["max_position_embeddings"] = 256
    (other / "config.json").write_text(json.dumps(settings))
    cache = ModelCache(budget_bytes="1GB")
    first, second = cache.get(run[0], device="cpu"), cache.get(other, device="cpu")
    assert len(loads) == 2 and second.processor is not first.processor


def test_a_hub_checkpoint_is_known_by_its_commit_and_subfolder_never_by_a_branch():
    """A branch (``main``) may move to other files: only a commit names them (the snapshot it names never changes)."""
    from vlm_lab.checkpoints import CheckpointRef
    from vlm_lab.processor_memo import processor_key

    commit, other = "a" * 40, "b" * 40
    at = lambda revision, subfolder=None: CheckpointRef(spec="org/run", repo_id="org/run", revision=revision, subfolder=subfolder)  # noqa: E731
    assert processor_key(at("main")) is None and processor_key(at(None)) is None
    assert processor_key(at(commit)) == processor_key(at(commit))
    assert len({processor_key(at(commit)), processor_key(at(other)), processor_key(at(commit, "checkpoint-5"))}) == 3


def test_a_hub_processor_read_from_a_partly_downloaded_snapshot_is_not_served_once_the_rest_is_there(tmp_path, hf_cache, tiny_checkpoints):
    """The context check reads a pinned hub checkpoint's processor from the files already cached (cache-only); from a
    snapshot a download left partial (no tokenizer_config.json yet) that processor loads, with no eos or pad token.
    The model load then fetches the rest (here: the file put in place): it must get the whole snapshot's processor,
    not the check's, though the check's is still held (the commit is the same; the files there are not)."""
    from vlm_lab.checkpoints import parse_hub_ref
    from vlm_lab.compare_context import _processor
    from vlm_lab.models import load_processor

    partial = tmp_path / "partial"
    shutil.copytree(tiny_checkpoints[0], partial, ignore=shutil.ignore_patterns("*.pt", "trainer_state.json", "tokenizer_config.json"))
    commit = add_snapshot(hf_cache, "org/partial", partial)
    ref = parse_hub_ref(f"org/partial@{commit}")
    checked = _processor(ref)
    assert checked is not None and checked.tokenizer.eos_token is None  # what the partial snapshot gives
    snapshot = hf_cache / "models--org--partial" / "snapshots" / commit
    shutil.copyfile(tiny_checkpoints[0] / "tokenizer_config.json", snapshot / "tokenizer_config.json")
    loaded = load_processor(ref, ref.pretrained_kwargs() | {"trust_remote_code": False, "local_files_only": True})
    assert (loaded.tokenizer.eos_token, loaded.tokenizer.pad_token) == ("<|end|>", "<pad>")
    assert loaded is not checked


def test_a_thread_forgetting_the_digest_memo_never_fails_another_threads_lookup(run):
    """``processor_key`` reads the file-digest memo without the lock, and a thread past ``DIGEST_ENTRIES`` forgets
    it: when that came between ``file_digest``'s ``key in memo`` and ``memo[key]`` in another thread, the
    other's processor load raised KeyError. The forgetting thread is played, at that very point, by the trace."""
    import inspect
    import sys

    from vlm_lab import checkpoints, processor_memo
    from vlm_lab.checkpoints import resolve

    ref, other = resolve(str(run[0]))[0], resolve(str(run[1]))[0]
    expected = processor_memo.processor_key(ref)  # its digests are memoised now
    lines, first = inspect.getsourcelines(checkpoints.file_digest)
    lookup = first + next(i for i, line in enumerate(lines) if "key in memo" in line)
    forgot = []

    def trace(frame, event, arg):
        if frame.f_code is not checkpoints.file_digest.__code__:
            return None
        if event == "line" and frame.f_lineno == lookup + 1 and not forgot:
            sys.settrace(None)
            processor_memo._digests.update((str(n), "") for n in range(processor_memo.DIGEST_ENTRIES + 1))
            forgot.append(processor_memo.processor_key(other))  # another thread, past the limit, forgets the memo
            sys.settrace(trace)
        return trace

    sys.settrace(trace)
    try:
        key = processor_memo.processor_key(ref)
    finally:
        sys.settrace(None)
    assert forgot and key == expected


def _pad_right(processor) -> None:
    processor.tokenizer.padding_side = "right"


def _own_template(processor) -> None:
    processor.chat_template = "{{ messages[0]['content'][-1]['text'] }}"


def _bigger_images(processor) -> None:
    processor.image_processor.size = {"shortest_edge": 96}


@pytest.mark.parametrize("edit", [_pad_right, _own_template, _bigger_images], ids=["padding side", "chat template", "image size"])
def test_a_processor_edited_in_a_notebook_is_not_handed_to_the_next_checkpoint(run, loads, edit):
    """``loaded.processor`` is shared with every checkpoint loaded with the same files. One edited by its user (a
    notebook's ``padding_side = "right"``) was handed as it was to the next checkpoint loaded: that one generated with
    the edit (right padding breaks batched generation). Now the next load reads the files again; the edited model
    keeps its edit, and a checkpoint loaded before the edit shares it still (as documented on LoadedModel.processor)."""
    cache = ModelCache(budget_bytes="1GB")
    first, before = cache.get(run[0], device="cpu"), cache.get(run[1], device="cpu")
    edit(first.processor)
    after = cache.get(run[2], device="cpu")
    assert len(loads) == 2 and after.processor is not first.processor and before.processor is first.processor
    assert after.processor.tokenizer.padding_side == "left" and after.processor.chat_template == first_template(run[2])
    assert after.processor.image_processor.size == {"shortest_edge": 64}
    assert cache.get(run[2], device="cpu").processor is after.processor  # the memo keeps the unedited one now
    again = ModelCache(budget_bytes="1GB").get(run[0], device="cpu")
    assert len(loads) == 2 and again.processor is after.processor


def first_template(path) -> str:
    return (path / "chat_template.jinja").read_text()


def test_a_comparison_refuses_a_cached_model_whose_processor_was_edited(tmp_path, run, loads):
    """The explorer's or a notebook's model cache holds a model whose processor its user edited: compare generated
    with it and cached the outputs under the checkpoint's files, served later as theirs. Now it says so, with both
    fixes; a copy given to the model (edited alone) is held to the same rule, an unedited copy is fine."""
    import copy

    from vlm_lab.errors import ConfigError

    cache = ModelCache(budget_bytes="1GB")
    loaded = cache.get(run[0], device="cpu")
    loaded.processor.tokenizer.padding_side = "right"
    with pytest.raises(ConfigError) as caught:
        compare(_config(tmp_path, run[:1]), progress=False, cache=cache)
    assert str(caught.value).startswith("checkpoint-250: the processor of its model in the model cache was edited after "
                                        "it was loaded (padding_side='right'); "), caught.value
    assert f"save_pretrained({str(run[0])!r})" in str(caught.value) and "(cache.clear())" in str(caught.value)
    assert not (tmp_path / "out" / ".cache").exists() or not list((tmp_path / "out" / ".cache").glob("*.jsonl"))
    loaded.processor.tokenizer.padding_side = "left"
    loaded.processor = copy.deepcopy(loaded.processor)
    done = compare(_config(tmp_path, run[:1]), progress=False, cache=cache)  # runs (the weights decide how well)
    assert done.summary[0]["accuracy"] is not None and all(row["outputs"]["checkpoint-250"]["output"] for row in done.rows)
    loaded.processor.chat_template += "{# mine #}"
    with pytest.raises(ConfigError, match=r"chat_template="):
        compare(_config(tmp_path, run[:1], use_cache=False), progress=False, cache=cache)
