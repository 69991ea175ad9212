"""Papermill sweeps on real kernels: failure isolation, resume after a kill, the lock, shards."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from vlm_lab import sweep
from vlm_lab.ablation import Ablation
from vlm_lab.cli import main
from vlm_lab.config import SweepConfig
from vlm_lab.errors import ConfigError, SweepError

ROOT = Path(__file__).resolve().parents[1]

# A fast stand-in for notebook 02: no model, but the same contract (parameters cell,
# output_dir, a comparison-shaped summary.json), and a cell that fails when told to.
PARAMETERS = """\
x: int = 1  # a grid value
fail_on: int = -1  # raise in the last cell when x equals this
sleep_s: float = 0.0  # 0 = no sleep; makes runs slow enough to kill one
tag: str = ""  # a text grid value
output_dir: str = "out"  # set by the sweep
wandb_group: str = ""  # set by the sweep
wandb_tags: str = ""  # set by the sweep
wandb_id: str = ""  # set by the sweep
"""
WORK = """\
import json, pathlib, time
with open(pathlib.Path(output_dir).parent / "wandb_ids.log", "a") as log:  # every execution, before a kill
    log.write(f"{pathlib.Path(output_dir).name} {wandb_id}\\n")
time.sleep(sleep_s)
pathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)
summary = [{"checkpoint": f"checkpoint-{s}", "step": s, "accuracy": x * s / 100, "ci_low": 0.0, "ci_high": 1.0,
            "mean_latency_s": 0.01, "tokens_per_s": 100.0 * x, "peak_memory_bytes": 1000} for s in (0, 10)]
meta = {"config": {"x": x, "group": wandb_group, "tags": wandb_tags}, "summary": summary}
pathlib.Path(output_dir, "summary.json").write_text(json.dumps(meta))
"""
FAIL = """\
if x == fail_on:
    raise ValueError(f"boom at x={x}")
