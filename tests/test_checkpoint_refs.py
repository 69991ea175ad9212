"""Hub references against a real on-disk huggingface_hub cache: commits, fingerprints, errors.

The cache is laid out as huggingface_hub writes it (``models--org--name/{blobs,snapshots,refs}``)
from the tiny test checkpoints. In-process tests point huggingface_hub at it through
``huggingface_hub.constants.HF_HUB_CACHE`` (the value ``HF_HOME`` sets at import); the
CLI tests set ``HF_HOME`` for a real ``vlm-lab`` subprocess, as a user does.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlm_lab.checkpoints import fingerprint, parse_hub_ref, resolve
from vlm_lab.errors import CheckpointNotFoundError


def add_snapshot(cache: Path, repo_id: str, model: Path | None, *, ref: str | None = "main", folders: dict[str, Path] | None = None,
                 commit: str | None = None) -> str:
    """Store ``model``'s files (at the root) and each of ``folders``' (under its name) as one commit of
    ``repo_id`` (``commit``, else one made from the files): blobs by sha256, snapshot symlinks, ``refs/<ref>``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    files = {}
    for prefix, folder in ({"": model} if model else {}).items() | (folders or {}).items():
        files |= {f"{prefix}/{f.name}".lstrip("/"): f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    commit = commit or hashlib.sha1(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = repo / "blobs" / digests[name]
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        point_ref(cache, repo_id, ref, commit)
    return commit


def point_ref(cache: Path, repo_id: str, ref: str, commit: str) -> None:
    path = cache / f"models--{repo_id.replace('/', '--')}" / "refs" / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(commit)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty hub cache that huggingface_hub (offline, as in every test) reads in this process, and a
    vlm_lab cache of this test's own (what it remembers of the hub)."""
    from huggingface_hub import constants

    monkeypatch.setenv("VLM_LAB_CACHE", str(tmp_path / "vlm-lab-cache"))
    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_offline_fingerprint_follows_the_commit_the_revision_points_at(hf_cache, tiny_checkpoints):
    a = add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[0])
    b = add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[-1], ref="v1")
    main, v1 = parse_hub_ref("org/shapes"), parse_hub_ref("org/shapes@v1")
    at_a = fingerprint(main)
    assert fingerprint(v1) != at_a  # two names, two snapshots: never the same results
    point_ref(hf_cache, "org/shapes", "main", b)  # main moved to B (a later download)
    assert fingerprint(main) == fingerprint(v1) != at_a
    assert fingerprint(parse_hub_ref(f"org/shapes@{a}")) == at_a  # a commit id is already a commit
    assert fingerprint(parse_hub_ref("org/shapes:checkpoint-0")) != fingerprint(main)  # the subfolder counts


def test_fingerprint_refuses_a_revision_nobody_can_resolve(hf_cache, tiny_checkpoints):
    add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[0])
    for spec in ("org/shapes@dev", "org/never-downloaded"):  # neither the hub (offline) nor the cache knows it
        with pytest.raises(CheckpointNotFoundError) as info:
            fingerprint(parse_hub_ref(spec))
        message = str(info.value)
        assert f"cannot load {spec!r}" in message and str(hf_cache) in message and "HF_HUB_OFFLINE" in message
        assert "\n" not in message


def test_org_name_is_a_hub_id_only_where_the_cache_has_it_offline(hf_cache, tiny_checkpoints, tmp_path, monkeypatch):
    add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[0])
    work = tmp_path / "elsewhere"
    (work / "runs").mkdir(parents=True)
    monkeypatch.chdir(work)
    (ref,) = resolve("org/shapes")
    assert ref.repo_id == "org/shapes" and not ref.is_local
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve("checkpoints/shapes")  # meant as a folder, run from the wrong place
    message = str(info.value)
    assert message.startswith("cannot load 'checkpoints/shapes': ")
    assert f"no local folder {str(work / 'checkpoints' / 'shapes')!r} (relative to {os.getcwd()}" in message
    assert "found in" in message and "runs" in message  # what is there instead
    assert "not in the local Hugging Face cache" in message and "HF_HUB_OFFLINE" in message
    assert "huggingface.co" not in message and "\n" not in message
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve("org/shapes@dev")  # explicitly a hub id: no talk of local folders
    assert "revision 'dev' of 'org/shapes' is not in the local Hugging Face cache" in str(info.value)
    assert "local folder" not in str(info.value)
    (work / "org").mkdir()
    (work / "org" / "shapes").symlink_to(tiny_checkpoints[0])
    (local,) = resolve("org/shapes")  # a folder of that name wins over the hub id
    assert local.is_local


