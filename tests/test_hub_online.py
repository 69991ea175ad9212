"""Hub references online: the real huggingface_hub client (and transformers' downloads) against the hub
emulator, in a fresh process (``HF_ENDPOINT`` is read at import), with the tiny checkpoints as the repo's files.

``org/run`` has two commits: the first (tagged ``v1``) holds checkpoint-0 and checkpoint-250, the second
(main) adds checkpoint-500 and checkpoint-1000 with checkpoint-0's weights replaced by checkpoint-1000's.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from test_checkpoint_refs import hf_cache  # noqa: F401 - a fixture
from test_hub_cache import hub_with_shards, sharded  # noqa: F401 - fixtures

from vlm_lab.models import load_model

WEIGHT_SUM = "sum(float(t.double().sum()) for t in m.model.state_dict().values())"
RETRY = "try again (a file cut short is downloaded again from its start)"  # the end of a load failed by the hub


def files_of(folder: Path, prefix: str) -> dict[str, bytes]:
    return {f"{prefix}/{f.name}": f.read_bytes() for f in folder.iterdir() if f.is_file()}


@pytest.fixture
def hub(tiny_checkpoints):
    from hub_emulator import HubEmulator, Repo

    ckpt = dict(zip((0, 250, 500, 750, 1000), tiny_checkpoints))
    with HubEmulator() as hub:
        hub.add_token("hf_reader", "alice", role="read")
        repo = hub.repos[("model", "org/run")] = Repo("model", "org/run", private=False)
        repo.files = files_of(ckpt[0], "checkpoint-0") | files_of(ckpt[250], "checkpoint-250")
        repo.refs["v1"] = repo.commit("first checkpoints", [])
        repo.files |= files_of(ckpt[1000], "checkpoint-0") | files_of(ckpt[500], "checkpoint-500") | files_of(ckpt[1000], "checkpoint-1000")
        repo.commit("more checkpoints", [])
        yield hub


def online(hub, hf_cache, code: str, *args: str) -> subprocess.CompletedProcess:
    """``code`` (with ``args`` as ``sys.argv[1:]``) in a fresh process whose huggingface_hub talks to ``hub`` and caches under ``hf_cache``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "hf_reader", "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(hf_cache.parent), "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)


def load_error(hub, hf_cache, spec: str) -> str:
    r = online(hub, hf_cache, f"from vlm_lab.models import load_model; load_model({spec!r}, device='cpu')")
    assert r.returncode != 0
    (line,) = [line for line in r.stderr.splitlines() if line.startswith("vlm_lab.errors.CheckpointNotFoundError")]
    return line.split(": ", 1)[1]


def test_online_a_checkpoint_loads_at_the_revision_named(hub, hf_cache, tiny_checkpoints):
    code = f"from vlm_lab.models import load_model\nfor s in ('org/run@v1:checkpoint-0', 'org/run:checkpoint-0'):\n m = load_model(s, device='cpu'); print({WEIGHT_SUM})"
    r = online(hub, hf_cache, code)
    assert r.returncode == 0, r.stderr
    at_v1, at_main = map(float, r.stdout.split())
    for got, folder in ((at_v1, tiny_checkpoints[0]), (at_main, tiny_checkpoints[-1])):  # v1's weights, then main's
        m = load_model(folder, device="cpu")
        assert got == eval(WEIGHT_SUM)


def test_online_a_run_expands_to_the_folders_of_the_revision_named(hub, hf_cache):
    r = online(hub, hf_cache, "from vlm_lab.checkpoints import resolve\nfor s in ('org/run@v1', 'org/run'): print(*[r.step for r in resolve(s)])")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["0 250", "0 250 500 1000"]


def test_online_a_missing_subfolder_lists_the_hubs_folders_with_a_config(hub, hf_cache):
    message = load_error(hub, hf_cache, "org/run@v1:checkpoint-500")  # on main, not at v1
    assert message.startswith("cannot load 'org/run@v1:checkpoint-500': the hub has 'org/run' at v1 (commit ")
    assert message.endswith("but no checkpoint-500/config.json; its folders with a config.json: checkpoint-0, checkpoint-250; name one, e.g. org/run@v1:checkpoint-250")
    assert "model_type" not in message  # transformers' reading: an empty config without a model_type
    message = load_error(hub, hf_cache, "org/run:/checkpoint-50/")
    assert "the hub has 'org/run' at main (commit " in message and "but no checkpoint-50/config.json" in message
    assert "checkpoint-0, checkpoint-250, checkpoint-500, checkpoint-1000; name one, e.g. org/run:checkpoint-0" in message
    message = load_error(hub, hf_cache, "org/run@v9:checkpoint-0")
    assert message == "cannot load 'org/run@v9:checkpoint-0': the hub has no revision 'v9' of 'org/run'"


