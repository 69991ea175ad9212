"""W&B logging interrupted or run from elsewhere: Ctrl-C while logging (a notebook's interrupt button), a relative WANDB_DIR."""

from __future__ import annotations

import pytest
from PIL import Image
from wandb_fixtures import comparison, wandb_home  # noqa: F401 - fixtures

from vlm_lab import offline_runs, tracking


class _CtrlCWhileTheTableIsBuilt:
    """The real comparison, interrupted where logging spends its time: building the samples table."""

    def __init__(self, result):
        self._result = result

    def __getattr__(self, name):
        return getattr(self._result, name)

    def to_dataframe(self):
        raise KeyboardInterrupt


class _CtrlCWhileOutputsAreRead(dict):
    def items(self):
        raise KeyboardInterrupt


def _only_run(wandb_home) -> offline_runs.OfflineRun:
    (folder,) = offline_runs.find_offline_runs(wandb_home)
    assert offline_runs.wait_until_written(folder), "the interrupted run was left open: its log holds only a header"
    return offline_runs.read_offline_run(folder)


def test_an_interrupted_comparison_log_closes_its_run_and_says_so_beside_the_results(wandb_home, comparison):
    """Interrupted mid-log, the W&B run stayed open in the kernel: its log held only a header until the
    kernel exited (`vlm-lab runs`: unreadable, 'never started properly'), and wandb.json still said the
    previous execution's 'offline', as if this one had been logged."""
    result, config = comparison
    tracking.log_comparison(result, config, mode="disabled")
    with pytest.raises(KeyboardInterrupt):
        tracking.log_comparison(_CtrlCWhileTheTableIsBuilt(result), config, group="g")
    run = _only_run(wandb_home)
    assert run.finished and run.exit_code == 1 and run.state == "failed (exit 1)"
    described = tracking.describe_record(tracking.read_record(result.output_dir))
    assert described == "NOT LOGGED: interrupted (KeyboardInterrupt) while logging; the W&B run was closed as failed"


class _CtrlCWhileTheRunStarts:
    def to_dict(self):
        raise KeyboardInterrupt


def test_an_interrupt_before_the_run_started_does_not_say_a_run_was_closed(wandb_home, comparison):
    """Ctrl-C while wandb.init ran: wandb.json said 'the W&B run was closed as failed' of a run that never started."""
    result, _ = comparison
    with pytest.raises(KeyboardInterrupt):
        tracking.log_comparison(result, _CtrlCWhileTheRunStarts(), group="g")
    assert offline_runs.find_offline_runs(wandb_home) == []
    described = tracking.describe_record(tracking.read_record(result.output_dir))
    assert described == "NOT LOGGED: interrupted (KeyboardInterrupt) while logging; no W&B run had started"


def test_an_interrupted_interaction_log_closes_the_run_it_started(wandb_home):
    with pytest.raises(KeyboardInterrupt):
        tracking.log_interaction(image=Image.new("RGB", (8, 8)), prompt="q", outputs=_CtrlCWhileOutputsAreRead(c="a"))
    run = _only_run(wandb_home)
    assert run.finished and run.exit_code == 1


