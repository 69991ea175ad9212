"""Publishing from Python (a notebook, a script): its errors name PublishConfig's fields, not the script's flags.

``vlm_lab.publish.publish(PublishConfig(...))`` runs in a subprocess, as a notebook or a script calls it, with the real
huggingface_hub client against tests/hub_emulator.py; scripts/publish_space.py (test_publish.py) still says its flags.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_publish import SPACE, fail_text, hub, space_dir  # noqa: F401 - fixtures

CALL = """\
import json, sys
from vlm_lab.config import PublishConfig
from vlm_lab.errors import VlmLabError
from vlm_lab.publish import publish

try:
    publish(PublishConfig(**json.loads(sys.argv[1])))
except VlmLabError as e:
    print(f"{type(e).__name__}: {e}")
"""


def publish_from_python(hub, cwd: Path, **fields) -> str:
    """What ``publish(PublishConfig(**fields))`` raised (``Type: message``), called as a notebook calls it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {"HF_TOKEN": hub.token, "HF_HUB_OFFLINE": "0", "HF_HOME": str(hub.home), "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1"}  # LFS; test_publish_xet.py turns Xet on
    fields = {"space": SPACE, "endpoint": hub.endpoint, "poll_interval": 0.02, "timeout": 60.0, **fields}
    r = subprocess.run([sys.executable, "-c", CALL, json.dumps(fields)], env=env, cwd=cwd, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and r.stdout, fail_text(r)
    assert hub.token not in r.stdout + r.stderr
    return r.stdout.strip()


def test_an_app_folder_without_an_app_names_space_dir(hub, tmp_path):
    (tmp_path / "empty").mkdir()
    said = publish_from_python(hub, tmp_path, space_dir="empty", embed_checkpoints=False)
    assert said == "PublishError: no Space app in 'empty' (no app.py, no README.md); pass space_dir='DIR', the app folder", said


def test_zero_gpu_names_the_hardware_field(hub, space_dir, tmp_path):
    said = publish_from_python(hub, tmp_path, space_dir=str(space_dir), embed_checkpoints=False, hardware="zero-a10g")
    assert said.startswith("ConfigError: hardware='zero-a10g': ZeroGPU gives a Space a GPU only inside"), said
    assert "(hardware='t4-small', l4x1, a10g-small) or hardware='cpu-basic'; nothing was uploaded" in said, said
    assert "--" not in said, said


def test_an_invalid_checkpoints_repo_names_the_field(hub, space_dir, tmp_path):
    said = publish_from_python(hub, tmp_path, space_dir=str(space_dir), checkpoints_repo="alice/a--b")
    assert said.startswith("PublishError: checkpoints_repo='alice/a--b' is not a valid repo id"), said


@pytest.mark.parametrize("folder", ["runs/my-rnu", "it's a \\ földer"])
def test_a_checkpoints_folder_without_checkpoints_names_the_fields(hub, space_dir, tmp_path, folder):
    (tmp_path / "runs").mkdir()
    said = publish_from_python(hub, tmp_path, space_dir=str(space_dir), checkpoints=folder, dry_run=True)
    assert said.startswith(f"PublishError: checkpoints={folder!r}: "), said
    assert said.endswith("; pass checkpoints='DIR', the training output that holds the checkpoint-N folders (each with a "
                         "config.json), or embed_checkpoints=False"), said
    assert "--" not in said, said


def test_checkpoints_too_large_for_a_space_repo_name_the_fields(hub, space_dir, tiny_dir, tmp_path):
    run_dir = tmp_path / "my-run"
    shutil.copytree(tiny_dir / "checkpoint-1000", run_dir / "checkpoint-1000")
    with open(run_dir / "checkpoint-1000" / "model.safetensors", "r+b") as f:
        f.truncate(1075 << 20)  # sparse: its size only
    said = publish_from_python(hub, tmp_path, space_dir=str(space_dir), checkpoints=str(run_dir), dry_run=True)
    assert "Keep the checkpoints in a model repo the Space loads them from: pass checkpoints_repo='OWNER/NAME' (e.g. " \
           "your-name/vlm-checkpoints), or checkpoints='DIR', a folder holding only the checkpoints to show" in said, said
    assert "--" not in said, said


@pytest.mark.parametrize("route, fields, fix", [
    ("/sleeptime", {"sleep_time": 60}, "pass sleep_time=N, one it accepts (a Space's settings page offers 300,"),
    ("/hardware", {"hardware": "a10g-small"}, "pass hardware='FLAVOR', another one (the flavors your account may use"),
])
def test_a_setting_the_hub_refuses_names_the_field_to_change(hub, space_dir, tmp_path, route, fields, fix):
    hub.add_space(SPACE, hardware="t4-small", sleep=3600)
    hub.force_status[route] = 400
    said = publish_from_python(hub, tmp_path, space_dir=str(space_dir), embed_checkpoints=False, **fields)
    assert said.startswith("PublishError: could not ") and fix in said and "--" not in said, said


def test_paid_hardware_refused_names_the_hardware_field(hub, space_dir, tmp_path):
    hub.add_space(SPACE, hardware="cpu-basic")
    hub.paid_hardware_status = 403
    said = publish_from_python(hub, tmp_path, space_dir=str(space_dir), embed_checkpoints=False)
    assert "or publish with hardware='cpu-basic'; server said:" in said and "--" not in said, said


def test_a_slow_build_names_timeout_and_wait(hub, space_dir, tmp_path):
    hub.stage_sequence = ["BUILDING"] * 100_000
    said = publish_from_python(hub, tmp_path, space_dir=str(space_dir), embed_checkpoints=False, timeout=0.5)
    assert said.startswith("SpaceTimeoutError: Space alice/vlm-demo is still BUILDING after 0.5 s"), said
    assert said.endswith("or run again with a larger timeout (e.g. timeout=1800) or wait=False"), said


def test_a_failed_build_of_the_embedded_checkpoints_names_the_fields(hub, space_dir, tmp_path):
    """The build's own words (`vlm-lab checkpoints build --out ...`, its --save-every) are a shell command's, which a
    notebook user can run too; the publish's own options are its fields."""
    project = tmp_path / "project"
    (project / "checkpoints").mkdir(parents=True)
    (project / "checkpoints" / "shapes").write_text("x")
    said = publish_from_python(hub, project, space_dir=str(space_dir), dry_run=True)
    assert said.startswith("OutputPathError: checkpoints='checkpoints/shapes' is a file, not a folder; a publish builds "
                           "the embedded checkpoints into checkpoints='checkpoints/shapes' (the default) only when it holds "
                           "none: build them with `vlm-lab checkpoints build --out DIR` and publish with checkpoints='DIR', "
                           "or pass embed_checkpoints=False; nothing was uploaded"), said
