"""W&B logging, offline, read back from the run's own record log (no server, no mocks)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from PIL import Image

from wandb_fixtures import FAKE_KEY, comparison, wandb_home  # noqa: F401 - fixtures

from vlm_lab import offline_runs, tracking
from vlm_lab.errors import ConfigError, DataError


@pytest.mark.parametrize(
    "env, explicit, expected",
    [
        ({}, None, "offline"),
        ({"WANDB_API_KEY": FAKE_KEY}, None, "online"),
        ({"WANDB_API_KEY": FAKE_KEY, "WANDB_MODE": "offline"}, None, "offline"),
        ({"WANDB_MODE": "dryrun"}, None, "offline"),
        ({"WANDB_MODE": "disabled"}, None, "disabled"),
        ({"WANDB_DISABLED": "true"}, None, "disabled"),
        ({"WANDB_API_KEY": FAKE_KEY}, "disabled", "disabled"),
        ({}, "online", "online"),
    ],
)
def test_mode_is_read_from_env_at_call_time(monkeypatch, env, explicit, expected):
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tracking.resolve_mode(explicit) == expected


def test_unknown_mode_names_the_choices():
    with pytest.raises(ConfigError, match="online, offline, disabled"):
        tracking.resolve_mode("sometimes")


def test_log_interaction_reads_back(wandb_home):
    tracked = tracking.log_interaction(
        image=Image.new("RGB", (32, 32), "blue"),
        prompt="What color is the shape?",
        outputs={"checkpoint-0": "red", "checkpoint-1000": "blue"},
        latency_s={"checkpoint-0": 0.12, "checkpoint-1000": 0.25},
        memory_mb={"checkpoint-0": 10.0, "checkpoint-1000": 11.5},
        group="space",
        tags=("interaction", "demo"),
        config={"strategy": "greedy"},
    )
    assert tracked is not None and tracked.mode == "offline"
    assert tracked.dir.is_relative_to(wandb_home)
    assert tracked.sync_command == f"wandb sync {tracked.dir}"

    run = offline_runs.read_offline_run(tracked.dir)
    assert (run.group, run.job_type, run.tags) == ("space", "interaction", ("interaction", "demo"))
    assert run.config == {"strategy": "greedy"}
    assert run.finished and run.exit_code == 0
    assert run.metrics()["checkpoint-1000/latency_s"] == pytest.approx(0.25)
    rows = run.table("interaction")
    assert [(r["checkpoint"], r["output"], r["memory_mb"]) for r in rows] == [
        ("checkpoint-0", "red", 10.0),
        ("checkpoint-1000", "blue", 11.5),
    ]
    with Image.open(rows[0]["image"]) as img:  # the staged PNG, readable before any sync
        assert img.size == (32, 32) and img.convert("RGB").getpixel((5, 5)) == (0, 0, 255)
    assert run.images() == [rows[0]["image"]]


def test_log_interaction_appends_to_an_open_run(wandb_home):
    run = tracking.start_run({"space": "local"}, job_type="space", group="space")
    try:
        for answer in ("red", "blue"):
            tracked = tracking.log_interaction(
                image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c": answer}, run=run
            )
            assert tracked is not None and tracked.id == run.id
    finally:
        run.finish()
    assert offline_runs.wait_until_written(tracked.dir)  # wandb-core writes the log asynchronously
    back = offline_runs.read_offline_run(tracked.dir)
    assert back.table("interaction")[0]["output"] == "blue"  # the summary keeps the latest


def test_disabled_logs_nothing(wandb_home, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.log_interaction(image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c": "a"}) is None
    assert not wandb_home.exists()


def test_unwritable_wandb_dir_warns_once_and_never_leaks_the_key(wandb_home, monkeypatch, tmp_path):
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    monkeypatch.setenv("WANDB_DIR", str(a_file / "wandb"))  # under a regular file: unwritable even as root
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_MODE", "offline")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tracking.log_interaction(image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c": "a"}) is None
    messages = [str(w.message) for w in caught if issubclass(w.category, tracking.TrackingWarning)]
    assert len(messages) == 1 and "WANDB_DIR" in messages[0] and "not-a-dir" in messages[0]
    assert FAKE_KEY not in messages[0]


def test_reader_rejects_what_is_not_a_run(tmp_path):
    with pytest.raises(DataError, match="no run-\\*.wandb"):
        offline_runs.read_offline_run(tmp_path)
    bogus = tmp_path / "run-x.wandb"
    bogus.write_bytes(b"not a log at all")
    with pytest.raises(DataError, match="not a W&B run log"):
        offline_runs.read_offline_run(bogus)


def test_log_comparison_reads_back(wandb_home, comparison):
    result, config = comparison
    tracked = tracking.log_comparison(
        result, config, project="shapes", entity="my-team", group="ablation-1", tags=("strategy=greedy",), name="greedy"
    )
    assert tracked is not None and tracked.mode == "offline"
    run = offline_runs.read_offline_run(tracked.dir)
    assert (run.project, run.entity, run.group, run.job_type, run.name) == ("shapes", "my-team", "ablation-1", "compare", "greedy")
    assert run.tags == ("strategy=greedy",)
    assert run.config == config.to_dict()  # the typed config, unchanged

    metrics = run.metrics()
    for row in result.summary_frame().to_dict(orient="records"):
        ckpt = row["checkpoint"]
        assert metrics[f"{ckpt}/accuracy"] == pytest.approx(row["accuracy"])
        for key in ("ci_low", "ci_high", "mean_latency_s", "tokens_per_s", "peak_memory_bytes"):
            assert f"{ckpt}/{key}" in metrics
    assert metrics["best/checkpoint"] == "checkpoint-1000" and metrics["best/accuracy"] > 0.5
    assert run.headline()["best/checkpoint"] == "checkpoint-1000"
    by = result.accuracy_by("question_type")  # the best checkpoint's accuracy per question type, for W&B's run charts
    best = by[by["checkpoint"] == "checkpoint-1000"]
    assert {k: v for k, v in metrics.items() if k.startswith("best/accuracy/")} == {
        f"best/accuracy/question_type={t}": pytest.approx(a) for t, a in zip(best["question_type"], best["accuracy"])
    }
    assert len(best) == 3
    assert run.table("accuracy_by/question_type") == [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in by.to_dict(orient="records")
    ]

    rows = run.table("samples")
    frame = result.to_dataframe()
    assert len(rows) == len(frame) == 6
    assert [r["prompt"] for r in rows] == list(frame["prompt"])
    assert [r["checkpoint-1000/output"] for r in rows] == list(frame["checkpoint-1000/output"])
    assert [r["checkpoint-0/score"] for r in rows] == list(frame["checkpoint-0/score"])
    with Image.open(rows[0]["image"]) as img, Image.open(frame["image"][0]) as original:
        assert img.size == original.size
    assert len(run.images()) == frame["image"].nunique()

    (results_artifact,) = [a for a in run.artifacts if a.type == "comparison"]
    assert {"summary.json", "results.csv", "results.jsonl", "comparison.html"} <= set(results_artifact.files)
    assert not any(name.startswith(".") for name in results_artifact.files)  # no result cache


def test_failing_wandb_leaves_the_results_on_disk(wandb_home, comparison, monkeypatch, tmp_path):
    from vlm_lab.results import ComparisonResult

    result, config = comparison
    monkeypatch.setenv("WANDB_DIR", "/proc/vlm-lab-cannot-write-here")
    with pytest.warns(tracking.TrackingWarning, match="WANDB_DIR") as caught:
        tracked = tracking.log_comparison(result, config, group="g")
    assert len(caught) == 1
    assert not tracked and tracked.attempted
    assert str(tracked).startswith("W&B logging was attempted and skipped: could not start the run: OutputPathError")
    reloaded = ComparisonResult.load(result.output_dir)
    assert reloaded.summary == result.summary


@pytest.mark.parametrize(
    "mode, env, reason",
    [
        ("disabled", {}, "W&B is disabled (mode='disabled' was passed)"),
        (None, {"WANDB_MODE": "disabled"}, "W&B is disabled (WANDB_MODE=disabled is set; unset it to log)"),
        (None, {"WANDB_DISABLED": "true"}, "W&B is disabled (WANDB_DISABLED is set; unset it to log)"),
    ],
)
def test_disabled_comparison_says_what_disabled_it(wandb_home, comparison, monkeypatch, mode, env, reason):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with warnings.catch_warnings():
        warnings.simplefilter("error", tracking.TrackingWarning)  # disabled is not a failure
        tracked = tracking.log_comparison(*comparison, group="g", mode=mode)
    assert not tracked and not tracked.attempted and tracked.reason == reason
    assert not wandb_home.exists()


def _notebook_cell_source() -> str:
    """Notebook 02's W&B cell, as committed."""
    import json

    notebook = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "02_compare_checkpoints.ipynb").read_text())
    sources = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    (source,) = [s for s in sources if "log_comparison" in s]
    return source


