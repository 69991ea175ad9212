"""Hub references online: the real huggingface_hub client (and transformers' downloads) against the hub
emulator, in a fresh process (``HF_ENDPOINT`` is read at import), with the tiny checkpoints as the repo's files.

``org/run`` has two commits: the first (tagged ``v1``) holds checkpoint-0 and checkpoint-250, the second
(main) adds checkpoint-500 and checkpoint-1000 with checkpoint-0's weights replaced by checkpoint-1000's.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_checkpoint_refs import hf_cache  # noqa: F401 - a fixture

from vlm_lab.models import load_model

WEIGHT_SUM = "sum(float(t.double().sum()) for t in m.model.state_dict().values())"


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


def online(hub, hf_cache, code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh process whose huggingface_hub talks to ``hub`` and caches under ``hf_cache``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": "hf_reader", "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(hf_cache.parent), "HF_HUB_DISABLE_TELEMETRY": "1"}  # fmt: skip
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


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
