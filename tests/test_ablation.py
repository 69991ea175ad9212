"""vlm_lab/ablation.py on sweep folders laid out as `vlm-lab sweep` leaves them: summary files and the report."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest

from vlm_lab import sweep
from vlm_lab.ablation import Ablation, write_summary
from vlm_lab.config import SweepConfig
from vlm_lab.data import atomic_write_text
from vlm_lab.errors import ConfigError

STEPS = (0, 500, 1000)
NOTEBOOK = "notebooks/02_compare_checkpoints.ipynb"


def lay_out_sweep(
    tmp_path: Path,
    grid: dict[str, list],
    *,
    parameters: dict[str, Any] | None = None,
    accuracy: Callable[..., float | None] = lambda step, **varied: step / 1000,
    failed: Callable[..., bool] = lambda **varied: False,
    ci: float = 0.0,
    comparison: Callable[..., Path | None] | None = None,
    name: str = "shapes-ablation",
) -> Path:
    """A sweep folder as `vlm-lab sweep` leaves it: per run a status.json and, for completed runs, the
    comparison's summary.json (``accuracy(step=, **varied)``, its CI +-``ci``), then summary.csv/.md.

    ``comparison(**varied)``: a saved comparison folder to copy into the run's folder instead (as notebook 02
    saves it there), or None for a run that completed without one."""
    config = SweepConfig(name=name, notebook=NOTEBOOK, runs_dir=str(tmp_path / "runs"), parameters=parameters or {}, grid=grid)
    runs = sweep.plan(config)
    for run in runs:
        bad = failed(**run.varied)
        status = {"run_id": run.run_id, "state": "failed" if bad else "completed", "duration_s": 1.5}
        if bad:
            status["error"] = {"exec_count": 5, "ename": "RuntimeError", "evalue": "CUDA out of memory"}
        elif comparison is not None:
            if (saved := comparison(**run.varied)) is not None:
                shutil.copytree(saved, run.dir, dirs_exist_ok=True)
        else:
            summary = []
            for s in STEPS:
                acc = accuracy(step=s, **run.varied)
                low, high = (None, None) if acc is None else (max(acc - ci, 0.0), min(acc + ci, 1.0))
                summary.append({"checkpoint": f"checkpoint-{s}", "step": s, "accuracy": acc, "ci_low": low, "ci_high": high,
                                "mean_latency_s": 0.01, "tokens_per_s": 500.0, "peak_memory_bytes": 10**6})  # fmt: skip
            atomic_write_text(run.dir / "summary.json", json.dumps({"config": run.parameters, "summary": summary}))
        atomic_write_text(run.dir / "status.json", json.dumps(status))
    folder = sweep.sweep_dir(config)
    atomic_write_text(folder / "sweep.json", json.dumps({**config.to_dict(), "notebook_fingerprint": sweep.notebook_fingerprint(config)}))
    write_summary(folder, runs)
    return folder


def test_parameters_named_like_report_columns_keep_their_values_beside_them(tmp_path):
    """A notebook whose parameters are called state, error, run_id, wandb, checkpoint: summary.csv held
    `{"run_id": ..., **parameters, "state": ...}`, so run_id=5 replaced every run's id (the report then found
    no results at all) and the run's state/error/W&B replaced the parameters'. Each now keeps its own column."""
    folder = lay_out_sweep(
        tmp_path, {"state": ["draft", "final"], "checkpoint": ["a", "b"]}, parameters={"run_id": 5, "wandb": "on", "error": 0.1},
        accuracy=lambda step, state, checkpoint: step / 1000 * (0.9 if state == "final" else 0.5),
        failed=lambda state, checkpoint: (state, checkpoint) == ("draft", "b"),
    )  # fmt: skip
    csv = pd.read_csv(folder / "summary.csv")
    assert all("," in rid for rid in csv["run_id"]), list(csv["run_id"])  # the run ids, not the parameter 5
    assert list(csv["params.run_id"]) == [5] * 4 and list(csv["params.wandb"]) == ["on"] * 4
    assert sorted(csv["params.state"]) == ["draft", "draft", "final", "final"]
    assert sorted(csv["state"]) == ["completed", "completed", "completed", "failed"]
    assert list(csv["params.error"]) == [0.1] * 4 and csv["error"].fillna("").str.contains("CUDA out of memory").sum() == 1

    ablation = Ablation.load(folder)
    assert ablation.columns() == ["params.state", "params.checkpoint"]
    assert len(ablation.results) == 3 * len(STEPS)  # every completed run's checkpoints, found by their run id
    assert set(ablation.results["params.checkpoint"]) == {"a", "b"}
    assert set(ablation.results["checkpoint"]) == {f"checkpoint-{s}" for s in STEPS}
    failures = ablation.failures()
    assert list(failures[["params.state", "params.checkpoint", "state"]].iloc[0]) == ["draft", "b", "failed"]
    best = ablation.best()
    assert (best["params.state"], best["checkpoint"], best["accuracy"]) == ("final", "checkpoint-1000", 0.9)
    assert ablation.describe_best().startswith("best variant: checkpoint-1000 with state=final, checkpoint=")
    assert list(ablation.table().columns.names) == ["params.state", "params.checkpoint"]
    assert "| params.state | params.checkpoint |" in (folder / "summary.md").read_text()


@pytest.fixture(scope="module")
def saved_comparisons(tiny_checkpoints, tmp_path_factory) -> dict[str, Path]:
    """Two real comparisons on the same 30 shapes samples (10 per question type), saved as notebook 02 saves a run's:
    ``early`` compares checkpoint-250 and -500, ``late`` -250 and -1000 (the tiny model learns colours first, shapes last)."""
    from vlm_lab.compare import compare
    from vlm_lab.config import CompareConfig

    folders = {}
    for name, picks in {"early": (1, 2), "late": (1, 4)}.items():
        out = tmp_path_factory.mktemp("cmp") / name
        config = CompareConfig(checkpoints=tuple(str(tiny_checkpoints[i]) for i in picks), data="shapes:val:30",
                               device="cpu", output_dir=str(out))  # fmt: skip
        compare(config, progress=False)
        folders[name] = out
    return folders


@pytest.fixture
def by_sweep(tmp_path, saved_comparisons) -> Path:
    """Four runs: two with a real comparison, one failed, one completed that saved no comparison."""
    source = {"early": saved_comparisons["early"], "late": saved_comparisons["late"], "lost": None}
    return lay_out_sweep(tmp_path, {"schedule": ["early", "late", "lost", "oom"]}, comparison=lambda schedule: source[schedule],
                         failed=lambda schedule: schedule == "oom")  # fmt: skip


def test_accuracy_by_takes_each_runs_best_checkpoint_from_its_saved_comparison(by_sweep, saved_comparisons):
    from vlm_lab.results import ComparisonResult

    ablation = Ablation.load(by_sweep)
    frame = ablation.accuracy_by("question_type")
    assert list(frame.columns) == ["run_id", "schedule", "checkpoint", "step", "accuracy", "ci_low", "ci_high", "n_scored", "question_type"]
    assert list(dict.fromkeys(frame["schedule"])) == ["early", "late"]  # the failed run and the one without a comparison have no rows
    runs = ablation.runs.set_index("schedule")
    for schedule in ("early", "late"):
        part = frame[frame["schedule"] == schedule].drop(columns=["run_id", "schedule"]).reset_index(drop=True)
        assert set(part["checkpoint"]) == {runs.loc[schedule, "best_checkpoint"]}  # as summary.csv names it
        truth = ComparisonResult.load(saved_comparisons[schedule]).accuracy_by("question_type")
        truth = truth[truth["checkpoint"] == runs.loc[schedule, "best_checkpoint"]].reset_index(drop=True)
        pd.testing.assert_frame_equal(part, truth[part.columns])
    assert set(frame["question_type"]) == {"color", "shape", "describe"} and set(frame["n_scored"]) == {10}

    at_250 = ablation.accuracy_by("question_type", checkpoint=250)  # a step, or a name: the same rows
    pd.testing.assert_frame_equal(at_250, ablation.accuracy_by("question_type", checkpoint="checkpoint-250"))
    assert set(at_250["checkpoint"]) == {"checkpoint-250"} and len(at_250) == 6


def test_the_wide_view_keeps_every_run_and_says_why_some_have_no_numbers(by_sweep):
    ablation = Ablation.load(by_sweep)
    table = ablation.accuracy_by("question_type", wide=True)
    assert list(table.columns) == ["schedule", "checkpoint", "color (n=10)", "shape (n=10)", "describe (n=10)", "note"]
    rows = table.set_index("schedule")
    assert sorted(rows.index) == ["early", "late", "lost", "oom"]
    assert rows.loc["oom", "note"] == "failed: cell [5]: RuntimeError: CUDA out of memory"
    assert rows.loc["lost", "note"] == "completed without a comparison in its folder (needs summary.json and results.jsonl)"
    assert rows.loc["lost", "shape (n=10)"] == ""
    assert rows.loc["late", "note"] == "" and re.fullmatch(r"\d+% \[\d+–\d+\]", rows.loc["late", "shape (n=10)"])

    named = ablation.accuracy_by("question_type", checkpoint="checkpoint-1000", wide=True).set_index("schedule")
    assert named.loc["early", "note"] == "its comparison has no checkpoint 'checkpoint-1000' (it has: checkpoint-250, checkpoint-500)"
    assert named.loc["late", "checkpoint"] == "checkpoint-1000"

    typo = ablation.accuracy_by("question_typ", wide=True).set_index("schedule")
    assert "no sample carries meta key 'question_typ' to break accuracy down by; they carry: question_type" in typo.loc["late", "note"]
    with pytest.raises(ConfigError, match="give the meta key"):
        ablation.accuracy_by(" ")


def test_the_description_names_a_winner_only_when_the_paired_difference_excludes_0(by_sweep):
    """At checkpoint-250 both runs saw the same weights: every value is a tie, so no run may be called the winner.
    At each run's best, the late run's checkpoint-1000 answers shapes better than the early run's checkpoint-250."""
    ablation = Ablation.load(by_sweep)
    tied = ablation.describe_accuracy_by("question_type", checkpoint=250)
    assert tied.startswith("accuracy by question_type at checkpoint 250:")
    for value in ("color", "shape", "describe"):
        assert re.search(rf"question_type={value}: best schedule=\w+ \d+% \[\d+–\d+\]; no clear winner: 1 other run\(s\) within noise of it on the same samples", tied), tied
    notes = tied.split("2 of 4 run(s) without numbers (the note column):\n")[1].splitlines()
    assert notes[0] == "  completed without a comparison in its folder (needs summary.json and results.jsonl) (schedule=lost)"
    assert notes[1] == "  failed: cell [5]: RuntimeError: CUDA out of memory (schedule=oom)"

    from vlm_lab.results import ComparisonResult
    from vlm_lab.scoring import paired_bootstrap

    frame = ablation.accuracy_by("question_type")
    lines = ablation.describe_accuracy_by("question_type").splitlines()
    results = {s: ComparisonResult.load(by_sweep / i) for s, i in zip(ablation.runs["schedule"], ablation.runs["run_id"]) if s in ("early", "late")}
    for value, part in frame.groupby("question_type"):  # at each run's best: the wording follows a paired bootstrap
        top, other = part.sort_values("accuracy", ascending=False, kind="stable").to_dict(orient="records")
        line = next(line for line in lines if line.startswith(f"  question_type={value}: best schedule={top['schedule']} "))
        rows = [r for r in results[top["schedule"]].rows if r["meta"]["question_type"] == value]
        p = paired_bootstrap([r["outputs"][top["checkpoint"]]["score"] for r in rows],
                             [r["outputs"][other["checkpoint"]]["score"] for r in results[other["schedule"]].rows
                              if r["meta"]["question_type"] == value])  # fmt: skip
        apart = p.ci_high < 0
        assert ("clearly above every other run (paired on the same samples; next: schedule=" in line) == apart, line
        assert ("no clear winner: 1 other run(s) within noise of it on the same samples" in line) == (not apart), line


