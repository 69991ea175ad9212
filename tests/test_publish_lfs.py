"""Publishing large files (weights) through Git LFS, as the Hub takes them.

The Hub stores ``*.safetensors``/``*.bin`` (its .gitattributes) and any file over 10 MiB with LFS:
preupload says "lfs", the client asks the LFS batch API where to send each object, PUTs the bytes
there (nothing for an object the repo already has), and the commit names them by sha256
(``lfsFile``). The emulator (tests/hub_emulator.py) speaks that protocol: the runs set
``HF_HUB_DISABLE_XET=1``, the path huggingface_hub takes without hf_xet (the Hub's "LFS bridge").
The default path, Xet, is tested in test_publish_xet.py.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from test_publish import SPACE, fail_text, hub, run_publish, space_dir  # noqa: F401 (fixtures)

WEIGHTS = "checkpoints/shapes/checkpoint-{}/model.safetensors"
STEPS = (0, 250, 500, 750, 1000)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lfs_sent(hub, since: int = 0) -> list[str]:
    """The oids of the LFS objects whose bytes reached the emulator's storage after request ``since``."""
    return [u["oid"] for u in hub.lfs_uploads(since) if u["status"] == 200]


def lfs_ops(hub) -> list[str]:
    return [path for op, path in hub.space(SPACE).commits[-1]["ops"] if op == "lfsFile"]


@pytest.fixture
def run_dir(tiny_dir, tmp_path) -> Path:
    d = tmp_path / "run"
    shutil.copytree(tiny_dir, d)
    return d


