"""Publishing large files through Xet, the path huggingface_hub takes by default with hf_xet installed.

The runs leave Xet on (``HF_HUB_DISABLE_XET=0``) and the emulator acts as the CAS server
(tests/hub_emulator_xet.py): the real hf_xet chunks the files, uploads xorbs and a shard, and the
commit's ``lfsFile`` entries are accepted only for files a shard described and the stored xorbs rebuild.
"""

from __future__ import annotations

import pytest

from test_publish import SPACE, fail_text, hub, run_publish, space_dir  # noqa: F401 (fixtures)
from test_publish_lfs import STEPS, WEIGHTS, lfs_ops, retrain, run_dir  # noqa: F401 (fixtures)

XET = {"HF_HUB_DISABLE_XET": "0"}
BIG = "examples/answers.csv"  # over 10 MiB: the Hub stores it with LFS/Xet whatever its name


@pytest.fixture
def xet_hub(hub):
    hub.xet = True
    return hub


@pytest.fixture
def big_file(space_dir):
    big = space_dir / BIG
    big.parent.mkdir()
    big.write_bytes(b"question,answer\n" + b"".join(b"what is %d squared,%d\n" % (i, i * i) for i in range(600_000)))
    assert big.stat().st_size > 10 * 1024 * 1024
    return big


def sent(hub, since: int = 0) -> list[str]:
    """What reached the CAS after request ``since``: "xorb" or "shard", once per stored body."""
    return [u["kind"] for u in hub.xet_uploads(since) if u["status"] in (200, 201)]


def test_a_first_publish_sends_the_large_files_through_xet(xet_hub, space_dir, run_dir, big_file):
    hub = xet_hub
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir, env=XET)
    assert r.returncode == 0, fail_text(r)
    local = {WEIGHTS.format(s): run_dir / f"checkpoint-{s}" / "model.safetensors" for s in STEPS} | {BIG: big_file}
    assert sorted(lfs_ops(hub)) == sorted(local), "weights (.gitattributes) and the big file are lfsFile entries"
    repo = hub.space(SPACE)
    for path, src in local.items():
        assert repo.files[path] == src.read_bytes(), path
    assert "xorb" in sent(hub) and "shard" in sent(hub)
    assert not [q for q in hub.requests if "/info/lfs/" in q["path"] or q["path"].startswith("/lfs-storage/")], \
        "nothing went through the LFS batch API"
    stored = sum(len(c) for chunks in hub.xorbs.values() for c in chunks)
    assert stored >= sum(p.stat().st_size for p in local.values()), "every byte reached the CAS in xorbs"
    assert not [q for q in hub.requests if hub.token in q["path"]], "no token in an upload URL"


def test_a_republish_of_unchanged_files_sends_nothing_to_the_cas(xet_hub, space_dir, run_dir, big_file):
    hub = xet_hub
    assert run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir, env=XET).returncode == 0
    commits, seen = len(hub.space(SPACE).commits), len(hub.requests)
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir, env=XET)
    assert r.returncode == 0, fail_text(r)
    assert sent(hub, seen) == [] and not [q for q in hub.requests[seen:] if "xet-write-token" in q["path"]]
    assert len(hub.space(SPACE).commits) == commits, "nothing changed, nothing committed"


def test_a_cas_that_fails_mid_upload_says_xet_failed_and_commits_nothing(xet_hub, space_dir, run_dir, big_file):
    hub = xet_hub
    hub.xet_drop = 1000  # every xorb upload is cut mid-body
    env = XET | {"HF_XET_CLIENT_RETRY_MAX_ATTEMPTS": "2", "HF_XET_CLIENT_RETRY_BASE_DELAY": "10ms"}
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--retries", "1", checkpoints=run_dir, env=env)
    assert r.returncode == 5, fail_text(r)
    assert "Traceback" not in r.stderr, fail_text(r)
    assert "through Xet storage failed" in r.stderr and "HF_HUB_DISABLE_XET=1" in r.stderr, fail_text(r)
    assert "nothing was committed" in r.stderr, fail_text(r)
    assert [u["status"] for u in hub.xet_uploads() if u["kind"] == "xorb"][:1] == ["dropped"]
    assert len(hub.space(SPACE).commits) == 1 and BIG not in hub.space(SPACE).files, "nothing committed"