def test_the_emulators_file_list_is_the_revisions(hub, hf_cache):
    code = "from huggingface_hub import HfApi\nfor rev in ('v1', 'main'): print(len(HfApi().list_repo_files('org/run', revision=rev)))"
    r = online(hub, hf_cache, code)
    assert r.returncode == 0, r.stderr
    v1, main = map(int, r.stdout.split())
    assert main == v1 * 2  # four checkpoint folders of the same files against two


def test_compare_asks_the_hub_for_a_revisions_commit_once_not_per_checkpoint(hub, hf_cache, tmp_path):
    """`vlm-lab compare org/run:checkpoint-0 org/run:checkpoint-500 ...` asked the hub for main's commit once
    per checkpoint folder (a run's expansion pins its folders to one commit already)."""
    refs = [f"org/run:checkpoint-{n}" for n in (0, 250, 500, 1000)]
    code = ("import sys\nfrom vlm_lab.cli import main\n"
            f"sys.exit(main(['compare', *{refs!r}, '--data', 'shapes:val:2', '--json', '--out', {str(tmp_path / 'out')!r}]))")
    r = online(hub, hf_cache, code)
    assert r.returncode == 0, r.stderr
    asked = [q["path"] for q in hub.requests if q["path"].startswith("/api/models/org/run") and "/tree/" not in q["path"]]
    assert len(asked) == 1, asked  # the compare pins main once; the model cache loads that commit without asking


# Run in a process of its own (see ``online``): a hub load (thread "hub load") whose weights the emulator holds
# mid-download, then, in the main thread, a load of a local checkpoint, watched: a wait for the build turn ends it
# at once ("waited for ..."), where before it waited for the download, or for ever had the download hung.
LOAD_BESIDE_A_DOWNLOAD = """
import pathlib, sys, threading, time
from vlm_lab.models import load_model
from vlm_lab.model_construction import watching
spec, local, held, release = sys.argv[1:]
failed = []
def load_hub():
    try:
        load_model(spec, device='cpu')
    except BaseException as e:
        failed.append(e)
hub_load = threading.Thread(target=load_hub, name='hub load')
hub_load.start()
while not pathlib.Path(held).exists() and hub_load.is_alive():
    time.sleep(0.01)
def waited(building):
    raise RuntimeError(f'waited for the build of {building.name if building else None!r}')
try:
    with watching(waiting=waited, began=lambda: None):
        load_model(local, device='cpu')
    print('local loaded')
finally:
    pathlib.Path(release).touch()
    hub_load.join()
print(*failed or ['hub loaded'])
"""


@pytest.fixture
def hub_with_bins(tiny_checkpoints):
    """``org/bins``: checkpoint-1000 as torch pickles only (no safetensors), in ``single/`` as pytorch_model.bin
    and in ``sharded/`` as three shards with their pytorch_model.bin.index.json."""
    import torch
    from hub_emulator import HubEmulator, Repo
    from safetensors.torch import load_file

    def pickled(tensors: dict) -> bytes:
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        return buffer.getvalue()

    folder = tiny_checkpoints[-1]
    others = {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file() and not f.name.endswith(".safetensors")}
    tensors = load_file(folder / "model.safetensors")
    names = sorted(tensors)
    shards = {f"pytorch_model-0000{i + 1}-of-00003.bin": names[i::3] for i in range(3)}
    index = {"metadata": {}, "weight_map": {n: shard for shard, part in shards.items() for n in part}}
    files = {f"single/{n}": data for n, data in others.items()} | {"single/pytorch_model.bin": pickled(tensors)}
    files |= {f"sharded/{n}": data for n, data in others.items()} | {"sharded/pytorch_model.bin.index.json": json.dumps(index).encode()}
    files |= {f"sharded/{shard}": pickled({n: tensors[n] for n in part}) for shard, part in shards.items()}
    with HubEmulator() as hub:
        hub.add_token("hf_reader", "alice", role="read")
        repo = hub.repos[("model", "org/bins")] = Repo("model", "org/bins", private=False)
        repo.files = files
        repo.commit("torch pickles", [])
        yield hub


