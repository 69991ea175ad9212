"""Hub references while the hub cannot be reached: the real huggingface_hub client and transformers in a fresh
process whose ``HF_ENDPOINT`` is a closed local port (nothing listens there), with a real on-disk cache.

A cached reference loads from the cache at once (huggingface_hub retries every file it cannot find in the
cache, about 25 s each, and transformers looks for a dozen optional files: minutes); one that is not cached
says that the hub could not be reached, what the cache lacks, and the fixes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_checkpoint_refs import add_snapshot, hf_cache  # noqa: F401 - a fixture

from vlm_lab.models import load_model

WEIGHT_SUM = "sum(float(t.double().sum()) for t in m.model.state_dict().values())"


@pytest.fixture
def closed_endpoint() -> str:
    """An address on this machine where nothing listens: a port the kernel just handed out, closed again."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def unreachable(hf_cache: Path, endpoint: str, code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(hf_cache.parent), "HF_HUB_DISABLE_TELEMETRY": "1"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


def error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0
    (line,) = [line for line in r.stderr.splitlines() if line.startswith("vlm_lab.errors.CheckpointNotFoundError")]
    return line.split(": ", 1)[1]


def test_a_cached_checkpoint_loads_from_the_cache_without_retrying_the_hub(hf_cache, closed_endpoint, tiny_checkpoints):
    add_snapshot(hf_cache, "org/run", None, folders={"checkpoint-0": tiny_checkpoints[0], "checkpoint-1000": tiny_checkpoints[-1]})
    code = f"from vlm_lab.models import load_model\nm = load_model('org/run:checkpoint-1000', device='cpu')\nprint({WEIGHT_SUM})"
    r = unreachable(hf_cache, closed_endpoint, code)
    assert r.returncode == 0, r.stderr
    assert "Retrying in" not in r.stderr  # huggingface_hub's backoff: 25 s per file transformers looks for
    m = load_model(tiny_checkpoints[-1], device="cpu")
    assert float(r.stdout) == eval(WEIGHT_SUM)
    (warning,) = [line for line in r.stderr.splitlines() if "HubUnreachableWarning" in line]
    assert f"the hub at {closed_endpoint} could not be reached (ConnectError: " in warning
    assert f"'org/run:checkpoint-1000' loads from the local Hugging Face cache ({hf_cache}), commit " in warning


def test_a_reference_the_cache_lacks_says_the_hub_is_unreachable_and_the_fixes(hf_cache, closed_endpoint, tiny_checkpoints):
    add_snapshot(hf_cache, "org/run", None, folders={"checkpoint-0": tiny_checkpoints[0]})
    code = "from vlm_lab.models import load_model\nload_model('org/run:checkpoint-10', device='cpu')"
    message = error_line(r := unreachable(hf_cache, closed_endpoint, code))
    assert "Retrying in" not in r.stderr
    assert message.startswith(f"cannot load 'org/run:checkpoint-10': the hub at {closed_endpoint} could not be reached (ConnectError: ")
    assert f"and the local Hugging Face cache ({hf_cache}) holds 'org/run' at main (commit " in message
    assert "but no checkpoint-10/config.json; its folders with a config.json: checkpoint-0; name one, e.g. org/run:checkpoint-0" in message
    assert message.endswith(
        "check the connection (or HF_ENDPOINT) and try again, download it where the hub can be reached "
        "(hf download org/run --include 'checkpoint-10/*'), or set HF_HUB_OFFLINE=1 to use only what the cache holds"
    )
    assert "did not say which commit" not in message


@pytest.mark.parametrize("call", ["from vlm_lab.models import load_model\nload_model('org/other@v2', device='cpu')",
                                  "from vlm_lab.checkpoints import resolve\nresolve('org/other@v2')",
                                  "from vlm_lab.checkpoints import fingerprint, parse_hub_ref\nfingerprint(parse_hub_ref('org/other@v2'))"])  # fmt: skip
def test_a_repo_never_downloaded_says_so_whichever_step_meets_it(hf_cache, closed_endpoint, call):
    message = error_line(r := unreachable(hf_cache, closed_endpoint, call))
    assert "Retrying in" not in r.stderr
    assert message.startswith(f"cannot load 'org/other@v2': the hub at {closed_endpoint} could not be reached (")
    assert f"and hub model 'org/other' is not in the local Hugging Face cache ({hf_cache}), which holds no models;" in message
    assert "download it where the hub can be reached (hf download org/other --revision v2)" in message


