"""vlm_lab/errors.py: how an error vlm_lab raises on purpose reads where users meet it."""

from __future__ import annotations

import re

from jupyter_client.manager import start_new_kernel

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _error_of(code: str) -> dict:
    """The error message a real IPython kernel sends for ``code``, as JupyterLab shows it."""
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        msg_id = kc.execute(code)
        while True:
            msg = kc.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "error":
                return msg["content"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_user_mistake_in_a_notebook_cell_is_its_message_not_a_traceback(tmp_path):
    """Notebook 04 on a sweep folder that does not exist showed 30 lines of frames from ablation.py around the
    one line that says what to do; a real bug still gets its traceback."""
    error = _error_of(f"from vlm_lab.ablation import Ablation\nAblation.load({str(tmp_path / 'nothing')!r})")
    shown = [ANSI.sub("", line) for line in error["traceback"]]
    assert error["ename"] == "DataError" and "no sweep results in" in error["evalue"]
    assert shown == [f"DataError: {error['evalue']}"], shown
    bug = _error_of("import vlm_lab.errors\n1 / 0")
    assert bug["ename"] == "ZeroDivisionError" and len(bug["traceback"]) > 1
