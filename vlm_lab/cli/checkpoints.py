"""``vlm-lab checkpoints build|list|eval``: the embedded tiny shapes checkpoints, and any training run's."""

from __future__ import annotations

import argparse
from pathlib import Path

from vlm_lab.config import TrainConfig

_DEFAULTS = TrainConfig()


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("checkpoints", help="build, list or evaluate the embedded tiny shapes checkpoints (list reads any training run)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    build = actions.add_parser(
        "build",
        help="train the tiny shapes VLM and save checkpoint-N folders",
        description="Train a tiny LLaVA (CLIP vision + Llama, ~0.17M params) on synthetic colored shapes, "
        "fully offline, saving OUT/checkpoint-{0,K,2K,...,N} as the HF Trainer lays them out. "
        "Skipped when the checkpoints already exist with the same settings; checkpoints an earlier build made "
        "with other settings are removed first (a checkpoint-N folder it did not make stops the build instead). "
        "An interrupted build (Ctrl-C, kill) resumes from its last checkpoint when run again with the same settings. "
        "A second build into the same folder waits for the first (on a filesystem without file locks, such as NFS "
        "without lockd, the marker OUT/.build.lock.soft stands for the lock; one a killed build left on this host is "
        "taken over). Refused before it starts: a build whose checkpoints would not fit on the disk, whose "
        "--batch-size or --train-images would not fit in memory (a container's memory limit counts), or that "
        "would save more than 1,000,000 checkpoints.",
    )
    build.add_argument("--out", default=_DEFAULTS.out, help="output folder (default: %(default)s)")
    build.add_argument("--steps", type=int, default=_DEFAULTS.steps, help="training steps (default: %(default)s)")
    build.add_argument("--save-every", type=int, default=_DEFAULTS.save_every, help="save a checkpoint every K steps (default: %(default)s)")
    build.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="random seed; same seed, same checkpoints (default: %(default)s)")
    build.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="samples per step (default: %(default)s)")
    build.add_argument("--learning-rate", type=float, default=_DEFAULTS.learning_rate, help="peak AdamW learning rate (default: %(default)s)")
    build.add_argument("--train-images", type=int, default=_DEFAULTS.train_images,
                       help="training images, 3 questions each (default: %(default)s)")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.set_defaults(func=_build)

    listing = actions.add_parser(
        "list",
        aliases=["ls"],
        help="each checkpoint's step, epoch, training loss, size and whether a build can resume from it",
        description="Read each checkpoint-N/trainer_state.json of a training output folder (a build's, or any HF "
        "Trainer run's) and print one row per checkpoint: step, epoch, the mean training loss of the steps since "
        "the checkpoint before (the loss curve at checkpoint granularity), the last eval_loss when one was logged, "
        "the weights' size, and whether optimizer.pt and scheduler.pt are there to resume from. A build that stopped "
        "before its last step (interrupted, or killed) is said to be incomplete, with the command that finishes it; "
        "one still running is said to run (on a filesystem without file locks, naming the host its marker "
        "OUT/.build.lock.soft names when that is another). Loads no model.",
    )
    listing.add_argument("folder", nargs="?", default=_DEFAULTS.out, help="training output folder (default: %(default)s)")
    listing.add_argument("--json", action="store_true", help="one JSON object per checkpoint, a list")
    listing.set_defaults(func=_list)

    evaluate = actions.add_parser(
        "eval",
        help="held-out exact-match accuracy of each checkpoint",
        description="Greedy exact-match accuracy on held-out shapes questions, one row per checkpoint, with 95% "
        "bootstrap CIs. The same engine as `vlm-lab compare` (cached: a re-run loads no model).",
    )
    evaluate.add_argument("refs", nargs="*", default=[_DEFAULTS.out], help="checkpoint folders or training output folders (default: %(default)s)")
    evaluate.add_argument("--data", default="shapes:val:96", help="data spec or JSONL (default: %(default)s)")
    evaluate.add_argument("--out", default="runs/checkpoints-eval", help="where results and the cache go (default: %(default)s)")
    # a file .cache in --out is named with this flag as its other fix (compare's cache_dir=)
    evaluate.add_argument("--cache-dir", default="", help="result cache folder (default: OUT/.cache)")
    from vlm_lab.cli.compare import add_run_options

    add_run_options(evaluate)  # what the comparison's errors may name: a GPU out of memory, a model over the budget
    evaluate.set_defaults(func=_eval)


def _build(args: argparse.Namespace) -> int:
    from vlm_lab.cpu_kernels import pin_cpu_kernels

    pin_cpu_kernels()  # before torch's first operation: the same weights on every x86 CPU with AVX2
    from vlm_lab import tiny
    from vlm_lab.cli import flags_in_config_errors

    saved: list[Path] = []
    # the library names TrainConfig's fields (batch_size=32), in the config's checks and the build's; here they are flags
    with flags_in_config_errors("out", "steps", "save_every", "seed", "batch_size", "learning_rate", "train_images"):
        config = TrainConfig(out=args.out, steps=args.steps, save_every=args.save_every, seed=args.seed,
                             batch_size=args.batch_size, learning_rate=args.learning_rate, train_images=args.train_images)
        paths = tiny.train(config, progress=not args.quiet, on_save=saved.append)
    shown = tiny.short_list([p.name for p in paths])
    if len(paths) > 8:  # the names between are left out: say where they all are
        shown += f" (each with its loss: vlm-lab checkpoints list {config.out})"
    print(f"{len(paths)} checkpoints in {config.out}: {shown}")
    print(_what_was_trained(paths, saved))
    return 0