def retrain(weights: Path) -> None:
    """New weights for one checkpoint: one tensor nudged, the file still a valid safetensors."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.5
    save_file(tensors, weights, metadata={"format": "pt"})


def test_a_first_publish_sends_the_weights_through_lfs(hub, space_dir, run_dir):
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir)
    assert r.returncode == 0, fail_text(r)
    repo = hub.space(SPACE)
    local = {WEIGHTS.format(s): run_dir / f"checkpoint-{s}" / "model.safetensors" for s in STEPS}
    assert sorted(lfs_ops(hub)) == sorted(local), "weights are committed as LFS pointers, not inline"
    assert sorted(lfs_sent(hub)) == sorted(sha256(p) for p in local.values()), "each object uploaded once"
    for path, src in local.items():
        assert repo.files[path] == src.read_bytes()
    assert not any(p.endswith(".json") for p in lfs_ops(hub)), "small text files stay regular"
    assert not [q for q in hub.requests if hub.token in q["path"]], "no token in an upload URL"


def test_a_republish_with_unchanged_weights_sends_no_lfs_bytes(hub, space_dir, run_dir):
    assert run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir).returncode == 0
    seen = len(hub.requests)
    (space_dir / "app.py").write_text("print('hello again')\n")  # a change elsewhere: a commit, no weights
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir)
    assert r.returncode == 0, fail_text(r)
    assert hub.space(SPACE).commits[-1]["ops"] == [["file", "app.py"]]
    assert lfs_sent(hub, seen) == []
    assert not [q for q in hub.requests[seen:] if "/info/lfs/" in q["path"]]


def test_a_republish_with_one_checkpoint_retrained_uploads_only_its_weights(hub, space_dir, run_dir):
    assert run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir).returncode == 0
    seen = len(hub.requests)
    weights = run_dir / "checkpoint-500" / "model.safetensors"
    retrain(weights)
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir)
    assert r.returncode == 0, fail_text(r)
    assert lfs_sent(hub, seen) == [sha256(weights)]
    assert lfs_ops(hub) == [WEIGHTS.format(500)]
    assert hub.space(SPACE).files[WEIGHTS.format(500)] == weights.read_bytes()

    # Weights the repo already stores (checkpoint-250's, copied over checkpoint-750's): committed, not re-sent.
    seen = len(hub.requests)
    shutil.copy(run_dir / "checkpoint-250" / "model.safetensors", run_dir / "checkpoint-750" / "model.safetensors")
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir)
    assert r.returncode == 0, fail_text(r)
    assert lfs_ops(hub) == [WEIGHTS.format(750)] and lfs_sent(hub, seen) == []


def test_an_upload_lost_once_is_sent_again_by_the_client(hub, space_dir, run_dir):
    oid = sha256(run_dir / "checkpoint-500" / "model.safetensors")
    hub.lfs_drop = {oid: 1}
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir)
    assert r.returncode == 0, fail_text(r)
    puts = [q["status"] for q in hub.requests if q["method"] == "PUT" and q["path"].endswith(oid)]
    assert puts == ["dropped", 200]
    assert hub.space(SPACE).files[WEIGHTS.format(500)] == (run_dir / "checkpoint-500" / "model.safetensors").read_bytes()


def test_an_upload_that_keeps_failing_says_so_and_a_run_again_sends_only_what_is_missing(hub, space_dir, run_dir):
    weights = run_dir / "checkpoint-500" / "model.safetensors"
    oid = sha256(weights)
    hub.lfs_drop = {oid: 6}  # every try of huggingface_hub's own backoff (1 + 5 retries)
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--retries", "1", checkpoints=run_dir)
    assert r.returncode == 5, fail_text(r)
    assert "Traceback" not in r.stderr, fail_text(r)
    assert WEIGHTS.format(500) in r.stderr and "run the same command again" in r.stderr, fail_text(r)
    assert "nothing was committed" in r.stderr and "not sent again" in r.stderr, fail_text(r)
    assert not re.search(r"sig=[0-9a-f]", r.stdout + r.stderr), "a presigned upload URL is a credential: never shown"
    assert len(hub.space(SPACE).commits) == 1, "nothing committed: the Space never points at missing weights"

    seen = len(hub.requests)
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir)
    assert r.returncode == 0, fail_text(r)
    assert lfs_sent(hub, seen) == [oid], "the objects uploaded before the failure are not sent again"
    assert hub.space(SPACE).files[WEIGHTS.format(500)] == weights.read_bytes()


def test_a_failed_xet_upload_is_not_called_a_hub_that_did_not_answer(hub, space_dir, run_dir):
    """With hf_xet installed (the default), weights go through Xet; the emulator refuses its token (501)."""
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--retries", "1", env={"HF_HUB_DISABLE_XET": "0"},
                    checkpoints=run_dir)
    assert r.returncode == 5, fail_text(r)
    assert "did not answer" not in r.stderr, fail_text(r)
    assert "through Xet storage failed" in r.stderr and "HF_HUB_DISABLE_XET=1" in r.stderr, fail_text(r)
    assert "nothing was committed" in r.stderr and len(hub.space(SPACE).commits) == 1, fail_text(r)


def test_a_file_over_10_mib_goes_through_lfs_whatever_its_name(hub, space_dir):
    big = space_dir / "examples" / "answers.csv"
    big.parent.mkdir()
    big.write_bytes(b"question,answer\n" + b"what color,red\n" * (11 * 1024 * 1024 // 15))
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir))
    assert r.returncode == 0, fail_text(r)
    assert lfs_ops(hub) == ["examples/answers.csv"]
    assert hub.space(SPACE).files["examples/answers.csv"] == big.read_bytes()


def test_weights_sent_in_parts_arrive_whole(hub, space_dir, run_dir):
    hub.multipart_chunk = 200_000  # the batch API answers multipart for objects larger than this
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir)
    assert r.returncode == 0, fail_text(r)
    assert [q for q in hub.requests if "/part/" in q["path"]], "uploaded in parts"
    for s in STEPS:
        assert hub.space(SPACE).files[WEIGHTS.format(s)] == (run_dir / f"checkpoint-{s}" / "model.safetensors").read_bytes()


# -- the emulator holds the Hub's rules -----------------------------------------------------

def test_the_emulator_refuses_an_lfs_pointer_to_an_object_never_uploaded(hub, monkeypatch):
    from huggingface_hub import CommitOperationAdd, HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # tests run offline; this client talks to the emulator only

    api = HfApi(endpoint=hub.endpoint, token=hub.token)
    api.create_repo("alice/weights")
    op = CommitOperationAdd(path_in_repo="model.safetensors", path_or_fileobj=b"\0" * 1000)
    op._upload_mode, op._is_uploaded = "lfs", True  # as if uploaded: the client skips the upload step
    with pytest.raises(HfHubHTTPError, match="LFS pointer pointed to a file that does not exist"):
        api.create_commit("alice/weights", [op], commit_message="x")
    assert [f.path for f in api.list_repo_tree("alice/weights")] == [".gitattributes"]
