"""What a comparison says when the machine, not the input, stops it."""

from __future__ import annotations

import contextlib
import errno
import shlex

import pytest

from mounts import read_only_folder, thin_disk  # noqa: F401 - a fixture
from vlm_lab.compare import BatchEvent, compare
from vlm_lab.config import CompareConfig
from vlm_lab.errors import MemoryBudgetError, OutputPathError
from vlm_lab.model_cache import ModelCache


def test_a_gpu_out_of_memory_in_a_batch_says_what_to_lower_and_a_smaller_batch_then_runs(tmp_path, tiny_checkpoints):
    """A GPU that holds batches of 2 at most: torch raises OutOfMemoryError from the forward pass, as on a full GPU.
    The run stops with one error naming the checkpoint, the batch size and a smaller one, not torch's traceback."""
    import torch

    models = ModelCache(budget_bytes="1GB")
    loaded = models.get(str(tiny_checkpoints[-1]), device="cpu")

    def small_gpu(module, args, kwargs) -> None:
        rows = (kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs["inputs_embeds"]).shape[0]
        if rows > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = loaded.model.register_forward_pre_hook(small_gpu, with_kwargs=True)
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[-1]),), data="shapes:val:6", batch_size=6, device="cpu",
                           output_dir=str(tmp_path / "out"))
    try:
        with pytest.raises(MemoryBudgetError) as caught:
            compare(config, progress=False, cache=models)
        said = str(caught.value)
        # a notebook's compare() and a sweep's notebook 02 pass batch_size=; `vlm-lab compare` says its flag (below)
        assert said.startswith("out of memory on cpu while checkpoint-1000 generated batches of 6 (max_new_tokens=8): "
                               "CUDA out of memory. Tried to allocate 2.00 GiB; lower the batch size (e.g. batch_size=3)"), said
        assert said.endswith("cached per batch size: a re-run with batch_size=6 starts after them, a smaller batch "
                             "size generates them again (latency and tokens/s are measured at it)"), said
        batches: list[BatchEvent] = []
        result = compare(config.replace(batch_size=2), progress=False, cache=models, on_batch=batches.append)
    finally:
        hook.remove()
    assert len(batches) == 3 and result.summary[0]["accuracy"] > 0.5


def test_a_gpu_out_of_memory_beside_other_cached_models_says_to_free_them_first(tmp_path, tiny_checkpoints):
    """A notebook's cache= keeps earlier checkpoints loaded (up to its budget, weights only): on a full GPU the
    quickest fix is to let them go, so the message names them, with what they hold, before lowering the batch."""
    import torch

    models = ModelCache(budget_bytes="1GB")
    models.get(str(tiny_checkpoints[0]), device="cpu")  # explored earlier in the notebook, still loaded
    loaded = models.get(str(tiny_checkpoints[-1]), device="cpu")

    def full_gpu(module, args, kwargs) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = loaded.model.register_forward_pre_hook(full_gpu, with_kwargs=True)
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[-1]),), data="shapes:val:4", batch_size=4, device="cpu",
                           output_dir=str(tmp_path / "out"))
    try:
        with pytest.raises(MemoryBudgetError) as caught:
            compare(config, progress=False, cache=models)
    finally:
        hook.remove()
    said = str(caught.value)
    held = models.resident("cpu")
    assert [ref.name for ref, _ in held] == ["checkpoint-0", "checkpoint-1000"] and all(size > 0 for _, size in held)
    from vlm_lab.model_cache import format_bytes

    assert (f"Tried to allocate 2.00 GiB; free the other model your cache= holds on cpu (checkpoint-0: "
            f"{format_bytes(held[0][1])}) with cache.evict({str(tiny_checkpoints[0])!r}) or cache.clear(), lower the batch "
            "size (e.g. batch_size=2), or compare on a larger GPU") in said, said
    assert models.evict(str(tiny_checkpoints[0])) == ["checkpoint-0"]  # the call it names works as written