def _notebook_wandb_cell(comparison, wandb_group: str, wandb_id: str = "", wandb_notebook: str = "") -> str:
    """Run notebook 02's W&B cell on a real comparison; what it prints."""
    import contextlib
    import io

    result, config = comparison
    out = io.StringIO()
    parameters = {"wandb_group": wandb_group, "wandb_tags": "x=1", "wandb_id": wandb_id, "wandb_notebook": wandb_notebook}
    with contextlib.redirect_stdout(out):
        exec(_notebook_cell_source(), {"result": result, "config": config, **parameters})
    return out.getvalue()


def test_notebook_says_whether_wandb_was_asked_for_or_failed(wandb_home, comparison, monkeypatch):
    assert _notebook_wandb_cell(comparison, "") == "not logged to W&B (set wandb_group to log this comparison)\n"
    assert "W&B offline run" in _notebook_wandb_cell(comparison, "nb-group")

    monkeypatch.setenv("WANDB_DIR", "/proc/vlm-lab-cannot-write-here")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    with pytest.warns(tracking.TrackingWarning):
        printed = _notebook_wandb_cell(comparison, "nb-group")
    assert printed.startswith("W&B logging was attempted and skipped: could not start the run") and "WANDB_DIR" in printed
    assert "set wandb_group" not in printed and FAKE_KEY not in printed