def _what_was_trained(paths: list[Path], saved: list[Path]) -> str:
    """One line: whether this build trained, resumed or found the work done, with the loss it reached."""
    from vlm_lab.training_log import log_history

    loss = {row["step"]: row["loss"] for row in log_history(paths[-1]) if "step" in row and "loss" in row}
    last = int(paths[-1].name.removeprefix("checkpoint-"))
    if not saved:
        reached = f" (loss {loss[last]:.4g} at step {last})" if last in loss else ""
        return f"already built with these settings: nothing trained{reached}"
    before = paths[paths.index(saved[0]) - 1]  # the checkpoint training went on from
    first = int(before.name.removeprefix("checkpoint-")) + 1
    resumed = f"resumed from {before.name}, " if first > 1 else ""
    curve = (f": loss {loss[first]:.4g} at step {first}, {loss[last]:.4g} at step {last} "
             f"(every step's loss: {paths[-1] / 'trainer_state.json'})") if first in loss and last in loss else ""
    return f"{resumed}trained steps {first}-{last}{curve}"


def _list(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from vlm_lab import tiny
    from vlm_lab.cli import check_embedded_checkpoints
    from vlm_lab.training_log import summarize
    from vlm_lab.units import human_bytes

    check_embedded_checkpoints([args.folder])
    rows = summarize(args.folder)
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return 0
    settings = next((tiny.build_record(Path(r.path))[0] for r in rows if r.path), None)
    if settings:
        order = [f.name for f in dataclasses.fields(TrainConfig)]  # as --help lists them
        keys = [k for k in [*order, *sorted(set(settings) - set(order))] if k in settings and k != "out"]
        given = ", ".join(f"{k}={settings[k]!r}" for k in keys)
        print(f"{args.folder}: built by `vlm-lab checkpoints build` with {given}")
    with_eval = any(r.eval_loss is not None for r in rows)
    number = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    table = [["checkpoint", "step", "epoch", "loss", *(["eval_loss"] if with_eval else []), "weights", "resumable"]]
    for r in rows:
        table.append([r.name, number(r.step, "d"), number(r.epoch, ".2f"), number(r.loss, ".4f"),
                      *([number(r.eval_loss, ".4f")] if with_eval else []),
                      "-" if r.weights_bytes is None else human_bytes(r.weights_bytes), "yes" if r.resumable else "no"])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
    print("loss: mean training loss of the steps since the checkpoint before (every step: checkpoint-N/trainer_state.json)")
    run = _run_folder(args.folder, rows)
    if settings and run and rows[-1].step is not None and rows[-1].step < settings.get("steps", 0):
        holder, finish = tiny.build_holder(run), f"`{_build_command(args.folder, settings)}` finishes it"
        saved = f"{rows[-1].name} of {settings['steps']} steps is saved so far"
        if holder and holder.host:  # a soft-lock marker from another host: only that host can tell whether it runs
            marker = run / tiny.SOFT_LOCK_FILE
            print(f"a build into {args.folder} is running on {holder.host} (pid {holder.pid}), as its marker {marker} "
                  f"says: {saved}; if no build is running there, delete {marker} and {finish}")
        elif holder:
            print(f"a build into {args.folder} is running: {saved}")
        else:  # stopped, or killed: a marker it left on this host names a process that is gone
            print(f"incomplete: the build stopped at {rows[-1].name} of {settings['steps']} steps; {finish}")
    return 0


def _run_folder(folder: str, rows: list) -> Path | None:
    """``folder`` when it is the folder of the listed checkpoints (not one checkpoint, not a glob); else None."""
    import os

    here = Path(os.path.expandvars(folder)).expanduser().resolve()
    return here if all(r.path and Path(r.path).parent.resolve() == here for r in rows) else None


def _build_command(folder: str, settings: dict) -> str:
    """The ``vlm-lab checkpoints build`` command line that builds ``settings`` into ``folder`` (defaults left out)."""
    import dataclasses
    import shlex

    words = ["vlm-lab", "checkpoints", "build"]
    if folder != _DEFAULTS.out:
        words += ["--out", folder]
    for field in dataclasses.fields(TrainConfig):
        value = settings.get(field.name, getattr(_DEFAULTS, field.name))
        if field.name != "out" and value != getattr(_DEFAULTS, field.name):
            words += ["--" + field.name.replace("_", "-"), str(value)]
    return shlex.join(words)


def _eval(args: argparse.Namespace) -> int:
    from vlm_lab.cli import check_embedded_checkpoints, flags_in_config_errors
    from vlm_lab.cli.compare import RUN_FIELDS, print_summary
    from vlm_lab.compare import compare
    from vlm_lab.config import CompareConfig

    check_embedded_checkpoints(args.refs)
    # the library names CompareConfig's fields (output_dir='runs/x', memory_budget='2GB'); here they are flags
    with flags_in_config_errors(*RUN_FIELDS, "cache_dir", output_dir="--out"):
        config = CompareConfig(checkpoints=tuple(args.refs), data=args.data, num_samples=0, output_dir=args.out,
                               cache_dir=args.cache_dir,
                               **{field: getattr(args, field) for field in RUN_FIELDS})
        result = compare(config, progress=False)
    print_summary(result, as_json=False)
    return 0
