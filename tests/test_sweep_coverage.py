"""How much of the grid has a result, said in summary.md and the final report: the morning reader of a
cron log or of summary.md sees which runs are missing, why, and the command that completes them."""

from __future__ import annotations

import shlex

from test_sweep import sweep_file  # noqa: F401 - the fixture
from vlm_lab import sweep
from vlm_lab.cli import main


def _summary(tmp_path) -> str:
    return (tmp_path / "runs" / "t" / "summary.md").read_text()


def test_the_summary_and_the_report_say_which_runs_of_the_grid_have_no_result_why_and_how_to_complete_them(
    sweep_file, tmp_path, capsys  # noqa: F811
):
    """A shard's night: its table showed the other shard's runs as bare `pending` rows and a failed run among
    them, with nothing saying how many of the grid's runs had a result, why the others had none, or what completes
    them; the report printed to the cron log spoke of this invocation's runs only."""
    path = sweep_file({"x": [1, 2, 3, 4]}, {"fail_on": 2})
    runs = sweep.plan(sweep.load_sweep(path))
    mine = sweep.shard(runs, 0, 2)
    failing = next(r for r in runs if r.varied["x"] == 2)
    if failing not in mine:  # shard 0/2 must hold the failing run: run the other shard, whichever holds it
        mine = sweep.shard(runs, 1, 2)
    index = 0 if mine == sweep.shard(runs, 0, 2) else 1
    others = [r for r in runs if r not in mine]
    code = main(["sweep", str(path), "--shard", f"{index}/2", "--quiet", "--runs-dir", str(tmp_path / "runs")])
    assert code == 1
    out = capsys.readouterr().out
    text = _summary(tmp_path)
    command = shlex.join(["vlm-lab", "sweep", str(path), "--runs-dir", str(tmp_path / "runs")])  # every shard's runs

    assert "Results for 1 of the grid's 4 runs; 3 have none:" in text, text
    assert f"- failed (1): `{failing.run_id}`: cell [4]: ValueError: boom at x=2" in text, text
    other = f"{1 - index}/2"
    assert f"- not run yet (2; shard {other}'s): {', '.join(f'`{r.run_id}`' for r in others)}" in text, text
    assert f"`{command}` runs the 3 (completed runs are kept; failed ones run again)" in text, text
    # Before the table: the reader sees it without scrolling past a hundred rows.
    assert text.index("Results for") < text.index("| x |")

    assert "grid: results for 1 of 4 runs; 3 have none: 1 failed, 2 not run yet" in out, out
    assert f"`{command}` runs the 3" in out, out


def test_a_complete_grid_says_so(sweep_file, tmp_path, capsys):  # noqa: F811
    path = sweep_file({"x": [1, 3]})
    assert main(["sweep", str(path), "--quiet"]) == 0
    assert "Results for all 2 of the grid's runs." in _summary(tmp_path)
    assert "grid: results for all 2 runs" in capsys.readouterr().out


def test_every_summary_md_written_has_its_coverage_so_a_kill_cannot_leave_it_out(sweep_file, tmp_path, monkeypatch):  # noqa: F811
    """summary.md was written without the coverage paragraph, then rewritten with it: a sweep killed between the two
    writes (SIGKILL, a reboot) left a summary.md that did not say which runs had no result. Each one written has it."""
    from vlm_lab import ablation_summary, data

    path = sweep_file({"x": [1, 2]}, {"fail_on": 2})
    written: list[str] = []
    real = data.atomic_write_text

    def watched(target, text, *args, **kwargs):
        real(target, text, *args, **kwargs)
        if str(target).endswith("summary.md"):
            written.append(text)

    monkeypatch.setattr(data, "atomic_write_text", watched)
    monkeypatch.setattr(ablation_summary, "atomic_write_text", watched)
    assert main(["sweep", str(path), "--quiet"]) == 1
    assert len(written) >= 2  # before any run, and at the end
    assert all("of the grid's 2 runs" in text for text in written), [t[:200] for t in written]
    assert written[0].startswith("# Sweep t\n\n2 pending\n\nResults for 0 of the grid's 2 runs; 2 have none:"), written[0]
    assert _summary(tmp_path) == written[-1] and "Results for 1 of the grid's 2 runs;" in written[-1]


def test_one_run_without_a_result_is_said_in_the_singular():
    """The morning's cron log read 'results for 1 of 2 runs; 1 have none: 1 failed; `cmd` runs the 1'."""
    from vlm_lab.sweep_coverage import Coverage

    one = Coverage(total=2, completed=1, missing={"failed": ("x=2,ab",)}, errors={"x=2,ab": "cell [4]: ValueError: boom"},
                   command="vlm-lab sweep t.yaml")  # fmt: skip
    assert one.brief() == "grid: results for 1 of 2 runs; 1 has none: 1 failed; `vlm-lab sweep t.yaml` runs it"
    assert "Results for 1 of the grid's 2 runs; 1 has none:" in one.lines()
    assert one.lines()[-1] == "`vlm-lab sweep t.yaml` runs it (completed runs are kept; failed ones run again)."
    two = Coverage(total=2, completed=0, missing={"pending": ("a", "b")}, command="c")
    assert two.brief() == "grid: results for 0 of 2 runs; 2 have none: 2 not run yet; `c` runs the 2"


def test_a_sweep_run_from_python_names_a_command_that_runs_it(sweep_file, tmp_path):  # noqa: F811
    """run_sweep(config) called from Python wrote '`vlm-lab sweep SWEEP.yaml` runs it' into summary.md: a
    placeholder, as the config did not know the file it came from. A config load_sweep read names its file;
    one made in Python says the Python call."""
    from vlm_lab.config import SweepConfig

    path = sweep_file({"x": [2]}, {"fail_on": 2})
    sweep.run_sweep(sweep.load_sweep(path), progress=False)
    text = _summary(tmp_path)
    assert f"`{shlex.join(['vlm-lab', 'sweep', str(path)])}` runs it" in text, text

    config = SweepConfig(name="py", notebook="nb.ipynb", parameters={"fail_on": 2}, grid={"x": [2]})
    sweep.run_sweep(config, progress=False)
    text = (tmp_path / "runs" / "py" / "summary.md").read_text()
    assert "SWEEP.yaml" not in text and "`vlm_lab.sweep.run_sweep(config)` runs it" in text, text