@pytest.mark.slow
def test_a_key_without_network_logs_offline_instead_and_never_writes_the_key(wandb_home, comparison, monkeypatch):
    """A key is set, the W&B server cannot be reached: the run is logged offline (nothing lost), the
    notebook says online failed and how to upload later. A fresh process, as a notebook kernel is:
    wandb reads its settings (the init timeout here) once per process."""
    import os
    import subprocess
    import sys

    from space_server import free_port

    result, _config = comparison
    script = (
        "import sys\n"
        "from vlm_lab.results import ComparisonResult\n"
        "result = ComparisonResult.load(sys.argv[1])\n"
        "config, wandb_group, wandb_tags, wandb_id, wandb_notebook = result.config, 'nb-group', '', '', ''\n"
        "exec(sys.argv[2])\n"
    )
    env = os.environ | {
        "WANDB_API_KEY": FAKE_KEY, "WANDB_INIT_TIMEOUT": "5",
        "WANDB_BASE_URL": f"http://127.0.0.1:{free_port()}",  # nobody listens there
    }
    r = subprocess.run([sys.executable, "-c", script, str(result.output_dir), _notebook_cell_source()],
                       env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("W&B offline run ") and "(online failed: " in r.stdout, r.stdout
    assert r.stdout.count("\n") == 1, r.stdout  # wandb's multi-line error folded into the notebook's one line
    assert "upload it with: wandb sync " in r.stdout and "set wandb_group" not in r.stdout
    assert r.stderr.count("logged offline instead: upload it later with `wandb sync ") == 1, r.stderr[-3000:]
    assert FAKE_KEY not in r.stdout + r.stderr
    (run_dir,) = offline_runs.find_offline_runs(wandb_home)
    run = offline_runs.read_offline_run(run_dir)
    assert run.group == "nb-group" and len(run.table("samples")) == len(result.to_dataframe())
    for path in wandb_home.rglob("*"):  # nothing that `wandb sync` would upload holds the key
        assert not path.is_file() or FAKE_KEY.encode() not in path.read_bytes(), path


@pytest.mark.slow
@pytest.mark.parametrize("server", ["refuses", "never answers"])
def test_an_unreachable_server_is_logged_offline_without_waiting_out_the_init_timeout(wandb_home, server):
    """wandb.init waits its whole init_timeout (90 s by default, ~100 s measured) even when the connection
    is refused: each point of a sweep without network spent that long. Without WANDB_INIT_TIMEOUT set, a
    server that refuses or never answers is now found out first and the run logged offline (subprocess
    timeout 60 s; before: killed at 60 s)."""
    import os
    import socket
    import subprocess
    import sys

    from space_server import free_port

    with socket.socket() as silent:  # listens (the connection is made) but never accepts or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1] if server == "never answers" else free_port()
        env = {k: v for k, v in os.environ.items() if k != "WANDB_INIT_TIMEOUT"} | {
            "WANDB_API_KEY": FAKE_KEY, "WANDB_BASE_URL": f"http://127.0.0.1:{port}",
        }  # fmt: skip
        script = (
            "import warnings\nfrom PIL import Image\nfrom vlm_lab import tracking\nwarnings.simplefilter('always')\n"
            "print(tracking.log_interaction(image=Image.new('RGB', (8, 8)), prompt='q', outputs={'c': 'a'}, group='g'))\n"
        )
        r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("W&B offline run ") and f"the W&B server http://127.0.0.1:{port} " in r.stdout, r.stdout
    expected = "did not answer within 10 s" if server == "never answers" else "cannot be reached ("
    assert expected in r.stdout and "WANDB_BASE_URL" in r.stdout, r.stdout
    assert FAKE_KEY not in r.stdout + r.stderr
    (run_dir,) = offline_runs.find_offline_runs(wandb_home)
    assert offline_runs.read_offline_run(run_dir).group == "g"


def test_a_server_whose_certificate_urllib_cannot_check_is_left_to_wandb():
    """A TLS failure means the server answered: wandb may trust what urllib does not (REQUESTS_CA_BUNDLE,
    a company's CA), so it is not reason to log offline. Here: plain bytes where TLS was expected."""
    import socket
    import threading
    import types

    from vlm_lab.tracking_runs import _check_reachable

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

        threading.Thread(target=answer, daemon=True).start()
        _check_reachable(types.SimpleNamespace(base_url=f"https://127.0.0.1:{server.getsockname()[1]}", init_timeout=90))


def test_runs_cli_lists_offline_runs(wandb_home, comparison, capsys):
    from vlm_lab.cli import main

    result, config = comparison
    tracking.log_comparison(result, config, group="sweep-a", tags=("max_new_tokens=4",))
    tracking.log_interaction(image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c": "a"}, group="space")
    assert main(["runs", str(wandb_home)]) == 0
    out = capsys.readouterr().out
    assert "sweep-a" in out and "max_new_tokens=4" in out and "best/accuracy" in out and "space" in out
    best = result.summary[-1]["accuracy"]  # checkpoint-1000's, as a percentage; the per-question-type ones stay out
    assert f"{best:.1%}" in out and "question_type=" not in out, out
    assert f"wandb sync {wandb_home / 'wandb'}/offline-run-*" in out
    assert main(["runs", str(wandb_home), "--group", "nope"]) == 0
    assert "no W&B offline runs" in capsys.readouterr().out

    # A run killed as it started leaves a folder without its run-*.wandb: it is not listed, and the
    # glob that would hand it to `wandb sync` gives way to the runs' own folders.
    (wandb_home / "wandb" / "offline-run-20260101_000000-killed" / "files").mkdir(parents=True)
    assert main(["runs", str(wandb_home)]) == 0
    out = capsys.readouterr().out
    assert "offline-run-*" not in out and "killed" not in out, out
    assert out.count(f"{wandb_home / 'wandb'}/offline-run-") == 2, out


def _tracking_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, tracking.TrackingWarning)]


