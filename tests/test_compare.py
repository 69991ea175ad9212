"""The comparison engine end to end on the real tiny checkpoints: results, views, cache, resume."""

from __future__ import annotations

import json
import math
import re
import shutil
import time
import warnings
from pathlib import Path

import pytest

from vlm_lab import data, shapes
from vlm_lab.compare import BatchEvent, ComparisonResult, compare, compare_one, sample_key
from vlm_lab.config import CompareConfig, GenerationConfig
from vlm_lab.errors import DataError, NonFiniteWarning, OutputPathError, TruncatedOutputWarning
from vlm_lab.model_cache import ModelCache


class Stop(Exception):
    """Raised from the batch callback to simulate an interrupted run."""


def _config(tmp_path, checkpoints, **kw) -> CompareConfig:
    base = dict(checkpoints=tuple(str(c) for c in checkpoints), data="shapes:val:9", batch_size=3, device="cpu", output_dir=str(tmp_path / "out"))
    return CompareConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def models():
    """One model cache for the module: the tests measure loads through its stats."""
    return ModelCache(budget_bytes="1GB")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_checkpoints, models):
    tmp = tmp_path_factory.mktemp("finished")
    config = _config(tmp, [tiny_checkpoints[0], tiny_checkpoints[1], tiny_checkpoints[-1]])
    return config, compare(config, progress=False, cache=models)


def test_result_rows_and_summary(finished):
    config, result = finished
    assert result.checkpoints == ["checkpoint-0", "checkpoint-250", "checkpoint-1000"]
    assert len(result.rows) == 9 and result.output_dir.name == "out"
    acc = {s["checkpoint"]: s for s in result.summary}
    assert acc["checkpoint-0"]["accuracy"] == 0.0 and acc["checkpoint-1000"]["accuracy"] == 1.0
    for s in result.summary:
        assert s["ci_low"] <= s["accuracy"] <= s["ci_high"]
        assert s["mean_latency_s"] > 0 and s["tokens_per_s"] > 0 and s["peak_memory_bytes"] > 0
        assert s["memory_kind"] == "cpu_weights" and s["from_cache"] == 0
    # same architecture, same bytes: the first checkpoint does not carry the process's one-time memory
    assert len({s["peak_memory_bytes"] for s in result.summary}) == 1
    row = result.rows[0]
    assert (result.output_dir / row["image"]).is_file() and row["image"].startswith("images/")
    assert row["outputs"]["checkpoint-1000"]["output"] == row["reference"]


def test_files_on_disk_and_load_round_trip(finished):
    _, result = finished
    out = result.output_dir
    assert {"results.jsonl", "results.csv", "summary.json", "comparison.html"} <= {p.name for p in out.iterdir()}
    assert len(list((out / "images").glob("*.png"))) == 9
    loaded = ComparisonResult.load(out)
    assert loaded.checkpoints == result.checkpoints and loaded.rows == result.rows
    assert loaded.summary_frame().equals(result.summary_frame())
    assert json.loads((out / "summary.json").read_text())["config"]["data"] == "shapes:val:9"
    import pandas as pd

    csv = pd.read_csv(out / "results.csv")
    assert list(csv.columns[:4]) == ["id", "image", "prompt", "reference"]
    assert "checkpoint-1000/output" in csv.columns and len(csv) == 9
    assert all((out / image).is_file() and image.startswith("images/") for image in csv["image"])  # relative to the CSV