@pytest.mark.parametrize("batch_size, fix", [
    (6, "lower the batch size (e.g. --batch-size 3)"),
    (1, "generate fewer tokens (e.g. --max-new-tokens 4)"),
])
def test_a_gpu_out_of_memory_from_vlm_lab_compare_names_the_flags_to_type(tmp_path, tiny_checkpoints, capsys, batch_size, fix):
    """`vlm-lab compare` run in this process, its model out of memory in every forward pass (a hook on every module:
    the command builds its own cache, so no model is at hand before it runs)."""
    import torch

    from vlm_lab.cli import main

    def full_gpu(module, args) -> None:
        if hasattr(module, "generate"):  # the whole model, not its parts
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    hook = torch.nn.modules.module.register_module_forward_pre_hook(full_gpu)
    try:
        code = main(["compare", str(tiny_checkpoints[-1]), "--data", "shapes:val:6", "--batch-size", str(batch_size),
                     "--device", "cpu", "--out", str(tmp_path / "out"), "--quiet"])
    finally:
        hook.remove()
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and said.startswith(f"error: MemoryBudgetError: out of memory on cpu while checkpoint-1000 generated "
                                         f"batches of {batch_size} (--max-new-tokens 8): CUDA out of memory. Tried to "
                                         f"allocate 2.00 GiB; {fix}, or compare on a larger GPU"), said
    assert f"a re-run with --batch-size {batch_size} starts after them" in said and "batch_size" not in said, said


def test_a_device_this_machine_lacks_names_the_argument_a_python_caller_passes(tmp_path, tiny_checkpoints):
    """It said 'use --device cpu' to a notebook's compare() and the explorer, which take device= (the CLI says its flag)."""
    import torch

    from vlm_lab.errors import DeviceError
    from vlm_lab.widgets import explore

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    said = "device='cuda' but CUDA is not available here; use device='cpu' (or device='auto')"
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[-1]),), data="shapes:val:1", device="cuda", output_dir=str(tmp_path))
    with pytest.raises(DeviceError) as caught:
        compare(config, progress=False, cache=ModelCache())
    assert str(caught.value) == said
    e = explore([str(tiny_checkpoints[-1])], "shapes:val:1", device="cuda", cache=ModelCache())
    e.checkpoints.value = (0,)
    assert e.run() == [{"checkpoint": "checkpoint-1000", "error": f"DeviceError: {said}"}]


def test_a_model_over_the_memory_budget_names_the_config_field_a_python_caller_sets(tmp_path, tiny_checkpoints):
    """compare() sizes its cache from memory_budget=: that is what a notebook (or a sweep's notebook 02) raises, not
    ModelCache(budget_bytes=...) (the cache's words when a caller built it: test_model_cache) nor --memory-budget."""
    # 500 kB: the tiny model (673 kB in float32) does not fit, in float16 (337 kB) it would: both fixes are named
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[-1]),), data="shapes:val:1", memory_budget="500kB", device="cpu",
                           output_dir=str(tmp_path / "out"))
    with pytest.raises(MemoryBudgetError) as caught:
        compare(config, progress=False)
    said = str(caught.value)
    assert said.startswith("checkpoint-1000 needs ") and said.endswith(
        "raise the budget (memory_budget='1MB') or load in a smaller dtype (dtype='float16')"), said
    assert "--" not in said and "ModelCache" not in said


@pytest.mark.parametrize("case", ["output_dir", "output_dir, no cache", "cache_dir"])
def test_a_read_only_folder_is_refused_before_any_model_loads(tmp_path, tiny_checkpoints, read_only_folder, case):
    """A folder that exists but cannot be written to (a read-only mount; EACCES where chmod stops the user) passed
    the 'is a file' and 'cannot be created' checks: compare loaded the model, generated, then failed with a raw
    OSError (or, the cache in output_dir, blamed the cache: 'cannot hold its result cache .cache')."""
    field = case.split(",")[0]
    folders = {"output_dir": str(read_only_folder), "use_cache": case == "output_dir"} if field == "output_dir" else \
        {"output_dir": str(tmp_path / "out"), "cache_dir": str(read_only_folder)}
    models = ModelCache()
    config = CompareConfig(checkpoints=(str(tiny_checkpoints[-1]),), data="shapes:val:1", device="cpu", **folders)
    with pytest.raises(OutputPathError) as caught:
        compare(config, progress=False, cache=models)
    assert str(caught.value) == (f"{field}={str(read_only_folder)!r} is not writable (Read-only file system); "
                                 f"{field} must name a folder you can write to")
    assert models.stats["loads"] == 0