def test_online_without_a_key_logs_offline_and_says_how_to_go_online(wandb_home, monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))  # no `wandb login` either
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracked = tracking.log_interaction(image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c": "a"}, group="g")
    (message,) = _tracking_warnings(caught)
    assert "W&B mode is online (WANDB_MODE=online) but no W&B API key is configured" in message
    assert "set WANDB_API_KEY or run `wandb login`" in message and "logged offline instead" in message
    assert tracked is not None and tracked.mode == "offline" and "online failed" in str(tracked)
    assert offline_runs.read_offline_run(tracked.dir).group == "g"  # nothing lost: sync it later


def test_long_or_comma_holding_tags_are_kept_not_fatal(wandb_home):
    long_a = "checkpoints=/data/experiments/2026-11-01-a-long-run-name/checkpoint-12000"
    long_b = long_a.replace("12000", "13000")
    with warnings.catch_warnings():
        warnings.simplefilter("error", tracking.TrackingWarning)
        tracked = tracking.log_interaction(
            image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c": "a"}, tags=[long_a, long_b, "short"]
        )
    tags = offline_runs.read_offline_run(tracked.dir).tags
    assert len(tags) == 3 and "short" in tags and all(len(t) <= 64 for t in tags)
    assert tags[0] != tags[1] and tags[0].startswith("checkpoints=/data/experiments/")


def test_sweep_tags_keep_one_tag_per_varied_parameter():
    tags = tracking.variant_tags({"checkpoints": "a/checkpoint-1,b/checkpoint-2", "strategy": "nucleus(0.9)"})
    assert tags.split(",") == ["checkpoints=a/checkpoint-1+b/checkpoint-2", "strategy=nucleus(0.9)"]


def test_runs_cli_lists_the_readable_runs_and_names_the_broken_ones(wandb_home, capsys):
    from vlm_lab.cli import main

    tracked = tracking.log_interaction(image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c": "a"}, group="kept")
    killed = tracked.dir.parent / "offline-run-20990101_000000-killed01"  # killed while wandb.init started
    killed.mkdir()
    (killed / "run-killed01.wandb").write_bytes(b"")
    garbage = tracked.dir.parent / "offline-run-20990101_000001-garbage1"
    garbage.mkdir()
    (garbage / "run-garbage1.wandb").write_bytes(b"not a log")
    assert main(["runs", str(wandb_home)]) == 0
    captured = capsys.readouterr()
    assert "kept" in captured.out and tracked.id in captured.out
    assert f"wandb sync {tracked.dir}\n" in captured.out  # the unreadable ones are not offered for upload
    assert f"{killed}: nothing logged" in captured.err and "safe to delete" in captured.err  # no record, not broken
    assert f"cannot read {garbage}: " in captured.err and "1 unreadable run folder(s) skipped" in captured.err


def test_runs_cli_on_a_missing_folder_says_so(tmp_path, capsys):
    from vlm_lab.cli import main

    assert main(["runs", str(tmp_path / "nope")]) == 2
    assert f"no folder at {tmp_path / 'nope'}" in capsys.readouterr().err


def test_a_table_reads_back_after_its_staged_copy_is_gone(wandb_home):
    """W&B deletes staged artifact files once synced (and a tmp WANDB_DATA_DIR does not survive a
    reboot): the rows come from the run folder's own copy, where wandb wrote each image as "Image"."""
    import shutil

    tracked = tracking.log_interaction(image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c-0": "red", "c-1": "blue"})
    shutil.rmtree(wandb_home / "data")
    run = offline_runs.read_offline_run(tracked.dir)
    rows = run.table("interaction")
    assert [(r["checkpoint"], r["output"], r["image"]) for r in rows] == [("c-0", "red", "Image"), ("c-1", "blue", "Image")]
    assert run.images() == []  # only images still on disk


def test_a_sweep_run_is_named_by_its_variant(wandb_home, comparison):
    tracked = tracking.log_comparison(*comparison, group="shapes-ablation", tags="max_new_tokens=4,strategy=greedy")
    run = offline_runs.read_offline_run(tracked.dir)
    assert run.name == "max_new_tokens=4,strategy=greedy"  # not W&B's random words
    assert run.tags == ("max_new_tokens=4", "strategy=greedy")


def test_the_notebook_version_is_a_tag_and_a_config_key_and_leaves_the_name_the_variant(wandb_home, comparison):
    """A sweep re-run after its notebook was edited made W&B runs with the same group, name and tags as the earlier
    notebook's: W&B mixed two notebook versions and nothing told them apart. The version (a sweep's
    ``wandb_notebook``) is a ``notebook=`` tag and a config key; the name stays the variant's, so an unedited
    notebook's runs keep theirs."""
    tracked = tracking.log_comparison(*comparison, group="shapes-ablation", tags="strategy=greedy", notebook="1a2b3c4d")
    run = offline_runs.read_offline_run(tracked.dir)
    assert run.name == "strategy=greedy" and run.group == "shapes-ablation"
    assert run.tags == ("strategy=greedy", "notebook=1a2b3c4d")
    assert run.config["wandb_notebook"] == "1a2b3c4d" and run.config["num_samples"] == 6  # beside the config's fields
    plain = offline_runs.read_offline_run(tracking.log_comparison(*comparison, group="g", tags="strategy=greedy").dir)
    assert plain.tags == ("strategy=greedy",) and "wandb_notebook" not in plain.config  # not a sweep's: nothing added


def test_notebook_02s_wandb_cell_passes_the_sweeps_notebook_version(wandb_home, comparison):
    printed = _notebook_wandb_cell(comparison, "nb-group", wandb_id="nbversion0001", wandb_notebook="0badc0de")
    assert printed.startswith("W&B offline run nbversion0001 in "), printed
    (folder,) = offline_runs.find_offline_runs(wandb_home)
    run = offline_runs.read_offline_run(folder)
    assert (run.name, run.tags, run.config["wandb_notebook"]) == ("x=1", ("x=1", "notebook=0badc0de"), "0badc0de")


def test_a_run_logged_again_with_its_id_is_one_run_the_latest(wandb_home, comparison, capsys):
    """A sweep point killed mid-run and run again: notebook 02 logs with the sweep's wandb_id both
    times. wandb offline writes one folder per start; the reader and `vlm-lab runs` show one run (the
    complete latest start) and offer every folder to one `wandb sync`, which merges them in start order."""
    from vlm_lab.cli import main

    half = tracking.start_run({"strategy": "greedy"}, group="nb-group", id="sweeppoint0001", resume="allow")
    half.finish(exit_code=1)  # the killed execution: started, nothing logged
    printed = _notebook_wandb_cell(comparison, "nb-group", wandb_id="sweeppoint0001")
    assert printed.startswith("W&B offline run sweeppoint0001 in "), printed
    tracking.log_interaction(image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c": "a"}, group="other")

    folders = offline_runs.find_offline_runs(wandb_home)
    assert len(folders) == 3  # wandb's own layout: one folder per start
    runs = offline_runs.latest_runs([offline_runs.read_offline_run(f) for f in folders])
    (point,) = [r for r in runs if r.group == "nb-group"]
    assert len(runs) == 2 and point.id == "sweeppoint0001"
    assert point.finished and point.exit_code == 0 and "best/accuracy" in point.metrics()  # the latest start
    assert point.config == comparison[1].to_dict()
    (earlier,) = point.earlier
    assert earlier == Path(half.settings.sync_dir) and earlier != point.dir
    assert point.sync_command == f"wandb sync {earlier} {point.dir}"  # oldest first: the latest wins on W&B

    assert main(["runs", str(wandb_home), "--group", "nb-group"]) == 0
    out = capsys.readouterr().out
    table = out.split("\n\n")[0]
    assert table.count("sweeppoint0001") == 1 and "finished" in table and "failed" not in table, out
    assert "1 offline run(s)" in out and f"wandb sync {earlier} {point.dir}\n" in out


@pytest.mark.parametrize(
    "env, explicit, expected",
    [({}, None, "vlm-lab"), ({"WANDB_PROJECT": "team-ablations"}, None, "team-ablations"),
     ({"WANDB_PROJECT": "team-ablations"}, "mine", "mine")],
)
def test_the_project_follows_wandb_project_unless_one_is_passed(wandb_home, monkeypatch, env, explicit, expected):
    """WANDB_PROJECT is how a cron .env or a CI job points runs at a team's project: vlm_lab's default
    project, passed to wandb.init, silently overrode it."""
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    given = {"project": explicit} if explicit else {}
    tracked = tracking.log_interaction(image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c": "a"}, **given)
    assert offline_runs.read_offline_run(tracked.dir).project == expected


def test_runs_cli_tells_uploaded_runs_from_the_others_and_offers_only_those(wandb_home, capsys):
    """After `wandb sync` (which marks each uploaded log with a run-*.wandb.synced file and skips it
    next time) the listing still said every run was to upload: which ones are still only local?"""
    from vlm_lab.cli import main

    done, todo = (tracking.log_interaction(image=Image.new("RGB", (8, 8)), prompt="q", outputs={"c": "a"}, group=g)
                  for g in ("uploaded", "local"))  # fmt: skip
    (log,) = done.dir.glob("run-*.wandb")
    log.with_suffix(".wandb.synced").touch()  # as `wandb sync` leaves an uploaded run (wandb.cli.beta_sync)
    assert main(["runs", str(wandb_home)]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith((done.id, todo.id))}
    assert rows[done.id][-1] == "yes" and rows[todo.id][-1] == "no", out
    assert f"2 offline run(s), 1 uploaded already. Upload the other 1 (needs WANDB_API_KEY" in out
    assert out.rstrip().endswith(f"wandb sync {todo.dir}"), out

    (log,) = todo.dir.glob("run-*.wandb")
    log.with_suffix(".wandb.synced").touch()
    assert main(["runs", str(wandb_home)]) == 0
    out = capsys.readouterr().out
    assert "2 offline run(s), all uploaded already (`wandb sync` marked them); nothing to sync" in out
    assert "wandb sync /" not in out


def test_log_comparison_records_its_outcome_beside_the_results(wandb_home, comparison, monkeypatch):
    """wandb.json in the comparison's folder says what W&B did, so a sweep's summary (read in the
    morning, away from the notebook that printed the warning) can say it too; never the key."""
    result, config = comparison
    record_path = Path(result.output_dir) / tracking.RECORD_FILE

    tracked = tracking.log_comparison(result, config, group="g")
    record = tracking.read_record(result.output_dir)
    assert (record["logged"], record["mode"], record["run_id"]) == (True, "offline", tracked.id)
    assert record["sync_command"] == tracked.sync_command and tracking.describe_record(record) == "offline"
    again = offline_runs.read_offline_run(tracking.log_comparison(result, config, group="g").dir)  # a wandb.json is there now
    (artifact,) = [a for a in again.artifacts if a.type == "comparison"]
    assert "summary.json" in artifact.files and tracking.RECORD_FILE not in artifact.files  # the outcome is not a result

    tracking.log_comparison(result, config, mode="disabled")
    assert tracking.describe_record(tracking.read_record(result.output_dir)) == "disabled"

    monkeypatch.setenv("WANDB_DIR", "/proc/vlm-lab-cannot-write-here")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.warns(tracking.TrackingWarning):
        tracking.log_comparison(result, config, group="g")
    record = tracking.read_record(result.output_dir)
    assert record["logged"] is False and record["mode"] == "offline" and record["run_id"] is None
    described = tracking.describe_record(record)
    assert described.startswith("NOT LOGGED: could not start the run: OutputPathError: W&B directory") and "WANDB_DIR" in described
    assert FAKE_KEY not in record_path.read_text()
    assert tracking.describe_record(None) == ""


def test_a_base_url_with_credentials_is_probed_without_them_and_never_printed():
    """WANDB_BASE_URL=http://user:secret@host: the probe read 'user:secret@host' as the host name (so a reachable
    server was logged offline) and printed the password in its error."""
    from types import SimpleNamespace

    from vlm_lab.tracking_runs import ServerUnreachableError, _check_reachable

    with pytest.raises(ServerUnreachableError) as caught:
        _check_reachable(SimpleNamespace(base_url="http://user:s3cret@127.0.0.1:9", init_timeout=5))
    assert "s3cret" not in str(caught.value) and "http://127.0.0.1:9 cannot be reached" in str(caught.value), caught.value


def test_a_comparison_draws_its_metrics_along_training_in_the_wandb_charts(wandb_home, comparison):
    """W&B draws charts from a run's history; every number was only in the summary, so after `wandb sync` the run's
    charts held no accuracy-along-training line and a user had to build panels by hand. One history row per checkpoint,
    in step order, against ``eval/step`` (its training step); the summary keeps its per-checkpoint keys and no last-row
    ``eval/*`` value that would read as the run's accuracy."""
    result, config = comparison
    tracked = tracking.log_comparison(result, config, group="g")
    run = offline_runs.read_offline_run(tracked.dir)
    rows = [r for r in run.history if "eval/step" in r]
    summary = sorted(result.summary, key=lambda s: s["step"])
    assert [r["eval/step"] for r in rows] == [s["step"] for s in summary] == [0, 1000]
    for row, s in zip(rows, summary):
        for metric in ("accuracy", "ci_low", "ci_high", "mean_latency_s", "tokens_per_s", "peak_memory_bytes"):
            assert row[f"eval/{metric}"] == pytest.approx(s[metric]), metric
    (log,) = tracked.dir.glob("run-*.wandb")
    metrics = {r.metric.glob_name or r.metric.name: r.metric for r in offline_runs.iter_records(log) if r.HasField("metric")}
    assert metrics["eval/*"].step_metric == "eval/step" and metrics["eval/*"].summary.none
    assert not any(key.startswith("eval/") for key in run.metrics())
    assert run.metrics()["checkpoint-1000/accuracy"] == pytest.approx(summary[-1]["accuracy"])


def test_the_comparison_artifact_holds_the_results_not_whatever_shares_their_folder(wandb_home, comparison, tmp_path):
    """A sweep run's folder also holds its bookkeeping (status.json saying 'running', with a pid; params.json; an
    earlier failed execution's notebook), and a user's output_dir may hold a training run's checkpoints: every file
    went into the uploaded 'comparison' artifact (weights copied into W&B's staging folder, then uploaded)."""
    from vlm_lab.results import ComparisonResult

    result, config = comparison
    mine = ComparisonResult.load(result.output_dir)
    folder = mine.save(tmp_path / "run")
    (folder / "accuracy.png").write_bytes((Path(result.output_dir) / mine.rows[0]["image"]).read_bytes())  # notebook 02's plot
    (folder / "status.json").write_text('{"state": "running", "pid": 4242}')
    (folder / "params.json").write_text("{}")
    (folder / "02_compare_checkpoints.ipynb").write_text("{}")
    (folder / "checkpoint-500").mkdir()
    (folder / "checkpoint-500" / "model.safetensors").write_bytes(b"\0" * 4096)
    (folder / "images" / "stray.png").write_bytes(b"not one of the comparison's images")
    tracked = tracking.log_comparison(mine, config, group="g")
    (artifact,) = [a for a in offline_runs.read_offline_run(tracked.dir).artifacts if a.type == "comparison"]
    images = {row["image"] for row in mine.rows}
    assert set(artifact.files) == {"results.jsonl", "results.csv", "summary.json", "comparison.html", "accuracy.png", *images}


def test_the_summary_says_what_kind_of_memory_each_checkpoint_measured(wandb_home, comparison):
    """On CPU ``peak_memory_bytes`` is the weights' size, on a GPU the measured peak; W&B showed the number alone,
    so a CPU sweep's weight bytes read as a peak beside a GPU sweep's in the runs table."""
    result, config = comparison
    tracked = tracking.log_comparison(result, config, group="g")
    metrics = offline_runs.read_offline_run(tracked.dir).metrics()
    for s in result.summary:
        assert metrics[f"{s['checkpoint']}/memory_kind"] == s["memory_kind"] == "cpu_weights"
        assert metrics[f"{s['checkpoint']}/peak_memory_bytes"] == s["peak_memory_bytes"]
