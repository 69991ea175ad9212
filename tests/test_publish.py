"""Publishing to a Hugging Face Space, end to end against a local Hub emulator.

scripts/publish_space.py runs as a subprocess (as users run it) with the real
huggingface_hub client pointed at tests/hub_emulator.py through HF_ENDPOINT. Every
run is checked for the token in its output.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub_emulator import HubEmulator
from mounts import tmpfs
from space_server import free_port, running_space
from vlm_lab.config import PublishConfig
from vlm_lab.errors import ConfigError
from vlm_lab.publish_report import estimate_cost
from vlm_lab.publish_stage import (
    SecretFileError,
    SecretVariableError,
    check_variables,
    credentials_at_hand,
    find_secret,
    is_secret_name,
    stage,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "publish_space.py"
SPACE = "alice/vlm-demo"
README = """---
title: vlm_lab test
emoji: 🔍
colorFrom: blue
colorTo: green
sdk: gradio
sdk_version: 6.31.0
app_file: app.py
pinned: false
---
# A test Space
"""


def new_token() -> str:
    return "hf_" + secrets.token_hex(17)


@pytest.fixture
def hub(tmp_path):
    with HubEmulator() as emulator:
        emulator.home = tmp_path / "hf-home"  # HF_HOME of the runs: no stored token, no shared cache
        emulator.token = new_token()
        emulator.add_token(emulator.token, "alice")
        yield emulator


@pytest.fixture
def space_dir(tmp_path) -> Path:
    """A minimal Gradio Space folder with the junk a real one collects."""
    d = tmp_path / "space"
    d.mkdir()
    (d / "app.py").write_text("print('hello from the Space')\n")
    (d / "README.md").write_text(README)
    (d / "requirements.txt").write_text("gradio==6.31.0\n")
    (d / ".env").write_text("WANDB_API_KEY=0123456789abcdef0123456789abcdef01234567\n")
    for junk in ("__pycache__/app.cpython-311.pyc", ".ipynb_checkpoints/app-checkpoint.py", "wandb/run.wandb",
                 "runs/log.txt", ".venv/bin/python"):
        (d / junk).parent.mkdir(parents=True, exist_ok=True)
        (d / junk).write_text("junk\n")
    return d


def run_publish(hub: HubEmulator, *args: str, token: str | None = None, env: dict | None = None,
                checkpoints: Path | None = None, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the script against the emulator; fail if the token shows up anywhere in its output."""
    token = hub.token if token is None else token
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    full_env |= {"HF_ENDPOINT": hub.endpoint, "HF_TOKEN": token, "HF_HUB_OFFLINE": "0",
                 "HF_HOME": str(hub.home),
                 "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1", **(env or {})}  # LFS; test_publish_xet.py turns Xet on
    ckpt = ["--checkpoints", str(checkpoints)] if checkpoints else ["--no-checkpoints"]
    r = subprocess.run([sys.executable, str(SCRIPT), "--poll-interval", "0.02", "--timeout", "60", *ckpt, *args],
                       env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    out = r.stdout + r.stderr
    assert token not in out, "the token leaked into the output"
    for value in (env or {}).values():
        if len(value) > 8 and "SECRET" in value:
            assert value not in out, "a secret value leaked into the output"
    return r


def fail_text(r: subprocess.CompletedProcess) -> str:
    return f"rc={r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"


# -- end to end: the publish itself ---------------------------------------------------------

def test_first_publish_creates_uploads_and_sets_hardware_sleep_and_secrets(hub, space_dir, tiny_dir):
    wandb_key = "SECRET" + "9f" * 17
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--secret", "WANDB_API_KEY", "--var", "LOG_LEVEL=info",
                    env={"WANDB_API_KEY": wandb_key}, checkpoints=tiny_dir)
    assert r.returncode == 0, fail_text(r)
    repo = hub.space(SPACE)
    assert repo.private and repo.sdk == "gradio"
    files = set(repo.files)
    assert {"app.py", "README.md", "requirements.txt", "vlm_lab/__init__.py", "vlm_lab/publish.py"} <= files
    assert "checkpoints/shapes/checkpoint-1000/model.safetensors" in files
    assert "checkpoints/shapes/checkpoint-0/config.json" in files
    assert not [f for f in files if "trainer_state" in f or "optimizer" in f], "training state is not for inference"
    junk = [f for f in files if f.startswith((".env", "__pycache__", ".ipynb", "wandb/", "runs/", ".venv")) or "__pycache__" in f]
    assert junk == []
    assert repo.files["README.md"] == README.encode()
    assert (repo.requested, repo.sleep) == ("t4-small", 3600)
    assert repo.secrets["WANDB_API_KEY"]["value"] == wandb_key
    assert repo.variables["LOG_LEVEL"]["value"] == "info"
    assert repo.stage == "RUNNING"
    assert f"{hub.endpoint}/spaces/{SPACE}" in r.stdout
    assert repo.sha[:12] in r.stdout
    assert "$0.40/hour" in r.stdout and "/month running 24/7" in r.stdout and "with the sleep time" in r.stdout
    assert "upload:" in r.stdout and "junk: " in r.stdout and "trainer_state.json x5" in r.stdout
    assert "stage: BUILDING" in r.stderr  # it waited for the new build, not the first RUNNING it saw


def test_second_publish_without_changes_makes_no_commit_and_no_write(hub, space_dir):
    first = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--secret", "WANDB_API_KEY",
                        env={"WANDB_API_KEY": "SECRET-value-123456"})
    assert first.returncode == 0, fail_text(first)
    commits, seen = len(hub.space(SPACE).commits), len(hub.requests)
    again = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--secret", "WANDB_API_KEY",
                        env={"WANDB_API_KEY": "SECRET-value-123456"})
    assert again.returncode == 0, fail_text(again)
    assert len(hub.space(SPACE).commits) == commits
    later = hub.requests[seen:]
    assert [w for w in later if w in hub.writes()] == [], "an unchanged publish wrote to the Hub"
    assert "no new commit" in again.stdout and "settings:  already as wanted" in again.stdout

    rotated = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--secret", "WANDB_API_KEY",
                          env={"WANDB_API_KEY": "SECRET-rotated-654321"})
    assert rotated.returncode == 0, fail_text(rotated)
    assert hub.space(SPACE).secrets["WANDB_API_KEY"]["value"] == "SECRET-rotated-654321"
    assert "secret WANDB_API_KEY: another value" in rotated.stdout


def test_hf_debug_logs_never_show_a_secret_value(hub, space_dir):
    """HF_DEBUG=1 logs every request as curl, body included: the secret sent must be scrubbed."""
    value = "SECRET" + "5a" * 17
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--secret", "WANDB_API_KEY",
                    env={"WANDB_API_KEY": value, "HF_DEBUG": "1"})  # run_publish fails on the value in the output
    assert r.returncode == 0, fail_text(r)
    assert "curl" in r.stderr and hub.space(SPACE).secrets["WANDB_API_KEY"]["value"] == value


def test_file_deleted_locally_is_deleted_remotely_and_unchanged_files_are_not_resent(hub, space_dir):
    (space_dir / "extra.txt").write_text("remove me later\n")
    assert run_publish(hub, SPACE, "--space-dir", str(space_dir)).returncode == 0
    assert "extra.txt" in hub.space(SPACE).files
    (space_dir / "extra.txt").unlink()
    (space_dir / "app.py").write_text("print('changed')\n")
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir))
    assert r.returncode == 0, fail_text(r)
    repo = hub.space(SPACE)
    assert "extra.txt" not in repo.files and repo.files["app.py"] == b"print('changed')\n"
    assert sorted(repo.commits[-1]["ops"]) == [["deletedFile", "extra.txt"], ["file", "app.py"]]
    assert ".gitattributes" in repo.files  # the Hub's LFS rules are never mirrored away


def test_existing_space_on_other_hardware_is_brought_to_the_wanted_hardware(hub, space_dir):
    hub.add_space(SPACE, hardware="a10g-large", sleep=None, files={"old.py": b"x = 1\n"})
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--hardware", "t4-small", "--sleep-time", "600")
    assert r.returncode == 0, fail_text(r)
    repo = hub.space(SPACE)
    assert (repo.requested, repo.hardware, repo.sleep) == ("t4-small", "t4-small", 600)
    assert "old.py" not in repo.files
    assert "hardware: a10g-large -> t4-small" in r.stdout and "sleep time: never -> 10 min" in r.stdout
    posted = [q["path"].rsplit("/", 1)[1] for q in hub.writes() if q["path"].startswith("/api/spaces/")]
    assert "hardware" in posted and "sleeptime" in posted

    stop_paying = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--hardware", "cpu-basic")
    assert stop_paying.returncode == 0, fail_text(stop_paying)
    assert hub.space(SPACE).requested == "cpu-basic" and "cost:      free" in stop_paying.stdout


