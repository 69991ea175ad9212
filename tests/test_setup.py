"""The two commands, the Makefile, and the two dependency lists agree."""

import re
import subprocess
import sys
import tomllib

import yaml

from conftest import ROOT


def pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {*project["dependencies"], *project["optional-dependencies"]["dev"]}


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {p for p in pip if not p.startswith("-e")} == pyproject_pins()


def test_torch_pinned_and_no_torchvision():
    pins = pyproject_pins()
    assert "torch==2.13.0" in pins
    assert not any(p.startswith("torchvision") for p in pins)
    assert all("==" in p for p in pins), "every dependency is pinned to the version tested"


def test_readme_opens_with_the_two_commands():
    head = (ROOT / "README.md").read_text().split("## ")[0]
    commands = re.findall(r"^make (\w+)", head, flags=re.M)
    assert commands == ["demo", "test"]


def test_make_targets_named_in_readme_exist():
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`make (\w+)", readme)) | {"demo", "test", "setup", "lab"}
    listed = subprocess.run(["make", "-pRrq", "-C", str(ROOT)], capture_output=True, text=True).stdout
    targets = set(re.findall(r"^([a-z][\w-]*):", listed, flags=re.M))
    assert named <= targets, named - targets


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_cli_help_documents_options():
    run = lambda *a: subprocess.run([sys.executable, "-m", "vlm_lab.cli", *a], capture_output=True, text=True, check=True).stdout
    assert "checkpoints" in run("--help")
    build_help = run("checkpoints", "build", "--help")
    for option in ("--out", "--steps", "--save-every", "--seed"):
        assert option in build_help
