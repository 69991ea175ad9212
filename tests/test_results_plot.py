"""vlm_lab/results_plot.py: notebook 02's accuracy plot as a reader sees it (labels, ticks, messages; not pixels)."""

from __future__ import annotations

import math

import matplotlib
import pytest

from vlm_lab.results import ComparisonResult

matplotlib.use("Agg")

TYPES = ("color", "shape", "describe")


def _result(tmp_path, names, steps, *, accuracy=(0.5,), references=True) -> ComparisonResult:
    """A comparison of ``names`` on 12 samples (4 per question type); checkpoint i answers right ``accuracy[i]`` of them."""
    acc = list(accuracy) * len(names) if len(accuracy) == 1 else list(accuracy)
    rows = []
    for k in range(12):
        outputs = {n: {"output": "red" if k < 12 * a else "blue", "score": (1.0 if k < 12 * a else 0.0) if references else None,
                       "latency_s": 0.1, "new_tokens": 1} for n, a in zip(names, acc)}  # fmt: skip
        rows.append({"id": f"s{k}", "image": f"images/s{k}.png", "prompt": "p", "reference": "red" if references else None,
                     "meta": {"question_type": TYPES[k % 3]}, "outputs": outputs})  # fmt: skip
    summary = [{"checkpoint": n, "step": s, "accuracy": a if references else None, "ci_low": max(a - 0.2, 0) if references else None,
                "ci_high": min(a + 0.2, 1) if references else None, "n_scored": 12 if references else 0, "n_samples": 12}
               for n, s, a in zip(names, steps, acc)]  # fmt: skip
    refs = [{"name": n, "spec": n, "step": s} for n, s in zip(names, steps)]
    return ComparisonResult(config={"seed": 0}, checkpoints=list(names), refs=refs, rows=rows, summary=summary, output_dir=tmp_path)


def _overlapping(texts) -> list[tuple[str, str]]:
    """Pairs of tick labels drawn over each other: level ones whose boxes meet, slanted ones closer (across
    their slant) than a line of text is high (their upright boxes overlap however far apart they are)."""
    texts = [t for t in texts if t.get_text()]
    pairs = []
    for a, b in zip(texts, texts[1:]):
        angle = math.radians(a.get_rotation())
        if angle:
            apart = abs(b.get_window_extent().x1 - a.get_window_extent().x1) * math.sin(angle)
            if apart < a.get_fontsize() * a.figure.dpi / 72:
                pairs.append((a.get_text(), b.get_text()))
        elif a.get_window_extent().overlaps(b.get_window_extent()):
            pairs.append((a.get_text(), b.get_text()))
    return pairs


@pytest.mark.parametrize("by", [None, "question_type"])
def test_long_checkpoint_names_are_short_distinct_tick_labels_that_do_not_overlap(tmp_path, by):
    """Five plain folders with long paths: the ticks were the whole paths, overlapping, wider than the plot."""
    names = [f"/data/experiments/my-org-vlm-finetune-lr3e-5-warmup100-step{s}" for s in (0, 250, 500, 750, 1000)]
    ax = _result(tmp_path, names, [None] * 5, accuracy=(0.0, 0.5, 0.8, 0.9, 1.0)).plot_accuracy(by=by)
    ax.figure.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(set(labels)) == 5 and all(len(label) <= 32 for label in labels), labels
    assert all(label.endswith(name[-7:]) for label, name in zip(labels, names)), labels  # the part that tells them apart
    assert not _overlapping(ax.get_xticklabels())
    if by:  # beside the axes: inside, it hid the CI bars of the curves' top right (where accuracy ends up)
        assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1
    inside = ax.figure.get_window_extent()
    assert all(inside.x0 <= t.get_window_extent().x0 and t.get_window_extent().x1 <= inside.x1 for t in ax.get_xticklabels())


@pytest.mark.parametrize("by", [None, "question_type"])
def test_one_checkpoint_is_named_on_its_axis(tmp_path, by):
    """One checkpoint at step 500: the axis read 480..520 (training steps that do not exist), and with ``by`` the
    three values' points sat 0.01 apart under an offset '+5e2'."""
    ax = _result(tmp_path, ["checkpoint-500"], [500], accuracy=(0.75,)).plot_accuracy(by=by)
    ax.figure.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["checkpoint-500"]
    assert ax.xaxis.get_offset_text().get_text() == ""
    if by:  # the three values' CI bars side by side, apart by more than a hair
        xs = sorted(line.get_xdata()[0] for line in ax.lines if len(line.get_xdata()) == 1 and line.get_marker() not in ("_", None, "None"))
        lo, hi = ax.get_xlim()
        assert len(xs) >= 3 and (xs[-1] - xs[0]) / (hi - lo) > 0.02, xs
        markers = [bars.lines[0].get_marker() for bars in ax.containers]
        assert len(set(markers)) == len(markers) == 3, markers  # told apart by shape, not by colour alone