def test_a_sleep_time_change_alone_waits_for_no_build(hub, space_dir):
    """The Hub changes a sleep time in place (no restart): a publish that changed only it waited for a
    build that never came, until --timeout (30 min by default), then exited 7 'still RUNNING'."""
    assert run_publish(hub, SPACE, "--space-dir", str(space_dir)).returncode == 0
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--sleep-time", "30m", "--timeout", "5")
    assert r.returncode == 0, fail_text(r)
    assert hub.space(SPACE).sleep == 1800 and "sleep time: 1 h -> 30 min" in r.stdout
    assert "stage:     RUNNING" in r.stdout


def test_the_report_says_who_can_open_the_space(hub, space_dir):
    """A Space is private unless --public: visitors given the URL saw a 404, and the report never said so."""
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--no-wait")
    assert r.returncode == 0, fail_text(r)
    assert "visibility: private: only alice can open it (visitors get 404); publish with --public to share it" in r.stdout
    public = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--no-wait", "--public")
    assert public.returncode == 0 and "visibility: public: anyone with the URL can open it" in public.stdout, fail_text(public)
    again = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--no-wait", "--dry-run")  # stays public without --public
    assert again.returncode == 0 and "visibility: public" in again.stdout, fail_text(again)
    hub.add_token(token := new_token(), "carol", orgs=("acme",))  # an org's Space: its members can open it
    org = run_publish(hub, "acme/vlm-demo", "--space-dir", str(space_dir), "--dry-run", token=token)
    assert org.returncode == 0 and "visibility: private: only members of acme can open it" in org.stdout, fail_text(org)


def test_public_makes_an_existing_private_space_public(hub, space_dir):
    hub.add_space(SPACE, hardware="t4-small", sleep=3600, private=True)
    dry = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--public", "--dry-run")
    assert dry.returncode == 0 and "visibility: private -> public" in dry.stdout, fail_text(dry)
    assert hub.space(SPACE).private
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--public")
    assert r.returncode == 0, fail_text(r)
    assert not hub.space(SPACE).private and "visibility: private -> public" in r.stdout
    again = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--public")
    assert again.returncode == 0 and "settings:  already as wanted" in again.stdout, fail_text(again)
    hub.space(SPACE).private = True  # only the visibility differs: nothing rebuilds, so nothing to wait for
    only = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--public", "--timeout", "5")
    assert only.returncode == 0 and not hub.space(SPACE).private, fail_text(only)


def test_dry_run_prints_the_plan_and_writes_nothing(hub, space_dir):
    hub.add_space(SPACE, hardware="cpu-basic", files={"stale.txt": b"old\n", "app.py": b"print('old')\n"})
    before = len(hub.space(SPACE).commits)
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", "--secret", "WANDB_API_KEY",
                    env={"WANDB_API_KEY": "SECRET-dry-run-1234"})
    assert r.returncode == 0, fail_text(r)
    assert hub.writes() == [], f"dry run wrote: {hub.writes()}"
    assert len(hub.space(SPACE).commits) == before
    assert "dry run: nothing was written" in r.stdout
    assert "  + requirements.txt" in r.stdout and "  ~ app.py" in r.stdout and "  - stale.txt" in r.stdout
    assert "  ~ README.md" in r.stdout
    assert "hardware: cpu-basic -> t4-small" in r.stdout and "settings (would change)" in r.stdout
    assert "secret WANDB_API_KEY: missing" in r.stdout

    new = run_publish(hub, "alice/brand-new", "--space-dir", str(space_dir), "--dry-run")
    assert new.returncode == 0, fail_text(new)
    assert hub.writes() == [] and ("space", "alice/brand-new") not in hub.repos
    assert "(new)" in new.stdout


def test_build_error_prints_the_log_tail_and_exits_non_zero(hub, space_dir):
    hub.stage_sequence = ["RUNNING", "BUILDING", "BUILD_ERROR"]
    hub.build_log = [f"step {i}" for i in range(100)] + ["ERROR: No matching distribution found for torch==99.0"]
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir))
    assert r.returncode == 6, fail_text(r)
    assert "BUILD_ERROR" in r.stderr and "No matching distribution found for torch==99.0" in r.stderr
    assert "step 99" in r.stderr and "step 10\n" not in r.stderr  # the tail, not the whole log

    hub.stage_sequence = ["APP_STARTING", "RUNTIME_ERROR"]
    hub.run_log = ["Traceback (most recent call last):", "ModuleNotFoundError: No module named 'vlm_lab'"]
    (space_dir / "app.py").write_text("import vlm_lab\n")
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir))
    assert r.returncode == 6 and "RUNTIME_ERROR" in r.stderr and "No module named 'vlm_lab'" in r.stderr


def test_no_wait_returns_after_the_commit_and_a_slow_build_times_out(hub, space_dir):
    hub.stage_sequence = ["BUILDING"] * 100_000
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--no-wait")
    assert r.returncode == 0, fail_text(r)
    assert "stage:     BUILDING" in r.stdout
    (space_dir / "app.py").write_text("print('v2')\n")
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--timeout", "0.5")
    assert r.returncode == 7, fail_text(r)
    assert "still BUILDING after 0.5 s" in r.stderr and "a larger timeout (e.g. --timeout 1800) or --no-wait" in r.stderr


@pytest.mark.parametrize("last, code, shown", [("RUNNING", 0, "stage:     RUNNING"), ("BUILD_ERROR", 6, "Successfully built")])
def test_a_publish_run_again_while_the_space_builds_waits_for_that_build(hub, space_dir, last, code, shown):
    """A wait cut short (Ctrl-C, a dropped connection, --no-wait) is resumed by running the same command again, as
    the interrupted run says: with nothing left to send it returned at once, reporting 'stage: BUILDING'."""
    hub.stage_sequence = ["BUILDING"] * 4 + [last]
    first = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--no-wait")
    assert first.returncode == 0 and "stage:     BUILDING" in first.stdout, fail_text(first)
    seen = len(hub.requests)
    again = run_publish(hub, SPACE, "--space-dir", str(space_dir))
    assert again.returncode == code, fail_text(again)
    assert shown in again.stdout + again.stderr, fail_text(again)
    assert [w for w in hub.requests[seen:] if w in hub.writes()] == [], "nothing was left to send"


@pytest.mark.parametrize(
    "route, status, message",
    [
        (f"/api/spaces/{SPACE}/commit/main", 409, "conflict (409)"),
        (f"/api/spaces/{SPACE}/commit/main", 412, "run the same command again"),
        (f"/api/spaces/{SPACE}/variables", 404, "not found (404) alice/vlm-demo"),
        (f"/api/spaces/{SPACE}/runtime", 503, "HTTP 503"),
    ],
)
def test_conflicts_and_missing_routes_are_reported(hub, space_dir, route, status, message):
    hub.add_space(SPACE, hardware="t4-small", sleep=3600)
    hub.force_status[route] = status
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--var", "A=1", "--retries", "2")
    assert r.returncode != 0 and message in r.stderr, fail_text(r)
    assert "Traceback" not in r.stderr
    if status == 503:  # a server error is retried before it is reported
        assert sum(q["path"] == route for q in hub.requests) == 2


