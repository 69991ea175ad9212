"""A `vlm-lab sweep` or scripts/run_notebook.py (make demo) stopped by SIGTERM while its kernel starts (between
launching it and its first reply) leaves nothing behind: no connection file (tmp*.json, kernel-*.json), no socket
folder, no kernel process, and no kernel traceback on the terminal. Real processes, real kernels, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import pytest
import yaml

from test_sweep import write_notebook

ROOT = Path(__file__).resolve().parents[1]
SAFETY_S = 120  # a safety net, not a timing


def _notebook(path: Path, cell: str) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _everything_under(*folders: Path) -> list[str]:
    return sorted(str(Path(d, f)) for folder in folders for d, _, files in os.walk(folder) for f in files) + sorted(
        str(Path(d, sub)) for folder in folders for d, subs, _ in os.walk(folder) for sub in subs)


def _processes_marked(mark: str) -> list[int]:
    """Live processes (kernels) whose environment holds ``mark``: what a stopped run left running."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if mark.encode() in environ and state != "Z" and int(pid) != os.getpid():
            found.append(int(pid))
    return found


# Points of the start window, each seen in the temp folder: the kernel's socket folder made, its connection
# file written (the kernel is being launched), its first socket bound (the kernel runs, no reply yet).
POINTS = {
    "socket folder": lambda names: any("vlm-lab-kernel-" in n for n in names),
    "connection file": lambda names: any(n.endswith(".json") for n in names),
    "first socket": lambda names: any(os.path.basename(n).startswith("k-") for n in names),
}


def _stop_while_starting(tmp_path: Path, command: list[str], point: str) -> tuple[int, str, list[str]]:
    """Run ``command`` with its own temp and runtime folders, SIGTERM it at ``point``; returns its exit status,
    stderr and what it left (files and folders, kernel processes still alive)."""
    tmp, runtime = tmp_path / "tmp", tmp_path / "runtime"
    tmp.mkdir()
    runtime.mkdir()
    mark = f"VLM_LAB_TEST_{uuid.uuid4().hex}"
    env = {**os.environ, "TMPDIR": str(tmp), "JUPYTER_RUNTIME_DIR": str(runtime), mark: "1"}
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + SAFETY_S
    while proc.poll() is None and time.monotonic() < deadline and not POINTS[point](_everything_under(tmp, runtime)):
        time.sleep(0.002)
    assert proc.poll() is None, f"it ended before the {point} appeared: {proc.communicate()[1]}"
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=SAFETY_S)[1]
    while _processes_marked(mark) and time.monotonic() < deadline:  # a kernel a moment from its end is not left
        time.sleep(0.1)
    alive = _processes_marked(mark)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return proc.returncode, err, _everything_under(tmp, runtime) + [f"kernel process {pid}" for pid in alive]


@pytest.mark.parametrize("point", list(POINTS))
def test_run_notebook_stopped_while_its_kernel_starts_leaves_nothing(tmp_path, point):
    """The connection file (in $TMPDIR) and the kernel were left, and the kernel, its socket folder removed under
    it, printed a ZMQError traceback after the 'terminated' line: nbclient starts the kernel outside its cleanup."""
    _notebook(tmp_path / "nb.ipynb", "x = 1")
    command = [sys.executable, str(ROOT / "scripts" / "run_notebook.py"), "--no-progress-bar", "nb.ipynb", "out.ipynb"]
    code, err, left = _stop_while_starting(tmp_path, command, point)
    assert code == 143, err
    assert err.strip().splitlines()[-1].startswith("terminated (SIGTERM); "), err
    assert "Traceback" not in err and "ZMQError" not in err, err
    assert left == [], f"left behind: {left}"


@pytest.mark.parametrize("point", list(POINTS))
def test_sweep_stopped_while_its_kernels_start_leaves_nothing(tmp_path, point):
    """The sweep exits at once on SIGTERM (os._exit): its runs' connection files and socket folders stayed in $TMPDIR."""
    write_notebook(tmp_path / "nb.ipynb")
    spec = {"name": "t", "notebook": "nb.ipynb", "parameters": {}, "grid": {"x": [1, 2]}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    command = [sys.executable, "-m", "vlm_lab.cli", "sweep", "t.yaml", "--jobs", "2"]
    code, err, left = _stop_while_starting(tmp_path, command, point)
    assert code == 143, err
    assert err.strip().splitlines()[-1].startswith("terminated (SIGTERM); "), err
    assert "Traceback" not in err, err
    assert left == [], f"left behind: {left}"