def test_a_relative_wandb_dir_gives_a_sync_command_that_works_from_anywhere(wandb_home, monkeypatch, tmp_path):
    """WANDB_DIR=wandb in a .env: the printed and recorded `wandb sync wandb/offline-run-...` only worked
    from the folder the notebook's kernel ran in, not from the shell that reads the report."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_DIR", "relative-wandb")
    tracked = tracking.log_interaction(image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c": "a"})
    assert tracked.dir.is_absolute() and tracked.dir.is_relative_to(tmp_path / "relative-wandb")
    assert tracked.sync_command == f"wandb sync {tracked.dir}"


def test_a_wandb_dir_with_a_space_gives_sync_commands_a_shell_can_run(wandb_home, monkeypatch, tmp_path, capsys):
    """WANDB_DIR='/data/W&B runs' (a space, an ampersand): the printed `wandb sync /data/W&B runs/wandb/offline-run-...`
    pasted into a shell ran `wandb sync /data/W` in the background and then a command named 'runs/wandb/...'."""
    import shlex

    from vlm_lab.cli import main

    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "W&B runs"))
    tracked = tracking.log_interaction(image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c": "a"}, group="g")
    assert shlex.split(tracked.sync_command) == ["wandb", "sync", str(tracked.dir)]
    assert str(tracked).endswith(f"upload it with: wandb sync {shlex.quote(str(tracked.dir))}"), str(tracked)
    (run,) = offline_runs.latest_runs(offline_runs.read_offline_run(p) for p in offline_runs.find_offline_runs(tmp_path))
    assert shlex.split(run.sync_command) == ["wandb", "sync", str(tracked.dir)]
    assert main(["runs"]) == 0
    command = capsys.readouterr().out.strip().splitlines()[-1].strip()
    assert command == f"wandb sync {shlex.quote(str(tracked.dir.parent))}/offline-run-*", command


def test_a_wandb_dir_under_home_written_with_a_tilde_is_the_home_folder(wandb_home, monkeypatch, tmp_path, capsys):
    """WANDB_DIR=~/wandb-runs from a systemd EnvironmentFile or a quoted .env line (no shell expands it): wandb itself
    reads it as the home folder (its `wandb sync` looks there), but the runs went to a folder literally named '~'
    in the kernel's working folder, where neither the user nor wandb looks (and `rm -rf ~` waits to remove home)."""
    from vlm_lab.cli import main

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_DIR", "~/wandb-runs")
    tracked = tracking.log_interaction(image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c": "a"}, group="home")
    assert tracked.dir.is_relative_to(tmp_path / "home" / "wandb-runs" / "wandb"), tracked.dir
    assert not (tmp_path / "~").exists()
    assert main(["runs"]) == 0  # `vlm-lab runs` reads WANDB_DIR as wandb does
    out = capsys.readouterr().out
    assert tracked.id in out and f"wandb sync {tmp_path / 'home' / 'wandb-runs' / 'wandb'}/offline-run-*" in out, out


class _Answers:
    """A real HTTP server on loopback that answers every request with ``status``: a proxy whose upstream is down
    (502/503/504), or a W&B server that refuses the key (401, 403; W&B's own JSON error body). With ``viewer``, it
    accepts the key (answers wandb's ``Viewer`` query as that user) and answers the rest (the run's
    ``UpsertBucket``) with ``status``."""

    def __init__(self, status: int, *, viewer: str = ""):
        import http.server
        import json
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                request = self.rfile.read(int(self.headers.get("content-length") or 0))
                query = json.loads(request).get("query", "") if self.path == "/graphql" else ""
                if viewer and "viewer {" in query and "UpsertBucket" not in query:
                    user = {"id": "VXNlcjox", "entity": viewer, "username": viewer, "email": "", "flags": "{}",
                            "teams": {"edges": []}}  # fmt: skip
                    body, code = json.dumps({"data": {"viewer": user}}).encode(), 200
                elif status in (401, 403):
                    body, code = b'{"errors":[{"message":"permission denied"}]}', status
                else:
                    body, code = b"upstream unavailable", status
                self.send_response(code)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if self.command != "HEAD" else b"")

            do_GET = do_POST = do_HEAD = _answer

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("status, down", [(502, True), (503, True), (504, True), (401, False), (404, False), (501, False)])
def test_a_gateway_error_counts_as_no_server_and_any_other_answer_as_one(status, down):
    """A proxy (or the load balancer in front of a self-hosted W&B) answering 502/503/504 means the server behind it
    is not there: wandb.init retries those for its whole init_timeout (107 s measured with a 502). Any other status
    is the server itself answering (401: the key is refused, which wandb says at once)."""
    import types

    from vlm_lab.tracking_runs import ServerUnreachableError, _check_reachable

    with _Answers(status) as server:
        settings = types.SimpleNamespace(base_url=server.url, init_timeout=90)
        if down:
            with pytest.raises(ServerUnreachableError, match=rf"the W&B server {server.url} is down .* answered HTTP {status} "):
                _check_reachable(settings)
        else:
            _check_reachable(settings)


