#!/usr/bin/env python
"""papermill's own command line, with the kernel on unix sockets of its own.

    scripts/run_notebook.py notebooks/02_compare_checkpoints.ipynb runs/demo/02_compare_checkpoints.ipynb \\
        -p checkpoints checkpoints/shapes -p output_dir runs/demo

Every papermill option works as it does there (``--help``). The one difference: the kernel
talks over private unix sockets, not TCP on localhost, so no other user of the machine can
listen in and ipykernel has no "running over TCP without encryption" warning to print
(``vlm_lab.sweep_papermill.kernel_transport``; sweeps run their notebooks the same way).
``make demo`` uses it. On systems without unix sockets it is papermill as it comes.
"""

from __future__ import annotations

import functools

import papermill.cli

from vlm_lab.sweep_papermill import kernel_transport


HELP = """papermill, with the kernel on private unix sockets instead of TCP on localhost (vlm_lab's
    make demo and sweeps run notebooks this way); every papermill option below works as there.

    """


def main() -> None:
    with kernel_transport() as options:  # the socket folder is removed however papermill exits
        # papermill's CLI calls its module's execute_notebook; give it the kernel options it cannot take
        papermill.cli.execute_notebook = functools.partial(papermill.cli.execute_notebook, **options)
        papermill.cli.papermill.help = HELP + papermill.cli.papermill.help  # --help says how this differs
        papermill.cli.papermill.main(prog_name="run_notebook.py")


if __name__ == "__main__":
    main()
