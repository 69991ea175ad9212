"""A sweep's results, read back: the ablation report.

``summary.csv`` / ``summary.md`` (one row per run: parameters, status, headline metrics), which
``vlm_lab.sweep`` writes after each run, live in ``vlm_lab.ablation_summary`` (``write_summary``, re-exported
here). ``Ablation.load(sweep_dir)`` is what notebooks/04_ablation_report.ipynb
calls: one row per (run, checkpoint) from each run's comparison ``summary.json``,
pivot tables, plots of a metric against each varied parameter, the runs ranked, the best
variant (and whether another run is within its CI), and accuracy per meta value
(``accuracy_by``, in ``vlm_lab.ablation_breakdown``). A notebook parameter named like one of
the report's own columns (``state``, ``error``, ``run_id``, ...) is shown as ``params.<name>``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Iterable

from vlm_lab.ablation_summary import (  # noqa: F401 - re-exported: vlm_lab.sweep, ablation_breakdown, the tests
    BEST_METRICS,
    METRICS,
    PARAMETER_PREFIX,
    REPORT_COLUMNS,
    RESULT_FILE,
    STATUS_FILE,
    _best,
    _checkpoint_rows,
    _markdown,
    _read_json,
    parameter_column,
    run_fields,
    write_summary,
)
from vlm_lab.errors import DataError, VlmLabError
from vlm_lab.results_plot import MARKERS
from vlm_lab.spreadsheet_csv import read_csv

SWEEP_FILE = "sweep.json"  # the sweep's config, written by vlm_lab.sweep at each invocation
LOWER_IS_BETTER = ("mean_latency_s", "peak_memory_bytes")

MAX_LEGEND_INSIDE = 6  # lines per panel whose legend fits inside it; with more, the legend goes beside the panel
# each metric's axis: its label with the unit, and what its numbers are divided by for it (bytes read as MiB)
METRIC_AXES = {"accuracy": ("accuracy", 1), "ci_low": ("accuracy, 95% CI low end", 1), "ci_high": ("accuracy, 95% CI high end", 1),
               "mean_latency_s": ("mean latency (s)", 1), "tokens_per_s": ("tokens/s", 1), "peak_memory_bytes": ("peak memory (MiB)", 2**20)}  # fmt: skip
LINE_STYLES = ("-", "--", "-.", ":")


def _paired_text(other: dict[str, Any]) -> str:
    """``", paired difference -2.1% [-5.0%, +0.8%] on 96 samples"`` for a run compared with the best sample by sample; "" otherwise."""
    if not other.get("paired"):
        return ""
    return f", paired difference {other['diff']:+.1%} [{other['diff_ci_low']:+.1%}, {other['diff_ci_high']:+.1%}] on {other['n']} samples"


@dataclasses.dataclass
class Ablation:
    """A finished (or partly finished) sweep: its runs and each run's per-checkpoint results."""

    sweep_dir: Path
    name: str
    grid: dict[str, list]
    parameters: dict[str, Any]
    runs: Any  # pandas DataFrame: summary.csv, one row per run
    results: Any  # pandas DataFrame: one row per (completed run, checkpoint)
    _by: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)  # accuracy_by per (key, checkpoint)
    # each run's saved ComparisonResult (or the error reading it), read once: ablation_paired.load_comparison
    comparisons: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def load(cls, sweep_dir: str | os.PathLike[str]) -> Ablation:
        """Read ``runs/<sweep>/`` (its sweep.json, summary.csv and each run's summary.json); ``~`` and
        ``$VARS`` are expanded, as in sweep files (``$SCRATCH/vlm-runs/shapes-ablation``).

        Raises:
            DataError: the folder holds no sweep (run ``vlm-lab sweep SWEEP.yaml`` first); the message names the
                sweep folder to pass instead when given one run's folder, the folder holding the sweeps, the sweep
                file or a file in the sweep's folder.
        """
        import pandas as pd

        sweep_dir = Path(os.path.expandvars(os.fspath(sweep_dir))).expanduser()
        if sweep_dir.is_file():
            raise DataError(_file_message(sweep_dir))
        config = _read_json(sweep_dir / SWEEP_FILE)
        if not isinstance(config, dict) or not (sweep_dir / "summary.csv").is_file():
            raise DataError(_no_sweep_message(sweep_dir, has_config=isinstance(config, dict)))
        runs = read_csv(sweep_dir / "summary.csv", dtype={"run_id": str})  # the exact text: the formula guard removed
        for text in {"error", "wandb", "best_checkpoint"} & set(runs.columns):  # "" read back as NaN
            runs[text] = runs[text].astype(object).where(runs[text].notna(), "")
        _refresh_states(sweep_dir, runs)
        grid = config.get("grid", {})
        typed = _typed_parameters(config)
        for name in {k for parameters in typed.values() for k in parameters}:
            if (column := parameter_column(name)) in runs.columns:
                # summary.csv reads "", "None", "NA" back as NaN: the run's own values instead
                runs[column] = [typed.get(rid, {}).get(name, v) for rid, v in zip(runs["run_id"], runs[column])]
        records = []
        for run in runs.to_dict(orient="records"):
            if run["state"] != "completed":
                continue
            values = {parameter_column(k): run.get(parameter_column(k)) for k in grid}
            for row in _checkpoint_rows(sweep_dir / run["run_id"]):
                records.append({"run_id": run["run_id"], **values, **row})
        columns = ["run_id", *map(parameter_column, grid), "checkpoint", "step", *METRICS]
        results = pd.DataFrame.from_records(records, columns=columns)
        return cls(
            sweep_dir=sweep_dir, name=config.get("name", sweep_dir.name), grid=grid,
            parameters=config.get("parameters", {}), runs=runs, results=results,
        )  # fmt: skip

    @property
    def varied(self) -> list[str]:
        """The grid parameters that take more than one value."""
        return [k for k, values in self.grid.items() if len(values) > 1]

    def columns(self, names: Iterable[str] | None = None) -> list[str]:
        """The columns of the grid parameters ``names`` (default: all) in ``runs`` and ``results``
        (``parameter_column``: ``params.state`` for a parameter named ``state``)."""
        return [parameter_column(k) for k in (self.grid if names is None else names)]

    def failures(self) -> Any:
        """The runs that did not complete, with their error."""
        return self.runs.loc[self.runs["state"] != "completed", ["run_id", *self.columns(), "state", "error"]]

    def wandb_runs(self) -> Any:
        """One row per run logged to W&B offline (its ``wandb.json`` names the folder): the W&B run with
        every start merged as ``wandb sync`` will merge them, its ``state`` (which says when the latest of
        several starts did not finish), whether it is uploaded, and the ``wandb sync`` command."""
        import pandas as pd

        from vlm_lab.tracking import read_record

        rows = []
        for run in self.runs.to_dict(orient="records"):
            record = read_record(self.sweep_dir / run["run_id"]) or {}
            if not (record.get("logged") and record.get("mode") == "offline" and record.get("dir")):
                continue
            row = {"run_id": run["run_id"], **{k: run.get(k) for k in self.columns()}, "wandb_run": record.get("run_id")}
            rows.append(row | _wandb_state(Path(record["dir"]), str(record.get("run_id") or "")))
        columns = ["run_id", *self.columns(), "wandb_run", "state", "uploaded", "sync_command"]
        return pd.DataFrame.from_records(rows, columns=columns)

    def describe_wandb(self) -> str:
        """One line: how many runs W&B logged offline, the ``wandb sync`` command for those not uploaded, and which
        of them did not finish (one may still be running: ``offline_runs.unfinished_note``)."""
        frame = self.wandb_runs()
        if frame.empty:
            return "no run of this sweep was logged to W&B offline (see the wandb column of the runs above)"
        from vlm_lab.offline_runs import LOGGED_NOTHING, unfinished_note

        pending = frame[~frame["uploaded"].astype(bool) & (frame["sync_command"] != "")]
        nothing = int(frame["state"].str.startswith(LOGGED_NOTHING).sum())
        empty = (f"; {nothing} {LOGGED_NOTHING} (W&B stopped as {'it' if nothing == 1 else 'they'} started): nothing to "
                 f"upload, {'its' if nothing == 1 else 'their'} state says whether to delete") if nothing else ""  # fmt: skip
        if pending.empty:
            return f"{len(frame)} run(s) logged to W&B offline, {'none left to upload' if nothing else 'all uploaded already'}{empty}"
        paths = " ".join(command.removeprefix("wandb sync ") for command in pending["sync_command"])
        unfinished = [self.label(r) for r in pending.to_dict(orient="records") if r["state"].startswith("incomplete")]
        note = f"; {unfinished_note(unfinished)}" if unfinished else ""
        return f"{len(frame)} run(s) logged to W&B offline, {len(pending)} not uploaded yet: wandb sync {paths}{note}{empty}"

    def table(self, metric: str = "accuracy") -> Any:
        """``metric`` by checkpoint (rows, in step order) x the varied parameters (columns)."""
        self._check_metric(metric)
        frame = self.results
        index = "step" if frame["step"].notna().all() and len(frame) else "checkpoint"
        columns = self.columns(self.varied or list(self.grid)) or ["run_id"]
        return frame.pivot_table(index=index, columns=columns, values=metric, aggfunc="mean", dropna=False).sort_index()

    def ranking(self, metric: str = "accuracy") -> Any:
        """One row per run that reports ``metric``, best first (lowest first for latency and memory): its varied
        parameters, the checkpoint where it does best, the metric, and for accuracy its 95% CI and ``vs_best``
        (``best``, shared by exact ties; ``within noise of the best``: a paired bootstrap on the samples both scored
        puts 0 in the difference's 95% CI; ``CI overlaps the best's`` where they cannot be paired; ``below``). Readable at
        any grid size, unlike ``table``
        (a column per variant)."""
        import pandas as pd

        self._check_metric(metric)
        scored = self.results.dropna(subset=[metric])
        lower = metric in LOWER_IS_BETTER
        labels = self.columns(self.varied) or ["run_id"]
        columns = ["rank", *labels, "checkpoint", metric] + (["ci_low", "ci_high", "vs_best"] if metric == "accuracy" else [])
        if scored.empty:
            return pd.DataFrame(columns=columns)
        pick = scored.groupby("run_id", sort=False)[metric].idxmin() if lower else scored.groupby("run_id", sort=False)[metric].idxmax()
        frame = scored.loc[pick].sort_values(metric, ascending=lower, kind="stable").reset_index(drop=True)
        frame.insert(0, "rank", frame[metric].rank(method="min", ascending=lower).astype(int))
        if metric == "accuracy":
            from vlm_lab.ablation_paired import versus_best

            top = frame.iloc[0]
            rows = frame.to_dict(orient="records")
            others = [{**r, "ci_low": _plain(r["ci_low"]), "ci_high": _plain(r["ci_high"])} for r in rows[1:]]
            judged = versus_best(self.sweep_dir, {**rows[0], "ci_low": _plain(top["ci_low"])}, others, results=self.comparisons)
            frame["vs_best"] = ["best"] + [
                "best" if r == 1 else ("within noise of the best" if j["paired"] else "CI overlaps the best's") if j["close"]
                else "below" if j["judged"] else "not judged (no 95% CI)"
                for r, j in zip(frame["rank"][1:], judged)
            ]  # fmt: skip
        return frame[columns]

    def best(self, metric: str = "accuracy") -> dict[str, Any]:
        """The best (run, checkpoint) by ``metric`` (lowest for latency and memory): its parameters,
        checkpoint, metrics, ``ties``: how many other (run, checkpoint) pairs are as good, and for accuracy
        ``overlapping``: the other runs (each at its best checkpoint) the sweep cannot tell from the best: a paired
        bootstrap over the samples both scored puts 0 within the 95% CI of their difference, or, where the runs'
        comparisons cannot be paired, their 95% CIs overlap (``ablation_paired.versus_best``); each
        ``{"run_id", <parameter columns>, "checkpoint", "accuracy", "ci_low", "ci_high", "paired", "diff",
        "diff_ci_low", "diff_ci_high", "n"}``. ``runner_up``: the next run when the best is clearly ahead of it
        (same keys), else None. ``not_judged``: the other runs nothing tells from the best (no CIs in their
        summary.json, no saved comparisons to pair), same keys."""
        self._check_metric(metric)
        scored = self.results.dropna(subset=[metric])
        if scored.empty:
            raise DataError(f"no completed run in {self.sweep_dir} reports {metric}; see summary.md for the failures")
        values = scored[metric].astype(float)
        row = scored.loc[values.idxmin() if metric in LOWER_IS_BETTER else values.idxmax()]
        best = {k: _plain(row[k]) for k in ("run_id", *self.columns(), "checkpoint", "step", *METRICS)}
        best["ties"] = int((values == float(row[metric])).sum()) - 1  # other (run, checkpoint)s as good
        best["overlapping"], best["runner_up"], best["not_judged"] = [], None, []
        if metric == "accuracy":
            from vlm_lab.ablation_paired import versus_best

            others = scored[scored["run_id"] != row["run_id"]]
            per_run = others.loc[others.groupby("run_id", sort=False)[metric].idxmax()].sort_values(metric, ascending=False, kind="stable")
            keys = ("run_id", *self.columns(), "checkpoint", "accuracy", "ci_low", "ci_high")
            records = [{k: _plain(r[k]) for k in keys} for r in per_run.to_dict(orient="records")]
            judged = [{**r, **j} for r, j in zip(records, versus_best(self.sweep_dir, best, records, results=self.comparisons))]
            best["not_judged"] = [j for j in judged if not j["judged"]]
            best["overlapping"] = [j for j in judged if j.pop("close")]
            best["runner_up"] = judged[0] if judged and judged[0]["judged"] and judged[0] not in best["overlapping"] else None
        return best

    def describe_best(self, metric: str = "accuracy") -> str:
        """One line naming the best variant, or saying that no run completed with ``metric`` (and why)."""
        self._check_metric(metric)
        unscored = self.results.loc[self.results[metric].isna(), "run_id"].nunique()
        if self.results[metric].dropna().empty and unscored:  # completed, but nothing scored (no references)
            failed = len(self.runs) - unscored
            why = "their comparisons scored nothing: give the data a 'reference' to score against" if metric == "accuracy" else "it is missing from their summary.json"
            return (
                f"no best variant: the {unscored} completed run(s) with results report no {metric} ({why})"
                + (f"; {failed} other run(s) did not complete (see the failures below)" if failed else "")
            )
        if self.results[metric].dropna().empty:  # every run failed (or is still pending): a report, not a crash
            states = self.runs["state"].value_counts()
            others = ", ".join(f"{n} {state}" for state, n in sorted(states.items()) if state != "completed")
            return (
                f"no best variant: none of the {len(self.runs)} runs completed with {metric} "
                f"({others or 'no per-checkpoint results'}; see the failures below and {self.sweep_dir / 'summary.md'})"
            )
        b = self.best(metric)
        params = ", ".join(f"{k}={b[parameter_column(k)]}" for k in self.grid)
        ci = f" (95% CI {b['ci_low']:.1%}-{b['ci_high']:.1%})" if metric == "accuracy" and b.get("ci_low") is not None else ""
        value = f"{b[metric]:.1%}" if metric == "accuracy" else f"{b[metric]:.4g}"
        ties = f"; tied with {b['ties']} other run/checkpoint pair(s)" if b["ties"] else ""
        if b["overlapping"]:  # within noise of the best: a reader must not take the first line as the answer
            named = "; ".join(f"{self.label(o)} at {o['checkpoint']} {o['accuracy']:.1%}{_paired_text(o)}" for o in b["overlapping"][:3])
            more = f" and {len(b['overlapping']) - 3} more" if len(b["overlapping"]) > 3 else ""
            paired = {o["paired"] for o in b["overlapping"]}  # paired: on the same samples; else only CIs could be compared
            how = {frozenset({True}): "within noise of it", frozenset({False}): "reach a 95% CI overlapping it"}.get(
                frozenset(paired), "within noise of it or reach a 95% CI overlapping it")
            ties = f"; no clear winner: {len(b['overlapping'])} other run(s) {how} ({named}{more})"
        elif b.get("runner_up") and b["runner_up"]["paired"]:  # clearly ahead: by how much, on the same samples
            r = b["runner_up"]
            ties += f"; ahead of {self.label(r)} at {r['checkpoint']} ({r['accuracy']:.1%}{_paired_text(r)})"
        if b["not_judged"]:  # a first line naming a best variant must not read as "clearly ahead of them"
            ties += (f"; not judged against the {len(b['not_judged'])} other run(s): no 95% CIs in their summary.json "
                     "and no saved comparisons to pair")  # fmt: skip
        line = f"best variant: {b['checkpoint']} with {params or 'the base parameters'}: {metric} {value}{ci}{ties} [run {b['run_id']}]"
        return line + self._left_out(metric) + self._uneven_checkpoints()

    def _uneven_checkpoints(self) -> str:
        """``"; not every run compared the same checkpoints (...)"`` where completed runs hold different checkpoints
        (a sweep over a training folder that gained checkpoints while it ran): each run's best is of what it had."""
        order = list(dict.fromkeys(self.results.sort_values("step", kind="stable")["checkpoint"]))  # training order
        held = self.results.groupby("run_id", sort=False)["checkpoint"].agg(set)
        every = set(order)
        lacking = [(run_id, [c for c in order if c not in names]) for run_id, names in held.items() if names != every]
        if not lacking:
            return ""
        labels = {r["run_id"]: self.label(r) for r in self.runs.to_dict(orient="records")}
        named = "; ".join(f"{labels.get(run_id, run_id)} lacks {', '.join(missing)}" for run_id, missing in lacking[:3])
        more = f" and {len(lacking) - 3} more" if len(lacking) > 3 else ""
        return (f"; not every run compared the same checkpoints ({named}{more}): a run's best is of the checkpoints "
                "it had; delete those runs' folders and run the sweep again")  # fmt: skip

    def _left_out(self, metric: str) -> str:
        """``"; left out: ..."``: the runs the best was not chosen from (no value of ``metric``, or not completed)."""
        valued = set(self.results.loc[self.results[metric].notna(), "run_id"])
        completed = self.runs[self.runs["state"] == "completed"]
        unscored = [self.label(r) for r in completed.to_dict(orient="records") if r["run_id"] not in valued]
        states = self.runs.loc[self.runs["state"] != "completed", "state"].value_counts()
        parts = [f"{len(unscored)} completed run(s) with no {metric} ({'; '.join(unscored[:3])}{' ...' if len(unscored) > 3 else ''})"] if unscored else []
        parts += [f"{n} {state}" for state, n in sorted(states.items())]
        return f"; left out: {', '.join(parts)}" if parts else ""

    def label(self, run: dict[str, Any]) -> str:
        """``strategy=greedy, max_new_tokens=8``: a run's varied parameters (its id when nothing varied)."""
        return ", ".join(f"{k}={run.get(parameter_column(k))}" for k in self.varied) or run["run_id"]

    def plot(self, metric: str = "accuracy"):
        """One panel per varied parameter: ``metric`` against training step, one line per value
        (averaged over the other parameters). Returns the matplotlib Figure."""
        import matplotlib.pyplot as plt

        self._check_metric(metric)
        params = self.varied or list(self.grid)[:1]
        fig, axes = plt.subplots(1, max(len(params), 1), figsize=(5 * max(len(params), 1), 3.5), squeeze=False)
        frame = self.results
        label, scale = METRIC_AXES.get(metric, (metric, 1))
        x = "step" if frame["step"].notna().all() and len(frame) else "checkpoint"
        for ax, param in zip(axes[0], params or [None]):
            groups = frame.groupby(parameter_column(param), sort=True, dropna=False) if param else [("all runs", frame)]
            for i, (value, part) in enumerate(groups):
                mean = part.groupby(x, sort=True)[metric].mean() / scale
                # settings that score alike (greedy and beam on a small model; every run's weights' bytes) draw the
                # same line: hollow markers of different shapes and dash patterns keep each one in sight
                ax.plot(list(mean.index), list(mean.values), marker=MARKERS[i % len(MARKERS)], fillstyle="none",
                        linestyle=LINE_STYLES[i % len(LINE_STYLES)], label=f"{param}={value}" if param else value)  # fmt: skip
            beside = len(ax.lines) > MAX_LEGEND_INSIDE  # many values: a legend inside would cover the lines
            ax.set_title(f"{label.split(' (')[0]} by {param or 'checkpoint'}")
            ax.set_xlabel("training step" if x == "step" else "checkpoint")
            ax.set_ylabel(label)
            if metric == "accuracy":
                ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small", **({"loc": "upper left", "bbox_to_anchor": (1.02, 1)} if beside else {}))
        fig.suptitle(f"sweep {self.name}: {len(self.runs)} runs, {int((self.runs['state'] == 'completed').sum())} completed")
        fig.tight_layout()
        return fig

    def accuracy_by(self, key: str, *, checkpoint: str | int | None = None, wide: bool = False) -> Any:
        """Each completed run's accuracy, with its 95% bootstrap CI, per value of its samples' ``meta[key]``
        (the shapes set: ``question_type``), at the run's best checkpoint (``summary.csv``'s ``best_checkpoint``)
        or at ``checkpoint`` (a name, ``checkpoint-500``, or a step, ``500``; None or "": the best), read from each
        run's saved comparison.

        Long (default): one row per (run, value): ``run_id``, the grid's parameter columns, checkpoint, step,
        accuracy, ci_low, ci_high, n_scored and ``key``; runs without numbers have no rows. ``wide=True``, for
        reading: one row per run (failed, pending and runs without that key or checkpoint too, with a ``note``
        saying why), one column per value, cells ``"62% [25–100]"``.

        Raises:
            ConfigError: ``key`` is empty.
        """
        from vlm_lab import ablation_breakdown

        checkpoint = _checkpoint(checkpoint)
        frame, notes = self._accuracy_by(key, checkpoint)
        return ablation_breakdown.wide(self, frame, notes, key) if wide else frame.copy()

    def describe_accuracy_by(self, key: str, *, checkpoint: str | int | None = None) -> str:
        """Per value of ``meta[key]``: the best run with its accuracy and CI, and whether other runs fall inside
        that CI (then no setting clearly wins for it); then the runs without numbers and why."""
        from vlm_lab import ablation_breakdown

        checkpoint = _checkpoint(checkpoint)
        frame, notes = self._accuracy_by(key, checkpoint)
        return ablation_breakdown.describe(self, frame, notes, key, checkpoint=checkpoint)

    def plot_accuracy_by(self, key: str, *, checkpoint: str | int | None = None):
        """A heatmap of ``accuracy_by``: runs x values, each cell with its accuracy and 95% CI. Returns the Figure."""
        from vlm_lab import ablation_breakdown

        checkpoint = _checkpoint(checkpoint)
        frame, notes = self._accuracy_by(key, checkpoint)
        return ablation_breakdown.plot(self, frame, notes, key, checkpoint=checkpoint)

    def _accuracy_by(self, key: str, checkpoint: str | int | None) -> tuple[Any, dict[str, str]]:
        from vlm_lab import ablation_breakdown

        if (key, checkpoint) not in self._by:  # each run's comparison read and bootstrapped once for the three views
            self._by[key, checkpoint] = ablation_breakdown.accuracy_by(self, key, checkpoint=checkpoint)
        return self._by[key, checkpoint]

    def _check_metric(self, metric: str) -> None:
        if metric not in METRICS:
            raise DataError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")


