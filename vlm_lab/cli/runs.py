"""``vlm-lab runs [DIR]``: list local W&B offline runs and how to upload them."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "runs",
        help="list local W&B offline runs (group, tags, headline metrics) and the `wandb sync` command",
        description="Read every wandb/offline-run-* folder under DIR from its run-*.wandb record log "
        "(no server needed) and print one row per run. Upload them later with the printed "
        "`wandb sync` command once WANDB_API_KEY is set.",
    )
    parser.add_argument("dir", nargs="?", default=None, help="where to look (default: $WANDB_DIR, else the current folder)")
    parser.add_argument("--group", default=None, help="only runs in this group (a sweep or ablation name)")
    parser.set_defaults(func=_runs)


def _runs(args: argparse.Namespace) -> int:
    import pandas as pd

    from vlm_lab import offline_runs
    from vlm_lab.errors import DataError

    root = Path(args.dir or os.environ.get("WANDB_DIR") or ".").expanduser()  # WANDB_DIR=~/...: as wandb reads it
    if not root.is_dir():
        raise DataError(f"no folder at {root}; give the WANDB_DIR the runs were logged under (or a folder above it)")
    runs, unreadable, empty = [], [], []
    for folder in offline_runs.find_offline_runs(root):
        try:
            runs.append(offline_runs.read_offline_run(folder))
        except offline_runs.EmptyRunLogError as e:  # a run killed as W&B started: nothing to sync, not broken
            empty.append(folder)
            print(f"{folder}: {e}", file=sys.stderr)
        except (DataError, OSError) as e:  # one bad folder must not hide the rest
            unreadable.append(folder)
            print(f"cannot read {folder}: {e}", file=sys.stderr)
    if unreadable:
        print(f"{len(unreadable)} unreadable run folder(s) skipped (not offered for upload)", file=sys.stderr)
    runs = offline_runs.latest_runs(runs)  # a run started again with its id (a re-run sweep point): once
    cut_short = _unreadable_latest_starts(runs, unreadable + empty)
    everywhere = runs
    if args.group is not None:
        runs = [r for r in runs if r.group == args.group]
    if not runs:
        if everywhere:  # none in that group
            print(f"no W&B offline runs under {root}{_other_groups(args.group, everywhere)}")
        else:
            print(f"no W&B offline runs under {root}" + (f" in group {args.group!r}" if args.group else "") + _logged_elsewhere(root))
        return 0
    rows = []
    for run in runs:
        row = {"run": run.id, "name": run.name, "group": run.group, "job": run.job_type, "tags": ",".join(run.tags)}
        for key, value in run.headline().items():
            row[key] = _shown(key, value)
        if run.id in cut_short:
            latest = cut_short[run.id]
            row["state"] = f"incomplete, latest start {offline_runs.LOGGED_NOTHING if latest in empty else 'unreadable'} ({latest.name})"
        else:
            row["state"] = run.state
        row["uploaded"] = "yes" if run.synced else "no"
        rows.append(row)
    table = pd.DataFrame(rows).fillna("")
    with pd.option_context("display.max_columns", None, "display.width", 200):
        print(table.to_string(index=False))
    pending = [r for r in runs if not r.synced]
    if not pending:
        print(f"\n{len(runs)} offline run(s), all uploaded already (`wandb sync` marked them); nothing to sync")
        return 0
    parents = {p.parent for r in pending for p in r.sync_paths}
    listed = {p for r in pending for p in r.sync_paths}
    # A folder a killed run left without its record log is no run: a glob would hand it to `wandb sync` too.
    others = any(p not in listed for parent in parents for p in parent.glob("offline-run-*"))
    explicit = len(parents) > 1 or args.group or unreadable or empty or len(pending) < len(runs) or others
    # Quoted for the shell it is pasted into (WANDB_DIR="/data/W&B runs"); the glob is left for it to expand.
    targets = (" ".join(shlex.quote(str(p)) for r in pending for p in r.sync_paths) if explicit
               else f"{shlex.quote(str(parents.pop()))}/offline-run-*")  # fmt: skip
    which = "them" if len(pending) == len(runs) else f"the other {len(pending)}"
    uploaded = f", {len(runs) - len(pending)} uploaded already" if len(pending) < len(runs) else ""
    print(f"\n{len(runs)} offline run(s){uploaded}. Upload {which} (needs WANDB_API_KEY or `wandb login`):\n  wandb sync {targets}")
    if note := offline_runs.unfinished_note([r.id for r in pending if not r.finished or r.id in cut_short]):
        print(f"  {note}")
    return 0


def _other_groups(group: str, runs: list) -> str:
    """`` in group 'x' (groups there: a, b; 1 run in no group)``: what ``--group`` could have been."""
    groups = sorted({r.group for r in runs if r.group})
    ungrouped = sum(not r.group for r in runs)
    named = [f"groups there: {', '.join(groups)}"] if groups else []
    named += [f"{ungrouped} run{'s' if ungrouped > 1 else ''} in no group"] if ungrouped else []
    return f" in group {group!r} ({'; '.join(named)})"


def _logged_elsewhere(root: Path) -> str:
    """Where the results under ``root`` (a sweep's or a comparison's folder) were logged offline, from the
    ``wandb.json`` each comparison writes beside its results: ``; the results there were logged ...``, or ""."""
    from vlm_lab.tracking import RECORD_FILE, read_record

    found = set()
    for folder, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        record = read_record(folder) if RECORD_FILE in files else None
        if record and record.get("logged") and record.get("mode") == "offline" and record.get("dir"):
            if Path(record["dir"]).parent.is_dir():
                found.add(Path(record["dir"]).parent)
    if not found:
        return ""
    where = sorted(map(str, found))
    command = f"vlm-lab runs {where[0]}" if len(where) == 1 else "`vlm-lab runs DIR` for each"
    return f"; the results there were logged to W&B offline under {', '.join(where)} (their wandb.json says so): {command}"


def _unreadable_latest_starts(runs: list, unreadable: list[Path]) -> dict[str, Path]:
    """Run id -> its unreadable folder, for runs whose newest start is one (damaged, or wandb-core killed before it
    wrote more than the log's header: it logged nothing): the run did not finish, whatever its readable starts say. Matched by
    folder name (``offline_runs.is_start_folder``)."""
    from vlm_lab.offline_runs import is_start_folder

    out = {}
    for run in runs:
        newer = [f for f in unreadable if is_start_folder(f.name, run.id) and f.name > run.dir.name]
        if newer:
            out[run.id] = max(newer, key=lambda f: f.name)
    return out


def _shown(key: str, value: object) -> object:
    """A metric as the listing shows it: accuracies and their CI bounds as percentages (``97.9%``), other numbers to 4 digits."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return value
    name = key.rsplit("/", 1)[-1]
    if name.endswith("accuracy") or name.startswith("ci_"):
        return f"{value:.1%}"
    return f"{value:.4g}"
