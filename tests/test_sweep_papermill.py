"""How the sweep's kernel log says a kernel process ended (``sweep_papermill.kernel_end``), and that a
completed run's kernel, shut down, says nothing it was not asked to."""

from __future__ import annotations

import signal

import nbformat
import pytest

from vlm_lab.sweep_papermill import execute, kernel_end


@pytest.mark.parametrize("code, said", [
    (0, "exited with status 0"),
    (3, "exited with status 3"),
    (-signal.SIGKILL, "was killed by SIGKILL (most often the out-of-memory killer"),
    (-signal.SIGSEGV, "was killed by SIGSEGV"),
    # a real-time signal is valid but has no name in signal.Signals: it raised ValueError in the kernel's cleanup
    (-(signal.SIGRTMIN + 6), f"was killed by signal {signal.SIGRTMIN + 6}"),
])
def test_how_a_kernel_ended_is_said_for_every_exit_status(code, said):
    assert kernel_end(code).startswith(said)


# Papermill's last request, after the last cell, is a kernel_info whose reply it takes and then shuts the
# kernel down, while ipykernel may still be in that request's handler, where a SIGINT raises KeyboardInterrupt.
# Here the handler lingers after its reply (as a main thread that other threads keep from the GIL does).
LINGERING_KERNEL_INFO = """\
import time
kernel = get_ipython().kernel
reply = kernel.shell_handlers["kernel_info_request"]

async def reply_then_linger(*args):
    await reply(*args)
    time.sleep(1.5)

kernel.shell_handlers["kernel_info_request"] = reply_then_linger
"""


def test_a_completed_runs_kernel_is_shut_down_without_an_interrupt_its_log_would_call_an_error(tmp_path):
    """A completed notebook-02 run's kernel.log held '[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.'
    (1 run in 9): jupyter_client's shutdown sent SIGINT first, and it landed in papermill's last request."""
    notebook = tmp_path / "nb.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(LINGERING_KERNEL_INFO)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, notebook)
    log = tmp_path / "kernel.log"

    execute(notebook, tmp_path / "out.ipynb", kernel_log=log, progress_bar=False, log_output=False)

    said = log.read_text() if log.exists() else ""
    assert "KeyboardInterrupt" not in said and "ERROR" not in said, said
