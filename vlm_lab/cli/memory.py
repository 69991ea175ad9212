"""``vlm-lab memory REF [REF ...]``: will it fit on a T4, and how many at once?"""

from __future__ import annotations

import argparse
import json
import sys

from vlm_lab.config import DEVICES, MEMORY_DTYPES, MemoryConfig

_DEFAULTS = MemoryConfig()


def register(sub: argparse._SubParsersAction) -> None:
    from vlm_lab.memory_targets import GPU_TARGETS, MIB, SPACE_PROCESS_BYTES

    parser = sub.add_parser(
        "memory",
        help="estimate and measure checkpoints' memory; verdict for a Space GPU",
        description="Estimate each checkpoint's memory from its config (meta device, no weights loaded), "
        "measure load + generate in a fresh subprocess, and say whether it fits the target Space GPU, "
        "the largest batch that fits and how many such checkpoints fit at once. "
        "A checkpoint that cannot be measured (no weights or tokenizer in its folder) keeps its estimate and verdict.",
        epilog="Table: estimated_MiB and measured_MiB are on `device` (where it was measured; the target's device with "
        "--no-measure); needs_MiB, fits, margin, max_batch and co_resident are for `target`. On a CPU target (cpu-basic) "
        f"the budget also leaves {SPACE_PROCESS_BYTES // MIB} MiB for the Space's own process (Python with torch, transformers "
        "and gradio, serving, before any model: measured). "
        "Exit codes: 0 every checkpoint fits; 1 one does not fit (or its --rehearse run ran out of memory); 2 an error; "
        "3 all fit but one could not be measured or ran out of memory outside a rehearsal (its verdict is from the "
        "estimate alone); 130 Ctrl-C (the rows done are printed; measurements are not saved).",
    )
    parser.add_argument("refs", nargs="*", default=list(_DEFAULTS.checkpoints), metavar="REF",
                        help="model folders, training outputs (expand to checkpoint-N) or hub ids (default: %(default)s)")
    parser.add_argument("--dtype", default=_DEFAULTS.dtype, choices=MEMORY_DTYPES,
                        help="weights dtype; auto = the target's (float16 on a T4) (default: %(default)s)")
    parser.add_argument("--device", default=_DEFAULTS.device, choices=DEVICES, help="where to measure (default: %(default)s)")
    parser.add_argument("--target", default=_DEFAULTS.target, choices=list(GPU_TARGETS), help="Space hardware for the verdict (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="rows per generate call (default: %(default)s)")
    parser.add_argument("--prompt-tokens", type=int, default=_DEFAULTS.prompt_tokens, help="text tokens per prompt, image tokens added (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=_DEFAULTS.max_new_tokens, help="tokens generated per row (default: %(default)s)")
    parser.add_argument("--image-size", default=_DEFAULTS.image_size, metavar="N|HxW",
                        help="images the Space will get: 0 = any size, N = up to N px on the longer side, HxW = exactly that "
                        "(height x width). The estimate and the measurement use the shape that makes the most image tokens "
                        "(square, 5:4, 4:3, 3:2, 16:9, 2:1 and 4:1 either way up, and the model's tile grids) (default: %(default)s)")
    parser.add_argument("--no-measure", action="store_true", help="estimate only: load nothing")
    parser.add_argument("--rehearse", action="store_true", help="on a larger GPU, cap the process at the target's memory and run it")
    parser.add_argument("--snapshot-dir", default=_DEFAULTS.snapshot_dir, help="write CUDA memory snapshots here (also on out-of-memory)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per checkpoint instead of a table, a line as each is done. Each object's "
                        "`together` is the table's together line for the checkpoints printed so far, itself included: "
                        '{"target", "counted": how many those are, "listed": how many the run lists, "fit": how many of them '
                        'fit loaded at once with room for one to generate, "loaded": their paths, smallest first}; the line '
                        "where counted equals listed (the last) answers for the whole list")
    parser.set_defaults(func=_memory)


def _memory(args: argparse.Namespace) -> int:
    from vlm_lab.cli import flags_in_config_errors

    # the library names config fields (dtype='float16'); here they are flags (--dtype float16)
    with flags_in_config_errors("snapshot_dir", "dtype", "device", "target", "batch_size", "prompt_tokens", "max_new_tokens",
                                "image_size", "rehearse", measure="--no-measure"):
        return _profile(args)


def _profile(args: argparse.Namespace) -> int:
    from vlm_lab import memory_report
    from vlm_lab.cli import check_embedded_checkpoints

    config = MemoryConfig(
        checkpoints=tuple(args.refs),
        dtype=args.dtype,
        device=args.device,
        target=args.target,
        batch_size=args.batch_size,
        prompt_tokens=args.prompt_tokens,
        max_new_tokens=args.max_new_tokens,
        image_size=args.image_size,
        measure=not args.no_measure,
        rehearse=args.rehearse,
        snapshot_dir=args.snapshot_dir,
    )
    check_embedded_checkpoints(args.refs)  # after the flags: a bad one is named first
    rows = []
    try:
        for row in memory_report.iter_profile(config, progress=True):
            rows.append(row)
            if args.json:  # a line as each checkpoint is done: long runs show progress, Ctrl-C keeps what is done
                print(json.dumps({**row.to_dict(), "together": memory_report.together_json(rows)}), flush=True)
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM as vlm_lab.signals.Terminated
        _print_table(rows, args.json)
        done = f"after {len(rows)} checkpoint(s), shown above" if rows else "before any checkpoint was done"
        print(f"interrupted {done}; measurements are not saved, so a re-run measures again", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    _print_table(rows, args.json)
    if not all(r.verdict.fits for r in rows):
        return 1
    return 3 if any(r.not_measured for r in rows) else 0


def _print_table(rows: list, as_json: bool) -> None:
    from vlm_lab import memory_report

    if rows and not as_json:
        table = memory_report.report_table(rows)
        # a cell with nothing in it (not measured: --no-measure) reads "-", not Python's "None" or pandas' "NaN"
        print(table.astype(object).where(table.notna(), "-").to_string(index=False))
        print()
        print(memory_report.summary(rows))