@pytest.mark.parametrize(
    "case, code, message",
    [
        ("invalid token", 3, "the token in $HF_TOKEN was rejected (401: invalid or expired); create a write token at "
                             "https://huggingface.co/settings/tokens and export HF_TOKEN"),
        ("read token", 3, "the token in $HF_TOKEN (of alice) is read, not write; create a write token at "
                          "https://huggingface.co/settings/tokens"),
        ("402 on create", 3, "needs a paid plan"),
        ("403 on hardware", 3, "add a payment method at https://huggingface.co/settings/billing"),
        # 402 for paid hardware: the account has no payment method; free hardware is the other way out
        ("402 on hardware", 3, "payment required (402): a10g-small is paid hardware, and the account has no payment "
                               "method: add one at https://huggingface.co/settings/billing, or publish with "
                               "--hardware cpu-basic (free)"),
        ("402 on create, paid hardware", 3, "payment required (402): t4-small is paid hardware, and the account has "
                                            "no payment method: add one at https://huggingface.co/settings/billing, "
                                            "or publish with --hardware cpu-basic (free)"),
        ("403 on create, paid hardware", 3, "forbidden (403): paid hardware needs a payment method (add one at "
                                            "https://huggingface.co/settings/billing, or publish with --hardware cpu-basic), "
                                            "or the token cannot create repos for alice/vlm-demo"),
        ("403 on create, cpu-basic", 3, "forbidden (403); the token cannot write there: use a write token"),
        ("other owner", 3, "cannot create repos under 'bob'"),
        ("other owner's public Space", 3, "the token belongs to 'alice', who cannot write to bob/vlm-demo (it is "
                                          "bob's; alice can write under: alice); use a token of a member of 'bob', "
                                          "or publish under your own name (alice/vlm-demo)"),
        ("fine-grained without write", 3, "has no repo.write on 'alice'"),
        ("read member of the org", 3, "alice is a read member of 'vlm-org', who cannot write its repos with any "
                                      "token; ask an admin of 'vlm-org' for the write role"),
    ],
)
def test_hub_errors_name_the_fix(hub, space_dir, case, code, message):
    token, space, args = hub.token, SPACE, ()
    if case == "invalid token":
        token = new_token()
    elif case == "read token":
        token = new_token()
        hub.add_token(token, "alice", role="read")
    elif case == "402 on create":
        hub.create_status = 402
    elif case == "403 on hardware":
        hub.add_space(SPACE, hardware="cpu-basic")
        hub.paid_hardware_status = 403
    elif case == "403 on create, paid hardware":
        hub.paid_hardware_status = 403
    elif case == "402 on hardware":
        hub.add_space(SPACE, hardware="t4-small", sleep=3600)
        hub.paid_hardware_status, args = 402, ("--hardware", "a10g-small")
    elif case == "402 on create, paid hardware":
        hub.paid_hardware_status = 402
    elif case == "403 on create, cpu-basic":  # refused for a reason the preflight cannot see (an org's policy, say)
        hub.force_status["/api/repos/create"] = 403
        args = ("--hardware", "cpu-basic")
    elif case == "other owner":
        space = "bob/vlm-demo"
    elif case == "other owner's public Space":  # it exists, and alice can see it: there is nothing to create
        space = "bob/vlm-demo"
        hub.add_space(space, private=False)
    elif case == "read member of the org":
        token, space = new_token(), "vlm-org/vlm-demo"
        hub.add_token(token, "alice", orgs=("vlm-org",), org_roles={"vlm-org": "read"})
    elif case == "fine-grained without write":
        token = new_token()
        hub.add_token(token, "alice", role="fineGrained",
                      scoped=[{"entity": {"type": "user", "name": "alice"}, "permissions": ["repo.content.read"]}])
    r = run_publish(hub, space, "--space-dir", str(space_dir), *args, token=token)
    assert r.returncode == code, fail_text(r)
    assert message in r.stderr, fail_text(r)
    assert "Traceback" not in r.stderr
    if case.startswith("403 on create"):  # a 403 at creation does not say it was the hardware
        assert "the Hub refused paid hardware" not in r.stderr, fail_text(r)
    if case == "402 on hardware":  # the Space is hosted already: its plan is not what paid hardware lacks
        assert "needs a paid plan" not in r.stderr, fail_text(r)
    attempted = {"402 on create": ["/api/repos/create"], "403 on hardware": [f"/api/spaces/{SPACE}/hardware"],
                 "402 on hardware": [f"/api/spaces/{SPACE}/hardware"], "402 on create, paid hardware": ["/api/repos/create"],
                 "403 on create, paid hardware": ["/api/repos/create"], "403 on create, cpu-basic": ["/api/repos/create"]}
    assert [w["path"] for w in hub.writes()] == attempted.get(case, []), "nothing else may be written"


@pytest.mark.parametrize("route, args, message, fix", [
    ("/sleeptime", ("--sleep-time", "60"), "could not set the sleep time of alice/vlm-demo to 60 s (it has 1 h): "
     "the Hub refused it (400)", "pass --sleep-time N, one it accepts"),
    ("/sleeptime", (), "could not set the sleep time of alice/vlm-demo to 3600 s (it has never)",
     "the Space's current one to leave it"),
    ("/hardware", ("--hardware", "a10g-small"), "could not request hardware a10g-small for alice/vlm-demo (it has "
     "t4-small): the Hub refused it (400)", "pass --hardware FLAVOR, another one"),
])
def test_a_setting_the_hub_refuses_is_named_with_the_option_to_change(hub, space_dir, route, args, message, fix):
    """The Hub refuses a sleep time it does not offer (or a granted Space's), or a flavor the account may not use:
    the error said only 'HTTP 400: ...' (or, on 403, to get a write token)."""
    hub.add_space(SPACE, hardware="t4-small", sleep=None if not args else 3600)
    hub.force_status[route] = 400
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), *args)
    assert r.returncode == 2, fail_text(r)
    assert message in r.stderr and fix in r.stderr and "forced by the test" in r.stderr, fail_text(r)
    assert "Traceback" not in r.stderr and "create a write token" not in r.stderr, fail_text(r)


def test_zero_gpu_is_refused_for_an_app_without_a_spaces_gpu_function(hub, space_dir):
    """ZeroGPU lends a GPU only inside @spaces.GPU functions: the app (which has none) would fail at start
    or answer on CPU, after a publish that reported success."""
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--hardware", "zero-a10g")
    assert r.returncode == 2, fail_text(r)
    assert "--hardware zero-a10g" in r.stderr and "@spaces.GPU" in r.stderr and "--hardware t4-small" in r.stderr, fail_text(r)
    assert hub.writes() == []
    (space_dir / "app.py").write_text("import spaces\n\n@spaces.GPU\ndef answer(x):\n    return x\n")
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--hardware", "zero-a10g", "--dry-run")
    assert r.returncode == 0, fail_text(r)


@pytest.mark.parametrize("role", ["read", "invalid"])
def test_a_stale_hf_token_hiding_a_saved_login_is_named_with_its_fix(hub, space_dir, role):
    """HF_TOKEN (a shell profile's, a .env's) wins over the write token `hf auth login` saved; the message
    said to create a new token, when unsetting HF_TOKEN was the fix."""
    stale = new_token()
    if role == "read":
        hub.add_token(stale, "alice", role="read")
    hub.home.mkdir(parents=True, exist_ok=True)
    (hub.home / "token").write_text(hub.token)  # as `hf auth login` saves it
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), token=stale)
    assert r.returncode == 3, fail_text(r)
    assert "the token in $HF_TOKEN" in r.stderr, fail_text(r)
    assert "or unset HF_TOKEN: it takes precedence over the different token saved by `hf auth login`" in r.stderr
    assert hub.token not in r.stdout + r.stderr and hub.writes() == []


def test_fine_grained_token_with_repo_write_publishes(hub, space_dir):
    token = new_token()
    hub.add_token(token, "alice", role="fineGrained",
                  scoped=[{"entity": {"type": "user", "name": "alice"}, "permissions": ["repo.content.read", "repo.write"]}])
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), token=token)
    assert r.returncode == 0, fail_text(r)
    assert "app.py" in hub.space(SPACE).files


def test_a_file_that_looks_like_it_holds_a_token_stops_the_publish(hub, space_dir):
    (space_dir / "notes.txt").write_text(f"my token is {new_token()}\n")
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir))
    assert r.returncode == 2, fail_text(r)
    assert "notes.txt" in r.stderr and "Hugging Face token" in r.stderr
    assert hub.writes() == []



@pytest.mark.parametrize("where, name", [("settings.json", "WANDB_API_KEY"), ("vendor/db.yaml", "DB_PASSWORD")])
def test_a_file_holding_a_secret_being_sent_stops_the_publish(hub, space_dir, where, name):
    """A value no pattern knows (a bare W&B key, a password) is still caught: it is the value of a --secret."""
    value = WANDB_KEY if name == "WANDB_API_KEY" else "SECRET-correct-horse-battery"
    (space_dir / where).parent.mkdir(parents=True, exist_ok=True)
    (space_dir / where).write_text(f'{{"setting": "{value}"}}\n')
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--secret", name, env={name: value})
    assert r.returncode == 2, fail_text(r)
    assert where.rsplit("/", 1)[-1] in r.stderr and f"${name}" in r.stderr
    assert value not in r.stdout + r.stderr
    assert hub.writes() == []

# A credential in --var: refused before any upload (variables are public on the Hub).
WANDB_KEY = "0123456789abcdef" * 2 + "01234567"  # 40 hex: the shape of a W&B key


@pytest.mark.parametrize(
    "case, args, env, message",
    [
        ("the token, under a secret name", ("--var", "HF_TOKEN={token}"), {}, "--var HF_TOKEN: its name says"),
        ("the token, dry run", ("--dry-run", "--var", "HF_TOKEN={token}"), {}, "--var HF_TOKEN: its name says"),
        ("the token, innocent name", ("--var", "NOTE={token}"), {}, "a copy of the Hugging Face token in use"),
        ("a secret-named environment variable", ("--var", "NOTE=x-{env}"), {"WANDB_API_KEY": "SECRET-no-known-shape"},
         "a copy of $WANDB_API_KEY"),
        ("a --secret value", ("--secret", "DSN", "--var", "NOTE={env}"), {"DSN": "SECRET-postgres-password"},
         "a copy of $DSN (--secret DSN)"),
        ("a bare W&B key", ("--var", f"NOTE={WANDB_KEY}"), {}, "a W&B API key"),
        ("another HF token", ("--var", "NOTE=hf_" + "Zx9" * 12), {}, "Hugging Face token"),
        ("an OpenAI key", ("--var", "NOTE=sk-proj-" + "a1B2" * 8), {}, "sk-"),
        ("a GitHub token", ("--var", "NOTE=ghp_" + "a1B2" * 9), {}, "GitHub token"),
        ("an AWS key", ("--var", "NOTE=AKIA" + "ABCD2345" * 2), {}, "AWS access key"),
        ("a password by name", ("--var", "LOG_LEVEL=info", "--var", "db_password=hunter2"), {}, "--var db_password: its name"),
    ],
)
def test_a_credential_in_var_is_refused_before_any_upload(hub, space_dir, case, args, env, message):
    hub.add_space(SPACE, hardware="t4-small", sleep=3600)
    commits = len(hub.space(SPACE).commits)
    args = tuple(a.format(token=hub.token, env=next(iter(env.values()), "")) for a in args)
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), *args, env=env)
    assert r.returncode == 2, fail_text(r)
    assert "SecretVariableError" in r.stderr and message in r.stderr, fail_text(r)
    assert "--secret" in r.stderr and "public" in r.stderr and "nothing was uploaded" in r.stderr
    out = r.stdout + r.stderr
    for arg in args:  # no refused value reaches the output, whatever its shape
        value = arg.split("=", 1)[1] if "=" in arg else ""
        if value not in ("info", "hunter2"):
            assert not value or value not in out, f"{case}: the value leaked"
    assert hub.writes() == [], f"{case}: refused, yet it wrote {hub.writes()}"
    assert len(hub.space(SPACE).commits) == commits and hub.space(SPACE).variables == {}


