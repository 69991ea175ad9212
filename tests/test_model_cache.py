"""ModelCache: LRU eviction by bytes, the T4 arithmetic, stale-weight reloads, freeing memory."""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys
import weakref

import pytest
import torch
from model_cache_refs import refs  # noqa: F401 - a fixture
from test_checkpoint_refs import add_snapshot, hf_cache, point_ref  # noqa: F401 - a fixture
from test_hub_cache import _online, hub_with_shards, sharded  # noqa: F401 - fixtures

from vlm_lab.checkpoints import resolve
from vlm_lab.config import parse_bytes
from vlm_lab.errors import CheckpointNotFoundError, ConfigError, MemoryBudgetError
from vlm_lab.model_cache import GB, ModelCache, estimate_nbytes, max_resident
from vlm_lab.models import model_nbytes


@pytest.fixture(scope="module")
def tiny_nbytes(refs):
    return estimate_nbytes(refs[0], torch.float32)


def test_estimate_from_safetensors_headers_matches_the_loaded_model(refs, tiny_nbytes):
    cache = ModelCache(budget_bytes=10 * tiny_nbytes)
    loaded = cache.get(refs[0], device="cpu")
    measured = model_nbytes(loaded.model)  # + non-persistent buffers (rotary inv_freq, position ids)
    assert tiny_nbytes == pytest.approx(measured, rel=0.01)
    assert cache.used_bytes == max(measured, tiny_nbytes)
    assert estimate_nbytes(refs[0], torch.float16) == tiny_nbytes // 2  # floats are charged at the load dtype


def test_budget_for_two_models_evicts_the_least_recently_used(refs, tiny_nbytes):
    cache = ModelCache(budget_bytes=int(2.5 * tiny_nbytes))  # room for two tiny models, not three
    first = cache.get(refs[0], device="cpu")
    cache.get(refs[1], device="cpu")
    assert cache.get(refs[0], device="cpu") is first  # a hit, and refs[0] is now the most recent
    assert cache.loaded == ["checkpoint-250", "checkpoint-0"]
    cache.get(refs[2], device="cpu")  # over budget: evicts checkpoint-250, the LRU one
    assert cache.loaded == ["checkpoint-0", "checkpoint-500"]
    assert refs[1] not in cache and refs[0] in cache
    assert cache.stats == {"hits": 1, "loads": 3, "evictions": 1, "waits": 0}
    assert cache.used_bytes <= cache.budget_bytes


def test_t4_arithmetic_two_7gb_models_fit_16gb(refs):
    # computed from the budget and the sizes, not a hard-coded count
    assert max_resident(parse_bytes("16GB"), [7 * GB] * 3) == 2
    assert max_resident(parse_bytes("16GB"), [3 * GB] * 6) == 5
    assert max_resident(parse_bytes("16GB"), [17 * GB]) == 0
    # the cache itself, told (by a swappable size function) that each model is a 7 GB VLM
    cache = ModelCache(budget_bytes="16GB", size_fn=lambda ref, dtype: 7 * GB)
    for ref in refs:
        cache.get(ref, device="cpu")
    assert len(cache) == 2 and cache.loaded == ["checkpoint-250", "checkpoint-500"]
    assert cache.used_bytes == 14 * GB