def vlm_lab(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "vlm_lab.cli", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_cli_offline_compare_is_not_served_the_old_snapshots_results(tiny_checkpoints, tmp_path):
    home = tmp_path / "hf-home"
    a = add_snapshot(home / "hub", "org/shapes", tiny_checkpoints[0])
    b = add_snapshot(home / "hub", "org/shapes", tiny_checkpoints[-1], ref=None)
    args = ("compare", "org/shapes", "--data", "shapes:val:6", "--batch-size", "3", "--max-new-tokens", "6",
            "--device", "cpu", "--out", str(tmp_path / "cmp"), "--json")  # fmt: skip
    first = vlm_lab(*args, home=home, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)[0]["accuracy"] == 0.0  # checkpoint-0 guesses wrong

    def pinned() -> str:  # the commit the saved results say "org/shapes" (main) was
        return json.loads((tmp_path / "cmp" / "summary.json").read_text())["checkpoints"][0]["revision"]

    assert pinned() == a
    point_ref(home / "hub", "org/shapes", "main", b)  # the same name now holds checkpoint-1000's weights
    second = vlm_lab(*args, home=home, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)[0]["accuracy"] == 1.0 and pinned() == b


def test_cli_folder_given_from_the_wrong_place_says_both_readings(tiny_dir, tmp_path):
    # (the embedded default, checkpoints/shapes, gets its own message: how to build it, tests/test_cli_first_run.py)
    r = vlm_lab("compare", "checkpoints/mine", "--out", str(tmp_path / "cmp"), home=tmp_path / "hf-home", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"no local folder {str(tmp_path / 'checkpoints' / 'mine')!r}" in r.stderr
    assert "not in the local Hugging Face cache" in r.stderr and "couldn't connect" not in r.stderr


def test_online_fingerprint_is_the_hub_commit_and_the_same_offline(hf_cache, tmp_path):
    from hub_emulator import HubEmulator, Repo

    code = "from vlm_lab.checkpoints import fingerprint, parse_hub_ref; print(fingerprint(parse_hub_ref('org/shapes')))"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    with HubEmulator() as hub:
        hub.add_token("hf_reader", "alice", role="read")
        repo = hub.repos[("model", "org/shapes")] = Repo("model", "org/shapes", private=False)
        repo.commit("upload weights", [])
        env |= {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "hf_reader", "HF_HUB_OFFLINE": "0",
                "HF_HOME": str(hf_cache.parent), "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip

        def online() -> str:
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            return r.stdout.strip()

        first = online()
        # the hub's answer is remembered in the cache: offline, the same commit and the same fingerprint
        assert (hf_cache / "models--org--shapes" / "refs" / "main").read_text() == repo.sha
        assert fingerprint(parse_hub_ref("org/shapes")) == first
        repo.commit("new weights", [])
        assert online() != first  # online, the hub's current commit wins over the cached one


def test_model_cache_asks_again_which_commit_main_is_after_its_refresh_time(hf_cache, tiny_checkpoints):
    from vlm_lab.model_cache import ModelCache

    a = add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[0])
    b = add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[-1], ref=None)
    main, pinned = parse_hub_ref("org/shapes"), parse_hub_ref(f"org/shapes@{a}")
    fresh, patient = ModelCache(hub_refresh_s=0), ModelCache(hub_refresh_s=3600)
    at_a = fresh.fingerprint(main)
    assert patient.fingerprint(main) == at_a == fresh.fingerprint(pinned) == patient.fingerprint(pinned)
    point_ref(hf_cache, "org/shapes", "main", b)  # main moved on (a long-running Space must notice)
    assert fresh.fingerprint(main) == fingerprint(main) != at_a
    assert patient.fingerprint(main) == at_a  # within its refresh time: not asked again
    (hf_cache / "models--org--shapes" / "refs" / "main").unlink()  # now nobody knows main
    assert fresh.fingerprint(main) == fingerprint(parse_hub_ref(f"org/shapes@{b}"))  # keeps serving the last commit
    with pytest.raises(CheckpointNotFoundError):
        ModelCache(hub_refresh_s=0).fingerprint(main)  # never resolved: nothing to fall back on
    assert fresh.fingerprint(pinned) == at_a  # a commit never moves


def test_model_cache_refuses_a_negative_refresh_time():
    from vlm_lab.errors import ConfigError
    from vlm_lab.model_cache import ModelCache

    with pytest.raises(ConfigError, match="hub_refresh_s"):
        ModelCache(hub_refresh_s=-1)


def test_model_cache_loads_the_commit_its_fingerprint_names_not_where_main_is_by_then(hf_cache, tiny_checkpoints):
    import torch

    from vlm_lab.model_cache import ModelCache
    from vlm_lab.models import load_model

    a = add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[0])
    b = add_snapshot(hf_cache, "org/shapes", tiny_checkpoints[-1], ref=None)
    cache = ModelCache(hub_refresh_s=3600)
    at_a = cache.fingerprint(parse_hub_ref("org/shapes"))  # main is at A now ...
    point_ref(hf_cache, "org/shapes", "main", b)
    loaded = cache.get("org/shapes", device="cpu")  # ... and has moved on before the load: A is loaded, as named
    for name, want in load_model(tiny_checkpoints[0], device="cpu").model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], want), name
    assert loaded.ref.revision == a and cache.fingerprint(parse_hub_ref("org/shapes")) == at_a


@pytest.mark.parametrize(
    ("address", "spec"),
    [
        ("https://huggingface.co/org/run", "org/run"),
        ("https://hf.co/org/run/", "org/run"),
        ("https://huggingface.co/org/run/tree/main", "org/run"),
        ("https://huggingface.co/org/run/tree/v1.0/checkpoint-500/", "org/run@v1.0:checkpoint-500"),
        ("https://huggingface.co/org/run/tree/main/runs/ckpt.v2", "org/run:runs/ckpt.v2"),  # a folder, dot and all
        ("https://huggingface.co/org/run/blob/main/checkpoint-500/config.json", "org/run:checkpoint-500"),  # a file: its folder
        ("https://huggingface.co/org/run/resolve/main/model.safetensors", "org/run"),
        ("hf://org/run", "org/run"),
        ("hf://models/org/run@v1.0/checkpoint-0", "org/run@v1.0:checkpoint-0"),
        ("hf://org/run/checkpoint-0/", "org/run:checkpoint-0"),
    ],
)
def test_a_hub_address_pasted_from_a_browser_says_how_to_write_it(address, spec):
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve(address)
    assert str(info.value) == f"{address!r} is a hub address, not a reference vlm_lab reads; write it as {spec}"
