"""scripts/run_notebook.py: papermill's command line, with the kernel on private sockets and the
parameters checked against the notebook's `parameters` cell, as a sweep checks them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from test_sweep import write_notebook

ROOT = Path(__file__).resolve().parents[1]


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "run_notebook.py"), "--no-progress-bar", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.mark.parametrize(
    "args, error",
    [
        # a typo: papermill warned 'Passed unknown parameter' and ran the notebook with the default
        (["nb.ipynb", "out.ipynb", "-p", "x", "2", "-p", "fail_onn", "2"],
         "Error: nb.ipynb has no parameter(s) fail_onn in its `parameters` cell (it declares: fail_on, output_dir, "),
        (["nb.ipynb", "out.ipynb", "-y", "{x: 2, tga: a}"], "Error: nb.ipynb has no parameter(s) tga in its"),
        (["missing.ipynb", "out.ipynb"], "Error: no notebook at 'missing.ipynb' (paths are relative to "),
        (["nb.ipynb", "runs/demo/out.ipynb"], "Error: the output folder 'runs/demo' does not exist; create it (mkdir -p runs/demo)"),
        (["nb.ipynb", "my runs/out.ipynb"], "does not exist; create it (mkdir -p 'my runs')"),  # a command that works when pasted
    ],
)
def test_bad_input_is_one_error_before_anything_runs(tmp_path, args, error):
    write_notebook(tmp_path / "nb.ipynb")
    done = _run(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert error in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "out.ipynb").exists()  # nothing ran


def test_declared_parameters_run_without_papermills_parameter_warnings(tmp_path):
    write_notebook(tmp_path / "nb.ipynb")
    done = _run(tmp_path, "nb.ipynb", "out.ipynb", "-p", "x", "2", "-p", "output_dir", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    assert '"accuracy": 0.2' in (tmp_path / "o" / "summary.json").read_text()  # x=2 reached the notebook
    # papermill's parser misread the cell's `# 0 = no sleep` comment; the parameters are checked here
    assert "Unable to parse line" not in done.stderr and "unknown parameter" not in done.stderr, done.stderr


def test_a_completed_notebooks_kernel_is_shut_down_without_an_interrupt_that_prints_an_error(tmp_path):
    """make demo printed '[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.' after notebook 04 completed:
    jupyter_client's shutdown sends SIGINT first, landing in papermill's last request; sweeps' kernels were spared it."""
    import nbformat

    from test_sweep_papermill import LINGERING_KERNEL_INFO

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(LINGERING_KERNEL_INFO)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "nb.ipynb")
    done = _run(tmp_path, "nb.ipynb", "out.ipynb")
    assert done.returncode == 0, done.stderr
    assert "KeyboardInterrupt" not in done.stderr and "ERROR" not in done.stderr, done.stderr


@pytest.mark.parametrize("signum, code, said", [(15, 143, "terminated (SIGTERM)"), (2, 130, "interrupted")])  # SIGTERM, SIGINT
def test_stopped_says_so_and_leaves_no_kernel_or_socket_folder(tmp_path, signum, code, said):
    """SIGTERM (`timeout`, `docker stop`, a cancelled CI job) ended the script on the spot: exit -15, nothing said,
    its kernel's socket folder ($TMPDIR/vlm-lab-kernel-*) and connection file left in the temp folder."""
    import os
    import shlex
    import time

    import nbformat

    started = tmp_path / "started"
    cell = f"import os, time\nopen({str(started)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "nb.ipynb")
    (tmp_path / "tmp").mkdir()
    args = [str(ROOT / "scripts" / "run_notebook.py"), "--no-progress-bar", "nb.ipynb", "out.ipynb"]
    proc = subprocess.Popen([sys.executable, *args], cwd=tmp_path, env={**os.environ, "TMPDIR": str(tmp_path / "tmp")},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120  # safety net, not a timing
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started.exists(), proc.communicate(timeout=60)[1]
    proc.send_signal(signum)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == code, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{said}; ") and "Traceback" not in err, err
    assert last.endswith(shlex.join(args)), last  # the command to run it again
    assert os.listdir(tmp_path / "tmp") == [], "the kernel's socket folder or connection file was left"
    kernel = int(started.read_text())
    while time.monotonic() < deadline:  # the kernel goes with its notebook
        try:
            os.kill(kernel, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(kernel, 9)
        raise AssertionError("the kernel outlived the run")