@pytest.mark.parametrize("var, message", [
    ("VLM_LAB_MAX_NEW_TOKENS=abc", "--var VLM_LAB_MAX_NEW_TOKENS='abc' is not a whole number; set it to e.g. 64; "
                                   "the Space would not start with it; nothing was uploaded"),
    ("VLM_LAB_MAX_NEW_TOKEN=8", "--var VLM_LAB_MAX_NEW_TOKEN (did you mean VLM_LAB_MAX_NEW_TOKENS?): not a variable"),
])
def test_a_space_variable_the_app_cannot_use_is_refused_before_any_write(hub, space_dir, var, message):
    """It was set, and the Space failed minutes later in its run log (or a typo was silently ignored)."""
    hub.add_space(SPACE, hardware="t4-small", sleep=3600)
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--var", var)
    assert r.returncode == 2 and message in r.stderr, fail_text(r)
    assert hub.writes() == [] and hub.space(SPACE).variables == {}


@pytest.mark.parametrize("args, message", [
    (("--secret", "LOG_SINK", "--var", "LOG_SINK=stdout"), "LOG_SINK: given as both --secret and --var; a Space key is one"),
    (("--var", "LOG_LEVEL=info", "--var", "LOG_LEVEL=debug"), "--var LOG_LEVEL given twice with different values"),
])
def test_a_key_given_twice_is_refused_before_any_write(hub, space_dir, args, message):
    """The Hub holds a key as a secret or a variable, once: the later one silently won, or the Hub refused mid-way."""
    hub.add_space(SPACE, hardware="t4-small", sleep=3600)
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), *args, env={"LOG_SINK": "syslog-host-1234"})
    assert r.returncode == 2 and message in r.stderr and "nothing was uploaded" in r.stderr, fail_text(r)
    assert hub.writes() == []


@pytest.mark.parametrize("name", ["HF_TOKEN", "SPACE_READ_TOKEN"])
def test_the_publishing_token_is_never_sent_as_a_space_secret(hub, space_dir, name):
    hub.add_space(SPACE, hardware="t4-small", sleep=3600)
    env = {name: hub.token} if name != "HF_TOKEN" else {}
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--secret", name, env=env)
    assert r.returncode == 2, fail_text(r)
    assert f"--secret {name}" in r.stderr and "read-only token" in r.stderr and f"/spaces/{SPACE}/settings" in r.stderr
    assert hub.writes() == [] and hub.space(SPACE).secrets == {}


def test_a_credential_left_in_a_variable_is_not_printed(hub, space_dir):
    """A Space an older publish gave a credential as a variable: the report says so without showing it."""
    leaked = "hf_" + "Qw7" * 12
    hub.add_space(SPACE, hardware="t4-small", sleep=3600)
    hub.space(SPACE).variables["NOTE"] = {"value": leaked, "description": None, "updatedAt": "2024-01-01T00:00:00.000Z"}
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--var", "NOTE=hello", "--dry-run")
    assert r.returncode == 0, fail_text(r)
    assert "variable NOTE: (a value that looks like a credential: rotate it" in r.stdout and "-> 'hello'" in r.stdout
    assert leaked not in r.stdout + r.stderr


@pytest.mark.parametrize(
    "name, secret",
    [
        ("HF_TOKEN", True), ("hf_token", True), ("WANDB_API_KEY", True), ("APIKEY", True), ("AWS_SECRET_ACCESS_KEY", True),
        ("DB_PASSWORD", True), ("GITHUB_TOKEN", True), ("MY_SECRETS", True),
        ("PAD_TOKEN", True), ("SORT_KEY", True),  # false positives, chosen: --secret carries them just as well
        ("MAX_NEW_TOKENS", False), ("TOKENIZERS_PARALLELISM", False), ("KEYBOARD_LAYOUT", False),
        ("LOG_LEVEL", False), ("VLM_LAB_CHECKPOINTS", False), ("HF_HUB_ENABLE_HF_TRANSFER", False),
    ],
)
def test_is_secret_name(name, secret):
    assert is_secret_name(name) is secret


@pytest.mark.parametrize(
    "value",
    ["info", "alice/vlm-checkpoints@" + "ab" * 20 + ":checkpoint-1000", "https://example.com/a?b=c", "t4-small", "hf_transfer",
     "sk-learn", "0" * 39],
)
def test_ordinary_variable_values_pass(value):
    check_variables({"SETTING": value}, known={"$HF_TOKEN": "hf_" + "x" * 34})



def test_credentials_at_hand_is_every_value_to_keep_out_of_output():
    """The one list the publish scrubs and refuses with, and scripts/publish_space.py scrubs its errors with."""
    environ = {"DSN": "postgres-pw-123", "WANDB_API_KEY": "SECRET-no-known-shape", "EMPTY": "", "LOG_LEVEL": "debug-verbose"}
    found = credentials_at_hand("hf_" + "x" * 34, ["DSN", "EMPTY", "UNSET", "K=typed-on-the-command-line"],
                                ["LOG_LEVEL=info", "NOTE=" + WANDB_KEY, "ghp_" + "a1B2" * 9], environ)
    assert found == {
        "the Hugging Face token in use": "hf_" + "x" * 34,
        "$DSN (--secret DSN)": "postgres-pw-123",
        "the value typed after --secret K=": "typed-on-the-command-line",  # refused by PublishConfig; never echoed either
        "$WANDB_API_KEY": "SECRET-no-known-shape",
        "the value of --var NOTE": WANDB_KEY,
        "--var item 3 (no '=')": "ghp_" + "a1B2" * 9,  # an item without '=' is its own value, and not its own name
    }
    assert credentials_at_hand(None, environ={}) == {}

def test_every_refused_variable_is_named_once():
    with pytest.raises(SecretVariableError) as caught:
        check_variables({"A_TOKEN": "x", "OK": "fine", "NOTE": WANDB_KEY})
    text = str(caught.value)
    assert "--var A_TOKEN:" in text and "--var NOTE:" in text and "--var OK" not in text
    assert WANDB_KEY not in text and "--secret A_TOKEN" in text


def test_preflight_checks_readme_and_sdk_version(hub, space_dir):
    (space_dir / "requirements.txt").write_text("gradio==5.0.0\n")
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir))
    assert r.returncode == 2 and "sdk_version: 6.31.0" in r.stderr and "gradio==5.0.0" in r.stderr, fail_text(r)
    (space_dir / "requirements.txt").write_text("gradio==6.31.0\n")
    (space_dir / "README.md").write_text(README.replace("colorFrom: blue", "colorFrom: chartreuse"))
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir))
    assert r.returncode == 2 and "the Hub rejects README.md's front matter" in r.stderr, fail_text(r)
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--secret", "NOT_SET_ANYWHERE")
    assert r.returncode == 2 and "$NOT_SET_ANYWHERE is not set" in r.stderr, fail_text(r)
    assert hub.writes() == []


def test_a_commit_whose_answer_was_lost_is_not_reported_as_a_conflict(hub, space_dir):
    """The commit lands but its answer is lost: the retry finds the files there, not a failure."""
    hub.drop_reply = {f"/api/spaces/{SPACE}/commit/main": 1}
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--retries", "3")
    assert r.returncode == 0, fail_text(r)
    repo = hub.space(SPACE)
    assert len(repo.commits) == 2 and repo.files["app.py"] == (space_dir / "app.py").read_bytes()  # created + one
    assert repo.sha[:12] in r.stdout and repo.stage == "RUNNING"