def test_a_run_whose_ci_is_apart_from_the_others_is_named_the_winner(by_sweep):
    from vlm_lab import ablation_breakdown

    ablation = Ablation.load(by_sweep)
    ids = dict(zip(ablation.runs["schedule"], ablation.runs["run_id"]))
    frame = pd.DataFrame([
        {"run_id": ids[s], "schedule": s, "checkpoint": "checkpoint-1000", "step": 1000, "accuracy": acc, "ci_low": lo,
         "ci_high": hi, "n_scored": 200, "question_type": "shape"}
        for s, acc, lo, hi in [("early", 0.40, 0.33, 0.47), ("late", 0.90, 0.86, 0.94), ("lost", 0.85, 0.80, 0.90)]
    ])  # fmt: skip
    text = ablation_breakdown.describe(ablation, frame, {}, "question_type")
    assert "question_type=shape: best schedule=late 90% [86–94]; no clear winner: 1 other run(s) with an overlapping 95% CI (schedule=lost 85%)" in text
    text = ablation_breakdown.describe(ablation, frame[frame["schedule"] != "lost"], {}, "question_type")
    assert "question_type=shape: best schedule=late 90% [86–94], clearly above every other run (95% CIs apart; next: schedule=early 40% [33–47])" in text


def test_accuracy_by_plots_a_heatmap_of_runs_by_value(by_sweep, tmp_path):
    ablation = Ablation.load(by_sweep)
    fig = ablation.plot_accuracy_by("question_type")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["color\n(n=10)", "shape\n(n=10)", "describe\n(n=10)"]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["schedule=early", "schedule=late", "schedule=lost (no numbers)", "schedule=oom (no numbers)"]
    assert len(ax.texts) == 6  # two runs x three values, each with its accuracy and CI
    empty = ablation.plot_accuracy_by("no_such_key")
    assert "no run has accuracy by no_such_key" in empty.axes[0].texts[0].get_text()


