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


def constraints():
    """constraints.txt as {normalized name: version}."""
    lines = (line.split("#")[0].strip() for line in (ROOT / "constraints.txt").read_text().splitlines())
    return {canonical(name): version for name, version in (line.split("==") for line in lines if line)}


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def test_constraints_hold_pyprojects_pins():
    """A pin changed in pyproject.toml without `make lock` would make pip refuse to install (conflicting constraint)."""
    locked = constraints()
    for pin in pyproject_pins():
        name, version = pin.split("==")
        assert locked.get(canonical(name)) == version, f"{pin} is {locked.get(canonical(name))} in constraints.txt: run make lock"


def test_setup_installs_with_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    setup = makefile.split("$(STAMP): pyproject.toml constraints.txt\n")[1].split("\n\n")[0]
    installs = [line for line in setup.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert installs and all("-c constraints.txt" in line for line in installs), installs


def test_the_venv_holds_the_locked_versions():
    """What `make setup` installed is what constraints.txt says (CI's fresh venv included)."""
    from importlib.metadata import PackageNotFoundError, version

    wrong = {}
    for name, locked in constraints().items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        if installed is None or installed.split("+")[0] != locked:
            wrong[name] = (installed, locked)
    assert not wrong, f"installed vs constraints.txt: {wrong}; run make setup (or make lock after changing pyproject.toml)"


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


def run_make_demo(tmp_path, env):
    """`make demo` with the Makefile as written, its venv's programs replaced by ones that record WANDB_MODE."""
    import os
    import shutil

    (tmp_path / "Makefile").write_text((ROOT / "Makefile").read_text())
    for name in ("pyproject.toml", "constraints.txt"):
        (tmp_path / name).touch()
    stamp = tmp_path / "stamp"
    stamp.touch()
    os.utime(stamp, (2**31, 2**31))  # newer than its prerequisites: nothing is installed
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for program in ("python", "vlm-lab"):
        (bin_dir / program).write_text(f'#!/bin/sh\necho "${{WANDB_MODE-unset}}" >> "{tmp_path}/modes"\n')
        (bin_dir / program).chmod(0o755)
    make_env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "MAKE"))} | env
    done = subprocess.run([shutil.which("make"), "demo", f"BIN={bin_dir}", f"STAMP={stamp}"], cwd=tmp_path,
                          env=make_env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return set((tmp_path / "modes").read_text().split())


def test_make_demo_logs_to_wandb_offline_even_with_a_key(tmp_path):
    """The README's first screen: the demo logs W&B offline and needs no network, also for a user whose shell
    exports WANDB_API_KEY (vlm_lab.tracking would otherwise log the demo's runs online to their account)."""
    assert run_make_demo(tmp_path, {"WANDB_API_KEY": "x" * 40}) == {"offline"}


def test_make_demo_keeps_a_wandb_mode_you_set(tmp_path):
    assert run_make_demo(tmp_path, {"WANDB_API_KEY": "x" * 40, "WANDB_MODE": "online"}) == {"online"}