def test_a_create_whose_answer_was_lost_is_not_reported_as_a_conflict(hub, space_dir):
    """The Space is created but the answer is lost: the retry's 409 ('You already created this repo') is that
    Space, made by this publish, not a name taken; it stopped with exit 4 before any file was sent."""
    hub.drop_reply = {"/api/repos/create": 1}
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--secret", "WANDB_API_KEY", "--retries", "3",
                    env={"WANDB_API_KEY": "SECRET-value-123456"})
    assert r.returncode == 0, fail_text(r)
    repo = hub.space(SPACE)
    assert repo.files["app.py"] == (space_dir / "app.py").read_bytes() and repo.stage == "RUNNING"
    assert (repo.requested, repo.sleep, repo.private) == ("t4-small", 3600, True)
    assert repo.secrets["WANDB_API_KEY"]["value"] == "SECRET-value-123456"
    assert "conflict" not in r.stderr and "hardware: (new Space) -> t4-small" in r.stdout, fail_text(r)


def test_republish_after_retraining_one_checkpoint_sends_only_its_weights(hub, space_dir, tiny_dir, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_dir, run_dir)
    assert run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir).returncode == 0
    weights = run_dir / "checkpoint-500" / "model.safetensors"
    weights.write_bytes((tiny_dir / "checkpoint-1000" / "model.safetensors").read_bytes())  # "retrained"
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir)
    assert r.returncode == 0, fail_text(r)
    assert hub.space(SPACE).commits[-1]["ops"] == [["lfsFile", "checkpoints/shapes/checkpoint-500/model.safetensors"]]
    assert "0 to add, 1 to update, 0 to delete" in r.stdout
    again = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir)  # weights compared by sha256 (LFS)
    assert again.returncode == 0 and "no new commit" in again.stdout, fail_text(again)


def test_a_checkpoint_still_being_written_is_left_out_and_named(hub, space_dir, tiny_dir, tmp_path):
    """Publishing while a run trains: the checkpoint the trainer is writing (weights cut short) is not
    uploaded, and the output says which and why; the next publish, once it is saved, sends it."""
    run_dir = tmp_path / "run"
    for name in ("checkpoint-0", "checkpoint-250", "checkpoint-500"):
        shutil.copytree(tiny_dir / name, run_dir / name)
    weights = run_dir / "checkpoint-500" / "model.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])  # the trainer is half way through writing it
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir)
    assert r.returncode == 0, fail_text(r)
    files = hub.space(SPACE).files
    assert "checkpoints/shapes/checkpoint-250/model.safetensors" in files
    assert not [p for p in files if "checkpoint-500" in p], "a checkpoint still being written was uploaded"
    assert "checkpoint-500" in r.stdout and "a weight file is cut short" in r.stdout, fail_text(r)
    assert "Traceback" not in r.stderr and "warnings.warn" not in r.stderr, fail_text(r)

    weights.write_bytes(whole)  # the trainer is done
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=run_dir)
    assert r.returncode == 0, fail_text(r)
    assert "checkpoints/shapes/checkpoint-500/model.safetensors" in hub.space(SPACE).files
    assert "cut short" not in r.stdout + r.stderr, fail_text(r)


def test_checkpoints_that_cannot_answer_on_the_hardware_are_said_before_the_build(hub, space_dir, tiny_dir, tmp_path):
    """A 13B checkpoint on a T4: the Space built for minutes, then ran out of memory at start. The publish
    says so from the config alone (vlm_lab.memory), with the hardware that would hold it."""
    from vlm_lab import memory_synthetic
    from vlm_lab.memory_synthetic import LlavaSize

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_dir / "checkpoint-1000", run_dir / "checkpoint-1000")
    big = LlavaSize(text_width=5120, text_layers=40, text_heads=40, text_kv_heads=8, text_intermediate=13824)
    memory_synthetic.llava_config(big, vocab_size=32064).save_pretrained(run_dir / "checkpoint-1000")  # its config.json
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", checkpoints=run_dir)
    assert r.returncode == 0, fail_text(r)
    assert "checkpoint-1000 (float16, batch 1) does NOT fit on t4-small" in r.stdout, fail_text(r)
    assert "--hardware a100-large" in r.stdout, fail_text(r)
    small = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", checkpoints=tiny_dir)
    assert small.returncode == 0 and "does NOT fit" not in small.stdout + small.stderr, fail_text(small)


def test_checkpoints_are_uploaded_from_where_they_are_never_copied(hub, space_dir, tiny_dir, tmp_path):
    """Checkpoints can be many GB: staging them must not copy them (to TMPDIR or anywhere)."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    seen: list[str] = []  # files under TMPDIR while the commit is in flight

    def look(method: str, path: str) -> None:
        if path.endswith("/commit/main"):
            seen.extend(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*") if p.is_file())

    hub.on_request = look
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=tiny_dir, env={"TMPDIR": str(tmpdir)})
    assert r.returncode == 0, fail_text(r)
    assert hub.space(SPACE).files["checkpoints/shapes/checkpoint-1000/model.safetensors"] == \
        (tiny_dir / "checkpoint-1000" / "model.safetensors").read_bytes()
    assert not [p for p in seen if "checkpoint-" in p or p.endswith(".safetensors")], f"staged copies: {seen[:5]}"


def test_checkpoints_too_large_for_a_space_repo_are_refused_before_any_write(hub, space_dir, tiny_dir, tmp_path):
    """A Space repo may hold 1 GB: real checkpoints (GBs each) were hashed and sent, then refused by the Hub."""
    run_dir = tmp_path / "my-run"
    shutil.copytree(tiny_dir / "checkpoint-1000", run_dir / "checkpoint-1000")
    with open(run_dir / "checkpoint-1000" / "model.safetensors", "r+b") as f:
        # sparse: 1075 MiB (1.0498 GiB) by its size, no disk used; with the package and the other files
        # (a few MB) the total still reads 1.05 GiB, however the package grows by a few KB
        f.truncate(1075 << 20)
    for extra in (("--dry-run",), ()):
        r = run_publish(hub, SPACE, "--space-dir", str(space_dir), *extra, checkpoints=run_dir)
        assert r.returncode == 2, fail_text(r)
        assert "the Space would hold 1.05 GiB" in r.stderr and "checkpoints 1.05 GiB" in r.stderr, fail_text(r)
        assert "over the 1.00 GiB a Space repo may hold" in r.stderr and "--checkpoints-repo OWNER/NAME" in r.stderr
    assert hub.writes() == [] and ("space", SPACE) not in hub.repos


@pytest.mark.parametrize("case", ["mistyped folder", "one model folder", "folder without checkpoints"])
def test_checkpoints_folder_without_checkpoints_is_refused_not_trained(hub, space_dir, tiny_dir, tmp_path, case):
    """Only the embedded default is built when missing: any other folder without checkpoint-N is an error."""
    (tmp_path / "runs" / "my-run").mkdir(parents=True)
    folder = {"mistyped folder": tmp_path / "runs" / "my-rnu",
              "one model folder": tmp_path / "runs" / "my-run" / "final",
              "folder without checkpoints": tmp_path / "runs" / "my-run"}[case]
    if case == "one model folder":
        shutil.copytree(tiny_dir / "checkpoint-1000", folder)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "runs").rglob("*"))
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", checkpoints=folder)
    assert r.returncode == 2, fail_text(r)
    assert f"--checkpoints {shlex.quote(str(folder))}: " in r.stderr and "or --no-checkpoints" in r.stderr, fail_text(r)
    hint = {"mistyped folder": "did you mean", "one model folder": "one model folder, not a training output",
            "folder without checkpoints": "no checkpoint-N folder"}[case]
    assert hint in r.stderr, fail_text(r)
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "runs").rglob("*")) == before, "nothing may be built"
    assert hub.writes() == []


def test_a_checkpoints_folder_whose_name_holds_a_quote_is_named_as_the_shell_reads_it(hub, space_dir, tmp_path):
    """The library names it checkpoints="...it's..." (its repr in double quotes, a backslash doubled); the flag's
    rewording matched only '...' values and left the field in the script's message."""
    folder = tmp_path / "it's a \\ földer"
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", checkpoints=folder)
    assert r.returncode == 2, fail_text(r)
    assert f"error: PublishError: --checkpoints {shlex.quote(str(folder))}: " in r.stderr, fail_text(r)
    assert "checkpoints=" not in r.stderr and hub.writes() == [], fail_text(r)


BUILD_SAID = ("[publish] --checkpoints 'checkpoints/shapes' holds no checkpoints: training the embedded ones there first "
              "(once, a few minutes on 2 CPU cores); a dry run builds them too, so that its plan lists their files\n")