@pytest.mark.parametrize(
    ("nucleus", "expected"),
    [
        (0.88, "best variant: checkpoint-1000 with strategy=greedy: accuracy 90.0% (95% CI 85.0%-95.0%); no clear winner: "
               "1 other run(s) reach a 95% CI overlapping it (strategy=nucleus at checkpoint-1000 88.0%) [run strategy=greedy,"),
        (0.5, "best variant: checkpoint-1000 with strategy=greedy: accuracy 90.0% (95% CI 85.0%-95.0%) [run strategy=greedy,"),
    ],
    ids=["within noise", "apart"],
)  # fmt: skip
def test_the_best_variant_is_not_called_a_winner_when_another_runs_ci_overlaps_it(tmp_path, nucleus, expected):
    """Greedy 90% [85-95] against nucleus 88% [83-93] on the same samples: the report named greedy the best variant,
    full stop, and a reader took it as the answer; it now says the sweep cannot tell them apart."""
    folder = lay_out_sweep(tmp_path, {"strategy": ["greedy", "nucleus"]}, ci=0.05,
                           accuracy=lambda step, strategy: round(step / 1000 * (0.9 if strategy == "greedy" else nucleus), 3))  # fmt: skip
    ablation = Ablation.load(folder)
    assert ablation.describe_best().startswith(expected), ablation.describe_best()
    overlapping = ablation.best()["overlapping"]
    assert [o["strategy"] for o in overlapping] == (["nucleus"] if nucleus == 0.88 else [])


def test_completed_runs_that_scored_nothing_are_not_reported_as_failed(tmp_path):
    """Runs whose data had no references complete with accuracy None at every checkpoint: the report said
    'none of the 2 runs completed ... (no per-checkpoint results ...)', sending the reader to failures that do not exist."""
    folder = lay_out_sweep(tmp_path, {"strategy": ["greedy", "nucleus", "beam"]}, accuracy=lambda step, strategy: None,
                           failed=lambda strategy: strategy == "beam")  # fmt: skip
    ablation = Ablation.load(folder)
    assert ablation.describe_best() == (
        "no best variant: the 2 completed run(s) with results report no accuracy (their comparisons scored nothing: "
        "give the data a 'reference' to score against); 1 other run(s) did not complete (see the failures below)"
    )
    assert ablation.describe_best("tokens_per_s").startswith("best variant: checkpoint-0 with strategy=greedy: tokens_per_s 500")


