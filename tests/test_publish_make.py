"""`make publish` and `make space` with your own checkpoints (`CHECKPOINTS=DIR`), as the README tells a user.

`make publish` runs the Makefile as written against the local Hub emulator (tests/hub_emulator.py), with the
real huggingface_hub client; `make space` is read with `make -n` (what it would run), since serving it is
tests/test_space*.py's part.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from test_publish import ROOT, fail_text, hub  # noqa: F401 - hub is the emulator fixture

SPACE = "alice/my-run-demo"


def trainer_run(tiny_dir, tmp_path):
    """A training output as HF Trainer writes it (checkpoint-300, checkpoint-1200 with optimizer state), not a tiny
    build: its trainer_state.json holds no build record."""
    run = tmp_path / "my-run"
    for src, step in (("checkpoint-250", 300), ("checkpoint-1000", 1200)):
        ckpt = run / f"checkpoint-{step}"
        shutil.copytree(tiny_dir / src, ckpt)
        state = json.loads((ckpt / "trainer_state.json").read_text())
        state.pop("stateful_callbacks", None)
        (ckpt / "trainer_state.json").write_text(json.dumps(state | {"global_step": step}))
        (ckpt / "optimizer.pt").write_bytes(b"adam" * 100)
    return run


def make(*args, env=None, tmp_path):
    stamp = tmp_path / "installed"  # the venv is set up: no pip run from here
    stamp.touch()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "MAKE", "VLM_LAB_"))}
    return subprocess.run([shutil.which("make"), "--no-print-directory", *args, f"STAMP={stamp}"], cwd=ROOT,
                          env=clean | (env or {}), capture_output=True, text=True, timeout=600)


def test_make_publish_with_my_checkpoints_publishes_them_and_builds_nothing_into_them(hub, tiny_dir, tmp_path):  # noqa: F811
    """`make publish CHECKPOINTS=DIR` first ran `make checkpoints` into DIR: a Trainer's run was refused ("holds
    checkpoint-300, which no tiny build made ... move those folders elsewhere"), and a folder of earlier tiny
    builds got the embedded checkpoint-0..1000 trained into it and published beside the user's own."""
    run = trainer_run(tiny_dir, tmp_path)
    env = {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": hub.token, "HF_HOME": str(hub.home), "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    r = make("publish", f"SPACE={SPACE}", f"CHECKPOINTS={run}", "ARGS=--dry-run", env=env, tmp_path=tmp_path)
    assert r.returncode == 0, fail_text(r)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-1200", "checkpoint-300"], "nothing is built into my run"
    assert "checkpoints build" not in r.stdout + r.stderr, fail_text(r)
    assert "checkpoint-300/model.safetensors" in r.stdout or "checkpoints 1.3" in r.stdout, fail_text(r)


def test_make_space_with_my_checkpoints_serves_them_and_builds_nothing_into_them(tmp_path):
    """`make space CHECKPOINTS=DIR` trained the embedded checkpoints into DIR (or refused a Trainer's run), then
    served the embedded ones anyway: the app reads VLM_LAB_CHECKPOINTS, which it was not given."""
    run = tmp_path / "my-run"
    r = make("-n", "space", f"CHECKPOINTS={run}", tmp_path=tmp_path)
    assert r.returncode == 0, fail_text(r)
    assert "checkpoints build" not in r.stdout and "directory checkpoints" not in r.stdout, r.stdout
    assert f"VLM_LAB_CHECKPOINTS={run}" in r.stdout, r.stdout


def test_make_space_and_publish_still_build_the_embedded_checkpoints_by_default(tmp_path):
    for target in ("space", "publish SPACE=alice/x"):
        r = make("-n", *target.split(), tmp_path=tmp_path)
        assert "make --no-print-directory checkpoints\n" in r.stdout, fail_text(r)  # the default is built first
        assert "VLM_LAB_CHECKPOINTS=" not in r.stdout, r.stdout
