"""README.md is what a newcomer relies on: its first screen, links, commands, options and snippets work.

The two commands and the Makefile targets are checked in test_setup.py; this file checks the rest of
what the README shows against the code, so a renamed flag or a stale snippet fails here first.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

README = (ROOT / "README.md").read_text()

# Options of other tools the README shows (pip, systemctl, hf download, Slurm): not vlm_lab's to check.
OTHER_TOOLS_OPTIONS = {"--index-url", "--force-reinstall", "--user", "--now", "--include", "--exclude", "--array", "--revision", "--include-synced"}  # wandb sync


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", README, flags=re.M | re.S)


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation but '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"`", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def all_parsers() -> list[argparse.ArgumentParser]:
    """`vlm-lab` with every (nested) subcommand, and the scripts' parsers."""
    from vlm_lab.cli import build_parser

    found, todo = [], [build_parser()]
    while todo:
        parser = todo.pop()
        found.append(parser)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    for script in ("run_experiments", "publish_space"):
        spec = importlib.util.spec_from_file_location(f"readme_{script}", ROOT / "scripts" / f"{script}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found.append(module.build_parser())
    return found


def test_first_screen_gives_the_two_commands_what_they_do_and_how_long():
    first_screen = "\n".join(README.splitlines()[:30])
    for target in ("demo", "test"):
        line = next((l for l in first_screen.splitlines() if l.startswith(f"make {target}")), None)
        assert line, f"`make {target}` is not on the README's first screen"
        assert re.search(r"\d+ ?min", line), f"`make {target}` does not say how long it takes: {line!r}"
    assert "2 cores" in first_screen or "2 CPU cores" in first_screen, "the timings do not say on what machine"


def test_table_of_contents_links_resolve():
    headings = {github_anchor(h) for h in re.findall(r"^#{2,4} (.+)$", README, flags=re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", README)
    assert len(links) >= 5, "no table of contents"
    assert not set(links) - headings, f"links to no heading: {sorted(set(links) - headings)}"


def test_every_vlm_lab_command_shown_parses():
    from vlm_lab.cli import build_parser

    shown = [l for block in code_blocks("bash") for l in block.splitlines() if l.startswith("vlm-lab ")]
    shown += [c for c in re.findall(r"`(vlm-lab [^`]+)`", README) if "..." not in c]
    assert len(shown) >= 10
    commands = {c for p in all_parsers()[:1] for a in p._actions if isinstance(a, argparse._SubParsersAction) for c in a.choices}
    for line in shown:
        argv = shlex.split(line, comments=True)[1:]
        if "--help" in argv:  # `vlm-lab --help`, `vlm-lab COMMAND --help`: the command, if named, exists
            assert all(a in commands or a.isupper() for a in argv if a != "--help"), line
            continue
        if len(argv) == 1:  # a command named in a sentence (`vlm-lab sweep` runs ...)
            assert argv[0] in commands, f"the README names a command vlm-lab lacks: {line}"
            continue
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"the README shows a command vlm-lab refuses: {line}")
        assert getattr(args, "func", None), f"the README shows a command that does nothing: {line}"


def test_every_option_named_is_an_option_of_a_command_here():
    options = {o for p in all_parsers() for a in p._actions for o in a.option_strings}
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", README))
    unknown = named - options - OTHER_TOOLS_OPTIONS
    assert not unknown, f"the README names options no command here has: {sorted(unknown)}"


def test_every_vlm_lab_variable_named_is_read_somewhere():
    source = "".join(p.read_text() for d in ("vlm_lab", "space", "scripts") for p in (ROOT / d).rglob("*.py"))
    named = set(re.findall(r"\bVLM_LAB_[A-Z_]*[A-Z]\b", README))
    unread = sorted(v for v in named if not re.search(rf"\b{v}\b", source))
    assert named and not unread, f"the README names variables nothing reads: {unread}"


def test_the_sweep_file_shown_is_the_example_sweep():
    shown = [yaml.safe_load(b) for b in code_blocks("yaml")]
    assert yaml.safe_load((ROOT / "sweeps" / "shapes-ablation.yaml").read_text()) in shown


@pytest.mark.slow
def test_python_snippets_run_as_shown(tiny_dir, tmp_path):
    """Each ```python block, pasted into a fresh interpreter in a folder laid out like the repo."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "shapes").symlink_to(tiny_dir)
    (tmp_path / "space").symlink_to(ROOT / "space")
    env = {**os.environ, "MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1"}
    blocks = code_blocks("python")
    # the /compare_batch client needs a running Space: test_space.py calls it exactly so
    runnable = [b for b in blocks if "gradio_client" not in b]
    assert len(runnable) >= 3
    for block in runnable:
        done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"README snippet fails:\n{block}\n{done.stderr[-2000:]}"
