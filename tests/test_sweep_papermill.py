"""How the sweep's kernel log says a kernel process ended (``sweep_papermill.kernel_end``)."""

from __future__ import annotations

import signal

import pytest

from vlm_lab.sweep_papermill import kernel_end


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
