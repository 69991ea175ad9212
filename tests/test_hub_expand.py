"""A hub repo of training checkpoints (Trainer ``push_to_hub`` with ``hub_strategy="all_checkpoints"``)
expands like a local training output: ``org/run[@rev]:checkpoint-N`` by N, then the root model.

Offline from a real cache layout holding the tiny checkpoints; online against the hub emulator
with the real huggingface_hub client (a subprocess, since ``HF_ENDPOINT`` is read at import).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from test_checkpoint_refs import add_snapshot, hf_cache, vlm_lab  # noqa: F401 - hf_cache is a fixture

from vlm_lab.checkpoints import CachedListingWarning, resolve, resolve_all
from vlm_lab.compare import unique_names
from vlm_lab.errors import CheckpointNotFoundError


def weights_only(model: Path, tmp_path: Path) -> Path:
    """A copy of ``model`` without its config.json: a checkpoint folder a partial download left."""
    folder = tmp_path / "no-config"
    folder.mkdir(exist_ok=True)
    for f in model.iterdir():
        if f.is_file() and f.name != "config.json":
            (folder / f.name).write_bytes(f.read_bytes())
    return folder


@pytest.fixture
def run_repo(hf_cache, tiny_checkpoints, tmp_path) -> Path:
    """``org/run`` at main: checkpoint-1000, -250, -0 (pushed in that order), a checkpoint-500 without
    config.json, a non-checkpoint folder ``best`` with one, and the final model at the root."""
    first, second, *_, last = tiny_checkpoints
    folders = {"checkpoint-1000": last, "checkpoint-250": second, "checkpoint-0": first,
               "checkpoint-500": weights_only(second, tmp_path), "best": last}  # fmt: skip
    add_snapshot(hf_cache, "org/run", last, folders=folders)
    return hf_cache


def test_a_hub_run_expands_to_its_checkpoints_by_step_then_the_root_model(run_repo):
    with pytest.warns(CachedListingWarning):
        refs = resolve("org/run")
    assert [r.spec for r in refs] == ["org/run:checkpoint-0", "org/run:checkpoint-250", "org/run:checkpoint-1000", "org/run"]
    assert [r.step for r in refs] == [0, 250, 1000, None]  # notebook 02 plots accuracy against these
    assert [r.subfolder for r in refs] == ["checkpoint-0", "checkpoint-250", "checkpoint-1000", None]
    assert {(r.repo_id, r.revision) for r in refs} == {("org/run", None)}
    assert unique_names(refs) == [r.spec for r in refs]  # readable and distinct as they are
    assert resolve_all(["org/run", "org/run:checkpoint-250", "org/run@main:/checkpoint-1000/"]) == refs  # no repeats


def test_a_hub_run_without_a_root_model_is_its_checkpoints(hf_cache, tiny_checkpoints):
    add_snapshot(hf_cache, "org/run", None, folders={f"checkpoint-{s}": tiny_checkpoints[0] for s in (1000, 50, 500)})
    assert [r.spec for r in resolve("org/run")] == ["org/run:checkpoint-50", "org/run:checkpoint-500", "org/run:checkpoint-1000"]
    with pytest.raises(CheckpointNotFoundError, match="no config.json at its root"):
        resolve("org/run", expand=False)  # as before: one model asked for, and the root holds none


@pytest.mark.filterwarnings("ignore::vlm_lab.checkpoints.CachedListingWarning")  # the cache alone: said, and tested below
def test_the_revision_named_is_kept_and_its_own_snapshot_listed(run_repo, tiny_checkpoints):
    v1 = add_snapshot(run_repo, "org/run", None, ref="v1", folders={"checkpoint-750": tiny_checkpoints[0]})
    assert [r.spec for r in resolve("org/run@v1")] == ["org/run@v1:checkpoint-750"]
    (ref,) = resolve(f"org/run@{v1}")
    assert (ref.spec, ref.revision, ref.subfolder, ref.step) == (f"org/run@{v1}:checkpoint-750", v1, "checkpoint-750", 750)
    assert [r.spec for r in resolve("org/run@main")][-2:] == ["org/run@main:checkpoint-1000", "org/run@main"]


def test_an_explicit_subfolder_and_expand_false_resolve_to_one(run_repo):
    for spec in ("org/run:checkpoint-250", "org/run:best", "org/run:."):
        assert [r.spec for r in resolve(spec)] == [spec]
    (ref,) = resolve("org/run", expand=False)  # compare_one, the Space: the model at the root, as before
    assert (ref.spec, ref.subfolder) == ("org/run", None)


def test_a_model_repo_without_checkpoint_folders_is_one_model(hf_cache, tiny_checkpoints):
    add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[0], folders={"extra": tiny_checkpoints[1]})
    assert [r.spec for r in resolve("org/shapes")] == ["org/shapes"]


@pytest.mark.slow
def test_cli_compare_of_a_cached_hub_run_compares_every_checkpoint(tiny_checkpoints, tmp_path):
    home = tmp_path / "hf-home"
    add_snapshot(home / "hub", "org/run", None, folders={"checkpoint-1000": tiny_checkpoints[-1], "checkpoint-0": tiny_checkpoints[0]})
    r = vlm_lab("compare", "org/run", "--data", "shapes:val:4", "--batch-size", "4", "--max-new-tokens", "6",
                "--device", "cpu", "--out", str(tmp_path / "cmp"), "--json", home=home, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert [(s["checkpoint"], s["step"], s["accuracy"]) for s in summary] == [
        ("org/run:checkpoint-0", 0, 0.0),  # checkpoint-0 guesses wrong, checkpoint-1000 right: each loaded its own weights
        ("org/run:checkpoint-1000", 1000, 1.0),
    ]


def resolve_online(hf_cache: Path, spec: str, *, files: dict[str, bytes] | None, endpoint: str | None = None) -> subprocess.CompletedProcess:
    """``resolve(spec)`` in a fresh process against a hub emulator holding ``org/run`` with ``files``
    (or at ``endpoint`` when given); prints the specs, one a line."""
    from hub_emulator import HubEmulator, Repo

    code = f"from vlm_lab.checkpoints import resolve\nfor r in resolve({spec!r}): print(r.spec, r.step)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_TOKEN": "hf_reader", "HF_HUB_OFFLINE": "0", "HF_HOME": str(hf_cache.parent), "HF_HUB_DISABLE_TELEMETRY": "1"}
    with HubEmulator() as hub:
        hub.add_token("hf_reader", "alice", role="read")
        repo = hub.repos[("model", "org/run")] = Repo("model", "org/run", private=False, files=dict(files or {}))
        repo.commit("push checkpoints", [])
        env["HF_ENDPOINT"] = endpoint or hub.endpoint
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_online_a_hub_run_is_listed_from_the_hub(hf_cache):
    files = {f"checkpoint-{s}/{name}": b"{}" for s in (1000, 20, 300) for name in ("config.json", "model.safetensors")}
    files |= {"checkpoint-40/model.safetensors": b"x", "runs/checkpoint-5/config.json": b"{}", "config.json": b"{}", "nested/config.json": b"{}"}
    r = resolve_online(hf_cache, "org/run", files=files)  # nothing of it is cached: the hub's listing alone
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["org/run:checkpoint-20 20", "org/run:checkpoint-300 300", "org/run:checkpoint-1000 1000", "org/run None"]
    r = resolve_online(hf_cache, "org/run@main", files={k: v for k, v in files.items() if k != "config.json"})
    assert r.stdout.splitlines() == ["org/run@main:checkpoint-20 20", "org/run@main:checkpoint-300 300", "org/run@main:checkpoint-1000 1000"]


def test_online_an_unknown_repo_or_revision_is_the_hubs_answer(hf_cache):
    r = resolve_online(hf_cache, "org/nope", files=None)
    assert r.returncode != 0 and "cannot load 'org/nope'" in r.stderr and "the hub has no model 'org/nope' you can see" in r.stderr
    r = resolve_online(hf_cache, "org/run@v9", files=None)
    assert r.returncode != 0 and "the hub has no revision 'v9' of 'org/run'" in r.stderr


def test_online_an_unreachable_hub_lists_the_cached_snapshot(hf_cache, tiny_checkpoints):
    add_snapshot(hf_cache, "org/run", None, folders={f"checkpoint-{s}": tiny_checkpoints[0] for s in (500, 5)})
    r = resolve_online(hf_cache, "org/run", files=None, endpoint="http://127.0.0.1:9")  # nothing listens there
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["org/run:checkpoint-5 5", "org/run:checkpoint-500 500"]
    r = resolve_online(hf_cache, "org/other", files=None, endpoint="http://127.0.0.1:9")
    assert r.returncode != 0 and "cannot load 'org/other'" in r.stderr and "Connection refused" in r.stderr


def test_offline_a_hub_run_says_it_lists_only_what_the_cache_holds(run_repo):
    with pytest.warns(CachedListingWarning) as caught:
        refs = resolve("org/run@main")
    assert [r.step for r in refs] == [0, 250, 1000, None]  # still expanded: the warning only says what may be missing
    (message,) = [str(w.message) for w in caught]
    assert message.startswith("'org/run@main' is listed from the local Hugging Face cache (") and "not the hub (HF_HUB_OFFLINE=1)" in message
    assert "it holds checkpoint-0, checkpoint-250, checkpoint-1000 of main (commit " in message
    assert "it cannot tell whether the hub has more" in message
    assert "checkpoint-500 is cached without config.json (partly downloaded)" in message
    assert message.endswith("(hf download org/run --revision main --include 'checkpoint-*/*' --exclude '*/optimizer.pt') or run without HF_HUB_OFFLINE=1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve("org/run:checkpoint-250")  # one folder named: nothing to say
        resolve("org/run", expand=False)


def test_a_run_listed_online_once_is_checked_offline_against_that_list(hf_cache, tiny_checkpoints):
    files = {f"checkpoint-{s}/config.json": b"{}" for s in (0, 250, 1000)}
    assert resolve_online(hf_cache, "org/run", files=files).returncode == 0  # the hub's list, remembered by commit
    listings = json.loads((Path(os.environ["VLM_LAB_CACHE"]) / "hub-listings.json").read_text())
    ((key, listed),) = listings.items()
    assert key.startswith("org/run@") and listed == ["checkpoint-0", "checkpoint-250", "checkpoint-1000"]
    commit = key.split("@")[1]
    add_snapshot(hf_cache, "org/run", None, commit=commit, folders={f"checkpoint-{s}": tiny_checkpoints[0] for s in (0, 1000)})
    with pytest.warns(CachedListingWarning, match=r"it lacks checkpoint-250, which the hub listed at that commit;"):
        assert [r.step for r in resolve("org/run")] == [0, 1000]
    add_snapshot(hf_cache, "org/run", None, commit=commit, folders={"checkpoint-250": tiny_checkpoints[0]})  # now downloaded
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cache holds all the hub listed: nothing to warn about
        assert [r.step for r in resolve("org/run")] == [0, 250, 1000]


def test_cli_compare_of_a_partly_cached_hub_run_warns_in_one_line(tiny_checkpoints, tmp_path):
    home = tmp_path / "hf-home"
    add_snapshot(home / "hub", "org/run", None, folders={"checkpoint-0": tiny_checkpoints[0]})
    r = vlm_lab("compare", "org/run", "--data", "shapes:val:2", "--max-new-tokens", "2", "--device", "cpu",
                "--out", str(tmp_path / "cmp"), home=home, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    (line,) = [line for line in r.stderr.splitlines() if "listed from the local Hugging Face cache" in line]
    assert line.startswith("warning: 'org/run' is listed") and "it holds checkpoint-0 of main" in line


def test_offline_a_hub_run_leaves_out_a_checkpoint_cached_without_its_weights(hf_cache, tiny_checkpoints, tmp_path):
    """`hf download org/run --include '*/config.json'`, or a download cut short: config.json alone cannot be
    loaded offline, and failed the compare of the whole run."""
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_bytes((tiny_checkpoints[2] / "config.json").read_bytes())
    add_snapshot(hf_cache, "org/run", None, folders={"checkpoint-0": tiny_checkpoints[0], "checkpoint-250": tiny_checkpoints[1],
                                                    "checkpoint-500": config_only})  # fmt: skip
    with pytest.warns(CachedListingWarning) as caught:
        assert [r.spec for r in resolve("org/run")] == ["org/run:checkpoint-0", "org/run:checkpoint-250"]
    (message,) = [str(w.message) for w in caught]
    assert "it holds checkpoint-0, checkpoint-250 of main (commit " in message
    assert "; checkpoint-500 is cached without weights or tokenizer (partly downloaded); to compare every checkpoint, download them" in message