def test_model_over_the_whole_budget_is_refused_with_the_fix(refs, tiny_nbytes):
    cache = ModelCache(budget_bytes=tiny_nbytes // 2)
    with pytest.raises(MemoryBudgetError, match="raise the budget") as info:
        cache.get(refs[0], device="cpu")
    assert isinstance(info.value, MemoryError) and len(cache) == 0
    # a notebook's compare() and the explorer pass dtype=; `vlm-lab compare` says --dtype (test_cli_compare)
    assert str(info.value).endswith("or load in a smaller dtype (dtype='float16')"), str(info.value)
    # the cache's own argument, with a size that holds the model: compare() (test_compare_errors), vlm-lab compare and
    # the Space (test_space_service) each name their own setting instead; it named --memory-budget here too
    assert f"raise the budget (ModelCache(budget_bytes='{-(-tiny_nbytes // 10**6)}MB'))" in str(info.value), str(info.value)
    assert "--" not in str(info.value)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_a_model_over_the_budget_is_told_a_smaller_dtype_only_where_that_would_fit(refs, tiny_nbytes, dtype):
    """In 16 bits already, float16 changes nothing; in float32 at four times the budget, float16 still does not fit:
    it said 'or load in a smaller dtype (dtype='float16')' to all three."""
    cache = ModelCache(budget_bytes=tiny_nbytes // 4)
    with pytest.raises(MemoryBudgetError) as info:
        cache.get(refs[0], dtype=dtype, device="cpu")
    said = str(info.value)
    assert said.endswith("; raise the budget (ModelCache(budget_bytes='1MB'))") and "dtype" not in said, said


def test_eviction_frees_the_model(refs, tiny_nbytes):
    cache = ModelCache(budget_bytes=10 * tiny_nbytes)
    alive = weakref.ref(cache.get(refs[0], device="cpu").model)
    cache.get(refs[1], device="cpu")
    assert cache.evict(refs[0]) == ["checkpoint-0"]
    gc.collect()
    assert alive() is None  # nothing but the cache held it: the memory is gone
    assert cache.evict() == ["checkpoint-250"] and len(cache) == 0
    cache.get(refs[2], device="cpu")
    cache.clear()
    assert len(cache) == 0 and cache.used_bytes == 0


def test_checkpoint_resaved_in_place_is_reloaded(tiny_checkpoints, tmp_path, tiny_nbytes):
    folder = tmp_path / "run" / "checkpoint-7"
    shutil.copytree(tiny_checkpoints[-1], folder)
    cache = ModelCache(budget_bytes=10 * tiny_nbytes)
    before = cache.get(str(folder), device="cpu")
    assert cache.get(folder, device="cpu") is before
    weights_before = [p.detach().clone() for p in before.model.parameters()]  # (CPU tensors may be mmapped from the file)
    shutil.copy2(tiny_checkpoints[0] / "model.safetensors", folder / "model.safetensors")
    after = cache.get(str(folder), device="cpu")
    assert after is not before and len(cache) == 1
    assert not all(torch.equal(a, b) for a, b in zip(after.model.parameters(), weights_before))


def test_a_loaded_model_keeps_its_weights_when_its_files_are_written_again(tiny_checkpoints, tmp_path):
    """CPU weights were memory-mapped views of model.safetensors: a save in place changed them under the loaded
    model, and a file cut short while being written killed the process (SIGBUS) at the next use."""
    folder = shutil.copytree(tiny_checkpoints[-1], tmp_path / "final")
    code = f"""
import torch
from pathlib import Path
from vlm_lab.models import load_model
model = load_model({str(folder)!r}, device="cpu").model
before = {{k: v.clone() for k, v in model.state_dict().items()}}
weights = Path({str(folder)!r}) / "model.safetensors"
weights.write_bytes(Path({str(tiny_checkpoints[0])!r}, "model.safetensors").read_bytes())  # saved again, in place
print(sum(not torch.equal(before[k], v) for k, v in model.state_dict().items()))
weights.write_bytes(b"")  # a save that has truncated the file and not written it yet
print(sum(float(v.double().sum()) for v in model.state_dict().values()) == sum(float(v.double().sum()) for v in before.values()))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])  # -7: SIGBUS
    assert r.stdout.split() == ["0", "True"]


@pytest.mark.parametrize(
    "weights, message",
    [
        (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 680112\n", "is a Git-LFS pointer"),
        (b"\xc0\x1b\x00\x00\x00\x00\x00\x00{", "not a valid safetensors file"),  # a download cut after 9 bytes
    ],
    ids=["lfs-pointer", "truncated"],
)
def test_broken_weights_are_refused_before_loading(tiny_checkpoints, tmp_path, tiny_nbytes, weights, message):
    folder = shutil.copytree(tiny_checkpoints[-1], tmp_path / "checkpoint-1000")
    (folder / "model.safetensors").write_bytes(weights)
    ref = resolve(str(folder))[0]
    with pytest.raises(CheckpointNotFoundError, match=message):
        estimate_nbytes(ref, torch.float32)
    for cache in (ModelCache(budget_bytes=10 * tiny_nbytes), ModelCache(budget_bytes=10 * tiny_nbytes, size_fn=lambda ref, dtype: None)):
        with pytest.raises(CheckpointNotFoundError, match=message):  # from the size estimate, or from loading
            cache.get(ref, device="cpu")
        assert len(cache) == 0


@pytest.mark.parametrize("text, value", [("16GB", 16 * 10**9), ("15GiB", 15 * 2**30), ("500 MB", 5 * 10**8), (123, 123), ("1.5gb", 15 * 10**8),
                                         ("1e10", 10**10), ("1.6e+10", 16 * 10**9), ("2e3MB", 2 * 10**9)])  # fmt: skip
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text, message", [
    ("16G", "'16G' is ambiguous: write 16GB .16 x 10\\^9 bytes. or 16GiB .16 x 2\\^30 bytes."),
    ("512m", "write 512MB .* or 512MiB"),
    ("1.5", "'1.5' is not a whole number of bytes; give a unit, e.g. 1.5GB or 1.5GiB"),
])  # fmt: skip
def test_a_size_that_could_be_read_two_ways_or_as_a_fraction_of_a_byte_is_refused(text, message):
    with pytest.raises(ConfigError, match=message):  # 16G: Slurm's GiB or a disk's GB, 7% apart; 1.5 was a 1-byte budget
        parse_bytes(text)


@pytest.mark.parametrize("bad", ["lots", "16 GBs", "-1GB"])
def test_parse_bytes_says_how_to_write_a_size(bad):
    with pytest.raises(ConfigError, match="e.g. 16GB"):
        parse_bytes(bad)


@pytest.mark.gpu
def test_cuda_eviction_returns_memory(refs):
    cache = ModelCache(budget_bytes="1GB")
    cache.get(refs[0], device="cuda")
    assert torch.cuda.memory_allocated() > 0
    cache.clear()
    assert torch.cuda.memory_allocated() == 0


def test_one_hub_model_named_several_ways_is_loaded_and_charged_once(hf_cache, tiny_checkpoints, tiny_nbytes):
    a = add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[0])
    cache = ModelCache(budget_bytes=int(1.5 * tiny_nbytes), hub_refresh_s=0)  # room for one
    first = cache.get("org/shapes", device="cpu")
    for spec in ("org/shapes@main", f"org/shapes@{a}", "org/shapes@main:."):
        assert cache.get(spec, device="cpu") is first and spec in cache
    assert cache.stats == {"hits": 3, "loads": 1, "evictions": 0, "waits": 0} and len(cache) == 1
    b = add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[-1], ref=None)
    point_ref(hf_cache, "org/shapes", "main", b)  # main moved on: its old commit's copy is stale
    assert cache.get("org/shapes@main", device="cpu").ref.revision == b
    assert len(cache) == 1 and f"org/shapes@{a}" not in cache and cache.get("org/shapes", device="cpu").ref.revision == b


def _loads_seen(cache: ModelCache) -> list[tuple[str, list[str]]]:
    """Wraps the cache's (real) loader to record each load with what was resident while it ran."""
    seen, load = [], cache.loader
    cache.loader = lambda ref, **kw: seen.append((ref.spec, cache.loaded)) or load(ref, **kw)
    return seen


def test_a_hub_model_is_loaded_only_after_room_is_made_for_it(hf_cache, tiny_checkpoints, tiny_nbytes):
    add_snapshot(hf_cache, "org/a", tiny_checkpoints[0])
    add_snapshot(hf_cache, "org/b", tiny_checkpoints[-1])
    cache = ModelCache(budget_bytes=int(1.5 * tiny_nbytes))  # room for one: never two at once, even while loading
    seen = _loads_seen(cache)
    cache.get("org/a", device="cpu")
    cache.get("org/b", device="cpu")
    assert seen == [("org/a", []), ("org/b", [])] and cache.loaded == ["org/b"]
    small = ModelCache(budget_bytes=tiny_nbytes // 2)
    seen = _loads_seen(small)
    with pytest.raises(MemoryBudgetError, match=r"org/a needs .* but the model cache budget is"):
        small.get("org/a", device="cpu")
    assert seen == []  # refused from its cached safetensors headers, before loading it


def test_online_a_hub_model_over_the_budget_is_refused_before_its_weights_are_downloaded(hub_with_shards, hf_cache, sharded):
    estimate = estimate_nbytes(resolve(str(sharded))[0], torch.float32)
    code = f"""
import torch
from vlm_lab.checkpoints import parse_hub_ref
from vlm_lab.errors import MemoryBudgetError
from vlm_lab.model_cache import ModelCache, estimate_nbytes
print(estimate_nbytes(parse_hub_ref('org/sharded'), torch.float32))
try:
    ModelCache(budget_bytes={estimate // 2}).get('org/sharded', device='cpu')
except MemoryBudgetError as e:
    print(e)
"""
    r = _online(hub_with_shards, hf_cache, code)
    assert r.returncode == 0, r.stderr
    got, refused = r.stdout.splitlines()
    assert int(got) == estimate  # from the hub's safetensors headers of every shard
    assert refused.startswith("org/sharded needs ") and "raise the budget" in refused
    assert not list(hf_cache.rglob("*.safetensors"))  # no weights were downloaded


def test_a_torch_pickle_checkpoint_is_charged_at_the_dtype_it_loads_in(tiny_checkpoints, tmp_path, refs, tiny_nbytes):
    """A float16 pytorch_model.bin loaded in float32 takes twice its file's size (the cache charged the file size)."""
    from safetensors.torch import load_file

    folder = shutil.copytree(tiny_checkpoints[0], tmp_path / "bin16", ignore=shutil.ignore_patterns("model.safetensors"))
    torch.save({k: v.half() for k, v in load_file(tiny_checkpoints[0] / "model.safetensors").items()}, folder / "pytorch_model.bin")
    ref = resolve(str(folder))[0]
    assert estimate_nbytes(ref, torch.float32) == tiny_nbytes
    assert estimate_nbytes(ref, torch.float16) == tiny_nbytes // 2
    cache = ModelCache(budget_bytes=int(1.5 * tiny_nbytes))
    seen = _loads_seen(cache)
    cache.get(refs[1], device="cpu")
    cache.get(ref, device="cpu", dtype="float32")  # room is made before it loads, not after
    assert seen[-1] == (str(folder), []) and cache.loaded == [str(folder)]


def test_a_loaded_checkpoint_deleted_since_can_still_be_evicted(tiny_checkpoints, tmp_path, tiny_nbytes):
    """A trainer's save_total_limit deletes old checkpoint-N folders that a notebook's cache still holds."""
    folder = shutil.copytree(tiny_checkpoints[0], tmp_path / "run" / "checkpoint-5")
    cache = ModelCache(budget_bytes=10 * tiny_nbytes)
    cache.get(str(folder), device="cpu")
    shutil.rmtree(folder)
    assert str(folder) in cache
    assert cache.evict(str(folder)) == ["checkpoint-5"] and len(cache) == 0
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint at"):  # a path never loaded is still an error
        cache.evict(str(tmp_path / "run" / "checkpoint-6"))


def test_only_the_weights_the_model_loads_are_charged(tiny_checkpoints, sharded, tmp_path, tiny_nbytes):
    """A PEFT adapter (adapter_model.safetensors) or a shard the index does not list, beside the model's own
    weights: from_pretrained leaves them alone, and the cache and the estimate charged them as the model's."""
    from vlm_lab.memory import estimate

    single = shutil.copytree(tiny_checkpoints[-1], tmp_path / "single")
    shutil.copy(single / "model.safetensors", single / "adapter_model.safetensors")
    stray = next(iter(sorted(sharded.glob("model-*.safetensors"))))
    shutil.copy(stray, sharded / "model-99999-of-99999.safetensors")  # left over from an earlier save
    for folder in (single, sharded):
        ref = resolve(str(folder))[0]
        assert estimate_nbytes(ref, torch.float32) == tiny_nbytes, folder.name
        assert estimate(str(folder), device="cpu").num_params == estimate(str(tiny_checkpoints[-1]), device="cpu").num_params
        cache = ModelCache(budget_bytes=int(1.5 * tiny_nbytes))  # fits the model, not the model and its extra file
        cache.get(ref, device="cpu")
        assert cache.loaded == [ref.spec]


def test_a_buffer_shared_by_two_modules_is_copied_out_of_its_file_once_for_both(tmp_path):
    """A tied buffer (one tensor registered in two modules) mapped from a weight file: the first module got a
    copy, the second kept pointing into the file (a rewrite of the checkpoint could still change or kill it)."""
    from vlm_lab.models import _copy_out_of_files, _mapped_ranges

    path = tmp_path / "weights.pt"
    torch.save({"table": torch.arange(4096, dtype=torch.float32)}, path)
    table = torch.load(path, mmap=True)["table"]
    model = torch.nn.Sequential(torch.nn.Module(), torch.nn.Module())
    for module in model:
        module.register_buffer("table", table)
    (start, end), *_ = _mapped_ranges([path])
    assert start <= table.data_ptr() < end  # the premise: the buffer is a view of the file
    _copy_out_of_files(model, [path])
    first, second = model[0].table, model[1].table
    assert first is second  # still one tensor
    assert not any(s <= first.data_ptr() < e for s, e in _mapped_ranges([path]))
    assert torch.equal(first, torch.arange(4096, dtype=torch.float32))


def test_local_folders_and_cached_snapshots_pick_weight_files_by_one_rule(tmp_path):
    """model.safetensors (or its index's shards), then pytorch_model.bin (or its shards), then the rest: a local
    folder holding pytorch_model.bin beside a stray consolidated.safetensors was charged for the stray file
    (the rule for the Hugging Face cache picked pytorch_model.bin, as from_pretrained does)."""
    from vlm_lab.hub_cache import cached_weights
    from vlm_lab.memory_checkpoint import loaded_weight_files, weight_paths

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "pytorch_model.bin").write_bytes(b"0" * 10)
    (folder / "consolidated.safetensors").write_bytes(b"0" * 10)
    assert weight_paths(folder) == [folder / "pytorch_model.bin"]
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}}')
    (folder / "model-1.safetensors").write_bytes(b"0")
    assert loaded_weight_files(folder) == ([folder / "model-1.safetensors"], False)  # a listed shard is missing
    # the same folder as a cached hub snapshot: incomplete, so nothing is served from the cache
    snapshot = tmp_path / "hub" / "models--org--m" / "snapshots" / ("0" * 40)
    snapshot.parent.mkdir(parents=True)
    folder.rename(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    assert cached_weights("org/m", None, None, cache_dir=str(tmp_path / "hub")) is None
    (snapshot / "model-2.safetensors").write_bytes(b"0")
    assert cached_weights("org/m", None, None, cache_dir=str(tmp_path / "hub")) == [snapshot / "model-1.safetensors", snapshot / "model-2.safetensors"]


def test_a_cached_snapshot_without_the_subfolder_yet_has_no_cached_weights(tmp_path):
    """org/run:checkpoint-250 before its files are downloaded: the subfolder is not in the snapshot; asking for
    its cached weights raised 'no checkpoint at ... any more' and failed an online compare (359cec5)."""
    from vlm_lab.hub_cache import cached_weights

    snapshot = tmp_path / "hub" / "models--org--run" / "snapshots" / ("0" * 40)
    (snapshot / "checkpoint-0").mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    assert cached_weights("org/run", None, "checkpoint-250", cache_dir=str(tmp_path / "hub")) is None


@pytest.mark.parametrize("share", [8, None])  # a container given 1/8 of the machine; none
def test_the_default_cpu_budget_is_half_of_what_the_container_may_use(tmp_path, share):
    """/proc/meminfo tells the host's RAM inside a container: the default budget was half of a 256 GB host in a
    16 GB Jupyter or Space container, so the cache never evicted before the kernel killed the process."""
    import psutil

    from vlm_lab.model_cache import default_budget

    total = psutil.virtual_memory().total
    (tmp_path / "cgroup").write_text("0::/\n")
    (tmp_path / "fs").mkdir()
    (tmp_path / "fs" / "memory.max").write_text(str(total // share) if share else "max")
    (tmp_path / "fs" / "memory.current").write_text("0")
    got = default_budget(torch.device("cpu"), cgroup_root=tmp_path / "fs", proc_self_cgroup=tmp_path / "cgroup")
    assert got == (total // share // 2 if share else total // 2)


def test_the_default_cpu_budget_counts_the_container_limit_while_the_host_is_busier_than_the_container(tmp_path):
    """A container whose room under its limit is more than the host has free (a node whose containers' limits add up
    past its RAM) still has that limit: the budget was half the host's RAM, past what the container may ever use."""
    import psutil

    from vlm_lab.model_cache import default_budget

    total = psutil.virtual_memory().total
    limit = total - 256 * 2**20  # just under the machine's RAM: more room than the host has available
    (tmp_path / "cgroup").write_text("0::/\n")
    (tmp_path / "fs").mkdir()
    (tmp_path / "fs" / "memory.max").write_text(str(limit))
    (tmp_path / "fs" / "memory.current").write_text("0")
    assert psutil.virtual_memory().available < limit  # the case: the host is the tighter bound right now
    got = default_budget(torch.device("cpu"), cgroup_root=tmp_path / "fs", proc_self_cgroup=tmp_path / "cgroup")
    assert got == limit // 2
