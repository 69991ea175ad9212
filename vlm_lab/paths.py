"""Where the project root is, so relative paths mean the same thing everywhere.

``make demo`` and papermill run notebooks with the working directory at the
repository root; JupyterLab starts a notebook's kernel in ``notebooks/``. The
notebooks call ``enter_project_root()`` first, so that a parameter such as
``checkpoints = "checkpoints/shapes"`` names the same folder in both cases and
the config that is logged and cached stays exactly what the user wrote.
"""

from __future__ import annotations

import os
from pathlib import Path

from vlm_lab.errors import VlmLabError

MARKER = "pyproject.toml"
ROOT_ENV = "VLM_LAB_ROOT"  # set by `make space`; wins over the search when set


class ProjectRootError(VlmLabError, NotADirectoryError):
    """``$VLM_LAB_ROOT`` names something that is not a folder."""


def project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The project root: ``$VLM_LAB_ROOT`` if set, else the nearest folder holding ``pyproject.toml``.

    The search goes upward from ``start`` (default: the working directory). With no
    marker anywhere above, the start folder itself is the root, so a notebook copied
    elsewhere still runs with paths relative to where it was started.

    Raises:
        ProjectRootError: ``$VLM_LAB_ROOT`` is set but is not a folder (also a ``NotADirectoryError``).
    """
    env = os.environ.get(ROOT_ENV)
    if env:
        root = Path(env).expanduser().resolve()
        if not root.is_dir():
            raise ProjectRootError(f"{ROOT_ENV}={env!r} is not a folder; unset it or point it at the project root")
        return root
    here = Path(start if start is not None else Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / MARKER).is_file():
            return folder
    return here


def enter_project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """``chdir`` to ``project_root(start)`` and return it (notebooks call this first)."""
    root = project_root(start)
    os.chdir(root)
    return root