def test_a_hundred_run_grid_is_ranked_one_row_per_run(tmp_path):
    """10 learning rates x 10 weight decays: table() is 100 columns wide (pandas shows 20, the best may sit in the
    hidden middle); ranking() is one row per run, best first, saying which runs the sweep cannot tell from the best."""
    lrs = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2]
    wds = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]

    def accuracy(step, learning_rate, weight_decay):  # peaks at lr 2e-4, falls with weight decay
        return round(step / 1000 * (1 - abs(lrs.index(learning_rate) - 4) / 10) * (1 - weight_decay / 2), 3)

    folder = lay_out_sweep(tmp_path, {"learning_rate": lrs, "weight_decay": wds}, accuracy=accuracy, ci=0.05,
                           failed=lambda learning_rate, weight_decay: learning_rate == 1e-2 and weight_decay == 0.6)  # fmt: skip
    ablation = Ablation.load(folder)
    assert ablation.table().shape == (len(STEPS), 100)  # the failed run an empty column
    ranking = ablation.ranking()
    assert len(ranking) == 99 and list(ranking.columns) == [
        "rank", "learning_rate", "weight_decay", "checkpoint", "accuracy", "ci_low", "ci_high", "vs_best"]  # fmt: skip
    assert list(ranking["accuracy"]) == sorted(ranking["accuracy"], reverse=True)
    first = ranking.iloc[0]
    assert (first["rank"], first["learning_rate"], first["weight_decay"], first["checkpoint"], first["vs_best"]) == (
        1, 2e-4, 0.0, "checkpoint-1000", "best")  # fmt: skip
    expected = ["best" if a == 1.0 else "CI overlaps the best's" if a + 0.05 >= 0.95 else "below" for a in ranking["accuracy"]]
    assert list(ranking["vs_best"]) == expected and expected.count("CI overlaps the best's") == 7
    latency = ablation.ranking("mean_latency_s")
    assert list(latency.columns) == ["rank", "learning_rate", "weight_decay", "checkpoint", "mean_latency_s"]
    assert set(latency["rank"]) == {1}  # every run as fast: all tied first


def test_summary_md_reads_as_a_report(tmp_path):
    """summary.md repeated every shared parameter in every row (a 200-character checkpoints list), led each row with
    the 40-character run id, and gave accuracies as 0.6875 with the CI in two more columns."""
    folder = lay_out_sweep(tmp_path, {"strategy": ["greedy", "nucleus(0.9)"]}, ci=0.1,
                           parameters={"num_samples": 64, "checkpoints": "a|b"},
                           accuracy=lambda step, strategy: round(step / 1000 * (0.6875 if strategy == "greedy" else 0.5), 4),
                           failed=lambda strategy: strategy == "nucleus(0.9)")  # fmt: skip
    lines = (folder / "summary.md").read_text().splitlines()
    assert lines[:5] == ["# Sweep shapes-ablation", "", "1 completed, 1 failed", "", "Every run: num_samples=64, checkpoints=a\\|b"]
    assert lines[6] == (
        "| strategy | state | duration_s | error | best_checkpoint | best accuracy (95% CI) | best_tokens_per_s | wandb "
        "| checkpoint-0/accuracy | checkpoint-500/accuracy | checkpoint-1000/accuracy | run_id |"
    )
    greedy, nucleus = sorted(lines[8:10], key=lambda line: "nucleus" in line)
    assert lines[10] == "" and lines[11].startswith("Best variant: checkpoint-1000 with strategy=greedy: accuracy 68.8%")
    assert greedy.startswith("| greedy | completed | 1.5 |  | checkpoint-1000 | 68.8% [59–79] | 500 |  | 0.0% | 34.4% | 68.8% | strategy=greedy,")
    assert nucleus.startswith("| nucleus(0.9) | failed | 1.5 | cell [5]: RuntimeError: CUDA out of memory |  |  |  |  |  |  |  | strategy=nucleus-0.9,")
    csv = pd.read_csv(folder / "summary.csv")  # the CSV keeps every column and full precision
    assert {"num_samples", "checkpoints", "best_ci_low", "best_ci_high"} <= set(csv.columns) and 0.6875 in set(csv["best_accuracy"])


def test_a_wrong_folder_names_the_sweep_folder_to_pass(tmp_path, monkeypatch):
    """The report was pointed at one run's folder, or at runs/ holding the sweeps, or at $SCRATCH/...: each was
    'no sweep results in ...; run vlm-lab sweep first', though the sweep was right there."""
    from vlm_lab.errors import DataError

    folder = lay_out_sweep(tmp_path, {"strategy": ["greedy", "nucleus"]})
    run_dir = next(p for p in folder.iterdir() if p.is_dir())
    cases = {
        str(run_dir): f"{str(run_dir)!r} is one run of a sweep; pass the sweep's folder, {str(folder)!r}",
        str(folder.parent): f"{str(folder.parent)!r} holds sweeps, not one; pass one of: {folder}",
        str(tmp_path / "nothing"): f"no sweep results in {str(tmp_path / 'nothing')!r} (needs sweep.json and summary.csv); run `vlm-lab sweep",
    }
    for given, message in cases.items():
        with pytest.raises(DataError) as e:
            Ablation.load(given)
        assert str(e.value).startswith(message), str(e.value)
    (folder / "summary.csv").rename(tmp_path / "summary.csv")  # started, no run finished yet
    with pytest.raises(DataError, match="has no summary.csv yet: no run has finished"):
        Ablation.load(folder)
    (tmp_path / "summary.csv").rename(folder / "summary.csv")
    monkeypatch.setenv("SWEEPS", str(folder.parent))
    assert Ablation.load("$SWEEPS/shapes-ablation").name == "shapes-ablation"  # as sweep files expand it


