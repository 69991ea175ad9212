#!/usr/bin/env python
"""papermill's own command line, with the kernel on unix sockets of its own.

    scripts/run_notebook.py notebooks/02_compare_checkpoints.ipynb runs/demo/02_compare_checkpoints.ipynb \\
        -p checkpoints checkpoints/shapes -p output_dir runs/demo

Every papermill option works as it does there (``--help``). The differences: the kernel
talks over private unix sockets, not TCP on localhost, so no other user of the machine can
listen in and ipykernel has no "running over TCP without encryption" warning to print
(``vlm_lab.sweep_papermill.kernel_transport``; sweeps run their notebooks the same way); and a
parameter the notebook's ``parameters`` cell does not declare (``-p num_sample 8``, a typo) is
an error before anything runs, as in a sweep, where papermill warns and runs the notebook with
its default. A missing input notebook or output folder is one line, exit 2, not a traceback.
``make demo`` uses it. On systems without unix sockets the kernel uses TCP, as papermill's does.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Any

import click
import papermill.cli

from vlm_lab.errors import SweepError
from vlm_lab.signals import Terminated, terminate_raises
from vlm_lab.sweep_checks import notebook_parameters
from vlm_lab.sweep_papermill import kernel_transport, quiet


HELP = """papermill, with the kernel on private unix sockets instead of TCP on localhost (vlm_lab's
    make demo and sweeps run notebooks this way), and parameters the notebook does not declare
    refused; every papermill option below works as there.

    """


def checked(execute: Any) -> Any:
    """papermill's ``execute_notebook``, with a kernel of its own (``kernel_transport``), after checking a local input
    notebook, its parameters and the output folder (click.UsageError: one line, exit 2)."""

    def execute_notebook(input_path: str, output_path: str, parameters: dict | None = None, **kw: Any) -> Any:
        if _local(input_path):
            if not os.path.isfile(input_path):
                raise click.UsageError(f"no notebook at {input_path!r} (paths are relative to {os.getcwd()})")
            try:
                declared = notebook_parameters(input_path)
            except SweepError as e:
                if "no cell tagged `parameters`" not in str(e):
                    raise click.UsageError(str(e)) from None
                declared = None  # papermill adds the parameters at the top, as it says
            unknown = sorted(set(parameters or {}) - set(declared or parameters or {}))
            if unknown:
                raise click.UsageError(
                    f"{input_path} has no parameter(s) {', '.join(unknown)} in its `parameters` cell (it declares: "
                    f"{', '.join(sorted(declared)) or 'none'}); papermill would run it with the defaults"
                )
        folder = os.path.dirname(output_path or "")
        if _local(output_path or "-") and folder and not os.path.isdir(folder):
            raise click.UsageError(f"the output folder {folder!r} does not exist; create it (mkdir -p {shlex.quote(folder)})")
        try:
            # The socket folder is made and removed in here, where a stop is reported: its kernel, stopped while
            # starting (which nbclient does not clean up), is killed and its connection file goes with the folder.
            with kernel_transport() as kernel_options:
                return execute(input_path=input_path, output_path=output_path, parameters=parameters, **kw, **kernel_options)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM as Terminated: the kernel is shut down by now
            _say_stopped(e, output_path)
            # Not click's "Aborted!" (exit 1), nor SystemExit: the interpreter's teardown then collected the event
            # loop the stop cut short and printed "Exception ignored in: <function BaseEventLoop.__del__ ...>" with a
            # traceback under the line above (1 stop in ~40 under load). The kernel and its files are gone by now.
            sys.stdout.flush()
            os._exit(getattr(e, "exit_code", 130))

    return execute_notebook


def _say_stopped(e: KeyboardInterrupt, output_path: str | None) -> None:
    """One line: how it stopped, what is kept, and the command that runs it again."""
    why = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
    kept = f"{output_path} holds the notebook as far as it ran" if output_path and _local(output_path) else "stopped"
    command = shlex.join(sys.argv if os.access(sys.argv[0], os.X_OK) else ["python", *sys.argv])
    print(f"{why}; {kept}, and a re-run reuses what its cells cached (a comparison's finished batches): {command}",
          file=sys.stderr, flush=True)


def _local(path: str) -> bool:
    """A local file path, not stdin/stdout ("-") or a URL (s3://, http://) papermill's handlers read."""
    return path != "-" and "://" not in path


def main() -> None:
    # quiet(): papermill's warnings on parameters, checked here (its parser misreads `# 0 = all` comments)
    # terminate_raises: SIGTERM (timeout, docker stop) shuts the kernel down and removes its socket folder, as Ctrl-C does
    with terminate_raises(), quiet():
        # papermill's CLI calls its module's execute_notebook; give it the kernel options it cannot take
        papermill.cli.execute_notebook = checked(papermill.cli.execute_notebook)
        papermill.cli.papermill.help = HELP + papermill.cli.papermill.help  # --help says how this differs
        papermill.cli.papermill.main(prog_name="run_notebook.py")


if __name__ == "__main__":
    main()