def test_a_save_cut_short_or_a_damaged_file_is_refused_with_the_fix(tmp_path, finished):
    result = ComparisonResult.load(finished[1].output_dir)
    out = tmp_path / "copy"
    result.save(out)
    summary = (out / "summary.json").read_text()
    result.checkpoints, result.refs, result.summary = result.checkpoints[:1], result.refs[:1], result.summary[:1]
    for row in result.rows:
        row["outputs"] = {result.checkpoints[0]: row["outputs"][result.checkpoints[0]]}
    result.save(out)
    assert ComparisonResult.load(out).checkpoints == result.checkpoints
    (out / "summary.json").write_text(summary)  # as if the second save stopped before its summary.json
    with pytest.raises(DataError, match=r"from different saves .* re-run the same vlm-lab compare command with --out"):
        ComparisonResult.load(out)
    (out / "summary.json").write_text(summary[: len(summary) // 2])
    with pytest.raises(DataError, match=r"is damaged \(JSONDecodeError.*re-run the same vlm-lab compare command"):
        ComparisonResult.load(out)


def test_dataframes(finished):
    _, result = finished
    wide = result.to_dataframe()
    assert wide.shape == (9, 5 + 3 * 7)  # id, image, prompt, reference, question_type; 7 per checkpoint
    assert (wide["checkpoint-1000/score"] == 1.0).all()
    long = result.to_dataframe(long=True)
    assert len(long) == 27 and set(long["checkpoint"]) == set(result.checkpoints)
    summary = result.summary_frame()
    assert list(summary["checkpoint"]) == result.checkpoints and list(summary["step"]) == [0, 250, 1000]


def test_html_highlights_disagreements(finished):
    _, result = finished
    page = result.html()
    assert page.count('<tr class="disagree">') == len(result.disagreements()) == 9  # checkpoint-0 is always wrong
    assert page.count("data:image/png;base64,") == 9
    assert result._repr_html_().startswith("<div")
    agreeing = ComparisonResult.load(result.output_dir)
    agreeing.checkpoints = ["checkpoint-1000"]
    assert 'class="disagree"' not in agreeing.html()


def test_the_view_names_each_image_by_the_path_the_data_file_gives(tmp_path, tiny_checkpoints, models):
    """comparison.html named an image only by its content hash (images/3f...png): the user's own path was nowhere.
    Each thumbnail's title and alt text give it as the JSONL writes it (escaped); the same picture under two paths
    is one file in images/, and each row says its own path."""
    (sample,) = shapes.make_samples("val", 1)
    folder = tmp_path / "data" / "my images"
    folder.mkdir(parents=True)
    sample.image.save(folder / "img 3.png")
    shutil.copyfile(folder / "img 3.png", folder / 'a&b "<x>".png')
    lines = [{"id": "one", "image": "my images/img 3.png", "prompt": sample.prompt, "reference": sample.reference},
             {"id": "two", "image": 'my images/a&b "<x>".png', "prompt": "What color is the shape?"}]
    (tmp_path / "data" / "d.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = compare(_config(tmp_path, [tiny_checkpoints[-1]], data=str(tmp_path / "data" / "d.jsonl")), progress=False, cache=models)
    assert result.rows[0]["image"] == result.rows[1]["image"]  # one file in images/
    assert [r["image_file"] for r in ComparisonResult.load(result.output_dir).rows] == ["my images/img 3.png", 'my images/a&b "<x>".png']
    for view in ((result.output_dir / "comparison.html").read_text(encoding="utf-8"), result.html()):
        assert 'title="my images/img 3.png" alt="my images/img 3.png"' in view
        assert 'title="my images/a&amp;b &quot;&lt;x&gt;&quot;.png"' in view and "<x>" not in view
    made = compare(_config(tmp_path, [tiny_checkpoints[-1]], num_samples=3, output_dir=str(tmp_path / "shapes")), progress=False,
                   cache=models)  # the shapes set: images made in memory, named by the sample's id as before
    assert re.findall(r"<img [^>]*>", made.html())[0].endswith(f'alt="{made.rows[0]["id"]}">')
    assert "image_file" not in made.rows[0]


def test_html_summary_is_rounded_for_reading_and_marks_clear_changes(finished):
    _, result = finished
    page = result.html()
    summary = page[page.index("<table class='summary'>") : page.index("</table>")]
    assert summary.count("<tr>") == 1 + len(result.checkpoints)
    for s in result.summary:
        assert f"{s['accuracy']:.1%} <span class='ci'>{s['ci_low']:.1%}..{s['ci_high']:.1%}</span>" in summary
    gain = result.paired(0, 1)
    assert gain.ci_low > 0  # checkpoint-250 is clearly better than checkpoint-0: shown as such
    assert f"<span class='up' title='against checkpoint-0: the CI excludes 0'>{gain.diff * 100:+.1f} pts</span>" in summary
    assert f"{len(gain.wrong_to_right)}&#8593;" in summary
    assert "9 samples of shapes:val:9 · exact match · greedy" in page  # what was compared, in one line


def test_paired_comparison(finished):
    _, result = finished
    p = result.paired("checkpoint-0", "checkpoint-1000")
    assert p.diff == 1.0 and len(p.wrong_to_right) == 9 and not p.right_to_wrong and p.significant
    assert result.paired(0, -1) == p and result.paired("0", "1000") == p  # by index or by step


def test_load_of_an_interrupted_comparison_says_it_did_not_finish_and_how_to_resume(tmp_path, tiny_checkpoints, models):
    config = _config(tmp_path, [tiny_checkpoints[-1]])

    def stop(event: BatchEvent) -> None:
        raise Stop

    with pytest.raises(Stop):
        compare(config, progress=False, cache=models, on_batch=stop)
    with pytest.raises(DataError, match=r"did not finish .* re-run the same vlm-lab compare command with --out .* resumes"):
        ComparisonResult.load(config.output_dir)
    with pytest.raises(DataError, match=r"no comparison in .* run vlm-lab compare --out"):
        ComparisonResult.load(tmp_path / "elsewhere")


def test_each_checkpoint_is_paired_with_the_one_before_where_users_look(finished, tmp_path):
    _, result = finished
    before, after = result.paired(0, 1), result.paired(1, 2)
    assert result.pairs() == [before, after]
    first, second, third = result.summary
    assert first["vs"] is None and first["diff"] is None
    assert (second["vs"], second["diff"], second["diff_ci_low"]) == ("checkpoint-0", before.diff, before.ci_low)
    assert (third["n_wrong_to_right"], third["n_right_to_wrong"]) == (len(after.wrong_to_right), len(after.right_to_wrong))
    saved = json.loads((result.output_dir / "summary.json").read_text())["summary"]
    assert saved[1]["vs"] == "checkpoint-0" and saved[1]["n_wrong_to_right"] == len(before.wrong_to_right)
    report = result.paired_report(max_ids=2)
    assert str(before) in report and str(after) in report
    assert f"wrong->right: {', '.join(before.wrong_to_right[:2])} (+{len(before.wrong_to_right) - 2} more)" in report
    page = (result.output_dir / "comparison.html").read_text()
    assert "checkpoint-250 vs checkpoint-0" in page and "wrong-&gt;right" in page
    meta = json.loads((result.output_dir / "summary.json").read_text())
    for row in meta["summary"]:
        del row["vs"], row["diff"]  # a comparison saved before the paired columns: load (vlm-lab show) adds them
    copy = tmp_path / "older"
    shutil.copytree(result.output_dir, copy)
    (copy / "summary.json").write_text(json.dumps(meta))
    assert ComparisonResult.load(copy).summary == result.summary
    alone = ComparisonResult.load(result.output_dir)
    alone.checkpoints = alone.checkpoints[:1]
    assert alone.pairs() == [] and "one checkpoint, nothing to pair" in alone.paired_report()


def test_saved_html_is_a_utf8_page_that_stays_usable_with_many_samples(finished):
    _, result = finished
    page = (result.output_dir / "comparison.html").read_text(encoding="utf-8")
    # no charset: a browser or a plain web server reads it as windows-1252 and mangles non-ASCII prompts
    assert page.startswith("<!doctype html>") and '<meta charset="utf-8">' in page and "<title>" in page
    assert page.count('loading="lazy"') == len(result.rows)  # thousands of thumbnails load as they scroll into view
    assert "only-disagree" in page  # a no-script toggle hides the rows where all checkpoints agree
    assert "<!doctype" not in result.html()  # a notebook gets the fragment


def test_plot_accuracy_uses_training_steps(finished):
    import matplotlib

    matplotlib.use("Agg")
    _, result = finished
    ax = result.plot_accuracy()
    assert ax.get_xlabel() == "training step"
    line = ax.lines[0]
    assert list(line.get_xdata()) == [0, 250, 1000]
    assert list(line.get_ydata()) == [s["accuracy"] for s in result.summary]


def test_rerun_of_a_finished_comparison_loads_no_model(finished, models):
    config, first = finished
    out = first.output_dir
    before = {name: (out / name).stat().st_mtime_ns for name in ("results.jsonl", "results.csv", "summary.json")}
    loads = models.stats["loads"]
    again = compare(config, progress=False, cache=models)  # its cost against the first run: bench/compare_throughput.py
    assert models.stats["loads"] == loads  # every result came from the cache: nothing loaded
    assert [s["from_cache"] for s in again.summary] == [9, 9, 9]
    assert again.rows == first.rows
    after = {name: (out / name).stat().st_mtime_ns for name in before}
    assert after["results.jsonl"] == before["results.jsonl"] and after["results.csv"] == before["results.csv"]
    assert after["summary.json"] != before["summary.json"]  # from_cache changed


def test_saving_again_rewrites_only_what_changed(tmp_path, finished):
    result = ComparisonResult.load(finished[1].output_dir)
    out = tmp_path / "copy"
    result.save(out)
    names = ("results.jsonl", "results.csv", "summary.json", "comparison.html")
    stamps = lambda: {name: (out / name).stat().st_mtime_ns for name in names}  # noqa: E731
    first = stamps()
    time.sleep(0.01)
    result.save(out)
    assert stamps() == first  # nothing changed, nothing written
    result.rows[0]["outputs"]["checkpoint-1000"]["output"] = "a changed answer"
    result.save(out)
    changed = stamps()
    assert all(changed[name] != first[name] for name in names if name != "summary.json")
    assert "a changed answer" in (out / "results.csv").read_text()
    (out / "results.csv").unlink()
    result.save(out)  # a lost CSV is made again even though the rows are unchanged
    assert "a changed answer" in (out / "results.csv").read_text()


def test_no_cache_recomputes_and_writes_no_cache(tmp_path, tiny_checkpoints, models):
    config = _config(tmp_path, [tiny_checkpoints[-1]], use_cache=False, num_samples=3)
    result = compare(config, progress=False, cache=models)
    assert result.summary[0]["from_cache"] == 0 and result.summary[0]["accuracy"] == 1.0
    assert not (tmp_path / "out" / ".cache").exists()


def test_a_comparison_with_its_own_model_cache_keeps_one_model_loaded_at_a_time(tmp_path, tiny_checkpoints):
    """``compare(config)`` without ``cache=`` (the CLI, a sweep's notebook): a checkpoint it has finished with is never
    asked for again, so it is let go before the next loads (it stayed beside it: 3 checkpoints of 4 GB held 12 GB)."""
    import gc

    from transformers import PreTrainedModel

    # copies: the module's shared cache (other tests) holds models of the fixture's folders
    first, second = (str(shutil.copytree(c, tmp_path / "run" / c.name)) for c in (tiny_checkpoints[0], tiny_checkpoints[-1]))
    alive: dict[str, list[str]] = {}

    def loaded_models(event: BatchEvent) -> None:
        gc.collect()
        alive.setdefault(event.checkpoint, [o.name_or_path for o in gc.get_objects() if isinstance(o, PreTrainedModel)])

    result = compare(_config(tmp_path, [first, second], num_samples=3), progress=False, on_batch=loaded_models)
    assert [s["checkpoint"] for s in result.summary] == ["checkpoint-0", "checkpoint-1000"]
    assert first in alive["checkpoint-0"] and second in alive["checkpoint-1000"]
    assert first not in alive["checkpoint-1000"], "the first checkpoint's model stayed loaded beside the second"


def test_resaved_checkpoint_is_never_served_stale_results(tmp_path, tiny_checkpoints, models):
    folder = tmp_path / "run" / "checkpoint-5"
    shutil.copytree(tiny_checkpoints[-1], folder)
    config = _config(tmp_path, [folder], cache_dir=str(tmp_path / "cache"))
    good = compare(config, progress=False, cache=models)
    assert good.summary[0]["accuracy"] == 1.0
    # re-save other weights at the same path (cp -p keeps an older mtime; same size)
    shutil.copy2(tiny_checkpoints[0] / "model.safetensors", folder / "model.safetensors")
    bad = compare(config, progress=False, cache=models)
    assert bad.summary[0]["from_cache"] == 0
    assert bad.summary[0]["accuracy"] == 0.0
    assert [r["outputs"]["checkpoint-5"]["output"] for r in bad.rows] != [r["outputs"]["checkpoint-5"]["output"] for r in good.rows]
    assert bad.refs[0]["fingerprint"] != good.refs[0]["fingerprint"]


@pytest.mark.parametrize("interrupt", [Stop, KeyboardInterrupt])
def test_interrupted_run_resumes_after_the_last_finished_batch(tmp_path, tiny_checkpoints, models, interrupt):
    config = _config(tmp_path, [tiny_checkpoints[1], tiny_checkpoints[-1]])  # 2 checkpoints x 3 batches
    seen: list[BatchEvent] = []

    def stop_after_first(event: BatchEvent) -> None:
        seen.append(event)
        if len(seen) == 4:  # checkpoint-250 done, one batch of checkpoint-1000 done
            raise interrupt()

    with pytest.raises(interrupt):
        compare(config, progress=False, cache=models, on_batch=stop_after_first)
    assert [(e.checkpoint, e.batch) for e in seen] == [("checkpoint-250", 0), ("checkpoint-250", 1), ("checkpoint-250", 2), ("checkpoint-1000", 0)]
    resumed: list[BatchEvent] = []
    result = compare(config, progress=False, cache=models, on_batch=resumed.append)
    assert [(e.checkpoint, e.batch, e.num_batches) for e in resumed] == [("checkpoint-1000", 0, 2), ("checkpoint-1000", 1, 2)]
    assert [s["from_cache"] for s in result.summary] == [9, 3]
    fresh = compare(config.replace(use_cache=False, output_dir=str(tmp_path / "fresh")), progress=False, cache=models)
    outputs = lambda res: [[r["outputs"][n]["output"] for n in res.checkpoints] for r in res.rows]  # noqa: E731
    assert outputs(result) == outputs(fresh)  # resumed = computed in one go


def test_a_resumed_run_shows_its_bar_over_the_whole_comparison_with_the_cached_batches_counted(tmp_path, tiny_checkpoints, models,
                                                                                            capsys):
    """The bar read "compare checkpoint-1000: 0/2" after a resume: it counted only the batches left, as if the run
    were new. It reads the whole comparison (6 batches), starting at the 4 cached; a fully cached re-run shows none."""
    config = _config(tmp_path, [tiny_checkpoints[1], tiny_checkpoints[-1]])  # 2 checkpoints x 3 batches

    def stop_after_four(event: BatchEvent) -> None:
        if event.checkpoint == "checkpoint-1000":
            raise Stop

    with pytest.raises(Stop):
        compare(config, progress=True, cache=models, on_batch=stop_after_four)
    capsys.readouterr()
    compare(config, progress=True, cache=models)
    bar = capsys.readouterr().err
    assert "4/6" in bar and "6/6" in bar and "/2 " not in bar and "0/" not in bar, bar
    compare(config, progress=True, cache=models)  # all cached: nothing to run, no bar (not "0/0", nor "6/6" of nothing)
    assert "compare" not in capsys.readouterr().err


def test_interrupted_checkpoint_still_reports_its_memory(tmp_path, tiny_checkpoints, models):
    config = _config(tmp_path, [tiny_checkpoints[-1]])

    def stop(event: BatchEvent) -> None:
        raise Stop()

    with pytest.raises(Stop):
        compare(config, progress=False, cache=models, on_batch=stop)
    smaller = compare(config.replace(num_samples=3), progress=False, cache=models)  # the one finished batch, all cached
    assert smaller.summary[0]["from_cache"] == 3 and smaller.summary[0]["peak_memory_bytes"] > 0


def test_from_cache_counts_this_runs_samples_not_the_cache_file(tmp_path, tiny_checkpoints, models):
    config = _config(tmp_path, [tiny_checkpoints[-1]], data="shapes:val:6")
    compare(config, progress=False, cache=models)
    other = compare(config.replace(data="shapes:test:3"), progress=False, cache=models)  # none of these is cached
    assert other.summary[0]["from_cache"] == 0
    both = compare(config.replace(data="shapes:val:9"), progress=False, cache=models)
    assert both.summary[0]["from_cache"] == 6


def test_sampled_outputs_do_not_depend_on_what_an_earlier_run_cached(tmp_path, tiny_checkpoints, models):
    base = _config(tmp_path, [tiny_checkpoints[1]], data="shapes:val:12", batch_size=4, strategy="temperature(1.5)")
    fresh = compare(base.replace(output_dir=str(tmp_path / "fresh")), progress=False, cache=models)
    again = compare(base.replace(output_dir=str(tmp_path / "again"), use_cache=False), progress=False, cache=models)
    texts = lambda res: [r["outputs"]["checkpoint-250"]["output"] for r in res.rows]  # noqa: E731
    assert texts(again) == texts(fresh)  # seeded
    # a smaller run first (its batch = the first batch of the larger one), another one that shares
    # only part of a batch, then the larger run into the same folder: the same outputs as fresh
    compare(base.replace(data="shapes:val:4"), progress=False, cache=models)
    compare(base.replace(data="shapes:val:6"), progress=False, cache=models)
    history = compare(base, progress=False, cache=models)
    assert texts(history) == texts(fresh)
    assert history.summary[0]["from_cache"] == 4  # the 6-sample run's second batch had other members


def test_prompt_holding_the_image_token_is_a_clear_error(tmp_path, tiny_checkpoints, models):
    samples = shapes.make_samples("val", 2)
    samples[1] = data.Sample(id="llava-style", image=samples[1].image, prompt="<image>\nWhat shape is it?")
    path = data.write_jsonl(samples, tmp_path / "data")
    with pytest.raises(DataError, match=r"data\.jsonl:2: sample llava-style: the prompt holds the image token '<image>'.*remove"):
        compare(_config(tmp_path, [tiny_checkpoints[-1]], data=str(path)), progress=False, cache=models)
    assert not list((tmp_path / "out").glob(".cache/*.jsonl"))  # refused before any batch ran


def test_torn_cache_line_is_skipped(tmp_path, tiny_checkpoints, models):
    config = _config(tmp_path, [tiny_checkpoints[-1]])
    compare(config, progress=False, cache=models)
    (cache_file,) = (tmp_path / "out" / ".cache").glob("*.jsonl")
    lines = cache_file.read_text().splitlines(keepends=True)
    fifth = [i for i, line in enumerate(lines) if line.startswith('{"key"')][4]  # the run's first line is no result
    cache_file.write_text("".join(lines[:fifth]) + lines[fifth][:20])  # crash in the middle of a line
    ran: list[BatchEvent] = []
    result = compare(config, progress=False, cache=models, on_batch=ran.append)
    assert result.summary[0]["from_cache"] == 4 and sum(len(e.sample_ids) for e in ran) == 5
    assert result.summary[0]["accuracy"] == 1.0


def test_sample_key_is_content_not_id():
    (a,) = shapes.make_samples("val", 1)
    same_content = data.Sample(id="other-id", image=a.image.copy(), prompt=a.prompt)
    other_prompt = data.Sample(id=a.id, image=a.image, prompt="What shape is it?")
    assert sample_key(a) == sample_key(same_content)
    assert sample_key(a) != sample_key(other_prompt)


def test_bring_your_own_data_without_references(tmp_path, tiny_checkpoints, models):
    samples = shapes.make_samples("test", 4)
    for s in samples:
        s.reference = None
    path = data.write_jsonl(samples, tmp_path / "mydata")
    config = _config(tmp_path, [tiny_checkpoints[1], tiny_checkpoints[-1]], data=str(path), num_samples=0)
    result = compare(config, progress=False, cache=models)
    assert len(result.rows) == 4 and all(r["reference"] is None for r in result.rows)
    assert all(s["accuracy"] is None and s["ci_low"] is None and s["n_scored"] == 0 for s in result.summary)
    assert math.isnan(result.summary_frame()["accuracy"].astype(float).iloc[0])
    assert all(r["outputs"]["checkpoint-1000"]["output"] for r in result.rows)  # still compared
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["summary"][0]["accuracy"] is None
    with pytest.raises(DataError, match="needs references"):
        result.paired(0, 1)
    assert result.pairs() == [] and result.summary[1]["diff"] is None
    assert "no sample has a reference" in result.paired_report()


def test_a_large_data_file_is_read_under_a_bar_on_stderr_before_the_comparison_runs(tmp_path, tiny_checkpoints, models, capsys):
    """compare's progress switch also shows reading the data (each image is checked): with nothing on screen, 10k photos
    on a slow disk read for tens of seconds before compare's own bar. Nothing on stdout (papermill, --json)."""
    (sample,) = shapes.make_samples("val", 1)
    path = data.write_jsonl([sample], tmp_path / "mydata")
    line = path.read_text()  # the same question on every line: generated once
    path.write_text("".join(line.replace(f'"id": "{sample.id}"', f'"id": "q{i}"') for i in range(data.READ_PROGRESS_LINES)))
    config = _config(tmp_path, [tiny_checkpoints[-1]], data=str(path))
    assert len(compare(config, progress=True, cache=models).rows) == data.READ_PROGRESS_LINES
    said = capsys.readouterr()
    assert said.out == ""
    assert said.err.index("reading data.jsonl") < said.err.index("compare checkpoint-1000")
    compare(config, progress=False, cache=models)
    assert capsys.readouterr().err == ""


def test_same_step_names_from_two_runs_are_told_apart(tmp_path, tiny_checkpoints, models):
    for run in ("runA", "runB"):
        shutil.copytree(tiny_checkpoints[-1], tmp_path / run / "checkpoint-1000")
    config = _config(tmp_path, [tmp_path / "runA" / "checkpoint-1000", tmp_path / "runB" / "checkpoint-1000"], num_samples=3)
    result = compare(config, progress=False, cache=models)
    assert result.checkpoints == ["runA/checkpoint-1000", "runB/checkpoint-1000"]


def test_the_same_weights_twice_are_generated_once(tmp_path, tiny_checkpoints, models):
    copy = shutil.copytree(tiny_checkpoints[-1], tmp_path / "final")  # e.g. Trainer.save_model() after the last step
    events: list[BatchEvent] = []
    result = compare(_config(tmp_path, [tiny_checkpoints[-1], copy]), progress=False, cache=models, on_batch=events.append)
    assert {e.checkpoint for e in events} == {"checkpoint-1000"} and len(events) == 3
    assert result.refs[0]["fingerprint"] == result.refs[1]["fingerprint"]
    assert all(r["outputs"]["checkpoint-1000"] == r["outputs"][result.checkpoints[1]] for r in result.rows)
    assert result.summary[0]["accuracy"] == result.summary[1]["accuracy"] == 1.0


def test_a_runs_final_model_is_placed_at_its_trainer_state_step(tmp_path, tiny_checkpoints, models):
    """A run with checkpoint-N folders and a final model at its root (Trainer.save_model() + save_state(): its
    trainer_state.json says global_step 1000): the plot lost its step axis and named the final model by the run's
    folder. compare records its step (final_step); the plot and notebook 02's table place it there."""
    run = tmp_path / "run"
    for ckpt in (tiny_checkpoints[1], tiny_checkpoints[-1]):
        shutil.copytree(ckpt, run / ckpt.name)
    for f in tiny_checkpoints[-1].iterdir():  # the final model is the last checkpoint's weights, as usual
        if f.is_file():
            shutil.copyfile(f, run / f.name)
    result = compare(_config(tmp_path, [run], num_samples=3), progress=False, cache=models)
    assert [r.get("final_step") for r in result.refs] == [None, None, 1000]
    assert "final_step" not in ComparisonResult.load(result.output_dir).refs[0]
    assert ComparisonResult.load(result.output_dir).refs[2]["final_step"] == 1000
    ax = result.plot_accuracy()
    assert ax.get_xlabel() == "training step" and [t.get_text() for t in ax.texts] == ["final (= checkpoint-1000)"]
    assert list(result.summary_table()["step"]) == ["250", "1000", "1000 (final)"]


def test_names_equal_with_their_parents_take_more_folders_until_they_differ():
    from vlm_lab.checkpoints import CheckpointRef
    from vlm_lab.compare import unique_names

    def names(*paths):
        return unique_names([CheckpointRef(spec=p, path=p) for p in paths])

    # "run/checkpoint-5#1" would not say which run it is
    assert names("/a/run/checkpoint-5", "/b/run/checkpoint-5", "/c/x/checkpoint-5") == ["a/run/checkpoint-5", "b/run/checkpoint-5", "x/checkpoint-5"]
    assert names("/exp/seed1/out/checkpoint-5", "/exp/seed2/out/checkpoint-5", "/exp/seed2/out/checkpoint-9") == [
        "seed1/out/checkpoint-5", "seed2/out/checkpoint-5", "checkpoint-9"]  # fmt: skip
    assert names("/run/checkpoint-5", "/run/checkpoint-5") == ["run/checkpoint-5#1", "run/checkpoint-5#2"]  # nothing tells them apart
    assert names("runA/checkpoint-5", "runB/checkpoint-5") == ["runA/checkpoint-5", "runB/checkpoint-5"]  # as typed: relative
    hub = [CheckpointRef(spec="org/m", repo_id="org/m"), CheckpointRef(spec="org/m", repo_id="org/m")]
    assert unique_names(hub) == ["org/m#1", "org/m#2"]


def test_output_dir_that_is_a_file_is_a_clear_error(tmp_path, tiny_checkpoints):
    (tmp_path / "out").write_text("x")
    with pytest.raises(OutputPathError, match="is a file"):
        compare(_config(tmp_path, [tiny_checkpoints[-1]]), progress=False)


@pytest.mark.parametrize("case", ["output_dir a file", "output_dir under a file", "cache_dir a file", "its default cache a file"])
def test_an_unusable_folder_names_the_field_a_python_caller_passes_before_any_model_loads(tmp_path, tiny_checkpoints, case):
    """A notebook passes output_dir= and cache_dir= (notebook 02's parameters are CompareConfig's fields): it was told
    '(--out DIR)' and '(--cache-dir DIR)', vlm-lab compare's flags (which that command still says: test_cli_compare)."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    out, cache_dir = {"output_dir a file": (afile, ""), "output_dir under a file": (afile / "out", ""),
                      "cache_dir a file": (tmp_path / "out", afile), "its default cache a file": (tmp_path / "out", "")}[case]
    if case == "its default cache a file":  # cache_dir='' puts the cache in output_dir/.cache: the folder the caller named
        out.mkdir()
        (out / ".cache").write_text("x")
    models = ModelCache()
    with pytest.raises(OutputPathError) as caught:
        compare(_config(tmp_path, [tiny_checkpoints[-1]], output_dir=str(out), cache_dir=str(cache_dir)), progress=False, cache=models)
    assert str(caught.value) == {
        "output_dir a file": f"output_dir={str(afile)!r} is a file; output_dir must name a folder",
        "output_dir under a file": f"output_dir={str(afile / 'out')!r} cannot be created (Not a directory); "
                                   "output_dir must name a folder you can write to",
        "cache_dir a file": f"cache_dir={str(afile)!r} is a file; cache_dir must name a folder",
        "its default cache a file": f"output_dir={str(out)!r} holds a file .cache where its result cache goes; move that "
                                    "file away, or give the cache a folder of its own (cache_dir='DIR')",
    }[case]
    assert models.stats["loads"] == 0


def test_compare_one_matches_the_batched_engine(finished, tiny_checkpoints, models):
    _, result = finished
    row = result.rows[2]
    image = result.output_dir / row["image"]
    outs = compare_one(models, [tiny_checkpoints[1], str(tiny_checkpoints[-1])], image, row["prompt"], GenerationConfig(), device="cpu")
    assert [o["checkpoint"] for o in outs] == ["checkpoint-250", "checkpoint-1000"]
    assert [o["text"] for o in outs] == [row["outputs"][n]["output"] for n in ("checkpoint-250", "checkpoint-1000")]
    assert all(o["latency_s"] > 0 and o["new_tokens"] > 0 and o["memory_bytes"] > 0 for o in outs)
    assert {o["dtype"] for o in outs} == {"float32"}  # what the model runs in (the NaN advice depends on it)


def test_hub_id_that_cannot_be_loaded_offline_is_a_clear_error(tmp_path):
    from vlm_lab.errors import CheckpointNotFoundError

    with pytest.raises(CheckpointNotFoundError, match="cannot load 'nobody-here/no-such-model'"):
        compare(_config(tmp_path, ["nobody-here/no-such-model"], num_samples=2), progress=False)


def test_new_output_folder_does_not_rehash_unchanged_weights(tmp_path, tiny_checkpoints, models, monkeypatch):
    from vlm_lab import checkpoints

    monkeypatch.setenv("VLM_LAB_CACHE", str(tmp_path / "user-cache"))
    compare(_config(tmp_path / "a", [tiny_checkpoints[-1]], num_samples=3), progress=False, cache=models)
    assert any("model.safetensors" in k for k in checkpoints.load_digest_memo())
    opened = []
    monkeypatch.setattr(checkpoints, "open", lambda path, *a, **k: opened.append(path) or open(path, *a, **k), raising=False)
    again = compare(_config(tmp_path / "b", [tiny_checkpoints[-1]], num_samples=3), progress=False, cache=models)
    assert again.summary[0]["from_cache"] == 0  # a new output folder: results generated again...
    assert opened == []  # ...but no checkpoint file was read to fingerprint it


def test_image_files_are_copied_as_they_are_not_re_encoded(tmp_path, tiny_checkpoints, models):
    folder = tmp_path / "photos"
    folder.mkdir()
    sample = shapes.make_samples("test", 1)[0]
    sample.image.resize((256, 256)).save(folder / "a.jpg", quality=90)
    (folder / "data.jsonl").write_text(json.dumps({"image": "a.jpg", "prompt": sample.prompt}) + "\n")
    result = compare(_config(tmp_path, [tiny_checkpoints[-1]], data=str(folder / "data.jsonl"), num_samples=0), progress=False, cache=models)
    copied = result.output_dir / result.rows[0]["image"]
    assert copied.suffix == ".jpg" and copied.read_bytes() == (folder / "a.jpg").read_bytes()
    assert result.rows[0]["image"] in (result.output_dir / "comparison.html").read_text()  # the view shows the copy
    assert 'src="data:image/jpeg;base64,' in result.html()  # embedded for a notebook, with its own type


def test_images_a_browser_cannot_show_are_written_as_png(tmp_path, tiny_checkpoints, models):
    folder = tmp_path / "scans"
    folder.mkdir()
    sample = shapes.make_samples("test", 1)[0]
    sample.image.save(folder / "a.tif")
    (folder / "data.jsonl").write_text(json.dumps({"image": "a.tif", "prompt": sample.prompt}) + "\n")
    result = compare(_config(tmp_path, [tiny_checkpoints[-1]], data=str(folder / "data.jsonl")), progress=False, cache=models)
    written = result.output_dir / result.rows[0]["image"]
    from PIL import Image

    assert written.suffix == ".png" and Image.open(written).format == "PNG"
    assert 'src="data:image/png;base64,' in result.html()


def test_images_made_in_memory_are_written_as_lossless_png_with_the_fast_strategy(tmp_path):
    """The same pixels as the sample's, and the bytes zlib's RLE strategy writes (2-6x faster than the default)."""
    import io
    import zlib

    from PIL import Image

    from vlm_lab.compare import _write_images

    samples = shapes.make_samples("val", 3)
    paths = _write_images(samples, [f"{i:024x}" for i in range(3)], tmp_path)
    for sample, rel in zip(samples, paths):
        with Image.open(tmp_path / rel) as written:
            assert written.format == "PNG" and written.tobytes() == sample.image.tobytes() and written.mode == sample.image.mode
        fast = io.BytesIO()
        sample.image.save(fast, format="PNG", compress_type=zlib.Z_RLE)
        assert (tmp_path / rel).read_bytes() == fast.getvalue()


def test_the_result_cache_is_fsynced_beside_generation_and_wholly_before_compare_returns(tmp_path, tiny_checkpoints, models, monkeypatch):
    """On a busy disk one fsync took up to 150 ms (a third of the shapes checkpoints' generate time): they run in a
    thread of their own, beside the next batches. Every cache file is still fsynced with all its lines before
    compare returns, and a re-run is served from it."""
    import os
    import threading

    from vlm_lab import result_cache

    real, synced = os.fsync, []

    def slow_disk(fd):
        time.sleep(0.05)
        real(fd)
        synced.append((threading.current_thread() is threading.main_thread(), os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))

    monkeypatch.setattr(result_cache.os, "fsync", slow_disk)
    config = _config(tmp_path, tiny_checkpoints[-2:], data="shapes:val:6", batch_size=2)
    compare(config, progress=False, cache=models)
    files = sorted((tmp_path / "out" / ".cache").glob("*.jsonl"))
    assert len(files) == 2 and synced
    assert not any(on_main for on_main, *_ in synced), synced  # none held up generation
    for path in files:  # each file's last fsync came after its last line (the memory record), before compare returned
        assert (str(path), path.stat().st_size) == max(((p, size) for _, p, size in synced if p == str(path)), key=lambda x: x[1])
    monkeypatch.undo()
    assert [s["from_cache"] for s in compare(config, progress=False, cache=models).summary] == [6, 6]


def test_nonfinite_scores_are_counted_marked_and_warned(tmp_path, tiny_checkpoints, overflowing_checkpoint, models):
    config = _config(tmp_path, [tiny_checkpoints[-1], overflowing_checkpoint], data="shapes:val:4", batch_size=2, dtype="float16")
    # compare() warns a notebook and `vlm-lab compare` alike: the argument and the flag (it said only --dtype float32)
    with pytest.warns(NonFiniteWarning, match=r"overflowing\w*/checkpoint-1000: .* on 4 of 4 .* float16.*use dtype='float32' "
                                              r"\(--dtype float32 on the command line\), or dtype='bfloat16' on a GPU"):
        result = compare(config, progress=False, cache=models)
    assert [s["n_nonfinite"] for s in result.summary] == [0, 4]
    assert [r["outputs"][result.checkpoints[1]]["nonfinite"] for r in result.rows] == [True] * 4
    assert "NaN/inf" in (result.output_dir / "comparison.html").read_text()
    with pytest.warns(NonFiniteWarning):  # served from the result cache: still counted, still said
        again = compare(config, progress=False, cache=models)
    assert [s["n_nonfinite"] for s in again.summary] == [0, 4] and again.summary[1]["from_cache"] == 4
    fine = compare(config.replace(checkpoints=(str(overflowing_checkpoint),), dtype="float32"), progress=False, cache=models)
    assert fine.summary[0]["n_nonfinite"] == 0  # the same weights in float32


def test_outputs_cut_off_at_max_new_tokens_are_counted_marked_and_warned(tmp_path, tiny_checkpoints, models):
    # every third shapes sample asks for a description: "a <color> <shape>" + the end token needs 4 tokens
    config = _config(tmp_path, [tiny_checkpoints[-1]], max_new_tokens=3)
    with pytest.warns(TruncatedOutputWarning, match=r"checkpoint-1000: 3 of 9 output\(s\) stopped at max_new_tokens=3 .*--max-new-tokens"):
        result = compare(config, progress=False, cache=models)
    assert result.summary[0]["n_truncated"] == 3 and result.summary_frame()["n_truncated"].tolist() == [3]
    cut = [r["prompt"] for r in result.rows if r["outputs"]["checkpoint-1000"]["truncated"]]
    assert cut == ["Describe the image."] * 3
    assert (result.output_dir / "comparison.html").read_text().count('class="truncated"') == 3
    import pandas as pd

    csv = pd.read_csv(result.output_dir / "results.csv")  # filterable where people analyse: the CSV, the DataFrame
    assert csv["checkpoint-1000/truncated"].sum() == 3 and not csv["checkpoint-1000/nonfinite"].any()
    assert result.to_dataframe(long=True)["truncated"].sum() == 3
    with pytest.warns(TruncatedOutputWarning):  # served from the result cache: still counted, still said
        again = compare(config, progress=False, cache=models)
    assert again.summary[0]["n_truncated"] == 3 and again.summary[0]["from_cache"] == 9
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedOutputWarning)
        whole = compare(config.replace(max_new_tokens=4), progress=False, cache=models)  # the end token is the 4th
    assert whole.summary[0]["n_truncated"] == 0 and whole.summary[0]["accuracy"] == 1.0


def test_compare_one_shows_an_open_image_as_it_shows_its_file(tmp_path, tiny_checkpoints, models):
    """A notebook passing ``Image.open(path)`` gets the answer the path gets: transparency on white."""
    import random

    from PIL import Image

    from vlm_lab import shapes

    drawn = shapes.draw_shape("red", "circle", random.Random(0))
    bg = drawn.getpixel((0, 0))
    mask = Image.eval(drawn.convert("L"), lambda v: 0 if abs(v - sum(bg) // 3) < 12 else 255)
    Image.composite(drawn.convert("RGBA"), Image.new("RGBA", drawn.size, (0, 0, 0, 0)), mask).save(tmp_path / "c.png")
    run = lambda image: compare_one(models, [tiny_checkpoints[-1]], image, "What shape is this?", device="cpu")[0]["text"]  # noqa: E731
    with Image.open(tmp_path / "c.png") as opened:
        assert run(opened) == run(tmp_path / "c.png")


def test_sample_key_of_a_file_changed_when_files_began_to_be_read_as_shown(tmp_path):
    """Results cached on a file's raw pixels (before EXIF/transparency handling) must not be served."""
    import hashlib

    from PIL import Image

    from vlm_lab import data

    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "a.png")
    (tmp_path / "d.jsonl").write_text('{"image": "a.png", "prompt": "hi"}\n')
    (sample,) = data.read_jsonl(tmp_path / "d.jsonl")
    raw_pixels_key = hashlib.sha256((tmp_path / "a.png").read_bytes() + b"\0file" + b"\0hi").hexdigest()[:24]
    assert sample_key(sample) != raw_pixels_key


def test_one_untimed_warm_up_batch_so_the_first_checkpoint_is_not_timed_cold(tmp_path, tiny_checkpoints, monkeypatch):
    """The process's first generate pays one-time costs (measured: +60% on the first batch on CPU,
    more on CUDA); timed, they make whichever checkpoint runs first look slower. compare runs one
    untimed batch before the first timed one, once per process and device. Counted through the
    real models' forward hooks."""
    import vlm_lab.compare

    monkeypatch.setattr(vlm_lab.compare, "_WARM_DEVICES", set())  # as in a fresh process
    models = ModelCache(budget_bytes="1GB")
    prefills: dict[str, int] = {}
    for ckpt in (tiny_checkpoints[1], tiny_checkpoints[-1]):
        model = models.get(str(ckpt), device="cpu").model

        def count(module, args, kwargs, name=ckpt.name):
            if kwargs["input_ids"].shape[1] > 1:  # the prefill step of one generate call (later steps feed 1 token)
                prefills[name] = prefills.get(name, 0) + 1

        model.register_forward_pre_hook(count, with_kwargs=True)
    config = _config(tmp_path, [tiny_checkpoints[1], tiny_checkpoints[-1]], num_samples=6)  # 2 batches each
    compare(config, progress=False, cache=models)
    assert prefills == {"checkpoint-250": 3, "checkpoint-1000": 2}
    compare(config, progress=False, cache=models)  # all cached: nothing generated, nothing warmed
    assert prefills == {"checkpoint-250": 3, "checkpoint-1000": 2}
    compare(config.replace(output_dir=str(tmp_path / "again")), progress=False, cache=models)  # all generated again
    assert prefills == {"checkpoint-250": 5, "checkpoint-1000": 4}, "the process is warm already: no second warm-up"


@pytest.mark.browser
@pytest.mark.slow
def test_saved_html_in_a_real_browser_unicode_escaping_and_the_disagreement_toggle(finished, tmp_path):
    from playwright.sync_api import sync_playwright

    chromium = "/usr/bin/chromium"
    if not shutil.os.path.exists(chromium):
        pytest.fail(f"{chromium} is missing; run `make browser` (apt-get install -y chromium)")
    result = ComparisonResult.load(finished[1].output_dir)
    result.checkpoints = ["checkpoint-250", "checkpoint-1000"]  # they agree on some samples
    result.rows[0]["prompt"] = "Quelle forme ? 日本 <b>bold</b>"
    result.rows[0]["outputs"]["checkpoint-250"]["output"] = "<script>document.title='owned'</script>"
    out = result.save(tmp_path / "page")
    n_disagree = len(result.disagreements())
    assert 0 < n_disagree < len(result.rows)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page()
            page.goto((out / "comparison.html").as_uri())
            visible = "rows => rows.filter(r => r.offsetParent !== null).length"
            assert page.title().startswith("vlm-lab comparison")  # the model's <script> did not run
            assert "Quelle forme ? 日本 <b>bold</b>" in page.inner_text("table.samples")  # UTF-8, shown as text
            assert page.eval_on_selector_all("table.samples tbody tr", visible) == len(result.rows)
            page.check("input.only-disagree")
            assert page.eval_on_selector_all("table.samples tbody tr", visible) == n_disagree
            assert page.eval_on_selector_all("table.summary tbody tr", visible) == len(result.summary)  # the summary stays
        finally:
            browser.close()


def test_a_reused_output_folder_keeps_only_the_images_its_results_show(tmp_path, tiny_checkpoints, models):
    """--out reused for another data set: the old set's images go (they are not in the results, and
    a folder shared or zipped would carry them along); files vlm_lab did not name stay."""
    first = compare(_config(tmp_path, [tiny_checkpoints[-1]], data="shapes:val:4"), progress=False, cache=models)
    folder = first.output_dir / "images"
    (folder / "notes.txt").write_text("mine")
    second = compare(_config(tmp_path, [tiny_checkpoints[-1]], data="shapes:test:3"), progress=False, cache=models)
    assert sorted(p.name for p in folder.iterdir()) == sorted([Path(r["image"]).name for r in second.rows] + ["notes.txt"])
    assert not {r["image"] for r in first.rows} & {r["image"] for r in second.rows}  # really another set


def test_samples_that_share_an_image_share_its_file(tmp_path, tiny_checkpoints, models):
    """VQA sets ask several questions of one image: it is copied (or written) once, not once per question."""
    folder = tmp_path / "vqa"
    folder.mkdir()
    sample = shapes.make_samples("test", 1)[0]
    sample.image.save(folder / "a.png")
    sample.image.save(folder / "b.tif")
    rows = [{"image": "a.png", "prompt": p} for p in ("what color is the shape?", "what shape is it?")]
    rows += [{"image": "b.tif", "prompt": p} for p in ("what color is the shape?", "describe the image.")]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = compare(_config(tmp_path, [tiny_checkpoints[-1]], data=str(folder / "data.jsonl"), num_samples=0), progress=False, cache=models)
    images = [r["image"] for r in result.rows]
    assert images[0] == images[1] and images[2] == images[3] and images[0] != images[2]
    assert sorted(p.name for p in (result.output_dir / "images").iterdir()) == sorted({Path(i).name for i in images})
    assert len({r["outputs"][result.checkpoints[0]]["output"] for r in result.rows[:2]}) == 2  # still two questions


def test_outputs_cut_off_by_the_checkpoints_context_are_told_apart_from_max_new_tokens(tmp_path, tiny_checkpoints, models):
    """checkpoint-0 never says its end token; the shapes checkpoints read 128 tokens, ~73 of them the image and
    prompt: 200 new tokens would run past the context (noise). They stop there, marked so, and the warning
    does not advise raising --max-new-tokens, which cannot help."""
    config = _config(tmp_path, [tiny_checkpoints[0]], max_new_tokens=200, data="shapes:val:3")
    with pytest.warns(TruncatedOutputWarning) as caught:
        result = compare(config, progress=False, cache=models)
    (said,) = [str(w.message) for w in caught]
    assert "checkpoint-0: 3 of 3 output(s) stopped where the checkpoint reads no further" in said and "--max-new-tokens" not in said
    outs = [r["outputs"]["checkpoint-0"] for r in result.rows]
    assert all(o["truncated"] and o["at_context"] for o in outs) and all(o["new_tokens"] < 60 for o in outs)
    assert (result.summary[0]["n_truncated"], result.summary[0]["n_at_context"]) == (3, 3)
    assert result.to_dataframe(long=True)["at_context"].sum() == 3
    assert (result.output_dir / "comparison.html").read_text().count("reads no further") >= 3
    with pytest.warns(TruncatedOutputWarning, match="stopped at max_new_tokens=20") as caught:  # the limit asked for cut these
        short = compare(config.replace(max_new_tokens=20), progress=False, cache=models)
    assert len(caught) == 1 and (short.summary[0]["n_truncated"], short.summary[0]["n_at_context"]) == (3, 0)


def test_a_prompt_that_leaves_no_room_names_the_sample_the_counts_and_the_fix(tmp_path, tiny_checkpoints, models):
    folder = tmp_path / "data"
    folder.mkdir()
    shapes.make_samples("val", 1)[0].image.save(folder / "a.png")
    lines = [{"id": "ok", "image": "a.png", "prompt": "What color is the shape?"},
             {"id": "long", "image": "a.png", "prompt": " ".join(["What color is the shape?"] * 12)}]  # fmt: skip
    (folder / "d.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = _config(tmp_path, [tiny_checkpoints[-1]], data=str(folder / "d.jsonl"), batch_size=1)
    with pytest.raises(DataError, match=r"sample long \(.*d\.jsonl:2\): the image and prompt take \d+ tokens, and checkpoint-1000 reads at most 128"):
        compare(config, progress=False, cache=models)
