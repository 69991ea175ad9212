"""`vlm-lab --help` and each command's help: what a newcomer reads first agrees with the code."""

from __future__ import annotations

import shlex
import subprocess
import sys

from vlm_lab.cli import START_HERE, build_parser


def help_text(*command: str) -> str:
    done = subprocess.run([sys.executable, "-m", "vlm_lab.cli", *command, "--help"], capture_output=True, text=True, check=True)
    return " ".join(done.stdout.split())  # argparse wraps at the terminal's width


def test_the_start_here_commands_parse_and_are_in_the_top_level_help():
    assert "start here" in help_text()
    lines = [l.strip().split("  ")[0] for l in START_HERE.splitlines() if l.startswith("  vlm-lab ")]
    assert len(lines) >= 5
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert args.func, line


def test_memory_help_names_every_aspect_the_estimate_tries():
    from vlm_lab.memory_shapes import ASPECTS

    text = help_text("memory")
    named = {f"{max(h, w)}:{min(h, w)}" for h, w in ASPECTS if h != w}
    assert "square" in text and "either way up" in text
    assert not {a for a in named if a not in text}, f"--image-size help lacks {sorted(a for a in named if a not in text)}"


def exit_codes(text: str) -> set[int]:
    """The numbers the help's exit-code part lists, whole ("0 " inside "130 " is not a 0)."""
    import re

    return set(map(int, re.findall(r"(?<![\d.])(\d{1,3})(?= )", text.split("Exit codes:")[1])))


def test_compare_and_memory_help_give_every_exit_code():
    assert exit_codes(help_text("memory")) >= {0, 1, 2, 3, 130}
    assert exit_codes(help_text("compare")) >= {0, 2, 130}


def test_run_notebook_help_says_how_it_differs_from_papermill():
    from conftest import ROOT

    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "run_notebook.py"), "--help"], capture_output=True,
                          text=True, check=True)
    text = " ".join(done.stdout.split())
    assert "private unix sockets" in text and "--parameters" in text  # ours first, then papermill's own options


def test_sweep_help_gives_every_exit_code_the_readme_gives():
    """The README lists 0, 1, 2, 74, 75, 129, 130 and 143; `vlm-lab sweep --help` lacked the signals' three."""
    import re
    from pathlib import Path

    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    bullet = readme.split("- **Exit codes**: 0 all runs completed")[1].split("\n- ")[0]
    codes = {0, 1, *map(int, re.findall(r"\b(\d{1,3}) (?:an invalid|the sweep|Ctrl-C|terminated|SIGHUP)", bullet))}
    assert codes == {0, 1, 2, 74, 75, 129, 130, 143}
    listed = set(map(int, re.findall(r"\b(\d{1,3}) ", help_text("sweep").split("exit codes:")[1])))
    assert codes <= listed, sorted(codes - listed)