@pytest.mark.parametrize("case", ["a file", "a model folder"])
def test_a_failed_build_of_the_embedded_checkpoints_names_what_the_publisher_types(hub, space_dir, tiny_dir, tmp_path, case):
    """A publish builds the embedded default when it holds none; that build's errors named TrainConfig's out='...' (the
    words tiny.train gives a Python caller), and a fix (a folder such as out='checkpoints/mine') no publish option makes."""
    project = tmp_path / "project"
    default = project / "checkpoints" / "shapes"  # the default --checkpoints, from where the publish runs
    default.parent.mkdir(parents=True)
    if case == "a file":
        default.write_text("x")
    else:
        shutil.copytree(tiny_dir / "checkpoint-1000", default)
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", checkpoints=Path("checkpoints/shapes"), cwd=project)
    assert r.returncode == 2, fail_text(r)
    problem = {"a file": "is a file, not a folder", "a model folder": "holds a model (config.json)"}[case]
    said = r.stderr[r.stderr.find("error: "):]  # after the publish's progress lines
    assert said.startswith(f"error: OutputPathError: --checkpoints checkpoints/shapes {problem}"), fail_text(r)
    assert BUILD_SAID in r.stderr[:r.stderr.find("error: ")], fail_text(r)  # minutes of training are announced first
    assert said.rstrip().endswith(
        "a publish builds the embedded checkpoints into --checkpoints checkpoints/shapes (the default) only when it holds "
        "none: build them with `vlm-lab checkpoints build --out DIR` and publish with --checkpoints DIR, or pass "
        "--no-checkpoints; nothing was uploaded"), fail_text(r)
    assert "out=" not in r.stderr and "such as" not in r.stderr and "checkpoints=" not in r.stderr, fail_text(r)
    assert hub.writes() == []


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB filesystem (tmpfs): room for one of the embedded checkpoints, not for their five."""
    with tmpfs(tmp_path / "project" / "checkpoints", "size=4m", lacking="no small disk to fill") as disk:
        yield disk


def test_a_build_of_the_embedded_checkpoints_without_room_names_the_build_command_and_its_flag(hub, space_dir, small_disk):
    """The disk check named TrainConfig's save_every=N; a publish takes no such option: `vlm-lab checkpoints build` does."""
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", checkpoints=Path("checkpoints/shapes"),
                    cwd=small_disk.parent)
    assert r.returncode == 2, fail_text(r)
    said = r.stderr[r.stderr.find("error: "):]
    assert said.startswith("error: OutputPathError: this build saves 5 checkpoints of ~") and "checkpoints/shapes has" in said, said
    assert "; pass --save-every 1000 or more (or free space, or build into another folder); a publish builds the embedded " \
           "checkpoints into --checkpoints checkpoints/shapes (the default) only when it holds none: build them with " \
           "`vlm-lab checkpoints build --out DIR` (with the flags named here) and publish" in said, said
    assert "save_every=" not in said and hub.writes() == []


@pytest.mark.parametrize("name", ["alice/my--space", "alice/demo.git", "alice/-demo", "alice/" + "a" * 97])
def test_an_invalid_space_name_is_refused_before_any_request(hub, space_dir, name):
    r = run_publish(hub, name, "--space-dir", str(space_dir))
    assert r.returncode == 2, fail_text(r)
    assert "Traceback" not in r.stderr and repr(name) in r.stderr and "at most 96" in r.stderr, fail_text(r)
    assert hub.requests == []


def test_network_failures_are_retried_then_reported(hub, space_dir):
    hub.drop = {"/api/whoami-v2": 1}  # the first whoami loses its connection: retried
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--retries", "3")
    assert r.returncode == 0, fail_text(r)
    assert [q["status"] for q in hub.requests if q["path"] == "/api/whoami-v2"][:2] == ["dropped", 200]

    dead = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--retries", "2", env={"HF_ENDPOINT": dead})
    assert r.returncode == 5, fail_text(r)
    assert "did not answer after 2 attempts" in r.stderr


def test_checkpoints_repo_holds_the_checkpoints_and_the_space_points_at_it(hub, space_dir, tiny_dir):
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--checkpoints-repo", "alice/vlm-checkpoints",
                    checkpoints=tiny_dir)
    assert r.returncode == 0, fail_text(r)
    models = hub.repos[("model", "alice/vlm-checkpoints")]
    assert "checkpoint-1000/model.safetensors" in models.files and models.private
    space = hub.space(SPACE)
    assert not [f for f in space.files if f.startswith("checkpoints/")]
    value = space.variables["VLM_LAB_CHECKPOINTS"]["value"]
    steps = sorted(int(p.name.split("-")[1]) for p in tiny_dir.glob("checkpoint-*"))
    assert value == ",".join(f"alice/vlm-checkpoints@{models.sha}:checkpoint-{s}" for s in steps)
    from vlm_lab.checkpoints import parse_hub_ref

    ref = parse_hub_ref(value.split(",")[-1])
    assert (ref.repo_id, ref.revision, ref.subfolder) == ("alice/vlm-checkpoints", models.sha, f"checkpoint-{steps[-1]}")

    embedded = run_publish(hub, SPACE, "--space-dir", str(space_dir), checkpoints=tiny_dir)
    assert embedded.returncode == 0, fail_text(embedded)
    assert "VLM_LAB_CHECKPOINTS" not in hub.space(SPACE).variables  # the same command, the same end state
    assert "checkpoints/shapes/checkpoint-0/model.safetensors" in hub.space(SPACE).files


@pytest.mark.parametrize("case", ["checkpoints repo", "variable", "embedded"])
def test_the_space_card_names_the_model_repos_it_serves(hub, space_dir, tiny_dir, case):
    """The Hub links a Space and the models its card lists (models: in the front matter): "Models used in
    this Space" on the Space, "Spaces using this model" on the model. The published card listed none."""
    from huggingface_hub import SpaceCard

    readme = space_dir / "README.md"
    readme.write_text(readme.read_text().replace("pinned: false\n", "pinned: false\nmodels:\n  - my-org/base-vlm\n"))
    args = {"checkpoints repo": ("--checkpoints-repo", "alice/vlm-checkpoints"),
            "variable": ("--var", "VLM_LAB_CHECKPOINTS=my-org/my-vlm@main:checkpoint-500,./local-run,my-org/base-vlm"),
            "embedded": ()}[case]
    models = {"checkpoints repo": ["my-org/base-vlm", "alice/vlm-checkpoints"], "variable": ["my-org/base-vlm", "my-org/my-vlm"],
              "embedded": ["my-org/base-vlm"]}[case]
    ckpt = {"checkpoints": tiny_dir} if case != "variable" else {}
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--no-wait", *args, **ckpt)
    assert r.returncode == 0, fail_text(r)
    published = hub.space(SPACE).files["README.md"].decode()
    assert SpaceCard(published).data.models == models
    assert published.split("\n---\n", 1)[1] == readme.read_text().split("\n---\n", 1)[1]  # the body as written
    if case == "embedded":
        assert published == readme.read_text()
    again = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--no-wait", *args, **ckpt)
    assert again.returncode == 0 and "no new commit" in again.stdout, fail_text(again)


def test_a_checkpoints_variable_given_serves_those_and_uploads_no_checkpoints(hub, space_dir, tiny_dir):
    """`make publish SPACE=... ARGS="--var VLM_LAB_CHECKPOINTS=org/model"` (make passes --checkpoints): the app
    serves what the variable names, so the checkpoints folder was uploaded for nothing (GBs for a real run)."""
    var = "VLM_LAB_CHECKPOINTS=my-org/my-vlm@main"
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--no-wait", "--var", var, checkpoints=tiny_dir)
    assert r.returncode == 0, fail_text(r)
    space = hub.space(SPACE)
    assert not [p for p in space.files if p.startswith("checkpoints/")], "checkpoints the Space never serves were uploaded"
    assert space.variables["VLM_LAB_CHECKPOINTS"]["value"] == "my-org/my-vlm@main"
    assert f"not uploaded: the Space serves what --var {var.split('=')[0]} names" in r.stdout, fail_text(r)
    # with a checkpoints repo the publish sets the variable itself: two answers to one question
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--var", var, "--checkpoints-repo", "alice/ckpts",
                    checkpoints=tiny_dir)
    assert r.returncode == 2 and "--checkpoints-repo" in r.stderr and "VLM_LAB_CHECKPOINTS" in r.stderr, fail_text(r)
    assert ("model", "alice/ckpts") not in hub.repos


def test_hub_models_the_space_cannot_load_are_said_before_the_build(hub, space_dir):
    """--var VLM_LAB_CHECKPOINTS=my-org/tyop published without a word: the Space built for minutes, then
    offered a model that fails when chosen (a typo, a revision or folder not there, a private repo it has no
    token for). The Hub is asked with the publishing token; what it cannot see is said, the publish goes on."""
    from hub_emulator import Repo

    for repo_id, private, files in (("my-org/ok", False, {"config.json": b"{}"}),
                                    ("my-org/run", False, {"checkpoint-100/config.json": b"{}"}),
                                    ("alice/private-run", True, {"checkpoint-500/config.json": b"{}"})):
        repo = hub.repos[("model", repo_id)] = Repo("model", repo_id, private=private, files=files)
        repo.commit("upload", [])
    specs = ["my-org/ok", "my-org/tyop", "my-org/ok@v9", "my-org/run", "my-org/run:checkpoint-999",
             "alice/private-run:checkpoint-500"]
    args = (SPACE, "--space-dir", str(space_dir), "--no-wait", "--var", "VLM_LAB_CHECKPOINTS=" + ",".join(specs))
    for extra in (("--dry-run",), ()):
        r = run_publish(hub, *args, *extra)
        assert r.returncode == 0, fail_text(r)
        notes = [line for line in r.stdout.splitlines() if line.startswith("note:")]
        assert len(notes) == 4, fail_text(r)
        assert "names my-org/tyop, but the Hub has no model repo my-org/tyop that alice can see" in r.stdout
        assert "names my-org/ok@v9, but the Hub has no model repo my-org/ok at revision 'v9'" in r.stdout
        assert "my-org/run has no config.json in its folder 'checkpoint-999'" in r.stdout
        assert "alice/private-run is private: the Space needs a read token" in r.stdout and "HF_TOKEN" in r.stdout
        assert "warning: VLM_LAB_CHECKPOINTS names my-org/tyop" in r.stderr
    hub.space(SPACE).secrets["HF_TOKEN"] = {"value": new_token(), "description": None, "updatedAt": "2026-01-01T00:00:00.000Z"}
    r = run_publish(hub, *args)
    assert r.returncode == 0 and "is private" not in r.stdout and "my-org/tyop" in r.stdout, fail_text(r)