def test_a_file_names_the_sweep_folder_to_pass(tmp_path):
    """Notebook 04 pointed at the sweep file (sweep_dir="sweeps/shapes-ablation.yaml") or at a file of the sweep
    raised NotADirectoryError: [Errno 20] Not a directory: 'sweeps/shapes-ablation.yaml/sweep.json'."""
    from vlm_lab.errors import DataError

    folder = lay_out_sweep(tmp_path, {"strategy": ["greedy", "nucleus"]})
    sweep_file = tmp_path / "ablation.yaml"
    sweep_file.write_text(f"name: shapes-ablation\nnotebook: {NOTEBOOK}\nruns_dir: {tmp_path / 'runs'}\ngrid:\n  strategy: [greedy]\n")
    not_run = tmp_path / "later.yaml"
    not_run.write_text(sweep_file.read_text().replace("name: shapes-ablation", "name: later"))
    other = tmp_path / "notes.txt"
    other.write_text("not a sweep\n")
    cases = {
        sweep_file: f"{str(sweep_file)!r} is the sweep file; pass the folder its runs are in, {str(folder)!r}",
        not_run: f"{str(not_run)!r} is the sweep file; it has not run yet (`vlm-lab sweep {not_run}`), and its runs will be in {str(folder.parent / 'later')!r}",
        folder / "summary.csv": f"{str(folder / 'summary.csv')!r} is a file of the sweep in {str(folder)!r}; pass that folder",
        other: f"{str(other)!r} is a file, not a sweep's folder; pass runs/<sweep name>",
    }
    for given, message in cases.items():
        with pytest.raises(DataError) as e:
            Ablation.load(given)
        assert str(e.value).startswith(message), str(e.value)


def test_the_best_variant_line_says_which_runs_it_was_not_chosen_from(tmp_path):
    """One run's data had no references (accuracy None), one failed: the line named greedy the best variant as if
    all four runs had competed."""
    folder = lay_out_sweep(tmp_path, {"strategy": ["greedy", "nucleus", "unscored", "oom"]},
                           accuracy=lambda step, strategy: None if strategy == "unscored" else step / 1000 * (0.9 if strategy == "greedy" else 0.5),
                           failed=lambda strategy: strategy == "oom")  # fmt: skip
    line = Ablation.load(folder).describe_best()
    assert line.startswith("best variant: checkpoint-1000 with strategy=greedy: accuracy 90.0% (95% CI 90.0%-90.0%) [run strategy=greedy,")
    assert line.endswith("; left out: 1 completed run(s) with no accuracy (strategy=unscored), 1 failed"), line
    assert not Ablation.load(folder).describe_best("tokens_per_s").endswith("(strategy=unscored), 1 failed")  # it has tokens/s


def test_a_step_names_the_checkpoint_beside_one_without_a_step(tmp_path, saved_comparisons):
    """A comparison of a training checkpoint and a hub id (no step): the steps read back as floats (1000.0), and
    checkpoint=1000 matched nothing, so every run got 'has no checkpoint 1000'."""
    folder = tmp_path / "hub"
    shutil.copytree(saved_comparisons["late"], folder)
    meta = json.loads((folder / "summary.json").read_text())
    meta["checkpoints"][0]["step"] = None  # checkpoint-250 as a hub id would be: no step
    (folder / "summary.json").write_text(json.dumps(meta))
    ablation = Ablation.load(lay_out_sweep(tmp_path, {"strategy": ["greedy"]}, comparison=lambda strategy: folder))
    for checkpoint in (1000, "1000", "checkpoint-1000"):
        frame = ablation.accuracy_by("question_type", checkpoint=checkpoint)
        assert list(frame["checkpoint"]) == ["checkpoint-1000"] * 3, checkpoint


@pytest.fixture(scope="module")
def one_checkpoint_comparisons(tiny_checkpoints, tmp_path_factory) -> dict[str, Path]:
    """Two saved one-checkpoint comparisons on the same 48 samples, scored so the case is known whatever the
    tiny checkpoints learned: ``short`` gets 39 right (81%, 95% CI about 69-92), ``long`` those and 7 more
    (96%, about 90-100): CIs that overlap, and a paired difference of +14.6% whose CI excludes 0."""
    from vlm_lab.compare import compare
    from vlm_lab.config import CompareConfig
    from vlm_lab.results import ComparisonResult
    from vlm_lab.scoring import bootstrap_accuracy

    out = tmp_path_factory.mktemp("paired")
    real = compare(CompareConfig(checkpoints=(str(tiny_checkpoints[-1]),), data="shapes:val:48", device="cpu",
                                 output_dir=str(out / "real")), progress=False)  # fmt: skip
    (name,) = real.checkpoints
    folders = {}
    for run, right in {"short": 39, "long": 46}.items():
        result = ComparisonResult.load(out / "real")
        for i, row in enumerate(result.rows):
            row["outputs"][name]["score"] = 1.0 if i < right else 0.0
        acc = bootstrap_accuracy([row["outputs"][name]["score"] for row in result.rows])
        result.summary[0].update(accuracy=acc.value, ci_low=acc.ci_low, ci_high=acc.ci_high)
        folders[run] = result.save(out / run)
    return folders


