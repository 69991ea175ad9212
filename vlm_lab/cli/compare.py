"""``vlm-lab compare REF [REF ...]``: checkpoints side by side on the same samples."""

from __future__ import annotations

import argparse
import json
import shlex
import sys

from vlm_lab.config import DEVICES, DTYPES, METRICS, CompareConfig

_DEFAULTS = CompareConfig()


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "compare",
        help="compare checkpoints side by side: accuracy with 95%% CIs, latency, memory",
        description="Generate with every checkpoint on the same samples, score against the references, and write "
        "results.jsonl, results.csv, summary.json and comparison.html to --out. Per-sample results are cached: "
        "an interrupted run resumes, a finished one re-runs without loading a model.",
        epilog="Exit codes: 0 done; 2 an error (a reference that resolves to nothing, a broken checkpoint, bad data), "
        "one line naming the fix; 130 Ctrl-C, 143 SIGTERM (finished batches are cached: a re-run resumes).",
    )
    parser.add_argument("refs", nargs="*", default=list(_DEFAULTS.checkpoints), metavar="REF",
                        help="checkpoint folder, training output (its checkpoint-N folders), or hub id org/name[@rev][:sub] "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--data", default=_DEFAULTS.data, help="shapes:SPLIT[:N] or a JSONL of {image, prompt, reference?}; a reference is an answer or a list of "
                        "acceptable ones (default: %(default)s)")
    parser.add_argument("--num-samples", type=int, default=None,
                        help="at most this many samples (default: all the data gives: the N of shapes:SPLIT:N, 64 without N, a whole JSONL)")  # fmt: skip
    parser.add_argument("--strategy", default=_DEFAULTS.strategy, help="greedy | nucleus(P) | temperature(T) | beam(N) (default: %(default)s)")
    parser.add_argument("--checkpoint-generation", action="store_true",
                        help="also decode with each checkpoint's own generation_config.json (repetition_penalty, "
                        "no_repeat_ngram_size, ...), as model.generate does by default; without it every checkpoint decodes "
                        "with --strategy alone, and what its file sets is named in a warning and in summary.json")  # fmt: skip
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed,
                        help="seeds sampling strategies and the bootstrap CIs (default: %(default)s)")
    parser.add_argument("--metric", default=_DEFAULTS.metric, choices=METRICS,
                        help="exact | normalized (1 or 0; 1 when the output matches any listed answer) | vqa (VQA accuracy, a "
                             "fraction, against a list of human answers) (default: %(default)s)")  # fmt: skip
    add_run_options(parser)
    parser.add_argument("--out", default=_DEFAULTS.output_dir, help="output folder (default: %(default)s)")
    parser.add_argument("--cache-dir", default=_DEFAULTS.cache_dir, help="result cache folder (default: OUT/.cache)")
    parser.add_argument("--no-cache", action="store_true", help="ignore and do not write cached per-sample results")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout, nothing else")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    _by_option(parser)
    parser.set_defaults(func=run)

    show = sub.add_parser(
        "show",
        help="print the summary of a saved comparison (e.g. a notebook's or a sweep run's output_dir)",
        description="Read summary.json and results.jsonl from DIR and print the summary table, and on stderr the warnings "
        "compare gave (outputs cut off, NaN/inf scores).",
    )
    show.add_argument("dir", help="a comparison's output folder")
    show.add_argument("--json", action="store_true", help="print the summary as JSON on stdout, nothing else")
    _by_option(show)
    show.set_defaults(func=_show)


