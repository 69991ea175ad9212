"""``ComparisonResult``: what a checkpoint comparison produced, and the views on it.

One row per sample (id, image path, prompt, reference, and per checkpoint its
output, score, latency and new tokens) and one summary per checkpoint (accuracy
with a 95% bootstrap CI, mean latency, tokens/s, peak memory). On disk, in the
comparison's output folder::

    results.jsonl   one sample per line, per-checkpoint outputs nested
    results.csv     the same, flat: id, image (images/..., relative to the folder), prompt, reference, <checkpoint>/output, ...
                    (several acceptable references joined as "red ×2 | crimson"; results.jsonl keeps the list);
                    for spreadsheets: text starting with = + - @ tab or CR has a ' before it (a formula otherwise;
                    results.jsonl keeps the exact text, vlm_lab.spreadsheet_csv.read_csv reads it back exactly)
    summary.json    config, checkpoints (name, spec, step, fingerprint), per-checkpoint summary,
                    and the hash of the results.jsonl it belongs to (written last)
    comparison.html side by side with thumbnails; samples where checkpoints disagree highlighted (at most
                    results_html.PAGE_ROWS samples, the disagreements first, with a note when some are left out)
    images/*        each image once (samples asking several questions of it share it), named by
                    the hash of its pixels (of its file's bytes when it was read from one)
                    (PNG, or a copy of the original file: a JPEG stays a JPEG)

Every file is written atomically; ``ComparisonResult.load(dir)`` reads them back.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

from vlm_lab.breakdown import MAX_VALUES
from vlm_lab.data import atomic_write_text, file_holds
from vlm_lab.errors import ConfigError, DataError
from vlm_lab.scoring import PairedComparison, normalize, paired_bootstrap
from vlm_lab.spreadsheet_csv import to_csv

# per checkpoint, per sample; truncated: cut off before the end token (at max_new_tokens, or at_context: where the
# checkpoint reads no further)
FIELDS = ("output", "score", "latency_s", "new_tokens", "truncated", "at_context", "nonfinite")
# against the checkpoint before it (paired, on the samples with a reference): None for the first
PAIRED_COLUMNS = ("vs", "diff", "diff_ci_low", "diff_ci_high", "n_wrong_to_right", "n_right_to_wrong")
SUMMARY_COLUMNS = (
    "checkpoint", "step", "accuracy", "ci_low", "ci_high", "n_scored", "n_samples", "mean_latency_s",
    "tokens_per_s", "mean_new_tokens", "peak_memory_bytes", "memory_kind", "n_nonfinite", "n_truncated",
    "n_at_context", "from_cache", *PAIRED_COLUMNS,
)  # fmt: skip
MAX_FLIPPED_IDS = 12  # sample ids listed per flip direction in the paired report
# to_dataframe's own columns: a sample's meta key named like one gets the column meta.<key>
_BASE_COLUMNS = frozenset({"id", "image", "prompt", "reference", "checkpoint", *FIELDS})
REFERENCE_SEPARATOR = " | "  # between acceptable answers in the flat views (CSV, DataFrame, HTML)
# results.csv's format, recorded in summary.json: raise it whenever to_dataframe's columns or values change, so a
# re-run into a folder an older vlm_lab wrote rebuilds the CSV (its rows unchanged, it would be left as it was).
# 2: the samples' meta columns; 3: text a spreadsheet would run as a formula quoted (vlm_lab.spreadsheet_csv)
CSV_FORMAT = 3


def reference_text(reference: str | list[str] | None) -> str | None:
    """A row's reference as one string: several acceptable answers joined with ``REFERENCE_SEPARATOR``, each
    once, in order, with how many gave it when more than one did (VQAv2 lists 10 answers, most the same):
    ``["2", "2", "two", "2"]`` -> ``"2 ×3 | two"``."""
    if reference is None or isinstance(reference, str):
        return reference
    counts = Counter(reference)  # insertion-ordered: first appearance
    return REFERENCE_SEPARATOR.join(answer if n == 1 else f"{answer} ×{n}" for answer, n in counts.items())


def _json_safe(value: Any) -> Any:
    """NaN -> None, recursively: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` with NaN as null; the recursive scrub runs only when there is a NaN."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(_json_safe(value), **kwargs)


@dataclasses.dataclass
class ComparisonResult:
    """N checkpoints x M samples: per-sample rows and per-checkpoint summaries.

    ``rows[i]`` is ``{"id", "image", "prompt", "reference" (None, a string, or a list of acceptable
    answers), "outputs": {name: {output,
    score, latency_s, new_tokens, batch_size}}}`` with ``image`` relative to ``output_dir``, and ``image_file``, the
    image as the data file gives it (``my images/img 3.jpg``), for a sample read from one (the views name it so);
    ``summary[j]`` has the ``SUMMARY_COLUMNS`` for ``checkpoints[j]``.
    """

    config: dict
    checkpoints: list[str]  # display names, unique
    refs: list[dict]  # per checkpoint: name, spec, step, fingerprint, revision (a hub checkpoint's commit)
    rows: list[dict]
    summary: list[dict]
    output_dir: Path | None = None
    # pairs() per seed: bootstraps computed once for the summary, the HTML and the report
    _pairs: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)
    _by: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)  # accuracy_by per (key, seed)

    # -- files ---------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str] | None = None) -> Path:
        """Write results.jsonl, results.csv, summary.json and comparison.html atomically.

        A file that would not change is left alone (a re-run of a finished comparison
        rewrites only what differs, e.g. ``from_cache`` in the summary); results.csv is
        made from the rows alone, so it is rebuilt only when results.jsonl changes, or
        when summary.json says it was written in another format (``CSV_FORMAT``).
        """
        out = Path(directory) if directory is not None else self.output_dir
        if out is None:
            raise ConfigError("this result has no output_dir; pass a folder to save(DIR)")
        if self.output_dir is not None and out.resolve() != self.output_dir.resolve():
            _copy_images(self, out)
        self.output_dir = out
        rows_text = "".join(_dumps(r) + "\n" for r in self.rows)
        csv_current = (out / "results.csv").is_file() and _csv_format(out / "summary.json") == CSV_FORMAT
        if not csv_current or not file_holds(out / "results.jsonl", rows_text):
            frame = self.to_dataframe()
            frame["image"] = [row["image"] for row in self.rows]  # relative to the CSV: the folder can move as a whole
            atomic_write_text(out / "results.csv", to_csv(frame))
            atomic_write_text(out / "results.jsonl", rows_text)  # after the CSV: an interrupted save redoes both
        atomic_write_text(out / "comparison.html", self.page(), if_changed=True)
        # last, naming the rows it belongs to: a save cut short leaves a folder that load() refuses
        meta = {"config": self.config, "checkpoints": self.refs, "summary": self.summary, "results_sha256": _sha256(rows_text),
                "csv_format": CSV_FORMAT}  # fmt: skip
        atomic_write_text(out / "summary.json", _dumps(meta, indent=2) + "\n", if_changed=True)
        return out

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> ComparisonResult:
        """Read a result saved by ``save`` (or by ``compare``) back from its folder."""
        out = Path(directory)
        summary_path, rows_path = out / "summary.json", out / "results.jsonl"
        if not summary_path.is_file() or not rows_path.is_file():
            if any((out / ".cache").glob("*.jsonl")):  # compare's default cache_dir: a run started here
                raise DataError(f"the comparison in {str(out)!r} did not finish (no summary.json and results.jsonl yet; its finished "
                                f"batches are cached in {out / '.cache'}); re-run the same vlm-lab compare command with --out {out}: "
                                "it resumes where it stopped")  # fmt: skip
            raise DataError(f"no comparison in {str(out)!r} (needs summary.json and results.jsonl); run vlm-lab compare --out {out}")
        # "the same": run with the defaults instead, it would write another comparison there
        rerun = f"re-run the same vlm-lab compare command with --out {out} (its results are cached, so it only rewrites the files)"
        rows_text = rows_path.read_text(encoding="utf-8")
        try:
            meta = json.loads(summary_path.read_text(encoding="utf-8"))
            rows = [json.loads(line) for line in rows_text.splitlines() if line.strip()]
            refs = meta["checkpoints"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"the comparison in {str(out)!r} is damaged ({type(e).__name__}: {e}); {rerun}") from None
        digest = _sha256(rows_text)
        if meta.get("results_sha256", digest) != digest:
            raise DataError(f"results.jsonl and summary.json in {str(out)!r} are from different saves (one was cut short); {rerun}")
        result = cls(
            config=meta["config"], checkpoints=[r["name"] for r in refs], refs=refs, rows=rows,
            summary=meta["summary"], output_dir=out,
        )  # fmt: skip
        if any(not set(PAIRED_COLUMNS) <= row.keys() for row in result.summary):  # saved before they existed
            result.add_paired_columns()
        return result

    # -- tables --------------------------------------------------------------------
    def image_path(self, row: dict) -> str:
        return str(self.output_dir / row["image"]) if self.output_dir is not None else row["image"]

    def to_dataframe(self, *, long: bool = False):
        """Per-sample results as a pandas DataFrame.

        ``reference`` is one string: several acceptable answers joined as ``"red ×2 | crimson"``
        (``reference_text``; ``rows`` keep the list), so the column reads, filters and logs as text.
        Wide (default): one row per sample; columns id, image, prompt, reference, each ``meta`` key the
        samples carry (``question_type``; ``meta.<key>`` for one named like another column), then ``<checkpoint>/output``, ``/score``, ``/latency_s``, ``/new_tokens``, ``/truncated``, ``/at_context``, ``/nonfinite``
        per checkpoint.
        ``long=True``: one row per (sample, checkpoint) with a ``checkpoint`` column.
        """
        import pandas as pd

        records = []
        keys = list(dict.fromkeys(k for row in self.rows for k in row.get("meta") or {}))
        named = {k: f"meta.{k}" if k in _BASE_COLUMNS or "/" in k else k for k in keys}  # "/": a checkpoint's columns
        for row in self.rows:
            base = {"id": row["id"], "image": self.image_path(row), "prompt": row["prompt"], "reference": reference_text(row["reference"])}
            base |= {column: (row.get("meta") or {}).get(k) for k, column in named.items()}
            if long:
                for name in self.checkpoints:
                    out = row["outputs"][name]
                    records.append({**base, "checkpoint": name, **{f: out.get(f) for f in FIELDS}})  # flags: None if saved without
            else:
                for name in self.checkpoints:
                    base.update({f"{name}/{f}": row["outputs"][name].get(f) for f in FIELDS})
                records.append(base)
        return pd.DataFrame.from_records(records)

    def summary_frame(self):
        """One row per checkpoint: accuracy with its 95% CI, latency, tokens/s, peak memory."""
        import pandas as pd

        return pd.DataFrame([{c: s.get(c) for c in SUMMARY_COLUMNS} for s in self.summary], columns=list(SUMMARY_COLUMNS))

    def summary_table(self):
        """``summary_frame()`` for people to read, every value a string: accuracy and its CI in % (one decimal),
        ``n_scored`` as scored/samples (fewer than all when some lack a reference), latency in seconds (4
        decimals), tokens/s whole, memory in kB/MB/GB, ``-`` where there is no value (nothing scored); a run's final
        model's step as ``1000 (final)`` (``results_plot.final_steps``; ``summary_frame`` keeps None: no checkpoint-N)."""
        from vlm_lab.units import format_bytes

        def shown(fmt):
            return lambda v: "-" if v is None or v != v else fmt(v)  # v != v: NaN

        percent, whole = shown("{:.1%}".format), shown(lambda v: f"{v:.0f}")
        counts = ("step", "n_samples", "n_nonfinite", "n_truncated", "n_at_context", "from_cache", "n_wrong_to_right",
                  "n_right_to_wrong")  # fmt: skip
        formats = {
            **dict.fromkeys(counts, whole), "accuracy": percent, "ci_low": percent, "ci_high": percent,
            "mean_latency_s": shown("{:.4f}".format), "tokens_per_s": whole, "mean_new_tokens": shown("{:.1f}".format), "peak_memory_bytes": shown(format_bytes),
            "diff": shown("{:+.1%}".format), "diff_ci_low": shown("{:+.1%}".format), "diff_ci_high": shown("{:+.1%}".format),
        }  # fmt: skip
        frame = self.summary_frame()
        table = frame.map(shown(str)).astype(object)
        for column, fmt in formats.items():
            table[column] = [fmt(v) for v in frame[column]]
        from vlm_lab.results_plot import final_steps

        steps, finals = final_steps(self)  # a run's final model: the step the plot places it at ("1000 (final)")
        table["step"] = [f"{steps[i]} (final)" if i in finals else step for i, step in enumerate(table["step"])]
        scored = frame["n_scored"].astype(float).fillna(0)  # None (nothing scored) -> 0 of the samples
        table["n_scored"] = [f"{n:.0f}/{whole(total)}" for n, total in zip(scored, frame["n_samples"])]
        return table

    def memory_notes(self) -> list[str]:
        """What ``peak_memory_bytes`` measured, in words: one line per kind of measurement in the summary."""
        from vlm_lab.results_html import MEMORY_KINDS

        kinds = sorted({s.get("memory_kind") for s in self.summary if isinstance(s.get("memory_kind"), str)})
        return [f"peak_memory_bytes: {MEMORY_KINDS.get(kind, kind)}" for kind in kinds]

    def summary_records(self) -> list[dict]:
        """The summary as JSON-ready dicts (None for missing values), e.g. for ``--json``."""
        return _json_safe(self.summary)

    # -- analysis ------------------------------------------------------------------
    def _index(self, which: str | int) -> int:
        if isinstance(which, int):
            if not -len(self.checkpoints) <= which < len(self.checkpoints):
                raise ConfigError(f"checkpoint index {which} out of range (have {len(self.checkpoints)})")
            return which % len(self.checkpoints)
        if which in self.checkpoints:
            return self.checkpoints.index(which)
        matches = [i for i, r in enumerate(self.refs) if which in (r["spec"], str(r.get("step")))]
        if len(matches) == 1:
            return matches[0]
        raise ConfigError(f"no checkpoint {which!r} in this comparison (have: {', '.join(self.checkpoints)})")

    def paired(self, a: str | int, b: str | int, *, seed: int = 0) -> PairedComparison:
        """``b`` against ``a`` on the samples with a reference: accuracy difference with a
        paired-bootstrap 95% CI, and the sample ids flipped right->wrong and wrong->right."""
        name_a, name_b = self.checkpoints[self._index(a)], self.checkpoints[self._index(b)]
        scored = [r for r in self.rows if r["reference"] is not None]
        if not scored:
            raise DataError("paired comparison needs references; this data has none (add a 'reference' to each JSONL line)")
        return paired_bootstrap(
            [r["outputs"][name_a]["score"] for r in scored],
            [r["outputs"][name_b]["score"] for r in scored],
            ids=[r["id"] for r in scored],
            names=(name_a, name_b),
            seed=seed,
        )

    def pairs(self, *, seed: int | None = None) -> list[PairedComparison]:
        """Each checkpoint against the one before it (``paired(i - 1, i)``), seeded with the
        config's seed; empty with one checkpoint or when no sample has a reference."""
        if len(self.checkpoints) < 2 or all(r["reference"] is None for r in self.rows):
            return []
        seed = self.config.get("seed", 0) if seed is None else seed
        if seed not in self._pairs:
            self._pairs[seed] = [self.paired(i - 1, i, seed=seed) for i in range(1, len(self.checkpoints))]
        return list(self._pairs[seed])

    def add_paired_columns(self) -> None:
        """Fill the ``PAIRED_COLUMNS`` of ``summary`` from ``pairs()`` (None where nothing is paired)."""
        for row in self.summary:
            row.update(dict.fromkeys(PAIRED_COLUMNS))
        for p, row in zip(self.pairs(), self.summary[1:]):
            row.update(vs=p.a, diff=p.diff, diff_ci_low=p.ci_low, diff_ci_high=p.ci_high,
                       n_wrong_to_right=len(p.wrong_to_right), n_right_to_wrong=len(p.right_to_wrong))  # fmt: skip

    def paired_report(self, *, max_ids: int = MAX_FLIPPED_IDS) -> str:
        """``pairs()`` as text: per pair the accuracy difference with its paired-bootstrap CI and
        the flipped sample ids (at most ``max_ids`` each way); a line saying why when nothing pairs."""
        if len(self.checkpoints) < 2:
            return "paired comparison: one checkpoint, nothing to pair (compare two or more to see which samples flipped)"
        pairs = self.pairs()
        if not pairs:
            return "paired comparison: no sample has a reference, nothing is scored (add 'reference' to the data)"
        lines = ["paired comparison, each checkpoint against the one before (95% paired-bootstrap CI):"]
        if self.config.get("metric") == "vqa":
            lines.append("  (right: VQA accuracy 1, wrong: 0; a partial score flips neither way and counts in the difference)")
        for p in pairs:
            lines.append(f"  {p}")
            for label, ids in (("wrong->right", p.wrong_to_right), ("right->wrong", p.right_to_wrong)):
                if ids:
                    more = f" (+{len(ids) - max_ids} more)" if len(ids) > max_ids else ""
                    lines.append(f"    {label}: {', '.join(ids[:max_ids])}{more}")
        return "\n".join(lines)

    def meta_keys(self, *, max_values: int | None = MAX_VALUES) -> list[str]:
        """The names the scored samples carry under ``meta`` (the shapes set: ``question_type``), to break accuracy
        down by (``accuracy_by``); none when no sample has a reference. ``max_values``: only names with at most
        this many distinct values (None: all): these are broken down in comparison.html, notebook 02 and W&B;
        ``accuracy_by`` takes any name."""
        from vlm_lab.breakdown import meta_keys

        return meta_keys(self.rows, max_values=max_values)

    def accuracy_by(self, key: str, *, wide: bool = False, seed: int | None = None):
        """Each checkpoint's accuracy with a 95% bootstrap CI on the samples of each value of ``meta[key]``.

        Long (default): a DataFrame with columns ``key``, checkpoint, step, accuracy, ci_low, ci_high,
        n_scored. ``wide=True``: for reading, one row per value (and its sample count), a column per
        checkpoint, cells ``"68.8% [55.0–81.2]"``. Samples without ``key`` are the ``"(none)"`` group.
        """
        from vlm_lab.breakdown import accuracy_by, wide_table

        seed = self.config.get("seed", 0) if seed is None else seed
        if (key, seed) not in self._by:  # bootstraps computed once for the CLI, the HTML and the plot
            self._by[key, seed] = accuracy_by(self, key, seed=seed)
        frame = self._by[key, seed].copy()
        return wide_table(frame, key) if wide else frame

    def disagreements(self) -> list[dict]:
        """Rows where the checkpoints' outputs differ (after normalisation)."""
        return [r for r in self.rows if _disagree(r, self.checkpoints)]

    # -- views ---------------------------------------------------------------------
    def plot_accuracy(self, ax=None, *, by: str | None = None):
        """Accuracy against training step with 95% CI error bars; returns the matplotlib Axes.

        Checkpoints without a step (hub ids, plain folders), or a checkpoint alone, are named on the axis in their
        order (long names shortened, ``results_plot.tick_labels``). Nothing scored: the axes say why instead.
        ``by``: one line per value of the samples' ``meta[by]`` (``accuracy_by``), not the overall accuracy.
        """
        from vlm_lab.results_plot import plot_accuracy

        return plot_accuracy(self, ax, by=by)

    def html(self, *, max_rows: int | None = 200, only_disagreements: bool = False, embed_images: bool = True) -> str:
        """Side-by-side view: a readable summary, then one row per sample with its thumbnail and
        each checkpoint's output; rows where checkpoints disagree are highlighted (``vlm_lab.results_html``).

        ``embed_images``: thumbnails as base64 (a notebook, a page on its own); False:
        ``<img src="images/...">`` relative links, for the copy saved next to ``images/``.
        """
        from vlm_lab.results_html import comparison_html

        return comparison_html(self, max_rows=max_rows, only_disagreements=only_disagreements, embed_images=embed_images)

    def page(self, *, all_rows: bool = False) -> str:
        """``html`` as a whole UTF-8 page linking ``images/`` (the saved comparison.html): at most
        ``results_html.PAGE_ROWS`` samples, those where the checkpoints disagree first, under a note that says how
        many it shows and that results.jsonl and results.csv hold them all; ``all_rows``: every sample."""
        from vlm_lab.results_html import comparison_page

        return comparison_page(self, all_rows=all_rows)

    def _repr_html_(self) -> str:
        return self.html(max_rows=50)

    def __repr__(self) -> str:
        return f"ComparisonResult({len(self.checkpoints)} checkpoints x {len(self.rows)} samples, output_dir={str(self.output_dir)!r})"


def _csv_format(summary_path: Path) -> int | None:
    """The ``CSV_FORMAT`` a saved summary.json records for its results.csv; None when it records none
    (written before vlm_lab recorded it) or cannot be read (then the CSV is rebuilt: never trusted)."""
    try:
        return json.loads(summary_path.read_text(encoding="utf-8")).get("csv_format")
    except (OSError, ValueError, AttributeError):
        return None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _disagree(row: dict, names: list[str]) -> bool:
    return len({normalize(row["outputs"][n]["output"]) for n in names}) > 1


def _copy_images(result: ComparisonResult, out: Path) -> None:
    """Saving elsewhere: take the images along, so the new folder stands alone."""
    import shutil

    for rel in {row["image"] for row in result.rows}:
        src, dst = result.output_dir / rel, out / rel
        if src.is_file() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