"""


def write_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(PARAMETERS)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test sweep notebook"), params,
                nbformat.v4.new_code_cell(WORK), nbformat.v4.new_code_cell(FAIL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def sweep_file(tmp_path, monkeypatch):
    """Writes a sweep YAML over the test notebook; runs land in tmp_path/runs."""
    monkeypatch.chdir(tmp_path)
    write_notebook(tmp_path / "nb.ipynb")

    def make(grid: dict, parameters: dict | None = None, name: str = "t") -> Path:
        path = tmp_path / f"{name}.yaml"
        spec = {"name": name, "notebook": "nb.ipynb", "parameters": parameters or {}, "grid": grid}
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        return path

    return make


def test_one_failing_run_does_not_stop_the_others(sweep_file, tmp_path, capsys):
    path = sweep_file({"x": [1, 2, 3]}, {"fail_on": 2})
    assert main(["sweep", str(path), "--jobs", "2", "--quiet"]) == 1

    out = capsys.readouterr().out
    runs = sweep.plan(sweep.load_sweep(path))
    states = {r.varied["x"]: r.status() for r in runs}
    assert {x: s["state"] for x, s in states.items()} == {1: "completed", 2: "failed", 3: "completed"}
    failed = states[2]
    assert failed["error"] == {"cell_index": 4, "exec_count": 4, "ename": "ValueError", "evalue": "boom at x=2"}
    assert "FAILED x=2," in out and "cell [4]: ValueError: boom at x=2" in out
    for run in runs:  # executed notebook (also the failed one), params, results, no temp files
        # kernel.log only when the kernel printed something itself (libzmq's intermittent assertion at
        # exit, zeromq/libzmq#1307; no longer ipykernel's 'KeyboardInterrupt caught': test_sweep_papermill)
        names = sorted(p.name for p in run.dir.iterdir() if p.name != "kernel.log")
        assert names == ["nb.ipynb", "params.json", "status.json", "summary.json"], names
        params = json.loads((run.dir / "params.json").read_text())
        assert params["output_dir"] == str(run.dir.resolve())
        assert (params["wandb_group"], params["wandb_tags"]) == ("t", f"x={run.varied['x']}")
    failed_nb = nbformat.read(runs[1].dir / "nb.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in failed_nb.cells for o in c.get("outputs", []))

    summary = pd.read_csv(tmp_path / "runs" / "t" / "summary.csv")
    assert list(summary["state"]) == ["completed", "failed", "completed"]
    # The failing cell ran after the results were written: those are not the failed run's result.
    assert summary["best_accuracy"].tolist()[::2] == [0.1, 0.3] and summary[["best_accuracy", "best_checkpoint"]].iloc[1].isna().all()
    assert "cell [4]: ValueError: boom at x=2" in (tmp_path / "runs" / "t" / "summary.md").read_text()

    # Re-running skips the completed runs and retries the failed one.
    report = sweep.run_sweep(sweep.load_sweep(path), progress=False)
    assert len(report.skipped) == 2 and report.ran == (runs[1].run_id,) and not report.ok


def test_resume_after_a_kill(sweep_file, tmp_path):
    path = sweep_file({"x": [1, 2, 3]}, {"sleep_s": 1.5})
    runs = sweep.plan(sweep.load_sweep(path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlm_lab.cli", "sweep", str(path), "--quiet"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not runs[0].completed:
            assert proc.poll() is None and time.monotonic() < deadline, "first run never completed"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its kernel
        proc.wait()
    assert runs[1].status()["state"] in ("running", "pending")  # killed mid-run: not trusted
    first_finished = runs[0].status()["finished_at"]

    report = sweep.run_sweep(sweep.load_sweep(path), progress=False)
    assert report.ok and report.skipped == (runs[0].run_id,), report.describe()
    assert set(report.ran) == {runs[1].run_id, runs[2].run_id}
    assert runs[0].status()["finished_at"] == first_finished
    assert all(r.completed for r in runs)


def test_a_run_re_run_after_a_kill_keeps_its_wandb_id(sweep_file, tmp_path):
    """The interrupted run executes twice; both executions log into one W&B run (notebook 02 passes
    wandb_id to wandb.init with resume="allow"), not one half-logged run plus a second one."""
    import wandb

    path = sweep_file({"x": [1, 2]}, {"sleep_s": 1.5})
    runs = sweep.plan(sweep.load_sweep(path))
    log = runs[0].dir.parent / "wandb_ids.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlm_lab.cli", "sweep", str(path), "--quiet"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: log.is_file() and log.read_text().endswith("\n"), proc, "the first run starting its notebook")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its kernel, mid-run (the notebook sleeps 1.5 s)
        proc.wait()
    assert not runs[0].completed
    ((killed, first_id),) = _wandb_ids(log)
    assert killed == runs[0].run_id and re.fullmatch(r"[0-9a-f]{16}", first_id)
    assert wandb.Settings(run_id=first_id).run_id == first_id  # a valid W&B run id (wandb validates it)

    report = sweep.run_sweep(sweep.load_sweep(path), progress=False)
    assert report.ok and set(report.ran) == {r.run_id for r in runs}, report.describe()
    ids = dict(_wandb_ids(log)[1:])
    assert ids[runs[0].run_id] == first_id  # the re-run resumes the killed execution's W&B run
    assert ids[runs[1].run_id] != first_id  # another point: another run
    assert json.loads((runs[0].dir / "params.json").read_text())["wandb_id"] == first_id

    shutil.rmtree(runs[0].dir)  # thrown away: running it again is a fresh W&B run, not a resumed one
    assert sweep.run_sweep(sweep.load_sweep(path), progress=False).ran == (runs[0].run_id,)
    assert _wandb_ids(log)[-1][1] not in (first_id, ids[runs[1].run_id])


def test_a_run_keeps_its_wandb_id_when_its_folder_is_reached_by_another_path(sweep_file, tmp_path):
    """Shards on machines that mount runs/ at other paths: a failed run re-run elsewhere is still one W&B run."""
    path = sweep_file({"x": [1]}, {"fail_on": 1})
    assert not sweep.run_sweep(sweep.load_sweep(path), progress=False).ok
    (tmp_path / "runs").rename(tmp_path / "mounted")  # the same folder, as another machine sees it
    assert not sweep.run_sweep(sweep.load_sweep(path, runs_dir=str(tmp_path / "mounted")), progress=False).ok
    ids = [i for _, i in _wandb_ids(tmp_path / "mounted" / "t" / "wandb_ids.log")]
    assert len(ids) == 2 and ids[0] == ids[1]


def _wandb_ids(log: Path) -> list[tuple[str, str]]:
    """(run id, wandb_id) of every execution of the test notebook in a sweep, in order."""
    return [tuple(line.split(" ")) for line in log.read_text().splitlines()]


def test_a_second_invocation_exits_cleanly_while_the_lock_is_held(sweep_file, tmp_path, capsys):
    path = sweep_file({"x": [1]})
    lock = tmp_path / "runs" / "t" / ".lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on node-7 since 2026-11-22T02:30:00+00:00\n")  # as the holder writes it
        held.flush()
        assert main(["sweep", str(path), "--quiet"]) == sweep.LOCKED_EXIT_CODE == 75
    err = capsys.readouterr().err
    assert "already running (pid 4242 on node-7 since 2026-11-22T02:30:00+00:00;" in err, err  # who holds it
    assert not sweep.plan(sweep.load_sweep(path))[0].dir.exists()  # nothing ran


def test_unknown_parameter_is_rejected_before_anything_runs(sweep_file, tmp_path, capsys):
    path = sweep_file({"x": [1], "learning_rat": [0.1]})
    assert main(["sweep", str(path)]) == 2
    err = capsys.readouterr().err
    assert "no parameter(s) learning_rat" in err and "declares: fail_on, output_dir" in err
    assert not (tmp_path / "runs").exists()


def test_dry_run_lists_the_runs(sweep_file, capsys):
    path = sweep_file({"x": [1, 2], "sleep_s": [0.0, 0.1]})
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 run(s)" in out and out.count("\n  pending ") == 4 and "sleep_s=0.1,x=2," in out
    assert out.endswith(f"\n4 pending; `vlm-lab sweep {path}` runs the 4 not completed\n"), out


def test_dry_run_says_why_each_failed_run_failed_and_counts_the_states(sweep_file, capsys):
    """The morning after: `--dry-run` listed a run as `failed` with no reason (it is in status.json and summary.md),
    and a 100-run grid had to be counted by eye."""
    path = sweep_file({"x": [1, 2, 3]}, {"fail_on": 2})
    assert main(["sweep", str(path), "--quiet"]) == 1
    capsys.readouterr()
    assert main(["sweep", str(path), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "t: 3 run(s) -> runs/t", lines  # no shard named when the sweep is not sharded
    assert re.fullmatch(r"  failed +x=2,\w+  cell \[4\]: ValueError: boom at x=2", lines[2]), lines
    assert re.fullmatch(r"  completed +x=3,\w+", lines[3]), lines
    assert lines[-1] == f"2 completed, 1 failed; `vlm-lab sweep {path}` runs the 1 not completed", lines


def test_dry_runs_command_keeps_the_runs_dir_and_shard_that_picked_its_runs(sweep_file, tmp_path, capsys):
    """`--runs-dir X --dry-run` said `vlm-lab sweep FILE` runs the rest: that command runs every point again in the
    default runs folder, not the ones listed."""
    path = sweep_file({"x": [1, 2]}, {"fail_on": 2})
    runs = tmp_path / "my runs"
    assert main(["sweep", str(path), "--quiet", "--runs-dir", str(runs)]) == 1
    capsys.readouterr()
    assert main(["sweep", str(path), "--dry-run", "--runs-dir", str(runs), "--shard", "0/1"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    command = shlex.join(["vlm-lab", "sweep", str(path), "--runs-dir", str(runs), "--shard", "0/1"])
    assert last == f"1 completed, 1 failed; `{command}` runs the 1 not completed", last


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_shards_cover_the_grid_exactly_once(count):
    config = SweepConfig(name="s", notebook="nb.ipynb", grid={"a": [1, 2, 3], "b": ["x", "nucleus(0.9)"]})
    every = sweep.plan(config, fingerprint="f")
    dealt = [r.run_id for i in range(count) for r in sweep.shard(every, i, count)]
    assert sorted(dealt) == sorted(r.run_id for r in every) and len(dealt) == 6
    sizes = [len(sweep.shard(every, i, count)) for i in range(count)]
    assert max(sizes) - min(sizes) <= 1


def test_run_ids_are_readable_stable_and_follow_every_parameter():
    base = SweepConfig(name="s", notebook="nb.ipynb", parameters={"num_samples": 64}, grid={"strategy": ["nucleus(0.9)"]})
    (run,) = sweep.plan(base, fingerprint="f")
    assert run.run_id.startswith("strategy=nucleus-0.9,") and len(run.run_id.split(",")[-1]) == 8
    assert sweep.plan(base, fingerprint="f")[0].run_id == run.run_id
    changed = base.replace(parameters={"num_samples": 32})
    assert sweep.plan(changed, fingerprint="f")[0].run_id != run.run_id  # a changed fixed parameter never resumes stale runs
    assert sweep.plan(base, fingerprint="g")[0].run_id != run.run_id  # nor does another notebook (or kernel)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"grid": {"strategy": "greedy"}}, "grid.strategy must be a non-empty list"),
        ({"grid": {"a": [1, 1]}}, "repeats a value"),
        ({"parameters": {"a": 1}, "grid": {"a": [2]}}, "both parameters and grid"),
        ({"parameters": {"output_dir": "x"}}, "set by the sweep"),
        ({"grid": {"wandb_id": ["a", "b"]}}, "wandb_id are set by the sweep for each run"),
        ({"shard_index": 2, "shard_count": 2}, "0-based"),
        ({"name": "a b"}, "sweep name"),
        ({"notebook": "nb.py"}, ".ipynb"),
        ({"jobs": 0}, "jobs must be a positive integer"),
    ],
)
def test_sweep_config_names_the_bad_value(changes, message):
    with pytest.raises(ConfigError, match=message):
        SweepConfig(**{"name": "s", "notebook": "nb.ipynb", **changes})


def test_sweep_file_errors(tmp_path):
    with pytest.raises(SweepError, match="no sweep file"):
        sweep.load_sweep(tmp_path / "missing.yaml")
    (tmp_path / "sweeps").mkdir()  # `vlm-lab sweep sweeps/`: a folder, not a traceback
    (tmp_path / "sweeps" / "a.yaml").write_text("name: a\n")
    with pytest.raises(SweepError, match=r"sweeps is a folder \(.*a.yaml\); give one sweep file, or run them all with"):
        sweep.load_sweep(tmp_path / "sweeps")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(SweepError, match="cannot read the sweep file .*binary.yaml: 'utf-8' codec"):
        sweep.load_sweep(tmp_path / "binary.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: s\nnotebook: nb.ipynb\ngird: {a: [1]}\n")
    with pytest.raises(ConfigError, match="unknown SweepConfig field.*gird"):
        sweep.load_sweep(bad)


def test_example_sweep_file_is_valid():
    config = sweep.load_sweep(ROOT / "sweeps" / "shapes-ablation.yaml")
    assert config.grid == {"strategy": ["greedy", "nucleus(0.9)"], "max_new_tokens": [4, 8]}
    assert len(sweep.plan(config)) == 4


def test_ablation_report_from_a_sweep(sweep_file):
    path = sweep_file({"x": [1, 2], "fail_on": [-1, 99]})
    report = sweep.run_sweep(sweep.load_sweep(path, jobs=2), progress=False)
    assert report.ok, report.describe()
    ablation = Ablation.load(report.sweep_dir)
    assert ablation.varied == ["x", "fail_on"] and len(ablation.results) == 8
    best = ablation.best()
    assert (best["x"], best["checkpoint"], best["accuracy"]) == (2, "checkpoint-10", 0.2)
    assert "best variant: checkpoint-10 with x=2" in ablation.describe_best() and best["ties"] == 1  # fail_on varies
    fastest = ablation.best("mean_latency_s")  # lower is better
    assert fastest["mean_latency_s"] == 0.01
    table = ablation.table()
    assert list(table.index) == [0, 10] and table.shape == (2, 4)
    assert len(ablation.plot().axes) == 2


@pytest.mark.slow
def test_real_sweep_of_notebook_02_logs_one_wandb_run_per_point(tiny_checkpoints, tmp_path, monkeypatch):
    from vlm_lab import offline_runs, tracking

    for name, value in tracking.local_env(tmp_path / "wandb-home").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.chdir(tmp_path)
    config = SweepConfig(
        name="nb02", notebook=str(ROOT / "notebooks" / "02_compare_checkpoints.ipynb"), runs_dir=str(tmp_path / "runs"),
        parameters={"checkpoints": f"{tiny_checkpoints[0]},{tiny_checkpoints[-1]}", "num_samples": 6, "device": "cpu",
                    "max_new_tokens": 4},
        grid={"strategy": ["greedy", "nucleus(0.9)"]}, jobs=2,
    )  # fmt: skip
    report = sweep.run_sweep(config, progress=False)
    assert report.ok and len(report.ran) == 2, report.describe()

    summary = pd.read_csv(report.summary_csv)
    assert list(summary["state"]) == ["completed", "completed"]
    assert set(summary["best_checkpoint"]) <= {"checkpoint-0", "checkpoint-1000"}
    assert (summary["checkpoint-1000/accuracy"] >= summary["checkpoint-0/accuracy"]).all()

    runs = [offline_runs.read_offline_run(p) for p in offline_runs.find_offline_runs(tmp_path / "wandb-home")]
    notebook = f"notebook={sweep.notebook_fingerprint(config)[:8]}"  # the notebook version, beside the variant
    assert sorted(r.tags for r in runs) == [("strategy=greedy", notebook), ("strategy=nucleus(0.9)", notebook)]
    assert sorted(r.name for r in runs) == ["strategy=greedy", "strategy=nucleus(0.9)"]
    assert {r.group for r in runs} == {"nb02"}
    points = sweep.plan(config)  # each W&B run has its point's id: a re-run point resumes it
    assert {r.id for r in runs} == {json.loads((p.dir / "params.json").read_text())["wandb_id"] for p in points}
    for run in runs:
        assert run.config["num_samples"] == 6 and run.config["output_dir"].startswith(str(tmp_path / "runs" / "nb02"))
        assert len(run.table("samples")) == 6 and "best/accuracy" in run.metrics()
    assert list(summary["wandb"]) == ["offline", "offline"]  # notebook 02's wandb.json, per run

    # W&B breaks overnight (an unwritable WANDB_DIR) while a new point runs: the run completes (logging
    # never breaks an experiment), and the summary and the report say W&B did not log it.
    not_a_dir = tmp_path / "not-a-dir"
    not_a_dir.write_text("x")
    monkeypatch.setenv("WANDB_DIR", str(not_a_dir / "wandb"))
    report = sweep.run_sweep(config.replace(grid={"strategy": ["greedy", "nucleus(0.9)", "temperature(0.7)"]}), progress=False)
    assert report.ok and len(report.ran) == 1 and len(report.skipped) == 2, report.describe()
    summary = pd.read_csv(report.summary_csv, keep_default_na=False).set_index("strategy")
    assert summary.loc[["greedy", "nucleus(0.9)"], "wandb"].tolist() == ["offline", "offline"]
    assert summary.loc["temperature(0.7)", "wandb"].startswith("NOT LOGGED: could not start the run: OutputPathError")
    assert "W&B did not log 1 run(s) as asked:" in report.describe() and "not-a-dir" in report.describe()


def test_cron_wrapper_runs_every_sweep_file(sweep_file, tmp_path):
    (tmp_path / "sweeps").mkdir()
    for name in ("a", "b"):
        sweep_file({"x": [1, 2]}, name=name).rename(tmp_path / "sweeps" / f"{name}.yaml")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_experiments.py"), "--dry-run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "a: 2 run(s)" in proc.stdout and "b: 2 run(s)" in proc.stdout


@pytest.mark.parametrize(
    "text, message",
    [
        ("notebook: nb.ipynb\ngrid: {x: [1]}\n", r"missing required SweepConfig field\(s\): name .*add it"),
        ("name: t\ngrid: {x: [1]}\n", r"missing required SweepConfig field\(s\): notebook"),
        ("name: t\nnotebook: nb.ipynb\njobs: two\n", r"jobs must be a whole number, got 'two' \(str\)"),
    ],
)
def test_an_invalid_sweep_file_is_one_line_and_exit_2(sweep_file, tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: ConfigError: {path}: ") and err.count("\n") == 1, err
    assert re.search(message, err), err


def test_cron_wrapper_reports_an_invalid_sweep_file_and_runs_the_next(sweep_file, tmp_path):
    bad = tmp_path / "a-bad.yaml"
    bad.write_text("notebook: nb.ipynb\ngrid: {x: [1]}\n")
    good = sweep_file({"x": [1]}, name="b")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "run_experiments.py"), str(bad), str(good), "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr  # the worst: an invalid file beats a completed sweep
    assert "Traceback" not in proc.stderr
    assert f"error: ConfigError: {bad}: missing required SweepConfig field(s): name" in proc.stderr
    assert f"{bad}: exit 2 (invalid sweep file, nothing ran)" in proc.stderr
    assert "b: 1 ran, 0 skipped" in proc.stdout  # the sweep after the invalid one still ran
    assert all(r.completed for r in sweep.plan(sweep.load_sweep(good)))
    # Each file's lines follow its name in the log: an error naming no sweep file is attributable.
    lines = proc.stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if line.endswith(f" sweep file {bad} (1 of 2)"))
    assert lines[first + 1].startswith("error: ConfigError:"), lines
    assert lines[first + 2].endswith(f" sweep file {good} (2 of 2)"), lines


def test_cron_wrapper_has_its_own_usage():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_experiments.py"), "--help"],
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert proc.stdout.startswith("usage: run_experiments.py ") and "[SWEEP.yaml ...]" in proc.stdout
    assert "usage: vlm-lab" not in proc.stdout and "sweep files, run in this order" in proc.stdout


def _wait_for(condition, proc: subprocess.Popen, what: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None and time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.05)


def test_a_run_in_progress_under_another_shard_spec_is_not_run_twice(sweep_file, tmp_path, capsys):
    """A Slurm array (--shard 0/2) and a plain nightly invocation of the same sweep at once: they hold
    different sweep locks, so only the per-run lock keeps them from executing one run in one folder twice."""
    path = sweep_file({"x": [1, 2]}, {"sleep_s": 4.0})
    runs = sweep.plan(sweep.load_sweep(path))
    busy = sweep.shard(runs, 0, 2)[0]
    other = next(r for r in runs if r is not busy)
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlm_lab.cli", "sweep", str(path), "--quiet", "--shard", "0/2"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: busy.status()["state"] == "running", proc, "the shard's run starting")
        shard_pid = busy.status()["pid"]
        code = main(["sweep", str(path), "--quiet"])
        out = capsys.readouterr().out
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert busy.status()["pid"] == shard_pid != os.getpid()  # run once, by the shard that started it
    assert other.status()["pid"] == os.getpid() and other.completed
    assert code == sweep.LOCKED_EXIT_CODE, out  # some of its runs were left to another invocation
    assert f"1 running elsewhere (left to that invocation): {busy.run_id}" in out
    assert busy.completed


def test_a_huge_grid_is_refused_before_anything_is_listed(sweep_file, capsys):
    grid = {k: list(range(40)) for k in ("x", "fail_on", "sleep_s")}  # 64,000 points
    path = sweep_file(grid)
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "grid has 64,000 points (40 x 40 x 40)" in err and "at most 10,000" in err, err
    assert "split it into several sweep files" in err


@pytest.mark.parametrize(
    "grid, parameters, message",
    [
        ({"x": [1, "2"]}, {}, "grid.x = '2' is text, but nb.ipynb declares x: int; write 2 without quotes"),
        ({"x": [1]}, {"sleep_s": "fast"}, "parameters.sleep_s = 'fast' is text, but nb.ipynb declares sleep_s: float"),
        ({"x": [True]}, {}, "grid.x = True is true or false, but nb.ipynb declares x: int"),
        ({"x": [[1, 2]]}, {}, "grid.x = [1, 2] is a list, but nb.ipynb declares x: int"),
    ],
)
def test_a_value_of_the_wrong_type_is_rejected_before_anything_runs(sweep_file, tmp_path, capsys, grid, parameters, message):
    path = sweep_file(grid, parameters)
    assert main(["sweep", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_an_int_is_accepted_where_a_float_is_declared(sweep_file, capsys):
    path = sweep_file({"x": [1]}, {"sleep_s": 0})  # an int where a float is declared
    assert main(["sweep", str(path), "--dry-run"]) == 0, capsys.readouterr().err


def test_the_summary_is_written_as_runs_finish_not_only_at_the_end(sweep_file, tmp_path):
    path = sweep_file({"x": [1, 2]}, {"sleep_s": 1.5})
    runs = sweep.plan(sweep.load_sweep(path))
    summary = tmp_path / "runs" / "t" / "summary.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlm_lab.cli", "sweep", str(path), "--quiet"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    def first_in_summary() -> bool:  # summary.md is there from the start: wait for the one written after x=1 ended
        if not summary.is_file():
            return False
        frame = pd.read_csv(summary)  # replaced whole (atomic rename): never read half-written
        return frame.loc[frame["run_id"] == runs[0].run_id, "state"].item() == "completed"

    try:
        _wait_for(first_in_summary, proc, "a summary after the first run")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # killed before its last run: a report can still read the first
        proc.wait()
    frame = pd.read_csv(summary)
    assert frame.loc[frame["run_id"] == runs[0].run_id, "state"].item() == "completed"
    assert Ablation.load(summary.parent).best()["run_id"] == runs[0].run_id
    # The last summary of a sweep killed outright: it says it was written mid-sweep, and where the states are now.
    text = summary.with_suffix(".md").read_text()
    assert re.search(r"^Written at \d{4}-\d\d-\d\dT[\d:]+\+00:00 while the sweep was running\. If it is not running now, "
                     r"it was killed .*`vlm-lab sweep SWEEP.yaml --dry-run` and notebook 04 read each run's state now", text, re.M), text
    assert sweep.run_sweep(sweep.load_sweep(path), progress=False).ok  # a summary written at the end says nothing of the kind
    assert "while the sweep was running" not in summary.with_suffix(".md").read_text()


@pytest.mark.slow  # x=3 sleeps 15 s
def test_a_run_that_ends_soon_after_a_summary_is_in_the_next_one_before_the_following_run_ends(sweep_file, tmp_path, monkeypatch):
    """Summaries are written at most every SUMMARY_EVERY_S: a run that ended within that time of the last one was
    left out until the next run ended (hours, for a real run), and for good when the sweep was killed meanwhile."""
    notebook = nbformat.read(tmp_path / "nb.ipynb", as_version=4)
    notebook.cells[2].source = notebook.cells[2].source.replace("time.sleep(sleep_s)", "time.sleep(15 if x == 3 else 0)")
    nbformat.write(notebook, tmp_path / "nb.ipynb")
    monkeypatch.setattr(sweep, "SUMMARY_EVERY_S", 5.0)  # x=2 ends well within it of x=1
    path = sweep_file({"x": [1, 2, 3]})
    runs = sweep.plan(sweep.load_sweep(path))
    summary = tmp_path / "runs" / "t" / "summary.csv"
    worker = threading.Thread(target=sweep.run_sweep, args=(sweep.load_sweep(path),), kwargs={"progress": False})
    worker.start()
    try:
        def second_in_summary() -> bool:
            try:
                return pd.read_csv(summary).loc[1, "state"] == "completed"
            except (FileNotFoundError, pd.errors.EmptyDataError):
                return False

        while not second_in_summary() and worker.is_alive():
            time.sleep(0.1)
        assert runs[2].status()["state"] == "running", "x=2 reached the summary only after x=3 ended"
    finally:
        worker.join()


def test_duplicate_keys_in_a_sweep_file_are_an_error(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nnotebook: nb.ipynb\ngrid:\n  x: [1]\n  x: [2]\n")
    with pytest.raises(SweepError, match=r"dup.yaml: key 'x' appears twice \(line 4 and line 5\)"):
        sweep.load_sweep(path)


def test_a_grid_value_holding_a_comma_stays_one_wandb_tag(sweep_file):
    path = sweep_file({"x": [1], "tag": ["ckpt-a,ckpt-b"]})  # checkpoints: "a,b" is how notebook 02 takes several
    report = sweep.run_sweep(sweep.load_sweep(path), progress=False)
    assert report.ok, report.describe()
    (run,) = sweep.plan(sweep.load_sweep(path))
    params = json.loads((run.dir / "params.json").read_text())
    assert params["wandb_tags"].split(",") == ["tag=ckpt-a+ckpt-b", "x=1"]


def test_without_a_terminal_progress_is_plain_timed_lines(sweep_file, capsys):
    """A cron log, appended to night after night and read while a long run is under way: what the
    invocation is to do, each run as it starts (else an hour-long run shows nothing for an hour) and
    ends, each line with its time."""
    path = sweep_file({"x": [1, 2, 3]}, {"fail_on": 2})
    first = sweep.plan(sweep.load_sweep(path))[0]
    assert sweep.run_sweep(sweep.load_sweep(path).replace(grid={"x": [1]}), progress=False).ok  # one done before
    capsys.readouterr()
    assert main(["sweep", str(path)]) == 1  # no --quiet; stderr is not a terminal here, as under cron
    err, out = (captured := capsys.readouterr()).err, captured.out
    assert "\r" not in err, err  # no redrawn bar in the log
    time = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"
    lines = err.splitlines()
    assert re.fullmatch(rf"{time} sweep t: 2 run\(s\) to run, 1 at a time, [^;]+; 1 already completed; in runs/t",
                        lines[0]), err  # fmt: skip
    assert len([line for line in lines if re.fullmatch(rf"{time} started x=[23],\w+", line)]) == 2, err
    assert re.search(rf"^{time} \[1/2\] (completed|failed) x=[23],", err, re.M) and re.search(rf"^{time} \[2/2\] ", err, re.M), err
    # A failed run's error on its own timed line: no untimed FAILED line before the report's.
    assert re.search(rf"^{time} \[\d/2\] failed x=2,\S+ \(\d+\.\d s\): cell \[4\]: ValueError: boom at x=2$", err, re.M), err
    assert "FAILED" not in err and out.count("FAILED") == 1 and out.startswith("runs/t: 2 ran"), out
    assert first.run_id not in err  # completed before: not run again


def test_the_report_says_an_error_shared_by_many_runs_once(sweep_file, tmp_path, capsys):
    """A night where a shared cause (a missing package, a bad path) failed 40 runs alike: the report (all a --quiet
    cron log holds) was 40 identical FAILED lines; now one, with the count, the first run's notebook and where each
    is listed. A few runs with one error, and other errors, keep a line each."""
    notebook = nbformat.read(tmp_path / "nb.ipynb", as_version=4)
    notebook.cells[3].source = "if x > 1:\n    raise ModuleNotFoundError(\"No module named 'flash_attn'\")\nif x == 1:\n    raise ValueError('own')"
    nbformat.write(notebook, tmp_path / "nb.ipynb")
    path = sweep_file({"x": [1, 2, 3, 4, 5]})
    assert main(["sweep", str(path), "--quiet", "--jobs", "2"]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if "FAILED" in line]
    own, first = sweep.plan(sweep.load_sweep(path))[:2]
    assert failed == [
        f"  FAILED {own.run_id}: cell [4]: ValueError: own  (notebook: runs/t/{own.run_id}/nb.ipynb)",
        f"  FAILED 4 runs with the same error: cell [4]: ModuleNotFoundError: No module named 'flash_attn'  (the first, {first.run_id}: "
        f"notebook runs/t/{first.run_id}/nb.ipynb; runs/t/summary.md lists each)",
    ], out


def test_quiet_without_a_terminal_prints_only_the_final_report(sweep_file, capsys):
    """`--help` promises cron "only the final report" with --quiet; a failed run also printed an untimed FAILED line
    as it ended, the same as the report's line below it."""
    path = sweep_file({"x": [1, 2]}, {"fail_on": 1})
    assert main(["sweep", str(path), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out.startswith("runs/t: 2 ran, 0 skipped (already completed), 1 failed\n"), captured
    assert captured.out.count("FAILED") == 1, captured.out


def test_on_a_terminal_a_failed_run_is_said_as_it_ends(sweep_file, tmp_path):
    """On a terminal the bar (or, with --quiet, nothing) shows progress: each failure is said as it happens."""
    import pty

    path = sweep_file({"x": [1, 2]}, {"fail_on": 1})
    terminal, stderr = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "vlm_lab.cli", "sweep", str(path), "--quiet"], cwd=tmp_path,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300)  # fmt: skip
    finally:
        os.close(stderr)
        os.close(terminal)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("FAILED x=1,") and lines[0].endswith(": cell [4]: ValueError: boom at x=1"), lines
    assert lines[1].startswith("runs/t: 2 ran") and proc.stdout.count("FAILED") == 2, lines