def test_a_checkpoints_repo_keeps_what_the_publish_does_not_replace(hub, space_dir, tiny_dir, tmp_path):
    """The checkpoints repo is the user's model repo (a Trainer may have pushed its run there): a publish
    replaces the model files of the checkpoints it sends, and deletes nothing else; the checkpoint-2000 and
    the optimizer state a Trainer pushed were deleted because the local run no longer had them."""
    run_dir = tmp_path / "run"
    for name in ("checkpoint-0", "checkpoint-1000"):
        shutil.copytree(tiny_dir / name, run_dir / name)
    args = (SPACE, "--space-dir", str(space_dir), "--checkpoints-repo", "alice/vlm-run", "--no-wait")
    assert run_publish(hub, *args, checkpoints=run_dir).returncode == 0
    repo = hub.repos[("model", "alice/vlm-run")]
    pushed = {"checkpoint-2000/config.json": b"{}", "checkpoint-2000/model.safetensors": b"weights",
              "checkpoint-0/optimizer.pt": b"adam", "checkpoint-0/trainer_state.json": b"{}",
              "checkpoint-0/global_step0/zero_pp_rank_0_mp_rank_00_model_states.pt": b"zero",
              "checkpoint-0/model.safetensors.index.json": b'{"weight_map": {}}'}  # stale: would shadow the weights
    repo.files |= pushed
    repo.commit("Trainer push", [["file", p] for p in pushed])
    r = run_publish(hub, *args, checkpoints=run_dir)
    assert r.returncode == 0, fail_text(r)
    assert "- checkpoint-0/model.safetensors.index.json" in r.stdout and "1 to delete" in r.stdout, fail_text(r)
    kept = set(pushed) - {"checkpoint-0/model.safetensors.index.json"}
    assert kept <= set(repo.files) and "checkpoint-0/model.safetensors.index.json" not in repo.files
    assert "checkpoint-2000" not in hub.space(SPACE).variables["VLM_LAB_CHECKPOINTS"]["value"]


def test_the_hf_token_note_shows_only_while_the_space_cannot_read_the_checkpoints_repo(hub, space_dir, tiny_dir):
    """The note asks for a step by hand: once done (the Space has HF_TOKEN), or when the repo is public, it goes."""
    note = "alice/vlm-checkpoints is private"
    args = (SPACE, "--space-dir", str(space_dir), "--checkpoints-repo", "alice/vlm-checkpoints", "--no-wait")
    first = run_publish(hub, *args, checkpoints=tiny_dir)
    assert first.returncode == 0 and note in first.stdout and "add one as the secret HF_TOKEN" in first.stdout, fail_text(first)
    hub.space(SPACE).secrets["HF_TOKEN"] = {"value": new_token(), "description": None, "updatedAt": "2026-01-01T00:00:00.000Z"}
    for extra in ((), ("--dry-run",)):
        again = run_publish(hub, *args, *extra, checkpoints=tiny_dir)
        assert again.returncode == 0 and "HF_TOKEN" not in again.stdout, fail_text(again)
    del hub.space(SPACE).secrets["HF_TOKEN"]
    hub.repos[("model", "alice/vlm-checkpoints")].private = False  # made public by hand on the Hub
    public = run_publish(hub, *args, checkpoints=tiny_dir)
    assert public.returncode == 0 and "HF_TOKEN" not in public.stdout, fail_text(public)
    hub.repos[("model", "alice/vlm-checkpoints")].private = True  # --public does not change an existing repo
    stays = run_publish(hub, *args, "--public", checkpoints=tiny_dir)
    assert stays.returncode == 0 and "is private (--public does not change" in stays.stdout, fail_text(stays)


def test_no_checkpoints_keeps_the_checkpoints_the_space_is_told_to_serve(hub, space_dir):
    """--no-checkpoints publishes the app only: the models its VLM_LAB_CHECKPOINTS variable names (set by
    hand on the Hub, as the Space README says) stay; without them the app would have nothing to serve."""
    hub.add_space(SPACE, hardware="t4-small", sleep=3600)
    hub.space(SPACE).variables["VLM_LAB_CHECKPOINTS"] = {"value": "my-org/my-vlm@main", "description": None,
                                                         "updatedAt": "2026-01-01T00:00:00.000Z"}
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir))  # run_publish passes --no-checkpoints
    assert r.returncode == 0, fail_text(r)
    assert hub.space(SPACE).variables["VLM_LAB_CHECKPOINTS"]["value"] == "my-org/my-vlm@main"
    assert "variable VLM_LAB_CHECKPOINTS" not in r.stdout  # not a setting it changes (the Hub has no my-org/my-vlm: a note)


def test_the_card_names_the_models_of_a_checkpoints_variable_the_publish_keeps(hub, space_dir):
    """--no-checkpoints keeps the Space's VLM_LAB_CHECKPOINTS (set by hand on the Hub, or by an earlier
    --var): the card's models: stayed empty, and a re-publish without the --var dropped the ones it had."""
    from huggingface_hub import SpaceCard

    hub.add_space(SPACE, hardware="t4-small", sleep=3600)
    hub.space(SPACE).variables["VLM_LAB_CHECKPOINTS"] = {"value": "org/a@main:checkpoint-5, org/b", "description": None,
                                                         "updatedAt": "2026-01-01T00:00:00.000Z"}
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--no-wait")  # run_publish passes --no-checkpoints
    assert r.returncode == 0, fail_text(r)
    assert SpaceCard(hub.space(SPACE).files["README.md"].decode()).data.models == ["org/a", "org/b"]
    told = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--no-wait", "--var", "VLM_LAB_CHECKPOINTS=org/c")
    assert told.returncode == 0, fail_text(told)
    assert SpaceCard(hub.space(SPACE).files["README.md"].decode()).data.models == ["org/c"]
    again = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--no-wait")
    assert again.returncode == 0 and "no new commit" in again.stdout, fail_text(again)
    assert SpaceCard(hub.space(SPACE).files["README.md"].decode()).data.models == ["org/c"]

def test_pause_and_restart(hub, space_dir):
    hub.add_space(SPACE, hardware="t4-small", sleep=3600)
    r = run_publish(hub, SPACE, "--pause")
    assert r.returncode == 0, fail_text(r)
    assert hub.space(SPACE).stage == "PAUSED" and "not billed" in r.stdout
    r = run_publish(hub, SPACE, "--restart")
    assert r.returncode == 0, fail_text(r)
    assert hub.space(SPACE).stage == "RUNNING" and "stage: BUILDING" in r.stderr
    r = run_publish(hub, "alice/missing", "--pause")
    assert r.returncode == 4 and "publish it first" in r.stderr, fail_text(r)


# -- the pieces, in process -------------------------------------------------------------------

@pytest.mark.parametrize(
    "hardware, sleep, per_hour, always_on, with_sleep",
    [
        ("t4-small", 3600, 0.40, 0.40 * 730, 0.40 * 9 * 730 / 24),
        ("a10g-large", -1, 1.50, 1.50 * 730, 1.50 * 730),
        ("t4-medium", 1800, 0.60, 0.60 * 730, 0.60 * 8.5 * 730 / 24),
        ("cpu-upgrade", 3600, 0.03, 0.03 * 730, 0.03 * 9 * 730 / 24),
        ("cpu-basic", None, 0.0, 0.0, 0.0),
    ],
)
def test_cost_estimate(hardware, sleep, per_hour, always_on, with_sleep):
    cost = estimate_cost(hardware, sleep, active_hours_per_day=8)
    assert cost.per_hour == pytest.approx(per_hour)
    assert cost.always_on_month == pytest.approx(always_on)
    assert cost.with_sleep_month == pytest.approx(with_sleep)


@pytest.mark.parametrize("sleep, shown", [("30", "30 s"), ("90", "1.5 min"), ("1800", "30 min"), ("7200", "2 h"),
                                           ("-1", "never"), ("30m", "30 min"), ("1.5h", "1.5 h"), ("2d", "48 h"),
                                           ("never", "never")])