@pytest.fixture
def silent_endpoint():
    """A hub that accepts connections and never answers, as behind a firewall or proxy that drops the requests:
    its address and the connections it has accepted."""
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    done.set()
    thread.join()
    for conn in [*accepted, server]:
        conn.close()


def test_a_run_compared_while_the_hub_never_answers_asks_it_once_and_warns_once(hf_cache, silent_endpoint, tiny_checkpoints, tmp_path):
    """huggingface_hub's model_info waits forever for a hub that does not answer (the compare hung); its file
    requests wait HF_HUB_ETAG_TIMEOUT each, three per checkpoint; and the warning came once per checkpoint."""
    endpoint, accepted = silent_endpoint
    commit = add_snapshot(hf_cache, "org/run", None, folders={p.name: p for p in tiny_checkpoints[:3]})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "0", "HF_HOME": str(hf_cache.parent), "HF_HUB_ETAG_TIMEOUT": "1"}
    one = subprocess.run([sys.executable, "-c", "from huggingface_hub import HfApi\nHfApi().model_info('org/run', timeout=1)"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert "ReadTimeout" in one.stderr
    one_request, accepted[:] = len(accepted), []  # the connections one request costs (huggingface_hub opens two)
    r = subprocess.run([sys.executable, "-m", "vlm_lab.cli", "compare", "org/run", "--data", "shapes:val:2", "--json",
                        "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [row["checkpoint"] for row in json.loads(r.stdout)] == [f"org/run:{p.name}" for p in tiny_checkpoints[:3]]
    (line,) = [line for line in r.stderr.splitlines() if "loads from the local Hugging Face cache" in line]
    warning = line  # a line of its own, above the progress bar (it was printed into the bar's line)
    assert warning.startswith(f"warning: the hub at {endpoint} could not be reached (ReadTimeout: ")
    assert f"'org/run:checkpoint-0' loads from the local Hugging Face cache ({hf_cache}), commit {commit[:7]}, as will the other folders of org/run at that commit" in warning
    assert len(accepted) == one_request  # asked once; every later step went to the cache


def test_the_hub_unreachable_is_said_once_per_repo_and_commit_not_per_checkpoint(hf_cache, closed_endpoint, tiny_checkpoints):
    folders = {p.name: p for p in tiny_checkpoints[:3]}
    commit = add_snapshot(hf_cache, "org/run", None, folders=folders)
    other = add_snapshot(hf_cache, "org/other", tiny_checkpoints[-1])
    code = ("from vlm_lab.models import load_model\n"
            f"for spec in {[f'org/run:{n}' for n in folders] + ['org/other']!r}: load_model(spec, device='cpu')")  # fmt: skip
    r = unreachable(hf_cache, closed_endpoint, code)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "HubUnreachableWarning" in line]
    assert len(warnings) == 2, warnings  # org/run's three checkpoints at one commit, and org/other
    assert f"'org/run:checkpoint-0' loads from the local Hugging Face cache ({hf_cache}), commit {commit[:7]}, as will the other folders" in warnings[0]
    assert f"'org/other' loads from the local Hugging Face cache ({hf_cache}), commit {other[:7]}; set HF_HUB_OFFLINE=1" in warnings[1]


def test_subfolder_references_the_cache_lacks_are_each_named_at_resolution(hf_cache, closed_endpoint, tiny_checkpoints):
    add_snapshot(hf_cache, "org/run", None, folders={"checkpoint-0": tiny_checkpoints[0]})
    code = "from vlm_lab.checkpoints import resolve_all\nresolve_all(['org/run:checkpoint-0', 'org/run:checkpoint-10', 'org/other@v2:ckpt'])"
    message = error_line(r := unreachable(hf_cache, closed_endpoint, code))
    assert "Retrying in" not in r.stderr
    assert message.startswith(f"2 of 3 checkpoint references resolve to nothing: (1) cannot load 'org/run:checkpoint-10': the hub at {closed_endpoint} could not be reached (")
    assert "but no checkpoint-10/config.json; its folders with a config.json: checkpoint-0; name one, e.g. org/run:checkpoint-0" in message
    assert "(2) cannot load 'org/other@v2:ckpt': the hub at " in message
    assert "download it where the hub can be reached (hf download org/other --revision v2 --include 'ckpt/*')" in message