def test_the_winner_is_judged_on_the_samples_both_runs_scored_not_by_ci_overlap(tmp_path, one_checkpoint_comparisons):
    """The runs answer the same samples: a paired bootstrap over them tells 96% from 81% (difference +14.6%,
    95% CI excluding 0), where the two accuracies' own CIs overlap and the report said 'no clear winner'."""
    folder = lay_out_sweep(tmp_path, {"schedule": ["short", "long"]}, comparison=lambda schedule: one_checkpoint_comparisons[schedule])
    ablation = Ablation.load(folder)
    best = ablation.best()
    assert best["schedule"] == "long" and best["overlapping"] == []
    runner_up = best["runner_up"]
    assert runner_up["paired"] and runner_up["n"] == 48 and runner_up["diff"] == pytest.approx(-7 / 48)
    assert runner_up["ci_high"] >= best["ci_low"]  # the CIs overlap: the old reading called it a tie
    assert runner_up["diff_ci_high"] < 0
    line = ablation.describe_best()
    assert "no clear winner" not in line
    assert f"; ahead of schedule=short at checkpoint-1000 (81.2%, paired difference -14.6% [{runner_up['diff_ci_low']:+.1%}, " in line
    assert list(ablation.ranking()["vs_best"]) == ["best", "below"]


def test_runs_within_noise_on_the_same_samples_are_no_clear_winner(tmp_path, one_checkpoint_comparisons):
    folder = lay_out_sweep(tmp_path, {"schedule": ["long", "again"]}, comparison=lambda schedule: one_checkpoint_comparisons["long"])
    ablation = Ablation.load(folder)
    (other,) = ablation.best()["overlapping"]
    assert other["paired"] and other["diff"] == 0 and other["diff_ci_low"] == -other["diff_ci_high"] < 0  # 0 of n flipped: not certain
    assert "no clear winner: 1 other run(s) within noise of it (" in ablation.describe_best()
    assert list(ablation.ranking()["vs_best"]) == ["best", "best"]  # an exact tie shares the rank


def test_a_panel_with_many_values_keeps_its_legend_off_the_lines(tmp_path):
    """Ten learning rates: the legend inside the panel covered the lines it names."""
    lrs = [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2]
    folder = lay_out_sweep(tmp_path, {"learning_rate": lrs}, accuracy=lambda step, learning_rate: step / 1000 * (1 - lrs.index(learning_rate) / 20))
    fig = Ablation.load(folder).plot()
    fig.canvas.draw()
    (ax,) = fig.axes
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # beside the panel, not over it
    few = Ablation.load(lay_out_sweep(tmp_path / "few", {"learning_rate": lrs[:3]})).plot()
    few.canvas.draw()
    assert few.axes[0].get_legend().get_window_extent().x1 <= few.axes[0].get_window_extent().x1  # three: inside, as before


def test_each_runs_comparison_is_read_once_for_the_best_the_ranking_the_line_and_the_breakdown(tmp_path, one_checkpoint_comparisons, monkeypatch):
    from vlm_lab import results

    folder = lay_out_sweep(tmp_path, {"schedule": ["short", "long"]}, comparison=lambda schedule: one_checkpoint_comparisons[schedule])
    ablation = Ablation.load(folder)
    loads = []
    real = results.ComparisonResult.load.__func__
    monkeypatch.setattr(results.ComparisonResult, "load", classmethod(lambda cls, d: loads.append(d) or real(cls, d)))
    ablation.best(), ablation.ranking(), ablation.describe_best()
    ablation.accuracy_by("question_type"), ablation.describe_accuracy_by("question_type")
    assert len(loads) == 2  # one per run, not one per run per call (the breakdown by question type included)


def test_a_run_that_failed_after_writing_its_numbers_shows_none_and_is_never_the_best(tmp_path):
    """Notebook 02 writes summary.json, then a later cell (W&B, a plot) fails: summary.csv/.md showed the failed run's
    best checkpoint and accuracy as if it were a result, the highest of the sweep."""
    grid = {"strategy": ["greedy", "beam"]}
    folder = lay_out_sweep(tmp_path, grid, failed=lambda strategy: strategy == "beam")
    config = SweepConfig(name="shapes-ablation", notebook=NOTEBOOK, runs_dir=str(tmp_path / "runs"), grid=grid)
    runs = {r.varied["strategy"]: r for r in sweep.plan(config)}
    partial = [{"checkpoint": "checkpoint-1000", "step": 1000, "accuracy": 0.99, "ci_low": 0.9, "ci_high": 1.0}]
    atomic_write_text(runs["beam"].dir / "summary.json", json.dumps({"summary": partial}))
    write_summary(folder, list(runs.values()))

    csv = pd.read_csv(folder / "summary.csv").set_index("state")
    assert csv.loc["failed", ["best_checkpoint", "best_accuracy", "checkpoint-1000/accuracy"]].isna().all()
    assert csv.loc["completed", "best_accuracy"] == 1.0
    md = (folder / "summary.md").read_text()
    assert "99" not in md and "| beam | failed | 1.5 | cell [5]: RuntimeError: CUDA out of memory |  |  |" in md
    assert "Numbers only for completed runs: 1 run(s) that did not complete wrote partial ones (summary.json in their folder)" in md
    ablation = Ablation.load(folder)
    assert ablation.best()["run_id"] == runs["greedy"].run_id and ablation.ranking()["strategy"].tolist() == ["greedy"]


