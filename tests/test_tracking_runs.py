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
    (502/503/504), or a W&B server that refuses the key (401)."""

    def __init__(self, status: int):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                body = b"upstream unavailable"
                self.send_response(status)
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