@pytest.mark.parametrize("spec", ["org/run:checkpoint-0", "org/sharded", "org/bins:single", "org/bins:sharded"])
def test_a_hub_download_does_not_hold_other_threads_loads(spec, request, hf_cache, tiny_checkpoints, tmp_path):
    """The weights of a hub reference are downloaded before its build turn (``model_construction``): another
    thread's load of a local checkpoint goes on while they download, and no file is downloaded twice. Torch
    pickles too (a repo without safetensors), which were downloaded in the turn."""
    repo_id, _, sub = spec.partition(":")
    hub = request.getfixturevalue({"org/run": "hub", "org/sharded": "hub_with_shards", "org/bins": "hub_with_bins"}[repo_id])
    weights = sorted(p for p in hub.repos[("model", repo_id)].files if p.startswith(sub) and p.endswith((".safetensors", ".bin")))
    held_file = weights[-1]  # the last file of the weights (a shard's after the others)
    held, release = tmp_path / "held", tmp_path / "release"

    def hold(method, path):  # in the emulator's thread: the answer waits until the other load is done
        if method == "GET" and _repo_file(path) == held_file and not held.exists():
            held.touch()
            deadline = time.monotonic() + 120  # only so a broken test ends; released long before when it works
            while not release.exists() and time.monotonic() < deadline:
                time.sleep(0.01)

    hub.on_request = hold
    r = online(hub, hf_cache, LOAD_BESIDE_A_DOWNLOAD, spec, str(tiny_checkpoints[1]), str(held), str(release))
    assert held.exists(), r.stderr  # the hub load's weights were in flight...
    assert r.returncode == 0, r.stderr  # ...and the local load did not wait for their build turn
    assert r.stdout.splitlines() == ["local loaded", "hub loaded"]
    downloads = Counter(_repo_file(q["path"]) for q in hub.requests if q["method"] == "GET" and "/resolve/" in q["path"])
    assert downloads[held_file] == 1 and all(n == 1 for n in downloads.values()), downloads
    asked = Counter(_repo_file(q["path"]) for q in hub.requests if q["method"] == "HEAD" and _repo_file(q["path"]) in weights)
    assert asked == dict.fromkeys(weights, 1), asked  # from_pretrained, in its turn, asked the hub nothing more of them


def _repo_file(path: str) -> str:
    """``checkpoint-0/model.safetensors`` of ``/org/run/resolve/<revision or commit>/checkpoint-0/model.safetensors``."""
    return path.partition("/resolve/")[2].partition("/")[2]


def test_online_a_hub_checkpoint_without_weights_says_so(hub, hf_cache):
    repo = hub.repos[("model", "org/run")]
    del repo.files["checkpoint-500/model.safetensors"]  # the head's files, edited in place
    message = load_error(hub, hf_cache, "org/run:checkpoint-500")
    assert message == "cannot load 'org/run:checkpoint-500': org/run does not appear to have a file named pytorch_model.bin or model.safetensors"


def test_online_a_weights_request_cut_off_before_the_build_is_tried_again_by_the_load(hub, hf_cache, tiny_checkpoints):
    """The download before the build turn fails (the hub drops its first request for the weights): the load's own
    from_pretrained asks again, and loads. Before, that one dropped request failed the load."""
    def cut_off(method, path):
        if _repo_file(path) == "checkpoint-500/model.safetensors" and not cut:
            cut.append(path)
            hub.drop[path] = 1

    cut: list[str] = []
    hub.on_request = cut_off
    r = online(hub, hf_cache, f"from vlm_lab.models import load_model\nm = load_model('org/run:checkpoint-500', device='cpu'); print({WEIGHT_SUM})")
    assert r.returncode == 0, r.stderr
    m = load_model(tiny_checkpoints[2], device="cpu")
    assert float(r.stdout) == eval(WEIGHT_SUM)
    asked = [q["status"] for q in hub.requests if _repo_file(q["path"]) == "checkpoint-500/model.safetensors"]
    assert asked[0] == "dropped" and asked.count(200) == 2, asked  # one HEAD and one GET answered: downloaded once


@pytest.mark.parametrize("failure", ["503", "dropped"])
def test_online_a_hub_failing_on_the_weights_is_named_as_the_cause(failure, hub, hf_cache):
    """The hub answers 503 for a checkpoint's weights, or drops every request for them (its other files are
    served): the load names the hub's failure and the retry, where transformers said the repo had no weights
    ("does not appear to have a file named pytorch_model.bin or model.safetensors"), which sent the user looking
    for a file that is there."""
    weights = "checkpoint-500/model.safetensors"
    if failure == "503":
        hub.force_status[weights] = 503
    else:
        hub.on_request = lambda method, path: hub.drop.__setitem__(path, 1) if _repo_file(path) == weights else None
    message = load_error(hub, hf_cache, "org/run:checkpoint-500")
    assert "does not appear to have a file" not in message
    spec, retry = "cannot load 'org/run:checkpoint-500'", RETRY
    if failure == "503":
        assert message.startswith(f"{spec}: the hub at {hub.endpoint} answered 503 for org/run/{weights} (")
        assert message.endswith(f"; {retry}")
    else:
        assert message.startswith(f"{spec}: the hub at {hub.endpoint} stopped answering for org/run/{weights} (")
        assert message.endswith(f"; check the connection (or HF_ENDPOINT) and {retry}")


