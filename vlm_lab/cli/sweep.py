"""``vlm-lab sweep SWEEP.yaml``: run a notebook once per grid point with papermill.

Exit codes: 0 every run of this shard completed (or was already completed);
1 at least one run failed (the summary names each failing cell and error);
75 another invocation of the same sweep (and shard) holds the lock, so this one
ran nothing, or some runs were being executed by another invocation (another shard
spec or machine) and were left to it (EX_TEMPFAIL: a scheduler may simply try again later);
2 the sweep file or its parameters are invalid (nothing ran);
74 the sweep could not write its files (a full disk, a quota): it stopped starting runs (EX_IOERR).
130 Ctrl-C, 143 SIGTERM (a timeout, `systemctl stop`), 129 SIGHUP (its terminal closed): the runs it
abandoned run again next time.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading


# --jobs and --shard are checked by the parser, as --run-timeout is: scripts/run_experiments.py then refuses a
# bad value once, before any sweep runs, instead of each sweep exiting 2 as if its file were invalid.
def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r} is not I/N, e.g. 0/4 (0-based index of N shards)") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"--shard {text} has no shards: N must be at least 1 (I/N, 0-based: 0/N .. N-1/N)")
    if not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard {text} is out of range; shards are 0-based: 0/{count} .. {count - 1}/{count}")
    return index, count


def _jobs(text: str) -> int:
    try:
        jobs = int(text)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"--jobs {text} must be a positive integer (runs at once), e.g. --jobs 2")
    return jobs


def _duration(text: str) -> int:
    """``--run-timeout``'s seconds: read as the sweep file's ``run_timeout:`` is, its errors naming the flag.

    Checked by the parser, so scripts/run_experiments.py refuses a bad value once, before any sweep runs,
    instead of each sweep exiting 2 as if its file were invalid."""
    from vlm_lab.config import parse_duration
    from vlm_lab.errors import ConfigError

    try:
        return parse_duration("--run-timeout", text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "sweep",
        help="run a notebook once per point of a parameter grid (papermill), resumable",
        description="Execute SWEEP.yaml's notebook once per grid point into runs/<sweep>/<run-id>/\n"
        "(executed notebook, params.json, status.json, the run's results), skipping completed runs,\n"
        "then write runs/<sweep>/summary.csv and summary.md.",
        epilog="exit codes:\n"
        "  0    every run completed\n"
        "  1    some run failed (the summary names each failing cell)\n"
        "  2    invalid sweep file or notebook\n"
        "  74   cannot write its files (disk full?): a re-run after freeing space completes it\n"
        "  75   the sweep (or some of its runs) is running in another invocation: try later\n"
        "  129  SIGHUP (terminal closed; under nohup it keeps going)\n"
        "  130  Ctrl-C\n"
        "  143  SIGTERM (a timeout, systemctl stop): abandoned runs show as interrupted and run next time",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep_file", metavar="SWEEP.yaml", help="the sweep: name, notebook, parameters, grid")
    add_sweep_options(parser)
    parser.set_defaults(func=_sweep)


def add_sweep_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``vlm-lab sweep`` (also scripts/run_experiments.py's, which passes them on)."""
    parser.add_argument("--jobs", "-j", type=_jobs, default=None, help="runs at once, each with its own kernel (default: the file's jobs, else 1)")
    parser.add_argument("--shard", type=_shard, default=None, metavar="I/N", help="run only shard I of N (0-based; e.g. $SLURM_ARRAY_TASK_ID/4)")
    parser.add_argument("--runs-dir", default=None, help="parent folder of the sweep's runs (default: the file's runs_dir, else runs)")
    parser.add_argument(
        "--run-timeout", type=_duration, default=None, metavar="DURATION",
        help="stop a run still executing after DURATION (90s, 30m, 2h, 1h30m; 0 = no limit), killing its kernel; "
        "it runs again next time (default: the file's run_timeout, else no limit)",
    )
    parser.add_argument("--dry-run", action="store_true", help="list this shard's runs and their state; run nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar on a terminal; without one (cron), no timed line per run either: only the final report")


def _why(run, state: str) -> str:
    """What ``--dry-run`` says after a run's id: a failed run's error (one line), when an unfinished run started."""
    from vlm_lab.sweep import describe_error

    status = run.status()
    if state in ("failed", "timed_out"):
        return f"  {describe_error(status.get('error') or {})}"
    if state in ("running", "interrupted") and status.get("started_at"):
        return f"  started {status['started_at']}" + (", never finished" if state == "interrupted" else "")
    return ""