@pytest.mark.parametrize("flag", ["--out", "--cache-dir"])
def test_a_read_only_folder_from_vlm_lab_compare_names_the_flag(tmp_path, tiny_checkpoints, read_only_folder, capsys, flag):
    from vlm_lab.cli import main

    folders = ["--out", str(read_only_folder)] if flag == "--out" else \
        ["--out", str(tmp_path / "out"), "--cache-dir", str(read_only_folder)]
    code = main(["compare", str(tiny_checkpoints[-1]), "--data", "shapes:val:1", "--device", "cpu", *folders, "--quiet"])
    assert (code, capsys.readouterr().err) == (2, f"error: OutputPathError: {flag} {shlex.quote(str(read_only_folder))} is "
                                                  f"not writable (Read-only file system); {flag} must name a folder you can write to\n")


def test_a_disk_that_fails_the_result_caches_fsync_saves_no_results_and_a_run_after_the_fix_serves_none_wrong(tmp_path,
                                                                                                            tiny_checkpoints):
    """A real failing fsync: the output folder on a disk whose write-back fails (thin storage, its pool full). Every
    write succeeds and the fsyncs fail in the Syncer's thread. Before, compare saved results.jsonl, summary.json and
    the page (as if all were cached) and raised a bare ``[Errno 28]`` only after them. Now it stops before saving,
    names the cache file, the cause and the fix; freed, a run serves what survived and generates the rest."""
    models = ModelCache(budget_bytes="1GB")
    config = CompareConfig(checkpoints=tuple(str(c) for c in tiny_checkpoints[-2:]), data="shapes:val:4", batch_size=2,
                           device="cpu", output_dir=str(tmp_path / "ref"))
    expected = compare(config, progress=False, cache=models).rows
    with thin_disk(tmp_path / "disk", lacking="no disk whose write-back fails") as filler:
        out = tmp_path / "disk" / "out"
        config = config.replace(output_dir=str(out))
        with pytest.raises(OutputPathError) as caught:
            compare(config, progress=False, cache=models)
        said, cached = str(caught.value), sorted((out / ".cache").glob("*.jsonl"))
        assert caught.value.errno == errno.ENOSPC and len(cached) in (1, 2), (said, cached)
        assert said.startswith(f"cannot write the result cache {cached[0].parent}/") and "(No space left on device" in said, said
        assert f"the disk is full: free space on it (`df -h {out / '.cache'}`)" in said and "cache_dir='DIR'" in said, said
        assert said.endswith("then run again: the results that reached the cache are served from it, the rest are "
                             "generated again"), said
        assert not [p.name for p in out.iterdir() if p.name not in (".cache", "images")]  # no result says it is whole
        filler.unlink()  # space freed
        again = compare(config, progress=False, cache=models)
    assert [{k: v for k, v in r.items() if k != "outputs"} for r in again.rows] == \
        [{k: v for k, v in r.items() if k != "outputs"} for r in expected]
    assert [{name: o["output"] for name, o in r["outputs"].items()} for r in again.rows] == \
        [{name: o["output"] for name, o in r["outputs"].items()} for r in expected]


def test_a_full_disk_that_refuses_the_result_caches_append_names_the_cache_and_the_fix(tmp_path, tiny_checkpoints):
    """The append itself refused (a full tmpfs: no write-back to fail). Before, a bare ``[Errno 28]`` came from
    closing the file (its unwritten lines retried), with the batch's own error and the memory record's chained under it."""
    from mounts import tmpfs

    with tmpfs(tmp_path / "small", "size=64k", lacking="no full disk to try") as small:
        with open(small / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        config = CompareConfig(checkpoints=(str(tiny_checkpoints[-1]),), data="shapes:val:2", batch_size=2, device="cpu",
                               output_dir=str(tmp_path / "out"), cache_dir=str(small / "cache"))
        with pytest.raises(OutputPathError) as caught:
            compare(config, progress=False, cache=ModelCache(budget_bytes="1GB"))
    said = str(caught.value)
    assert caught.value.errno == errno.ENOSPC and said.startswith(f"cannot write the result cache {small / 'cache'}/"), said
    assert "the disk is full: free space on it" in said and caught.value.__cause__.__context__ is None, said
    assert not (tmp_path / "out" / "results.jsonl").exists()