def _no_sweep_message(folder: Path, *, has_config: bool) -> str:
    """Why ``folder`` is not a sweep to report on, and the folder to pass instead."""
    if has_config:  # the sweep started but no run has finished yet (it writes summary.csv as runs finish)
        return (f"the sweep in {str(folder)!r} has no summary.csv yet: no run has finished; wait for its first run, "
                f"or see its progress with `vlm-lab sweep SWEEP.yaml --dry-run`")  # fmt: skip
    if (folder.parent / SWEEP_FILE).is_file():  # one run's folder
        return f"{str(folder)!r} is one run of a sweep; pass the sweep's folder, {str(folder.parent)!r}"
    inside = sorted(p.parent.name for p in folder.glob(f"*/{SWEEP_FILE}")) if folder.is_dir() else []
    if inside:  # the runs_dir holding several sweeps
        return f"{str(folder)!r} holds sweeps, not one; pass one of: " + ", ".join(str(folder / name) for name in inside)
    return (f"no sweep results in {str(folder)!r} (needs {SWEEP_FILE} and summary.csv); "
            "run `vlm-lab sweep sweeps/shapes-ablation.yaml` first")  # fmt: skip


def _wandb_state(folder: Path, run_id: str) -> dict[str, Any]:
    """``state``, ``uploaded`` and ``sync_command`` of the W&B run ``run_id`` whose start ``folder`` a run's
    wandb.json names, as ``vlm-lab runs`` says them: a start killed as W&B started (its log holds only its header)
    ``logged nothing`` (and whether it is safe to delete), not ``unreadable``; the latest start of a run doing so
    (a re-run killed then: wandb.json still names the first start) makes the run ``incomplete``."""
    from vlm_lab.offline_runs import (
        LOGGED_NOTHING, EmptyRunLogError, latest_runs, read_merged_run, starts_beside, unreadable_later_start,
    )

    empty = None
    try:
        logged = read_merged_run(folder)
    except EmptyRunLogError as e:
        starts = starts_beside(folder, run_id, project=None, exclude=folder) if run_id else []
        if not starts:  # nothing to upload
            return {"state": f"{LOGGED_NOTHING} ({e.why}): {e.fix}", "uploaded": False, "sync_command": ""}
        logged, empty = latest_runs(starts)[-1], (folder, LOGGED_NOTHING)
    except (DataError, OSError) as e:  # moved, deleted, or damaged
        return {"state": f"unreadable: {e}", "uploaded": False, "sync_command": ""}
    if (later := empty or unreadable_later_start(logged)) is not None:
        state = f"incomplete, latest start {later[1]} ({later[0].name})"
    else:
        state = logged.state
    return {"state": state, "uploaded": logged.synced, "sync_command": logged.sync_command}