@pytest.mark.slow
def test_a_proxy_whose_upstream_is_down_is_logged_offline_without_waiting_out_the_init_timeout(wandb_home):
    """End to end, as a sweep's kernel meets it: a key, WANDB_BASE_URL behind a proxy answering 502. Before: 107 s
    per run (killed here at 60 s); now offline at once, the warning naming the status."""
    import os
    import subprocess
    import sys

    from wandb_fixtures import FAKE_KEY

    script = (
        "from PIL import Image\nfrom vlm_lab import tracking\n"
        "print(tracking.log_interaction(image=Image.new('RGB', (8, 8)), prompt='q', outputs={'c': 'a'}, group='g'))\n"
    )
    with _Answers(502) as server:
        env = {k: v for k, v in os.environ.items() if k != "WANDB_INIT_TIMEOUT"} | {
            "WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": server.url,
        }  # fmt: skip
        r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("W&B offline run ") and "answered HTTP 502 " in r.stdout, r.stdout
    assert FAKE_KEY not in r.stdout + r.stderr
    (run_dir,) = offline_runs.find_offline_runs(wandb_home)
    assert offline_runs.read_offline_run(run_dir).group == "g"


_SECRET_KEY = "5f0e1d2c3b4a59687766554433221100ffeeddcc"  # 40 hex characters, as a W&B key is


def _log_online_in_a_fresh_process(
    server_url: str, *, run_id: str = "", key: str = _SECRET_KEY
) -> "subprocess.CompletedProcess[str]":
    """One interaction logged with a key, online, in a fresh process (a notebook kernel; wandb reads its settings once
    per process), as a sweep's kernel logs. Returns what it printed; its warnings are shown, every one."""
    import os
    import subprocess
    import sys

    script = (
        "import sys, warnings\nfrom PIL import Image\nfrom vlm_lab import tracking\nwarnings.simplefilter('always')\n"
        "print(tracking.log_interaction(image=Image.new('RGB', (8, 8)), prompt='q', outputs={'c': 'a'}, group='g'))\n"
        if not run_id else
        "import sys, warnings\nfrom vlm_lab import tracking\nwarnings.simplefilter('always')\n"
        f"run = tracking.start_run({{'a': 1}}, group='g', id={run_id!r}, resume='allow', mode='online')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "WANDB_INIT_TIMEOUT"} | {
        "WANDB_API_KEY": key, "WANDB_BASE_URL": server_url,
    }  # fmt: skip
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)


def _assert_no_part_of_the_key_anywhere(printed: str, root) -> None:
    """Not the key, nor any 8 characters of it, printed or in any file under ``root`` (what `wandb sync` uploads)."""
    parts = {_SECRET_KEY[i : i + 8] for i in range(len(_SECRET_KEY) - 7)}
    assert not [p for p in parts if p in printed], printed
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert not [p for p in parts if p.encode() in data], path


@pytest.mark.slow
@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_names_the_setting_to_fix_and_logs_offline(wandb_home, status):
    """The W&B server refuses the key (401/403 on wandb's first question, who the key's user is). Before: the warning
    and the run said only 'CommError: permission denied', not which setting was wrong, and a dead online run folder
    (run-*, only a header) was left beside the offline run that held the data, for `wandb sync` to upload."""
    with _Answers(status) as server:
        r = _log_online_in_a_fresh_process(server.url)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("W&B offline run "), r.stdout
    first = r.stdout.splitlines()[0]
    assert f"the W&B server {server.url} did not accept the API key in WANDB_API_KEY (permission denied)" in first, first
    assert "set WANDB_API_KEY to a valid key (or unset it and run `wandb login --relogin`)" in first, first
    warning = [line for line in r.stderr.splitlines() if "TrackingWarning" in line]
    assert len(warning) == 1 and "did not accept the API key in WANDB_API_KEY" in warning[0], r.stderr[-3000:]
    assert "; logged offline instead: upload it later with `wandb sync " in warning[0], warning
    _assert_no_part_of_the_key_anywhere(r.stdout + r.stderr, wandb_home)
    folders = sorted(p.name for p in (wandb_home / "wandb").iterdir() if p.is_dir() and not p.is_symlink())
    assert [f.split("-")[0] for f in folders] == ["offline"], folders  # no online run-* folder
    (run_dir,) = offline_runs.find_offline_runs(wandb_home)
    assert offline_runs.read_offline_run(run_dir).group == "g"