def test_sleep_times_read_as_people_say_them(hub, space_dir, sleep, shown):
    """The cost line said 'then 0.00833333 h until it sleeps' for --sleep-time 30; the settings and the
    hardware line said '1800 s': one unit a person reads, everywhere in the report, and --sleep-time takes
    it back as written ('1h' was 'invalid int value')."""
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", "--sleep-time", sleep)
    assert r.returncode == 0, fail_text(r)
    assert f"sleep time: (new Space) -> {shown}" in r.stdout, fail_text(r)
    assert f"sleep time: {shown}" + ("" if shown == "never" else " idle") in r.stdout, fail_text(r)
    if shown != "never":
        assert f"then {shown} until it sleeps" in r.stdout, fail_text(r)
    assert not [n for n in r.stdout.split() if "." in n and len(n.split(".")[-1]) > 2 and n.replace(".", "").isdigit()]


@pytest.mark.parametrize("sleep, message", [("1x", "'1x' is not a sleep time; use seconds (3600), 30m, 1h, 2d or never"),
                                            ("0.5s", "'0.5s' is 0.5 seconds; the Hub takes whole seconds")])
def test_a_sleep_time_that_is_no_duration_is_named_with_the_forms_it_takes(hub, space_dir, sleep, message):
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), "--dry-run", "--sleep-time", sleep)
    assert r.returncode == 2 and f"--sleep-time: {message}" in r.stderr and hub.requests == [], fail_text(r)


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"space": "no-owner"}, "not owner/name"),
        ({"hardware": "t5-huge"}, "not a Space hardware"),
        ({"sleep_time": 0}, "sleep_time must be"),
        ({"hardware": "cpu-basic", "sleep_time": 600}, "cannot be set on cpu-basic (free hardware always sleeps after 48 h "
         "idle); drop sleep_time=600 or choose paid hardware such as hardware='t4-small'"),
        ({"secrets": ("WANDB_API_KEY=abc",)}, "values never go there"),
        ({"variables": ("NOEQUALS",)}, "not KEY=VALUE"),
        ({"checkpoints_repo": "alice/m", "embed_checkpoints": False},
         "checkpoints_repo='alice/m' and embed_checkpoints=False contradict each other; choose one"),
        ({"action": "delete"}, "action='delete'"),
    ],
)
def test_publish_config_errors_name_the_value(changes, fragment):
    """Said as a Python caller passes them (hardware='t4-small'); the script says its flags (the test below)."""
    with pytest.raises(ConfigError) as caught:
        PublishConfig(**({"space": SPACE} | changes))
    assert fragment in str(caught.value), caught.value


@pytest.mark.parametrize("args, message", [
    (("--hardware", "cpu-basic", "--sleep-time", "600"), "drop --sleep-time 600 or choose paid hardware such as --hardware t4-small"),
    (("--checkpoints-repo", "alice/m"), "--checkpoints-repo alice/m and --no-checkpoints contradict each other; choose one"),
])
def test_publish_config_errors_from_the_script_name_its_flags(hub, space_dir, args, message):
    r = run_publish(hub, SPACE, "--space-dir", str(space_dir), *args)  # run_publish passes --no-checkpoints
    assert r.returncode == 2 and "error: ConfigError: " in r.stderr and message in r.stderr, fail_text(r)
    assert "=" not in r.stderr.split("error: ", 1)[1] and hub.requests == [], fail_text(r)


@pytest.mark.parametrize(
    "text, kind",
    [
        (f"HF_TOKEN={'hf_' + 'Ab1' * 12}", "Hugging Face token"),
        ("wandb.login(key='" + "0123456789abcdef" * 2 + "01234567')", "W&B"),
        ('api_key = "sk9-1234567890abcdefXYZ"', "api_key"),
        ("export MY_SERVICE_TOKEN=abc123def456ghi789\n", "environment assignment"),
        ("-----BEGIN RSA PRIVATE KEY-----\n", "private key"),
        ("api_key = os.environ['WANDB_API_KEY']\n", None),
        ("tokenizer.pad_token = '<pad>'\n", None),
        ("commit 0123456789abcdef0123456789abcdef01234567\n", None),
    ],
)
def test_find_secret(tmp_path, text, kind):
    f = tmp_path / "file.txt"
    f.write_text(text)
    found = find_secret(f)
    assert (found is None) if kind is None else (found is not None and kind in found)


def test_a_linked_folder_in_the_space_is_published_with_its_files(tmp_path, space_dir):
    """`space/examples -> ../photos` (a link to where the images live) was skipped without a word: the Space
    came up without its examples. A link back up the tree is followed once, not forever."""
    photos = tmp_path / "photos"
    (photos / "more").mkdir(parents=True)
    (photos / "cat.png").write_bytes(b"\x89PNG cat")
    (photos / "more" / "dog.png").write_bytes(b"\x89PNG dog")
    (photos / "more" / "loop").symlink_to(photos, target_is_directory=True)
    (space_dir / "examples").symlink_to(photos, target_is_directory=True)
    staged = stage(space_dir=space_dir)
    assert {"examples/cat.png", "examples/more/dog.png"} <= set(staged.files)
    assert not [p for p in staged.files if "loop" in p]
    assert staged.files["examples/cat.png"].git_sha1 == hashlib.sha1(b"blob 8\0\x89PNG cat").hexdigest()


def test_the_package_itself_stages_clean(tmp_path, space_dir):
    """No false alarm on the project's own code: the vlm_lab package passes the secret scan."""
    staged = stage(space_dir=space_dir)
    assert "vlm_lab/config.py" in staged.files and "app.py" in staged.files
    assert not any(".env" in p for p in staged.files)
    (space_dir / "leak.py").write_text(f"TOKEN = '{new_token()}'\n")
    with pytest.raises(SecretFileError, match="leak.py"):
        stage(space_dir=space_dir)


# -- the published files run the app ------------------------------------------------------------

@pytest.mark.slow
def test_published_files_run_the_app(hub, tiny_dir, tmp_path):
    """Publish the real space/, unpack what the Hub holds into a clean folder, serve it, ask it once."""
    real = ROOT / "space"
    if not ((real / "app.py").is_file() and (real / "README.md").is_file() and (real / "requirements.txt").is_file()):
        pytest.skip("space/ (app.py, README.md, requirements.txt) is not complete yet")
    r = run_publish(hub, SPACE, "--space-dir", str(real), checkpoints=tiny_dir)
    assert r.returncode == 0, fail_text(r)
    clean = hub.snapshot(SPACE, tmp_path / "clone")
    assert (clean / "checkpoints" / "shapes").is_dir()

    drop = ("VLM_LAB_", "PYTHONPATH")  # the Space's own defaults and its own copy of vlm_lab, nothing from here
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)} | {"HF_HUB_OFFLINE": "1"}
    where = subprocess.run([sys.executable, "-c", "import vlm_lab; print(vlm_lab.__file__)"], cwd=clean, env=env,
                           capture_output=True, text=True)
    assert Path(where.stdout.strip()).resolve().is_relative_to(clean.resolve()), "the app must import the staged package"
    with running_space({"VLM_LAB_DEVICE": "cpu"}, workdir=clean, app=clean / "app.py", drop_env=drop, timeout=240) as (url, _log):
        from gradio_client import Client, handle_file

        client = Client(url + "/", verbose=False)
        image = sorted((clean / "examples").glob("*.png"))[0]
        answer, new_tokens, _latency, error = client.predict(
            handle_file(str(image)), "What color is the shape?", "checkpoint-1000", api_name="/compare_batch"
        )
        assert not error and answer.strip() and new_tokens >= 1, (answer, error)
        color = image.stem.split("-")[0]
        assert color in answer.lower(), f"{image.name}: {answer!r}"


def test_unchanged_files_are_not_read_again_to_stage_a_republish(tiny_dir, tmp_path, monkeypatch):
    """A 20 GB checkpoints folder must not be re-read on every publish: digests are kept by stat."""
    import json

    from vlm_lab.checkpoints import digest_memo_path

    monkeypatch.setenv("VLM_LAB_CACHE", str(tmp_path / "user-cache"))
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_dir, run_dir)
    weights = "checkpoints/shapes/checkpoint-500/model.safetensors"
    first = stage(checkpoints=run_dir).files[weights]
    memo = json.loads(digest_memo_path().read_text())
    assert first.sha256 in memo.values() and "git_sha1" not in vars(first)  # the git id only when a regular file is compared
    # plant a marker where the remembered digest is: a stage that re-read the file could not return it
    memo = {key: ("0" * 64 if value == first.sha256 else value) for key, value in memo.items()}
    digest_memo_path().write_text(json.dumps(memo))
    assert stage(checkpoints=run_dir).files[weights].sha256 == "0" * 64
    (run_dir / "checkpoint-500" / "model.safetensors").write_bytes((tiny_dir / "checkpoint-1000" / "model.safetensors").read_bytes())
    changed = stage(checkpoints=run_dir).files[weights]  # new stat: read again
    assert changed.sha256 not in ("0" * 64, first.sha256) and len(changed.git_sha1) == 40