def _rerun_command(args: argparse.Namespace, *, shard: bool = True) -> str:
    """The command that runs this sweep: its file, the --runs-dir and (``shard``) --shard that pick its runs,
    and the --run-timeout they ran under."""
    import shlex

    from vlm_lab.sweep_papermill import describe_duration

    words = ["vlm-lab", "sweep", args.sweep_file]
    if args.runs_dir is not None:  # without it the runs would be made again in the default folder
        words += ["--runs-dir", args.runs_dir]
    if args.run_timeout is not None:  # without it they would run under the file's limit, not the one they timed out at
        words += ["--run-timeout", describe_duration(args.run_timeout)]
    if shard and args.shard is not None:
        words += ["--shard", f"{args.shard[0]}/{args.shard[1]}"]
    return shlex.join(words)


def _sweep(args: argparse.Namespace) -> int:
    from vlm_lab import sweep
    from vlm_lab.cli import flags_in_config_errors

    from vlm_lab.errors import ConfigError

    index, count = args.shard if args.shard else (None, None)
    try:
        config = sweep.load_sweep(
            args.sweep_file, jobs=args.jobs, shard_index=index, shard_count=count, runs_dir=args.runs_dir, run_timeout=args.run_timeout
        )
    except ConfigError as e:
        if not getattr(e, "overrides", None):
            raise  # the file's own error names its keys (t.yaml: runs_dir must be text)
        with flags_in_config_errors("jobs", "runs_dir", "run_timeout"):  # load_sweep says runs_dir='DIR', as a caller passes it
            raise
    if args.dry_run:
        note = sweep.run_sweep(config, dry_run=True).note  # checks the notebook; says when it changed
        if note:
            print(note)
        runs = sweep.shard(sweep.plan(config), config.shard_index, config.shard_count)
        where = f" in shard {config.shard_index}/{config.shard_count}" if config.shard_count > 1 else ""
        print(f"{config.name}: {len(runs)} run(s){where} -> {sweep.sweep_dir(config)}")
        states = []
        for run in sorted(runs, key=sweep.grid_order):  # as summary.md lists them: x=4 before x=16
            states.append(state := run.state())
            print(f"  {state:11s} {run.run_id}{_why(run, state)}")
        counts = {s: states.count(s) for s in ("completed", "failed", "timed_out", "interrupted", "running", "pending") if s in states}
        left = len(states) - counts.get("completed", 0) - counts.get("running", 0)
        print(", ".join(f"{n} {s}" for s, n in counts.items()) + (f"; `{_rerun_command(args)}` runs the {left} not completed" if left else ""))
        return 0
    def terminated(signum: int, _frame: object) -> None:
        raise sweep.SweepTerminated(signum)

    # SIGTERM (a timeout, `systemctl stop`, a cancelled CI job) or SIGHUP (the ssh session or terminal
    # that started it closed) would end the process on the spot: no line in the log saying so, and a
    # summary still showing the abandoned runs as running (or none at all, on a first invocation).
    handled = (signal.SIGTERM, signal.SIGHUP) if hasattr(signal, "SIGHUP") else (signal.SIGTERM,)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        # A signal already ignored stays ignored: `nohup vlm-lab sweep ...` must survive its terminal.
        previous = {signum: signal.signal(signum, terminated) for signum in handled if signal.getsignal(signum) != signal.SIG_IGN}
    try:
        # The summary's command for the runs without a result: every shard's, so no --shard.
        with flags_in_config_errors("runs_dir", "run_timeout"):  # run_sweep says runs_dir='DIR', as a caller passes it
            report = sweep.run_sweep(
                config, progress=not args.quiet, command=_rerun_command(args, shard=False),
                run_timeout_from=sweep.RUN_TIMEOUT_FROM_FILE if args.run_timeout is None else "--run-timeout",
            )  # fmt: skip
    except sweep.SweepLockedError as e:
        print(f"already running: {e}", file=sys.stderr)
        return e.exit_code
    except (KeyboardInterrupt, sweep.SweepTerminated) as e:
        signum = e.args[0] if isinstance(e, sweep.SweepTerminated) else signal.SIGINT
        why = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated (SIGTERM)"}.get(
            signum, f"terminated ({signal.Signals(signum).name}: the terminal or session that started it closed; "
            "run sweeps under cron, systemd, nohup or tmux)"
        )
        # At once: the threads of runs abandoned by a second Ctrl-C would hold a normal exit until
        # their notebooks finish. Their kernels go first, with their socket folders and connection files,
        # which nothing would remove after os._exit (ipykernel would notice its parent gone a second later).
        # The line below is the log's last: what those threads would still log (papermill reading a notebook's
        # parameters, nbclient finding its kernel dead) is dropped.
        import logging

        from vlm_lab import sweep_kernel_dirs, sweep_papermill

        logging.disable(logging.CRITICAL)
        sweep_papermill.kill_kernels()
        sweep_kernel_dirs.remove_own()
        # No report follows: the log's reader is told where each run's state is (once run_sweep has written it).
        summary = sweep.sweep_dir(config) / "summary.md"
        where = f" (each run's state: {summary})" if summary.is_file() else ""
        print(f"{why}; completed runs are kept, and a re-run runs the rest{where}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(128 + signum)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(report.describe())
    return report.exit_code