@pytest.mark.slow
def test_a_failed_online_start_removes_the_folder_it_made_and_no_other(wandb_home):
    """The key is accepted, but the server refuses the run itself (403 on creating it: a project the key's user may
    not write to). wandb.init had made its online run-<time>-<id> folder (only a header) before it failed: it is
    removed. The earlier start of the same run id (a sweep point run online before) and another run's folder stay."""
    earlier = wandb_home / "wandb" / "run-20260101_000000-sweeppoint1"
    other = wandb_home / "wandb" / "run-20260101_000000-otherrun"
    for folder in (earlier, other):
        (folder / "files").mkdir(parents=True)
        (folder / f"run-{folder.name.rsplit('-', 1)[1]}.wandb").write_bytes(b"log")
    with _Answers(403, viewer="alice") as server:
        r = _log_online_in_a_fresh_process(server.url, run_id="sweeppoint1")
    assert r.returncode != 0, r.stderr[-3000:]  # start_run itself raises, naming what to check
    assert "accepted the API key but did not start the run in project 'vlm-lab' (CommError: " in r.stderr
    assert '"permission denied"' in r.stderr.split("did not start the run", 1)[1]
    assert "may write there (entity=, WANDB_ENTITY; project=, WANDB_PROJECT)" in r.stderr, r.stderr[-3000:]
    _assert_no_part_of_the_key_anywhere(r.stdout + r.stderr, wandb_home)
    left = sorted(p.name for p in (wandb_home / "wandb").iterdir() if p.name.startswith("run-"))
    assert left == [other.name, earlier.name], left
    assert (earlier / "run-sweeppoint1.wandb").read_bytes() == b"log"
    links = [p for p in (wandb_home / "wandb").iterdir() if p.is_symlink()]
    assert all(p.exists() for p in links), [(p.name, p.readlink()) for p in links]  # none points at the removed one


@pytest.mark.slow
def test_a_key_with_a_line_end_names_the_variable_it_came_from(wandb_home):
    """A key read from a file written on Windows (.env with CRLF, `$(cat key)`) ends in '\\r': wandb said only
    'UsageError: API key cannot start or end with whitespace', not which key or where it was set."""
    from space_server import free_port

    r = _log_online_in_a_fresh_process(f"http://127.0.0.1:{free_port()}", key=_SECRET_KEY + "\r")
    assert r.returncode == 0, r.stderr[-3000:]
    first = r.stdout.splitlines()[0]
    assert "(online failed: the W&B API key in WANDB_API_KEY cannot be used (API key cannot start or end with " in first
    assert "set WANDB_API_KEY to a valid key (or unset it and run `wandb login --relogin`))" in first, first
    _assert_no_part_of_the_key_anywhere(r.stdout + r.stderr, wandb_home)


@pytest.mark.slow
def test_a_server_error_on_the_key_check_is_not_blamed_on_the_key(wandb_home):
    """A W&B server answering 500 to wandb's question about the key has not refused it: the message must not send
    the user to replace a valid key; it names the server and WANDB_BASE_URL, and the run is logged offline."""
    with _Answers(500) as server:
        r = _log_online_in_a_fresh_process(server.url)
    assert r.returncode == 0, r.stderr[-3000:]
    first = r.stdout.splitlines()[0]
    assert "(online failed: the W&B server " in first and "did not accept the API key" not in first, first
    assert "could not check the API key" in first and "WANDB_BASE_URL" in first, first
    _assert_no_part_of_the_key_anywhere(r.stdout + r.stderr, wandb_home)
