"""Is a run within noise of the sweep's best? A paired bootstrap on the samples both scored.

The runs of a sweep answer the same samples, so the question "could the best run's lead be luck?"
is a paired one: resample the samples, not each run's accuracy apart. Comparing two 95% CIs
(overlap: "cannot tell apart") is far more cautious: greedy 90% and nucleus 86% on the same 200
samples overlap, yet a paired bootstrap over the samples where they differ may well exclude 0.
``versus_best`` pairs each run's checkpoint with the best's on the samples both asked alike: the same id
with the same image, prompt and reference (``scoring.paired_bootstrap``). An id alone is not enough: a grid
varying the data (two JSONL files numbering their lines alike) asks another question under each id. It falls
back to CI overlap when a run's comparison cannot be read or the two share no such sample (different data).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from vlm_lab.errors import DataError

Question = tuple[str, str, str]  # a sample's image (named by its pixels' hash), prompt and reference, as JSON


def versus_best(sweep_dir: Path, best: dict[str, Any], others: list[dict[str, Any]], *, seed: int = 0,
                where: Callable[[dict], bool] | None = None, results: dict[str, Any] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Per row of ``others`` (``run_id``, ``checkpoint``, ``accuracy``, ``ci_low``, ``ci_high``), against ``best``:
    ``{"close": within noise of the best, "paired": judged by a paired bootstrap (else by CI overlap), "judged": paired,
    or both CIs known (else nothing tells the two apart: not close, not below either),
    "diff", "diff_ci_low", "diff_ci_high": the other minus the best, paired (None when not paired), "n": samples paired}``.
    ``where``: only the samples (result rows) it accepts, e.g. one question type's. ``results``: the
    ``load_comparison`` cache (run id -> its ``ComparisonResult``, or the error reading it); pass one to read
    each run once."""
    results = {} if results is None else results
    top = _scores(sweep_dir, best, results, where)
    out = []
    for row in others:
        mine = _scores(sweep_dir, row, results, where)
        common = [i for i in top if i in mine and mine[i][0] == top[i][0]] if top and mine else []  # asked alike
        if not common:  # no comparison to read, or different samples: the cautious reading
            known = best["ci_low"] is not None and row["ci_high"] is not None
            close = known and float(row["ci_high"]) >= float(best["ci_low"])
            out.append({"close": bool(close), "paired": False, "judged": known, "diff": None, "diff_ci_low": None,
                        "diff_ci_high": None, "n": 0})  # fmt: skip
            continue
        from vlm_lab.scoring import paired_bootstrap

        p = paired_bootstrap([top[i][1] for i in common], [mine[i][1] for i in common], ids=common, seed=seed)
        out.append({"close": p.ci_high >= 0, "paired": True, "judged": True, "diff": p.diff, "diff_ci_low": p.ci_low, "diff_ci_high": p.ci_high,
                    "n": len(common)})  # fmt: skip
    return out


def _scores(
    sweep_dir: Path, row: dict[str, Any], results: dict[str, Any], where: Callable[[dict], bool] | None
) -> dict[str, tuple[Question, float]] | None:
    """``{sample id: (its question, score)}`` of ``row``'s checkpoint in its run's saved comparison (scored samples
    only); None when the run saved none that can be read."""
    try:
        result = load_comparison(sweep_dir, row["run_id"], results)
    except (DataError, OSError):  # a notebook that saves no comparison, a damaged one: CI overlap instead
        return None
    if row["checkpoint"] not in result.checkpoints:
        return None
    return {
        r["id"]: ((str(r["image"]), r["prompt"], json.dumps(r["reference"])), r["outputs"][row["checkpoint"]]["score"])
        for r in result.rows
        if r["reference"] is not None and (where is None or where(r))
    }


def load_comparison(sweep_dir: Path, run_id: str, results: dict[str, Any]) -> Any:
    """The run's saved ``ComparisonResult``, read once: ``results`` keeps it (or the error reading it raised) by run id.

    Raises:
        DataError, OSError: as ``ComparisonResult.load`` did, each time it is asked for.
    """
    from vlm_lab.results import ComparisonResult

    if run_id not in results:
        try:
            results[run_id] = ComparisonResult.load(sweep_dir / run_id)
        except (DataError, OSError) as e:
            results[run_id] = e
    got = results[run_id]
    if isinstance(got, Exception):
        raise got
    return got
