"""Hub references the local Hugging Face cache cannot serve: the error says which part is missing
and what the cache holds near it (real cache layouts on disk, real tiny checkpoints in them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_checkpoint_refs import add_snapshot, hf_cache, point_ref, vlm_lab  # noqa: F401 - hf_cache is a fixture

from vlm_lab.checkpoints import parse_hub_ref, resolve, resolve_all
from vlm_lab.errors import CheckpointNotFoundError

STEPS = (0, 250, 500, 1000)


def error_of(spec: str, *, expand: bool = True) -> str:
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve(spec, expand=expand)
    message = str(info.value)
    assert "\n" not in message and f"cannot load {spec!r}" in message
    return message


@pytest.fixture
def run_repo(hf_cache, tiny_checkpoints) -> Path:
    """``org/run``: a training run pushed with its checkpoint-N folders and no model at the root."""
    add_snapshot(hf_cache, "org/run", None, folders={f"checkpoint-{s}": tiny_checkpoints[0] for s in STEPS})
    return hf_cache


def test_a_missing_subfolder_lists_the_cached_folders_with_a_config_by_step(run_repo):
    message = error_of("org/run:checkpoint-50")
    assert "holds 'org/run' at main (commit " in message and "but no checkpoint-50/config.json" in message
    assert "not in the local Hugging Face cache" not in message  # it is: only the folder is not
    assert "config.json: checkpoint-0, checkpoint-250, checkpoint-500, checkpoint-1000; name one, e.g. org/run:checkpoint-0;" in message
    assert message.endswith("; or download it while online (hf download org/run --include 'checkpoint-50/*')")
    (ref,) = resolve("org/run:checkpoint-500")  # what the hint suggests does resolve
    assert ref.subfolder == "checkpoint-500"


def test_a_repo_of_checkpoint_folders_named_without_one_says_which_to_name(run_repo):
    # asked for one model (compare_one, the Space); expanded, it is its checkpoints (test_hub_expand.py)
    message = error_of("org/run", expand=False)
    assert "but no config.json at its root" in message and "e.g. org/run:checkpoint-0;" in message
    message = error_of("org/run@main", expand=False)
    assert "e.g. org/run@main:checkpoint-0;" in message and "--revision main" in message


def test_many_cached_folders_are_bounded_the_closest_first(hf_cache, tiny_checkpoints):
    add_snapshot(hf_cache, "org/long", None, folders={f"checkpoint-{s}": tiny_checkpoints[0] for s in range(100, 1300, 100)})
    message = error_of("org/long:checkpoint-50")
    for typed, nearest in (("checkpoint-50", range(100, 900, 100)), ("checkpoint-1250", range(500, 1300, 100))):
        message = error_of(f"org/long:{typed}")  # the 8 steps nearest the one typed, by step, the other 4 counted
        shown = ", ".join(f"checkpoint-{s}" for s in nearest)
        assert f"config.json: {shown} and 4 more (checkpoint-100 to checkpoint-1200); name one, e.g. org/long:checkpoint-{nearest[0] if typed == 'checkpoint-50' else 1200};" in message


def test_a_subfolder_cached_only_at_another_revision_is_named(hf_cache, tiny_checkpoints):
    add_snapshot(hf_cache, "org/run", None, folders={"checkpoint-0": tiny_checkpoints[0]})
    add_snapshot(hf_cache, "org/run", None, ref="v1", folders={"checkpoint-750": tiny_checkpoints[0]})
    message = error_of("org/run:checkpoint-750")
    assert "checkpoint-750 is cached at revision v1 (org/run@v1:checkpoint-750)" in message
    assert "config.json: checkpoint-0; name one, e.g. org/run:checkpoint-0;" in message
    resolve("org/run@v1:checkpoint-750")


def test_a_missing_revision_lists_the_cached_branches_tags_and_commits(hf_cache, tiny_checkpoints):
    main = add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[0])
    v1 = add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[-1], ref="v1")
    message = error_of("org/shapes@v2")
    assert "revision 'v2' of 'org/shapes' is not in the local Hugging Face cache" in message
    assert f"cached revisions of 'org/shapes': main ({main[:7]}), v1 ({v1[:7]});" in message
    assert message.endswith("; or download it while online (hf download org/shapes --revision v2)")
    message = error_of(f"org/shapes@{v1[:7]}")  # a short commit id finds no snapshot folder offline
    assert f"short for cached commit {v1}: pass it in full (org/shapes@{v1})" in message
    resolve(f"org/shapes@{v1}")


def test_a_commit_no_branch_names_is_listed_in_full(hf_cache, tiny_checkpoints):
    only = add_snapshot(hf_cache, "org/pinned", tiny_checkpoints[0], ref=None)  # downloaded as org/pinned@<commit>
    message = error_of("org/pinned")
    assert "revision 'main' of 'org/pinned' is not in the local Hugging Face cache" in message
    assert f"cached revisions of 'org/pinned': {only};" in message
    resolve(f"org/pinned@{only}")


def test_an_uncached_repo_lists_cached_models_with_close_names(hf_cache, tiny_checkpoints):
    for repo_id in ("org/shapes", "org/run", "other/thing"):
        add_snapshot(hf_cache, repo_id, tiny_checkpoints[0])
    (hf_cache / "datasets--org--shapes-data" / "snapshots").mkdir(parents=True)  # a dataset is no model to suggest
    message = error_of("org/shapse")
    assert "hub model 'org/shapse' is not in the local Hugging Face cache" in message
    assert "cached models with close names: org/shapes, org/run;" in message  # the typo's fix first, then its org
    assert "other/thing" not in message and "shapes-data" not in message
    assert message.endswith("; or download it while online (hf download org/shapse)")
    assert "close names: org/shapes" in error_of("Org/Shapes")  # the cache's spelling differs in case
    message = error_of("zzz/qqq")
    assert "which holds no model with a close name (3 cached; hf cache ls lists them)" in message


def test_an_empty_cache_and_a_damaged_entry_say_so(hf_cache, tiny_checkpoints):
    assert "not in the local Hugging Face cache" in error_of("org/shapes") and "which holds no models" in error_of("org/shapes")
    add_snapshot(hf_cache, "org/broken", tiny_checkpoints[0])
    point_ref(hf_cache, "org/broken", "main", "0" * 40)  # a ref to a snapshot that is not there
    assert "its cache folder is damaged (Reference(s) refer to missing commit hashes" in error_of("org/broken")
    assert "damaged" not in error_of("org/broke")  # only org/broken's folder is


def test_a_subfolder_is_a_path_inside_the_repo(run_repo):
    assert parse_hub_ref("org/run:/checkpoint-500/").subfolder == "checkpoint-500"
    assert parse_hub_ref("org/run:./checkpoint-500").subfolder == "checkpoint-500"
    assert parse_hub_ref("org/run:.").subfolder is None
    with pytest.raises(CheckpointNotFoundError, match="points outside the repo"):
        parse_hub_ref("org/run:../checkpoint-500")


def test_a_leading_slash_subfolder_loads(run_repo):
    from vlm_lab.models import load_model

    loaded = load_model("org/run:/checkpoint-500", device="cpu")  # resolving accepted it: so must loading
    assert loaded.ref.subfolder == "checkpoint-500"


def test_a_partly_downloaded_subfolder_says_what_is_cached_and_how_to_fetch_the_rest(run_repo):
    from vlm_lab.models import load_model

    (commit,) = os.listdir(run_repo / "models--org--run" / "snapshots")
    (run_repo / "models--org--run" / "snapshots" / commit / "checkpoint-250" / "model.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError) as info:
        load_model("org/run:checkpoint-250", device="cpu")
    message = str(info.value)
    assert "holds only part of checkpoint-250 of 'org/run' at main" in message and "config.json" in message
    assert "model.safetensors" not in message.split("holds only part")[1]
    assert message.endswith("download it while online (hf download org/run --include 'checkpoint-250/*')")


def test_cli_compare_with_a_missing_hub_subfolder_prints_the_cached_ones(tiny_checkpoints, tmp_path):
    home = tmp_path / "hf-home"
    add_snapshot(home / "hub", "org/run", None, folders={f"checkpoint-{s}": tiny_checkpoints[0] for s in STEPS})
    r = vlm_lab("compare", "org/run:checkpoint-50", "--out", str(tmp_path / "cmp"), home=home, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "config.json: checkpoint-0, checkpoint-250, checkpoint-500, checkpoint-1000; name one" in r.stderr
    assert not (tmp_path / "cmp").exists()


def online_error(hf_cache, spec: str) -> str:
    """stderr of fingerprinting ``spec`` online, against a hub emulator that holds org/shapes (main only)."""
    from hub_emulator import HubEmulator, Repo

    code = f"from vlm_lab.checkpoints import fingerprint, parse_hub_ref; fingerprint(parse_hub_ref({spec!r}))"
    with HubEmulator() as hub:
        hub.add_token("hf_reader", "alice", role="read")
        hub.repos[("model", "org/shapes")] = Repo("model", "org/shapes", private=False)
        r = _online(hub, hf_cache, code)
    assert r.returncode != 0
    return r.stderr


def test_online_an_unknown_repo_also_names_the_close_cached_ones(hf_cache, tiny_checkpoints):
    add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[0])
    stderr = online_error(hf_cache, "org/shapse")
    assert "the hub has no model 'org/shapse' you can see" in stderr
    assert "in the local Hugging Face cache: cached models with close names: org/shapes" in stderr


def test_online_an_unknown_revision_also_names_the_cached_ones(hf_cache, tiny_checkpoints):
    add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[0])
    stderr = online_error(hf_cache, "org/shapes@v2")
    assert "the hub has no revision 'v2' of 'org/shapes'" in stderr
    assert "main (" in stderr.split("the hub has no revision")[1], stderr  # the cached branch, with its commit


def test_a_subfolder_of_a_model_cached_at_its_root_says_to_name_the_root(hf_cache, tiny_checkpoints):
    add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[0])
    message = error_of("org/shapes:checkpoint-500")
    assert "holds 'org/shapes' at main (commit " in message and "but no checkpoint-500/config.json" in message
    assert "only its root holds a config.json: name it without a subfolder, org/shapes;" in message


def test_one_hub_checkpoint_spelled_two_ways_is_compared_once(run_repo):
    refs = resolve_all(["org/run:checkpoint-500", "org/run@main:/checkpoint-500/", "org/run:checkpoint-1000"])
    assert [r.spec for r in refs] == ["org/run:checkpoint-500", "org/run:checkpoint-1000"]


@pytest.fixture
def sharded(tiny_checkpoints, tmp_path) -> Path:
    """checkpoint-1000 saved again in 100 kB shards with their model.safetensors.index.json."""
    from vlm_lab.models import load_model

    folder = Path(shutil.copytree(tiny_checkpoints[-1], tmp_path / "sharded", ignore=shutil.ignore_patterns("model.safetensors")))
    load_model(tiny_checkpoints[-1], device="cpu").model.save_pretrained(folder, max_shard_size="100KB")
    assert len(list(folder.glob("model-*.safetensors"))) > 2
    return folder


def test_a_small_hub_checkpoint_in_the_local_cache_loads_without_a_progress_bar(hf_cache, tiny_checkpoints, sharded, capfd, monkeypatch):
    from transformers.utils import logging as hf_logging

    from vlm_lab import models

    add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[0])
    add_snapshot(hf_cache, "org/run", None, folders={"checkpoint-500": tiny_checkpoints[2], "sharded": sharded})
    capfd.readouterr()
    for spec in ("org/shapes", "org/run:checkpoint-500", "org/run:sharded"):
        models.load_model(spec, device="cpu")
        assert "Loading weights" not in capfd.readouterr().err, spec
    assert hf_logging.set_tqdm_hook(None) is None  # the quieting hook was taken off again
    monkeypatch.setattr(models, "QUIET_LOAD_BYTES", 0)  # as if the weights were large: the bar is back
    models.load_model("org/run:sharded", device="cpu")
    assert "Loading weights" in capfd.readouterr().err


def test_a_hub_checkpoint_not_all_in_the_local_cache_keeps_its_progress_bar(hub_with_shards, hf_cache):
    code = "from vlm_lab.models import load_model; load_model('org/sharded', device='cpu')"
    first = _online(hub_with_shards, hf_cache, code)  # nothing cached: the weights are downloaded
    assert first.returncode == 0, first.stderr
    assert "Loading weights" in first.stderr
    (snapshot,) = (hf_cache / "models--org--sharded" / "snapshots").iterdir()
    shard = sorted(snapshot.glob("model-*.safetensors"))[-1]
    shard.unlink()  # one shard left to download again
    again = _online(hub_with_shards, hf_cache, code)
    assert again.returncode == 0 and "Loading weights" in again.stderr
    cached = _online(hub_with_shards, hf_cache, code)  # all there now
    assert cached.returncode == 0 and "Loading weights" not in cached.stderr, cached.stderr


@pytest.fixture
def hub_with_shards(sharded):
    from hub_emulator import HubEmulator, Repo

    with HubEmulator() as hub:
        hub.add_token("hf_reader", "alice", role="read")
        repo = hub.repos[("model", "org/sharded")] = Repo("model", "org/sharded", private=False)
        repo.files = {f.name: f.read_bytes() for f in sharded.iterdir() if f.is_file()}
        repo.commit("sharded", [])
        yield hub


def _online(hub, hf_cache: Path, code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh process whose huggingface_hub talks to ``hub`` and caches under ``hf_cache``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "hf_reader", "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(hf_cache.parent), "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