@pytest.mark.parametrize("references", [False, True])
def test_nothing_scored_is_a_message_not_an_empty_axis(tmp_path, references):
    """No references (or no accuracy for any checkpoint): the plot was an empty axis from -0.04 to 0.04."""
    result = _result(tmp_path, ["checkpoint-250", "checkpoint-500"], [250, 500], references=references)
    if references:  # every checkpoint's accuracy missing (n_scored 0): all NaN
        for s in result.summary:
            s.update(accuracy=None, ci_low=None, ci_high=None, n_scored=0)
    ax = result.plot_accuracy()
    said = " ".join(t.get_text() for t in ax.texts)
    assert "no accuracy to plot" in said and ("no sample has a reference" in said) != references, said
    assert not ax.lines and not ax.collections and not ax.axison


def test_title_counts_the_samples_scored_not_every_sample(tmp_path):
    """A data set where 4 of 12 samples have no reference: the title read n=12, though each accuracy and its CI
    rest on the 8 scored samples (the table's n_scored 8/12)."""
    result = _result(tmp_path, ["checkpoint-250", "checkpoint-500"], [250, 500], accuracy=(0.5, 0.75))
    for s in result.summary:
        s["n_scored"] = 8
    title = result.plot_accuracy().get_title()
    assert "n=12" not in title and "8 of 12" in title, title
    all_scored = _result(tmp_path, ["checkpoint-250", "checkpoint-500"], [250, 500], accuracy=(0.5, 0.75))
    assert all_scored.plot_accuracy().get_title() == "accuracy by checkpoint (n=12)"


def _run_with_final(tmp_path, *, final_step, fingerprint, accuracy=(0.25, 0.5, 0.75)):
    """A run's checkpoint-500 and checkpoint-1000, then its final model at the root ("runs/x": Trainer.save_model()),
    whose trainer_state.json says ``final_step``, with weights ``fingerprint`` (fp500 / fp1000: a checkpoint's)."""
    result = _result(tmp_path, ["checkpoint-500", "checkpoint-1000", "runs/x"], [500, 1000, None], accuracy=accuracy)
    for ref, fp in zip(result.refs, ("fp500", "fp1000", fingerprint)):
        ref["fingerprint"] = fp
    result.refs[2]["final_step"] = final_step
    return result


def _points(ax) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for line in ax.lines for x, y in zip(line.get_xdata(), line.get_ydata())
            if line.get_marker() not in ("_", None, "None", "")]


@pytest.mark.parametrize("by", [None, "question_type"])
def test_a_runs_final_model_is_placed_on_the_step_axis_and_labelled(tmp_path, by):
    """checkpoint-500, checkpoint-1000 and the run's final model (no checkpoint-N name): the step axis was lost,
    the three named on the axis with the final model as "x". It stands at its trainer_state.json's global_step,
    labelled, drawn apart (a star) from checkpoint-1000 where the weights differ at the same step."""
    ax = _run_with_final(tmp_path, final_step=1000, fingerprint="fp-other").plot_accuracy(by=by)
    ax.figure.canvas.draw()
    assert ax.get_xlabel() == "training step"
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["final (step 1000)"], labels
    assert all(label.get_text() in ("", *map(str, range(0, 1300, 100)), *(f"{s:,}" for s in range(0, 1300, 100)))
               for label in ax.get_xticklabels())  # numbers, no names
    if by is None:  # a star, not checkpoint-1000's circle under it; with by, a dotted line at step 1000
        stars = [line for line in ax.lines if line.get_marker() == "*"]
        assert [list(line.get_xdata()) for line in stars] == [[1000]]
    for line in ax.lines:  # a line never runs back along the step axis
        xs = [float(x) for x in line.get_xdata()]
        assert xs == sorted(xs), xs


def test_a_final_model_with_a_checkpoints_weights_is_labelled_as_that_checkpoint(tmp_path):
    """load_best_model_at_end: the final model holds checkpoint-500's weights though training ran to step 1000 (the
    root trainer_state.json's global_step); drawn at 1000 it would show checkpoint-500's accuracy as step 1000's."""
    ax = _run_with_final(tmp_path, final_step=1000, fingerprint="fp500", accuracy=(0.25, 0.5, 0.25)).plot_accuracy()
    assert [t.get_text() for t in ax.texts] == ["final (= checkpoint-500)"]
    assert (500.0, 0.25) in _points(ax) and all(x != 1000 or y == 0.5 for x, y in _points(ax))


def test_a_final_model_without_its_step_keeps_the_named_axis(tmp_path):
    """No root trainer_state.json (save_model() without save_state()), or a result saved before final_step: named."""
    ax = _run_with_final(tmp_path, final_step=None, fingerprint="fp-other").plot_accuracy()
    assert ax.get_xlabel() == "checkpoint" and [t.get_text() for t in ax.get_xticklabels()] == ["checkpoint-500", "checkpoint-1000", "x"]


def test_the_summary_table_reads_a_final_models_step(tmp_path):
    """Notebook 02's table: the final model's step read "-"; its numbers (summary_frame) keep None (a checkpoint-N's N)."""
    result = _run_with_final(tmp_path, final_step=1000, fingerprint="fp-other")
    assert list(result.summary_table()["step"]) == ["500", "1000", "1000 (final)"]
    assert math.isnan(result.summary_frame()["step"].iloc[2])