def test_a_run_left_running_by_a_killed_sweep_is_shown_as_interrupted(sweep_file, tmp_path, capsys):
    path = sweep_file({"x": [1]}, {"sleep_s": 30.0})
    (run,) = sweep.plan(sweep.load_sweep(path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlm_lab.cli", "sweep", str(path), "--quiet"],
        cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: run.status()["state"] == "running", proc, "the run starting")
        assert main(["sweep", str(path), "--dry-run"]) == 0
        assert re.search(r"^  running +x=1,", capsys.readouterr().out, re.M)  # alive: really running
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert re.search(r"^  interrupted +x=1,", capsys.readouterr().out, re.M)
    assert run.status()["state"] == "running"  # the file is as the killed sweep left it; the lock tells


def test_a_missing_kernel_is_refused_before_any_run_fails_on_it(sweep_file, tmp_path, capsys):
    path = sweep_file({"x": [1, 2]})
    path.write_text(path.read_text() + "kernel: python-vlm\n")
    assert main(["sweep", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no Jupyter kernel named 'python-vlm' (the sweep's `kernel`) here (installed: python3" in err, err
    assert "python -m ipykernel install --user --name python-vlm" in err
    assert not (tmp_path / "runs").exists()


def _start_sweep(path: Path, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vlm_lab.cli", "sweep", str(path), "--quiet"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_ctrl_c_starts_no_further_run_and_keeps_the_finished_one(sweep_file, tmp_path):
    path = sweep_file({"x": [1, 2, 3, 4]}, {"sleep_s": 2.0})
    runs = sweep.plan(sweep.load_sweep(path))
    proc = _start_sweep(path, tmp_path)
    _wait_for(lambda: runs[0].status()["state"] == "running", proc, "the first run starting")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "stopping: 3 queued run(s) cancelled, waiting for the 1 running to finish" in out
    assert runs[0].completed  # the running one finished
    assert [r.state() for r in runs[1:]] == ["pending"] * 3, out  # the queued ones never started
    summary = pd.read_csv(tmp_path / "runs" / "t" / "summary.csv")
    assert list(summary["state"]) == ["completed", "pending", "pending", "pending"]


def test_a_second_ctrl_c_abandons_the_running_run(sweep_file, tmp_path):
    path = sweep_file({"x": [1, 2]}, {"sleep_s": 60.0})
    runs = sweep.plan(sweep.load_sweep(path))
    log = tmp_path / "sweep.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vlm_lab.cli", "sweep", str(path), "--quiet"],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait_for(lambda: runs[0].status()["state"] == "running", proc, "the first run starting")
        proc.send_signal(signal.SIGINT)
        _wait_for(lambda: "stopping: " in log.read_text(), proc, "the first Ctrl-C handled")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=50) == 130, log.read_text()  # well before the 60 s run could finish
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert runs[0].state() == "interrupted" and runs[1].state() == "pending"
    summary = pd.read_csv(tmp_path / "runs" / "t" / "summary.csv")  # not "running": it was abandoned
    assert list(summary["state"]) == ["interrupted", "pending"]


def test_a_cell_past_the_execution_timeout_names_its_cell_in_one_line(sweep_file, tmp_path, capsys):
    path = sweep_file({"x": [1]}, {"sleep_s": 30.0})
    path.write_text(path.read_text() + "execution_timeout: 1\n")
    assert main(["sweep", str(path)]) == 1  # no terminal: timed lines on stderr, then the report
    captured = capsys.readouterr()
    (run,) = sweep.plan(sweep.load_sweep(path))
    error = run.status()["error"]
    assert (error["ename"], error["exec_count"], error["cell_index"]) == ("CellTimeoutError", 3, 3)
    assert error["evalue"] == "A cell timed out while it was being executed, after 1 seconds."
    log = (captured.err + captured.out).splitlines()
    failed_lines = [line for line in log if "FAILED" in line or "] failed" in line]  # as it happens, and in the report
    assert len(failed_lines) == 2, log
    for line in failed_lines:
        assert "cell [3]: CellTimeoutError: A cell timed out while it was being executed, after 1 seconds." in line
    assert "time.sleep" not in captured.out + captured.err  # the cell's source is not dumped into the report


def test_a_kernel_that_dies_names_the_cell_it_died_in_and_how_it_died(sweep_file, tmp_path, capfd):
    """'Kernel died' read alike for the out-of-memory killer (SIGKILL) and a kernel that exited; nbclient's own
    'Kernel died while waiting for execute reply.' was an unattributed line in the cron log."""
    notebook = nbformat.read(tmp_path / "nb.ipynb", as_version=4)  # an out-of-memory kill, as the OS does it
    notebook.cells.append(nbformat.v4.new_code_cell(
        "import os, signal\nif x == 2:\n    os.kill(os.getpid(), signal.SIGKILL)\nif x == 3:\n    os._exit(3)"))
    nbformat.write(notebook, tmp_path / "nb.ipynb")
    path = sweep_file({"x": [1, 2, 3]})
    assert main(["sweep", str(path)]) == 1
    runs = {r.varied["x"]: r for r in sweep.plan(sweep.load_sweep(path))}
    failed = runs[2].status()
    assert (failed["error"]["ename"], failed["error"]["cell_index"], failed["error"]["exec_count"]) == ("DeadKernelError", 5, 5)
    captured = capfd.readouterr()
    assert "cell [5]: DeadKernelError: Kernel died: the kernel process was killed by SIGKILL (most often the out-of-memory " \
           "killer: `dmesg -T | grep -i oom`;" in captured.out, captured.out  # fmt: skip
    assert "cell [5]: DeadKernelError: Kernel died: the kernel process exited with status 3 (all it said: " in captured.out
    # the run's error (status.json, what run_sweep's report gives a Python caller too) names no flag of one caller
    assert "fewer runs at once (the sweep's jobs) or a smaller batch needs less memory" in json.dumps(failed), failed
    assert "--jobs" not in json.dumps(failed), failed
    assert "Kernel died while waiting" not in captured.err, captured.err
    # shut down as usual: vlm-lab has nothing to say of it. The kernel's own stderr is still kept if it wrote any: a
    # busy CI machine's kernel once ended with libzmq's 'Assertion failed: pfd.revents & POLLIN (src/signaler.cpp:238)'
    # abort at context termination (zeromq/libzmq#1307), after the run had completed
    log = runs[1].dir / sweep.KERNEL_LOG
    assert runs[1].completed and not (log.exists() and "vlm-lab:" in log.read_text())


def test_a_float_written_with_an_exponent_is_a_number(sweep_file, capsys):
    path = sweep_file({"x": [1]})
    path.write_text(path.read_text().replace("parameters: {}", "parameters:\n  sleep_s: 1e-3"))
    config = sweep.load_sweep(path)
    assert config.parameters == {"sleep_s": 0.001}  # PyYAML alone reads the text '1e-3'
    assert main(["sweep", str(path), "--dry-run"]) == 0, capsys.readouterr().err
    assert yaml.safe_load("x: 1e-3") == {"x": "1e-3"}  # the YAML 1.1 behaviour this works around


def test_runs_started_at_once_each_get_their_own_kernel(sweep_file, tmp_path, monkeypatch):
    """--jobs threads start kernels together: each run must land in its own kernel (and folder)."""
    import papermill

    execute, sockets = papermill.execute_notebook, []

    def recording(*args, **kwargs):  # the real papermill runs; only the kernel's transport is noted
        manager = kwargs["config"].KernelManager
        sockets.append((manager.transport, manager.ip))
        return execute(*args, **kwargs)

    monkeypatch.setattr(papermill, "execute_notebook", recording)
    path = sweep_file({"x": [1, 2, 3, 4]})
    report = sweep.run_sweep(sweep.load_sweep(path, jobs=4), progress=False)
    # unix sockets, each kernel its own (TCP ports picked by threads at once can collide)
    assert {transport for transport, _ in sockets} == {"ipc"} and len({ip for _, ip in sockets}) == 4
    assert report.ok, report.describe()
    for run in sweep.plan(sweep.load_sweep(path)):
        meta = json.loads((run.dir / "summary.json").read_text())
        assert meta["config"]["x"] == run.varied["x"], run.run_id  # its own parameters, not a neighbour's
    assert not list(tmp_path.glob("kernel-ipc*"))  # no socket files left where the sweep ran


def test_a_sweep_never_moves_the_working_directory(sweep_file, tmp_path, monkeypatch):
    """papermill's file handler chdirs the whole process, for each autosave, to a folder kept in one
    shared attribute that overlapping calls leave stale: --jobs threads then resolved their run
    folders inside an earlier sweep's folder (a CI run lost one run's outputs that way)."""
    moves, chdir = [], os.chdir

    def recording(path):
        moves.append(str(path))
        chdir(path)

    path = sweep_file({"x": [1, 2, 3]})
    monkeypatch.setattr(os, "chdir", recording)
    report = sweep.run_sweep(sweep.load_sweep(path, jobs=3), progress=False)
    assert report.ok, report.describe()
    assert moves == []
    for run in sweep.plan(sweep.load_sweep(path)):
        assert json.loads((run.dir / "summary.json").read_text())["config"]["x"] == run.varied["x"]


def test_the_report_keeps_grid_values_that_look_missing_apart(sweep_file):
    """"" (e.g. memory_budget: ["", "8GB"]) and "None" read back from summary.csv as NaN: the report
    dropped those runs from its table and plots and named "" and "None" alike. Its values are the grid's own."""
    path = sweep_file({"x": [1, 2], "tag": ["", "None", "a"]})
    report = sweep.run_sweep(sweep.load_sweep(path, jobs=2), progress=False)
    assert report.ok, report.describe()
    ablation = Ablation.load(report.sweep_dir)
    assert sorted(ablation.runs["tag"]) == ["", "", "None", "None", "a", "a"]
    assert list(ablation.runs["error"]) == [""] * 6  # completed runs have no error (read back as NaN before)
    assert sorted(set(ablation.results["tag"])) == ["", "None", "a"] and len(ablation.results) == 12
    assert ablation.table().shape == (2, 6)  # every variant is a column, none dropped
    tag_panel = ablation.plot().axes[1]
    assert sorted(line.get_label() for line in tag_panel.get_lines()) == ["tag=", "tag=None", "tag=a"]
    best = ablation.best()
    assert best["x"] == 2 and best["ties"] == 2  # the three tags tie at x=2, checkpoint-10
    assert list(ablation.failures().columns) == ["run_id", "x", "tag", "state", "error"]


def test_a_full_disk_stops_the_sweep_with_one_line_and_a_re_run_completes_it(sweep_file, tmp_path):
    """A write error on the sweep's own files (here EFBIG from a file-size limit, as ENOSPC from a full
    disk) is no run's fault: every later run would fail the same way. The sweep stops starting runs and
    says so in one line (exit 74, EX_IOERR); no cell is blamed, no truncated notebook is put in place,
    and once there is room a re-run completes the grid."""
    import resource

    path = sweep_file({"x": [1, 2, 3, 4]})
    runs = sweep.plan(sweep.load_sweep(path))
    proc = subprocess.run(
        [sys.executable, "-m", "vlm_lab.cli", "sweep", str(path), "--jobs", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000)),  # the notebook is bigger
    )  # fmt: skip
    assert proc.returncode == 74, proc.stdout + proc.stderr  # sweep.WRITE_EXIT_CODE
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: SweepWriteError: cannot write "), proc.stderr
    assert "File too large (errno 27); the sweep stopped starting runs. A file passed the size limit" in errors[0]
    assert errors[0].endswith(" (this invocation: 0 completed, 0 failed; 4 left to run)"), errors[0]  # all --quiet shows
    started = [r for r in runs if (r.dir / "status.json").is_file()]
    assert 1 <= len(started) <= 2  # the runs already going when the first failed; none started after
    assert all(r.state() in ("interrupted", "pending") for r in runs)  # none failed: nothing to blame
    assert not [r for r in runs if (r.dir / "nb.ipynb").exists()]  # a truncated notebook is never put in place

    report = sweep.run_sweep(sweep.load_sweep(path, jobs=2), progress=False)  # room again
    assert report.ok and len(report.ran) == 4 and all(r.completed for r in runs), report.describe()


def test_sigterm_leaves_at_once_says_so_and_the_summary_shows_the_runs_interrupted(sweep_file, tmp_path):
    """A scheduler's stop (timeout, systemctl stop, a cancelled CI job, Slurm preemption) is SIGTERM, then
    SIGKILL after a short grace: the sweep does not wait for its runs; its log says what happened and its
    summary does not claim that the runs it abandoned are still running."""
    path = sweep_file({"x": [1, 2, 3]}, {"sleep_s": 60.0})
    runs = sweep.plan(sweep.load_sweep(path))
    log = tmp_path / "cron.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "vlm_lab.cli", "sweep", str(path), "--jobs", "2"],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        _wait_for(lambda: [r.status()["state"] for r in runs[:2]] == ["running"] * 2, proc, "two runs starting")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=50) == 128 + signal.SIGTERM, log.read_text()  # well before a run could finish
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the morning reader of the log: no report follows, so where each run's state is (as the log's other lines say it)
    summary_md = Path("runs") / "t" / "summary.md"
    assert f"terminated (SIGTERM); completed runs are kept, and a re-run runs the rest (each run's state: {summary_md})" \
        in log.read_text(), log.read_text()  # fmt: skip
    summary = pd.read_csv(tmp_path / "runs" / "t" / "summary.csv")
    assert list(summary["state"]) == ["interrupted", "interrupted", "pending"]
    assert [r.state() for r in runs] == ["interrupted", "interrupted", "pending"]


def test_the_report_groups_by_list_and_null_grid_values(tmp_path):
    """Grid values a notebook without annotations may take: lists (grouped as summary.csv writes them)
    and null (a variant of its own, not dropped by the pivot and the plot)."""
    from vlm_lab.ablation import write_summary
    from vlm_lab.data import atomic_write_text

    config = SweepConfig(name="l", notebook="nb.ipynb", runs_dir=str(tmp_path), grid={"layers": [[1, 2], [3, 4]], "opt": [None, "adam"]})
    runs = sweep.plan(config, fingerprint="f")
    for i, run in enumerate(runs):
        summary = [{"checkpoint": "c", "step": 1, "accuracy": 0.1 * i}]
        atomic_write_text(run.dir / "summary.json", json.dumps({"summary": summary}))
        atomic_write_text(run.dir / "status.json", json.dumps({"run_id": run.run_id, "state": "completed"}))
    atomic_write_text(sweep.sweep_dir(config) / "sweep.json", json.dumps({**config.to_dict(), "notebook_fingerprint": "f"}))
    write_summary(sweep.sweep_dir(config), runs)
    ablation = Ablation.load(sweep.sweep_dir(config))
    assert ablation.table().shape == (1, 4)
    assert [len(ax.get_lines()) for ax in ablation.plot().axes] == [2, 2]
    assert ablation.best()["layers"] == "[3, 4]" and ablation.best()["opt"] is None