# The fields a comparison's run names in its errors (a device or dtype this machine lacks: device='cuda', a GPU out of
# memory: batch_size=3, a model over the cache budget: memory_budget='2GB', dtype='float16'), as flags to type
RUN_FIELDS = ("batch_size", "max_new_tokens", "dtype", "device", "memory_budget")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The flags of ``RUN_FIELDS``: every command that runs a comparison has them (``compare``, ``checkpoints eval``)."""
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="samples per generate call (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=_DEFAULTS.max_new_tokens,
                        help="at most this many tokens per answer (default: %(default)s)")
    parser.add_argument("--dtype", default=_DEFAULTS.dtype, choices=DTYPES,
                        help="weights' dtype; auto: the checkpoint's own (default: %(default)s)")
    parser.add_argument("--device", default=_DEFAULTS.device, choices=DEVICES,
                        help="auto: cuda when there is one (default: %(default)s)")
    parser.add_argument("--memory-budget", default=_DEFAULTS.memory_budget,
                        help="model cache budget: 16GB (10^9 bytes), 15GiB (2^30) or bytes; 16G is refused as ambiguous "
                        "(default: 90%% of the GPU, half the RAM on CPU)")  # fmt: skip


def _by_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--by", action="append", default=[], metavar="KEY",
                        help="also break accuracy down by the samples' meta KEY (a JSONL line's \"meta\": {KEY: value}; "
                        "the shapes data: question_type); repeat for several")  # fmt: skip


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    """The ``CompareConfig`` the flags describe (what the library, the notebook and a sweep take)."""
    from vlm_lab.cli import flags_in_config_errors

    with flags_in_config_errors("data", "num_samples", "strategy", "max_new_tokens", "batch_size", "seed", "dtype", "device",
                                "cache_dir", "metric", "memory_budget", output_dir="--out", use_cache="--no-cache"):
        return CompareConfig(
            checkpoints=tuple(args.refs),
            data=args.data,
            num_samples=_DEFAULTS.num_samples if args.num_samples is None else args.num_samples,
            strategy=args.strategy,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            seed=args.seed,
            dtype=args.dtype,
            device=args.device,
            output_dir=args.out,
            use_cache=not args.no_cache,
            cache_dir=args.cache_dir,
            metric=args.metric,
            memory_budget=args.memory_budget,
            checkpoint_generation=args.checkpoint_generation,
        )


def print_summary(result, *, as_json: bool, by: list[str] = ()) -> None:
    """The summary table (or JSON, one object per checkpoint) on stdout; ``by``: accuracy broken down by these
    meta keys too (a table each; in JSON, each checkpoint's ``by``: ``{key: {value: {accuracy, ci_low, ...}}}``)."""
    frames = {key: result.accuracy_by(key) for key in dict.fromkeys(by)}  # an unknown key fails before anything prints
    if as_json:
        records = result.summary_records()
        for record in records if frames else ():
            record["by"] = {key: _groups_json(frame, key, record["checkpoint"]) for key, frame in frames.items()}
        json.dump(records, sys.stdout, indent=2)
        print()
        return
    # n_scored: the samples with a reference, which the accuracy is over (fewer than all when some lack one)
    columns = ["checkpoint", "accuracy", "ci_low", "ci_high", "n_scored", "mean_latency_s", "tokens_per_s", "peak_memory_bytes"]
    print(result.summary_table()[columns].to_string(index=False))
    if len(result.checkpoints) > 1:  # one checkpoint: nothing to pair, no line to read past
        print(result.paired_report(max_ids=8))
    for note in result.memory_notes():
        print(note)
    from vlm_lab.breakdown import wide_table

    for key, frame in frames.items():
        print(f"\naccuracy by {key} (95% bootstrap CI):")
        print(wide_table(frame, key).to_string())
    print(f"results: {result.output_dir}/comparison.html (and results.jsonl, results.csv, summary.json)")


def _groups_json(frame, key: str, checkpoint: str) -> dict:
    """One checkpoint's rows of an ``accuracy_by`` frame as ``{value: {accuracy, ci_low, ci_high, n_scored}}``."""
    from vlm_lab.breakdown import value_column

    part = frame[frame["checkpoint"] == checkpoint]
    return {value: {c: row[c] for c in ("accuracy", "ci_low", "ci_high")} | {"n_scored": int(row["n_scored"])}
            for value, (_, row) in zip(part[value_column(key)], part.iterrows())}  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from vlm_lab.cli import check_embedded_checkpoints
    from vlm_lab.compare import compare
    from vlm_lab.errors import ConfigError, DataError

    config = config_from_args(args)  # a bad flag is named first, before anything is looked for
    check_embedded_checkpoints(args.refs)
    from vlm_lab.cli import flags_in_config_errors

    # RUN_FIELDS, and an output or cache folder it cannot use (output_dir='runs/x' -> --out runs/x)
    with flags_in_config_errors(*RUN_FIELDS, "cache_dir", output_dir="--out"):
        result = compare(config, progress=not args.quiet)  # the bar goes to stderr
    try:
        print_summary(result, as_json=args.json, by=args.by)
    except (ConfigError, DataError) as e:  # --by a key the data lacks, or no reference: known only once the data is read
        by = " --by KEY" if isinstance(e, ConfigError) else ""  # no reference: no key helps, the outputs are still there
        raise (ConfigError if by else DataError)(f"{e}. The comparison is saved: vlm-lab show {shlex.quote(str(result.output_dir))}{by}") from None
    return 0


def _show(args: argparse.Namespace) -> int:
    from vlm_lab.compare import warn_flagged_outputs
    from vlm_lab.results import ComparisonResult

    result = ComparisonResult.load(args.dir)
    print_summary(result, as_json=args.json, by=args.by)
    warn_flagged_outputs(result)  # what compare said of cut-off and NaN/inf outputs, on stderr as it did
    return 0