def _file_message(path: Path) -> str:
    """Why the file ``path`` is not a sweep to report on: the sweep's own folder to pass instead, where there is one."""
    from vlm_lab.errors import VlmLabError
    from vlm_lab.sweep_file import load_sweep
    from vlm_lab.sweep_plan import sweep_dir

    if (path.parent / SWEEP_FILE).is_file():  # summary.csv, summary.md, sweep.json
        return f"{str(path)!r} is a file of the sweep in {str(path.parent)!r}; pass that folder"
    try:
        folder = sweep_dir(load_sweep(path))
    except VlmLabError:
        return f"{str(path)!r} is a file, not a sweep's folder; pass runs/<sweep name>, the folder `vlm-lab sweep SWEEP.yaml` writes"
    if (folder / SWEEP_FILE).is_file():
        return f"{str(path)!r} is the sweep file; pass the folder its runs are in, {str(folder)!r}"
    return f"{str(path)!r} is the sweep file; it has not run yet (`vlm-lab sweep {path}`), and its runs will be in {str(folder)!r}"


def _refresh_states(sweep_dir: Path, runs: Any) -> None:
    """``runs`` (summary.csv, in place) as the run folders say now. A sweep killed outright (the OOM killer, a
    reboot, a job past its time limit) wrote no last summary: its csv still shows a run it was executing as
    pending or running (it is interrupted), or a run that completed since the last write as running. And a csv
    written before summaries left them out shows the partial numbers of runs that did not complete: blanked."""
    from vlm_lab.sweep import RunSpec

    numbers = [c for c in runs.columns if c.startswith("best_") or c.endswith("/accuracy")]
    for i, rid in zip(runs.index, runs["run_id"]):
        try:
            state = RunSpec(run_id=rid, dir=sweep_dir / rid, varied={}, parameters={}).state()
        except OSError:  # a folder this user may only read: its lock cannot be probed
            state = runs.at[i, "state"]
        if state != runs.at[i, "state"]:
            for column, value in run_fields(sweep_dir / rid, state).items():
                if column not in runs.columns:
                    runs[column] = None
                runs.at[i, column] = "" if value is None and column == "best_checkpoint" else value
        if state != "completed":
            runs.loc[i, numbers] = None
            if "best_checkpoint" in runs.columns:
                runs.at[i, "best_checkpoint"] = ""


def _checkpoint(checkpoint: str | int | None) -> str | int | None:
    """None for no checkpoint given: a notebook's default ``""`` too (each run's best)."""
    return None if checkpoint is None or str(checkpoint).strip() == "" else checkpoint


def _typed_parameters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{run_id: parameters}`` of the sweep in ``sweep.json``, as typed as the sweep file wrote them."""
    from vlm_lab.config import SweepConfig
    from vlm_lab.sweep import plan

    def cell(value: Any) -> Any:  # a list or mapping as summary.csv writes it: tables group by it
        return str(value) if isinstance(value, (list, dict)) else value

    values = {k: v for k, v in config.items() if k != "notebook_fingerprint"}
    try:  # the run ids of the notebook the sweep last ran (it may have changed since, or be elsewhere)
        runs = plan(SweepConfig.from_dict(values), fingerprint=config.get("notebook_fingerprint", ""))
    except VlmLabError:  # a sweep.json from another version: the CSV's values
        return {}
    return {run.run_id: {k: cell(v) for k, v in run.parameters.items()} for run in runs}


def _plain(value: Any) -> Any:
    """numpy scalars -> Python, NaN -> None (for printing and JSON)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
