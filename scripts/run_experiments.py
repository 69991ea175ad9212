#!/usr/bin/env python
"""Run the experiment sweeps, for cron or a systemd timer: a thin wrapper of `vlm-lab sweep`.

    scripts/run_experiments.py                         # every sweeps/*.yaml, one after another
    scripts/run_experiments.py sweeps/shapes-ablation.yaml --jobs 2 --quiet

The options are passed to each `vlm-lab sweep`. One sweep never stops the others: an
invalid sweep file (or a crash) is reported and the next file runs. Each file's output
follows a timed line naming it ("... sweep file sweeps/a.yaml (1 of 3)"). The exit code is the
worst of the sweeps': 0 all completed, 1 some run failed (or a sweep crashed), 75 a sweep
(or some of its runs) was already running in another invocation, 2 an invalid sweep file,
74 a sweep could not write its files (a full disk).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from vlm_lab.cli import main
from vlm_lab.cli.sweep import add_sweep_options
from vlm_lab.sweep import log_line

MEANINGS = {1: "some run failed", 2: "invalid sweep file, nothing ran", 74: "could not write its files (disk full?); stopped", 75: "already running elsewhere (the sweep, or some of its runs)", 129: "terminated (SIGHUP: its terminal closed)", 130: "interrupted", 143: "terminated (SIGTERM)"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_experiments.py", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("sweep_files", nargs="*", metavar="SWEEP.yaml", help="sweep files, run in this order (default: every sweeps/*.yaml)")
    add_sweep_options(parser)
    return parser


def run(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)  # checks the options once, before any sweep runs
    options = [a for a in argv if a not in args.sweep_files]
    files = args.sweep_files or sorted(str(p) for p in Path("sweeps").glob("*.y*ml"))
    if not files:
        print("no sweep files given and none in sweeps/; pass SWEEP.yaml or add one to sweeps/", file=sys.stderr)
        return 2
    codes: dict[str, int] = {}
    for i, file in enumerate(files, 1):
        # In a night's log, what follows is this file's: an error such as "notebook 'x.ipynb' not found"
        # names no sweep file, and the reports name the runs folder, not the file.
        log_line(f"sweep file {file} ({i} of {len(files)})")
        try:
            codes[file] = main(["sweep", file, *options])
        except Exception:  # a bug met by one sweep must not cost tonight's others their run
            print(f"error: sweep {file} crashed:", file=sys.stderr)
            traceback.print_exc()
            codes[file] = 1
        if codes[file] == 130:  # Ctrl-C: stop here, not at the next sweep
            break
    bad = {f: c for f, c in codes.items() if c != 0}
    if bad:
        print(f"{len(bad)} of {len(files)} sweep file(s) did not complete:", file=sys.stderr)
        for file, code in bad.items():
            print(f"  {file}: exit {code} ({MEANINGS.get(code, 'failed')})", file=sys.stderr)
    return max(codes.values(), key=lambda c: (c not in (0, 75), c))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