def test_the_report_reads_the_runs_states_from_their_folders_after_a_sweep_killed_outright(tmp_path):
    """A sweep killed with SIGKILL (the OOM killer, a reboot) writes no last summary: summary.csv still said pending
    for the run it was executing (interrupted: it runs again next time) and for a run that completed after the
    summary was last written; notebook 04 reported both as pending, and left the completed one out of the ranking."""
    grid = {"strategy": ["greedy", "beam", "nucleus"]}
    scale = {"greedy": 0.5, "beam": 0.9, "nucleus": 0.7}
    folder = lay_out_sweep(tmp_path, grid, accuracy=lambda step, strategy: step / 1000 * scale[strategy])
    config = SweepConfig(name="shapes-ablation", notebook=NOTEBOOK, runs_dir=str(tmp_path / "runs"), grid=grid)
    runs = {r.varied["strategy"]: r for r in sweep.plan(config)}
    statuses = {k: (runs[k].dir / "status.json").read_text() for k in ("beam", "nucleus")}
    for k in statuses:  # the summary as last written: neither had started
        (runs[k].dir / "status.json").unlink()
    write_summary(folder, list(runs.values()))
    (runs["nucleus"].dir / "status.json").write_text(statuses["nucleus"])  # completed after that
    (runs["beam"].dir / "status.json").write_text(json.dumps({"run_id": runs["beam"].run_id, "state": "running"}))
    assert sorted(pd.read_csv(folder / "summary.csv")["state"]) == ["completed", "pending", "pending"]

    ablation = Ablation.load(folder)
    states = dict(zip(ablation.runs["strategy"], ablation.runs["state"]))
    assert states == {"greedy": "completed", "beam": "interrupted", "nucleus": "completed"}
    nucleus = ablation.runs.set_index("strategy").loc["nucleus"]
    assert (nucleus["best_checkpoint"], nucleus["best_accuracy"]) == ("checkpoint-1000", 0.7)
    assert pd.isna(ablation.runs.set_index("strategy").loc["beam", "best_accuracy"])  # its partial 90% is no result
    assert ablation.ranking()["strategy"].tolist() == ["nucleus", "greedy"]
    assert ablation.describe_best().endswith("; left out: 1 interrupted"), ablation.describe_best()


def test_runs_over_other_samples_under_the_same_ids_are_not_paired(tmp_path, one_checkpoint_comparisons):
    """A grid varying the data (two JSONL files numbering their lines alike, VQA's per-file question ids): the same
    id names another image and question in each run. Pairing by id alone judged different questions as if they were
    the same ones ('ahead of ... paired difference ... on 48 samples'); only the samples both runs asked alike are
    paired: none here, so the two runs' CIs are compared; a run over half the same samples is paired on those."""
    from vlm_lab.results import ComparisonResult

    other = ComparisonResult.load(one_checkpoint_comparisons["long"])
    questions = [(row["image"], row["prompt"], row["reference"]) for row in other.rows]
    for row, (image, prompt, reference) in zip(other.rows, questions[1:] + questions[:1]):  # each id: the next sample's
        row["image"], row["prompt"], row["reference"] = image, prompt, reference
    folders = {"a.jsonl": one_checkpoint_comparisons["short"], "b.jsonl": other.save(tmp_path / "b")}
    ablation = Ablation.load(lay_out_sweep(tmp_path / "data", {"data": list(folders)}, comparison=lambda data: folders[data]))
    best = ablation.best()
    assert best["data"] == "b.jsonl"
    (judged,) = best["overlapping"]  # 96% [90-100] against 81% [69-92]: CIs that overlap, nothing paired
    assert not judged["paired"] and judged["n"] == 0 and judged["diff"] is None
    assert "paired" not in ablation.describe_best() and list(ablation.ranking()["vs_best"]) == ["best", "CI overlaps the best's"]

    half = ComparisonResult.load(one_checkpoint_comparisons["short"])
    for row in half.rows[24:]:
        row["prompt"] = "Another question?"
    folders = {"a.jsonl": one_checkpoint_comparisons["long"], "half.jsonl": half.save(tmp_path / "saved-half")}
    ablation = Ablation.load(lay_out_sweep(tmp_path / "sweep-half", {"data": list(folders)}, comparison=lambda data: folders[data]))
    runner_up = ablation.best()["runner_up"] or ablation.best()["overlapping"][0]
    assert runner_up["paired"] and runner_up["n"] == 24


def test_runs_without_cis_or_comparisons_to_pair_are_not_called_below_the_best(tmp_path):
    """A sweep notebook that writes summary.json without 95% CIs and saves no comparison to pair: 89% against the best's
    90% was ranked 'below' (read: the best is clearly ahead) on no evidence at all; the line named a best variant
    with nothing saying the others were not judged."""
    rates = {"greedy": 0.9, "nucleus": 0.89}
    folder = lay_out_sweep(tmp_path, {"strategy": list(rates)}, accuracy=lambda step, strategy: step / 1000 * rates[strategy])
    for path in folder.glob("*/summary.json"):
        meta = json.loads(path.read_text())
        for row in meta["summary"]:
            del row["ci_low"], row["ci_high"]
        path.write_text(json.dumps(meta))
    ablation = Ablation.load(folder)
    assert list(ablation.ranking()["vs_best"]) == ["best", "not judged (no 95% CI)"]
    assert ablation.describe_best().startswith(
        "best variant: checkpoint-1000 with strategy=greedy: accuracy 90.0%; not judged against the 1 other run(s): "
        "no 95% CIs in their summary.json and no saved comparisons to pair"
    ), ablation.describe_best()