def test_online_a_hub_failing_on_a_shard_is_named_as_the_cause(hub_with_shards, hf_cache):
    shards = sorted(p for p in hub_with_shards.repos[("model", "org/sharded")].files if p.endswith(".safetensors"))
    hub_with_shards.force_status[shards[-1]] = 503
    message = load_error(hub_with_shards, hf_cache, "org/sharded")
    assert message.startswith(f"cannot load 'org/sharded': the hub at {hub_with_shards.endpoint} answered 503 for the shards "
                              "org/sharded/model.safetensors.index.json lists (HfHubHTTPError: ")
    assert shards[-1] in message and message.endswith(f"; {RETRY}")


# huggingface_hub keeps what it read in chunks of DOWNLOAD_CHUNK_SIZE (10 MB): the tiny weights stand for a large file.
SMALL_CHUNKS = "import huggingface_hub.constants as c; c.DOWNLOAD_CHUNK_SIZE = 4096\n"


def test_online_weights_cut_short_resume_within_the_load_and_start_over_at_the_next(hub, hf_cache, tiny_checkpoints):
    """The hub cuts its answer for the weights short, then drops every request for them: huggingface_hub asks for the
    rest (a ranged GET) within the load, then gives up, and the load says to try again. huggingface_hub 2.4 deletes
    what it read (a partial file of its own per download), so the next load, the hub well again, asks for all of it:
    the message says so, where it said the download would resume."""
    weights = "checkpoint-500/model.safetensors"
    size = len(hub.repos[("model", "org/run")].files[weights])
    hub.cut[weights] = size // 3

    def then_drop(method, path):
        if method == "GET" and _repo_file(path) == weights and any(q["method"] == "GET" and q["path"] == path for q in hub.requests[:-1]):
            hub.drop[path] = 1

    hub.on_request = then_drop
    r = online(hub, hf_cache, SMALL_CHUNKS + "from vlm_lab.models import load_model; load_model('org/run:checkpoint-500', device='cpu')")
    (message,) = [line for line in r.stderr.splitlines() if line.startswith("vlm_lab.errors.CheckpointNotFoundError")]
    assert f"stopped answering for org/run/{weights} (" in message, message
    assert message.endswith(f"; check the connection (or HF_ENDPOINT) and {RETRY}")
    ranges = [q["range"] for q in hub.requests if q["method"] == "GET" and _repo_file(q["path"]) == weights]
    assert ranges[0] is None and 0 < int(ranges[1].removeprefix("bytes=").rstrip("-")) <= size // 3, ranges  # resumed
    asked = len(hub.requests)
    hub.cut, hub.on_request = {}, None
    code = f"from vlm_lab.models import load_model\nm = load_model('org/run:checkpoint-500', device='cpu'); print({WEIGHT_SUM})"
    r = online(hub, hf_cache, SMALL_CHUNKS + code)
    assert r.returncode == 0, r.stderr
    m = load_model(tiny_checkpoints[2], device="cpu")
    assert float(r.stdout) == eval(WEIGHT_SUM)
    (again,) = [q for q in hub.requests[asked:] if q["method"] == "GET" and _repo_file(q["path"]) == weights]
    assert again["status"] == 200 and again["range"] is None, again  # from its start


def test_online_bad_subfolder_references_are_each_named_at_resolution(hub, hf_cache):
    """A reference with a subfolder was checked only when loaded: resolve_all passed it, and a run with several
    bad ones stopped at the first load. Now each is checked with the others, in one error."""
    specs = ["org/run@v1:checkpoint-500", "org/run:checkpoint-250", "org/run@v9:checkpoint-0", "org/nope:checkpoint-0",
             "org/run..x:checkpoint-0"]
    code = f"from vlm_lab.checkpoints import resolve_all\nresolve_all({specs!r})"
    r = online(hub, hf_cache, code)
    assert r.returncode != 0
    (line,) = [line for line in r.stderr.splitlines() if line.startswith("vlm_lab.errors.CheckpointNotFoundError")]
    message = line.split(": ", 1)[1]
    assert message.startswith("4 of 5 checkpoint references resolve to nothing: (1) cannot load 'org/run@v1:checkpoint-500': "), message
    assert "but no checkpoint-500/config.json; its folders with a config.json: checkpoint-0, checkpoint-250; name one, e.g. org/run@v1:checkpoint-250" in message
    assert "(2) cannot load 'org/run@v9:checkpoint-0': the hub has no revision 'v9' of 'org/run'" in message
    assert "(3) cannot load 'org/nope:checkpoint-0': " in message and "org/run:checkpoint-250" not in message
    assert "(4) 'org/run..x:checkpoint-0' names no hub repo huggingface_hub accepts (Cannot have -- or .. in repo_id" in message