def test_the_emulator_refuses_an_lfs_file_no_shard_described(xet_hub, monkeypatch):
    from huggingface_hub import CommitOperationAdd, HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # tests run offline; this client talks to the emulator only

    api = HfApi(endpoint=xet_hub.endpoint, token=xet_hub.token)
    api.create_repo("alice/weights")
    op = CommitOperationAdd(path_in_repo="model.safetensors", path_or_fileobj=b"\1" * 1000)
    op._upload_mode, op._is_uploaded = "lfs", True  # as if uploaded through Xet: the client skips the upload
    with pytest.raises(HfHubHTTPError, match="LFS pointer pointed to a file that does not exist"):
        api.create_commit("alice/weights", [op], commit_message="x")
    assert [f.path for f in api.list_repo_tree("alice/weights")] == [".gitattributes"]


def test_the_emulator_refuses_a_shard_naming_a_xorb_it_does_not_hold(xet_hub, space_dir, big_file):
    import httpx2

    hub = xet_hub
    assert run_publish(hub, SPACE, "--space-dir", str(space_dir), env=XET).returncode == 0
    shard, xorbs = hub.shards[0], dict(hub.xorbs)
    hub.xorbs.clear()  # as if the client had skipped its xorb uploads
    token = httpx2.get(f"{hub.endpoint}/api/spaces/{SPACE}/xet-write-token/main",
                       headers={"authorization": f"Bearer {hub.token}"}).json()["accessToken"]
    r = httpx2.post(f"{hub.endpoint}/xet-cas/v2/shards", content=shard, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 400 and "never uploaded" in r.text, r.text
    hub.xorbs.update(xorbs)
    r = httpx2.post(f"{hub.endpoint}/xet-cas/v2/shards", content=shard, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.text.splitlines()[-1] == '{"type": "result"}', r.text


@pytest.mark.parametrize("route", ["xorb-grants", "shards"])
def test_a_xet_error_that_names_no_url_still_says_xet_failed(xet_hub, space_dir, run_dir, big_file, route):
    """hf_xet's errors are plain ConnectionError/RuntimeError; behind a proxy that answers HTML they say
    "error decoding response body, domain: no-url" or "Invalid response": no URL, no word "xet"."""
    hub = xet_hub
    hub.xet_html = route
    env = XET | {"HF_XET_CLIENT_RETRY_MAX_ATTEMPTS": "2", "HF_XET_CLIENT_RETRY_BASE_DELAY": "10ms"}
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--retries", "1", checkpoints=run_dir, env=env)
    assert r.returncode == 5, fail_text(r)
    assert "Traceback" not in r.stderr and "did not answer" not in r.stderr, fail_text(r)
    assert "through Xet storage failed" in r.stderr and "HF_HUB_DISABLE_XET=1" in r.stderr, fail_text(r)
    assert ("domain: no-url" if route == "xorb-grants" else "Invalid response") in r.stderr, "hf_xet's own words"
    assert len(hub.space(SPACE).commits) == 1 and BIG not in hub.space(SPACE).files, "nothing committed"


def test_a_republish_after_one_change_sends_only_what_changed(xet_hub, space_dir, run_dir, big_file):
    """One line of the big file and one checkpoint's weights change: the commit updates those two files only,
    the CAS gets the changed chunks (not the whole big file again), and the Space serves the new bytes."""
    hub = xet_hub
    assert run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir, env=XET).returncode == 0
    head, seen = hub.space(SPACE).commits[-1], len(hub.requests)
    data = bytearray(big_file.read_bytes())
    data[len(data) // 2:len(data) // 2 + 6] = b"CHANGE"
    big_file.write_bytes(bytes(data))
    changed = run_dir / f"checkpoint-{STEPS[-1]}" / "model.safetensors"
    retrain(changed)
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir, env=XET)
    assert r.returncode == 0, fail_text(r)
    repo = hub.space(SPACE)
    assert repo.commits[-1] is not head and sorted(lfs_ops(hub)) == sorted([BIG, WEIGHTS.format(STEPS[-1])])
    assert [op for op in repo.commits[-1]["ops"] if op[0] != "lfsFile"] == [], "no other file in the commit"
    assert repo.files[BIG] == bytes(data) and repo.files[WEIGHTS.format(STEPS[-1])] == changed.read_bytes()
    for s in STEPS[:-1]:
        assert repo.files[WEIGHTS.format(s)] == (run_dir / f"checkpoint-{s}" / "model.safetensors").read_bytes()
    xorb_bytes = sum(u["bytes"] for u in hub.xet_uploads(seen) if u["kind"] == "xorb" and u["status"] in (200, 201))
    assert 0 < xorb_bytes < big_file.stat().st_size // 4, f"{xorb_bytes} bytes of xorbs: the big file was sent again"