def test_summary_rows_follow_the_grid_values_in_numeric_order(tmp_path):
    """summary.md and summary.csv listed the runs by run id, as text: max_new_tokens 16, 32, 4, 8 read as a jumbled
    table in the morning, and notebook 04's runs table (read from summary.csv) did the same."""
    grid = {"max_new_tokens": [4, 8, 16, 32], "strategy": ["greedy", "beam(2)"]}
    folder = lay_out_sweep(tmp_path, grid)
    rows = [line for line in (folder / "summary.md").read_text().splitlines() if line.startswith("| ") and "state" not in line]
    assert [tuple(cell.strip() for cell in line.split("|")[1:3]) for line in rows] == [
        (str(n), s) for n in (4, 8, 16, 32) for s in ("beam(2)", "greedy")
    ]
    assert pd.read_csv(folder / "summary.csv")["max_new_tokens"].tolist() == [4, 4, 8, 8, 16, 16, 32, 32]
    assert Ablation.load(folder).runs["max_new_tokens"].tolist() == [4, 4, 8, 8, 16, 16, 32, 32]


@pytest.mark.parametrize(
    "nucleus, failed, verdict",
    [
        (0.88, False, "Best variant: checkpoint-1000 with strategy=greedy: accuracy 90.0% (95% CI 85.0%-95.0%); no clear "
                      "winner: 1 other run(s) reach a 95% CI overlapping it (strategy=nucleus at checkpoint-1000 88.0%) "
                      "[run strategy=greedy,"),
        (0.5, False, "Best variant: checkpoint-1000 with strategy=greedy: accuracy 90.0% (95% CI 85.0%-95.0%) [run strategy=greedy,"),
        (0.5, True, "No best variant: none of the 2 runs completed with accuracy (2 failed;"),
    ],
)
def test_summary_md_ends_with_the_best_variant_and_whether_it_is_clearly_ahead(tmp_path, nucleus, failed, verdict):
    """summary.md, the file a nightly sweep leaves to read in the morning, gave every run's numbers but not which run
    was best or whether its lead was more than noise: that took running notebook 04."""
    folder = lay_out_sweep(tmp_path, {"strategy": ["greedy", "nucleus"]}, ci=0.05, failed=lambda strategy: failed,
                           accuracy=lambda step, strategy: round(step / 1000 * (0.9 if strategy == "greedy" else nucleus), 3))  # fmt: skip
    last = (folder / "summary.md").read_text().splitlines()[-1]
    assert last.startswith(verdict), last
    assert last == Ablation.load(folder).describe_best()[:1].upper() + Ablation.load(folder).describe_best()[1:]


def test_lines_that_coincide_stay_visible_and_the_axis_says_its_unit(tmp_path):
    """greedy and beam(2) score alike on the tiny checkpoints, and every run has the same weights' bytes: each later
    line was drawn exactly over the earlier ones, so the legend named four lines and one showed. The memory axis
    read 'peak_memory_bytes' from 640000 to 710000."""
    folder = lay_out_sweep(tmp_path, {"strategy": ["greedy", "beam(2)", "nucleus(0.9)"]})
    ablation = Ablation.load(folder)
    (ax,) = ablation.plot().axes
    looks = [(line.get_marker(), line.get_linestyle(), line.get_fillstyle()) for line in ax.get_lines()]
    assert len(set(looks)) == 3 and all(fill == "none" for _, _, fill in looks), looks  # hollow shapes show through each other
    (ax,) = ablation.plot("peak_memory_bytes").axes
    assert ax.get_ylabel() == "peak memory (MiB)" and list(ax.get_lines()[0].get_ydata()) == [10**6 / 2**20] * len(STEPS)
    assert Ablation.load(folder).plot("tokens_per_s").axes[0].get_ylabel() == "tokens/s"


def test_summary_csv_quotes_parameters_a_spreadsheet_would_run_as_formulas(tmp_path):
    """A sweep over prompts (a user's text) wrote a prompt such as =HYPERLINK(...) or -1+2 into summary.csv as is:
    a spreadsheet opening it runs it as a formula. It now starts with a single quote there; numbers stay numbers,
    and the report (Ablation.load, the sweep's coverage) reads the exact text back."""
    import csv

    prompts = ['=HYPERLINK("http://x","y")', "-1+2", "What color?"]
    folder = lay_out_sweep(tmp_path, {"prompt": prompts}, parameters={"offset": -0.5})
    with open(folder / "summary.csv", newline="", encoding="utf-8") as f:
        cells = list(csv.DictReader(f))
    assert sorted(c["prompt"] for c in cells) == sorted(["'=HYPERLINK(\"http://x\",\"y\")", "'-1+2", "What color?"])
    assert {c["offset"] for c in cells} == {"-0.5"} and {c["best_accuracy"] for c in cells} == {"1.0"}
    report = Ablation.load(folder)
    assert sorted(report.runs["prompt"]) == sorted(prompts) and sorted(report.results["prompt"].unique()) == sorted(prompts)
    assert list(report.runs["offset"]) == [-0.5] * 3
