#!/usr/bin/env python
"""Run the experiment sweeps, for cron or a systemd timer: a thin wrapper of `vlm-lab sweep`.

    scripts/run_experiments.py                         # every sweeps/*.yaml, one after another
    scripts/run_experiments.py sweeps/shapes-ablation.yaml --jobs 2 --quiet

Options after the sweep files are passed to each `vlm-lab sweep`. The exit code is the
worst of the sweeps': 0 all completed, 1 some run failed, 75 a sweep was already running
(another invocation holds its lock), 2 an invalid sweep file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vlm_lab.cli import main


def run(argv: list[str]) -> int:
    files = [a for a in argv if a.endswith((".yaml", ".yml"))]
    options = [a for a in argv if a not in files]
    if not files:
        files = sorted(str(p) for p in Path("sweeps").glob("*.y*ml"))
    if not files:
        print("no sweep files given and none in sweeps/", file=sys.stderr)
        return 2
    codes = [main(["sweep", f, *options]) for f in files]
    return max(codes, key=lambda c: (c not in (0, 75), c))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
