"""Where the project root is, so relative paths mean the same thing everywhere.

``make demo`` and papermill run notebooks with the working directory at the
repository root; JupyterLab starts a notebook's kernel in ``notebooks/``. The
notebooks call ``enter_project_root()`` first, so that a parameter such as
``checkpoints = "checkpoints/shapes"`` names the same folder in both cases and
the config that is logged and cached stays exactly what the user wrote.
"""

from __future__ import annotations

import difflib
import os
import tempfile
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


def nearest_existing(path: Path) -> Path:
    """``path`` itself, or the nearest of its parents that exists (``path`` is made absolute)."""
    parent = Path(os.path.abspath(path))
    while not os.path.exists(parent) and parent != parent.parent:  # a folder it may not look in is as good as missing
        parent = parent.parent
    return parent


def nearby(path: Path, *, limit: int = 8) -> str:
    """What exists near a missing ``path``, for an error message: the entries of its nearest
    existing folder, the names closest to ``path``'s first."""
    parent = nearest_existing(path)
    if parent.is_file():
        return f"{parent} is a file"
    children = sorted(c.name for c in parent.iterdir() if not c.name.startswith(".")) if parent.is_dir() else []
    if not children:
        return f"{parent} is empty"
    close = difflib.get_close_matches(path.name, children, n=3, cutoff=0.5)
    rest = [c for c in children if c not in close]
    shown = close + rest[: max(0, limit - len(close))]
    return f"found in {parent}: {', '.join(shown)}" + (" ..." if len(children) > len(shown) else "")


def probe_write(folder: Path) -> None:
    """Write a file in ``folder`` and remove it, raising the ``OSError`` that stops it (``EROFS``, ``EACCES``, ...).

    A write, not ``os.access``: root passes that wherever chmod forbids, and it can pass where an ACL, a
    read-only bind mount or a network filesystem refuses the write itself."""
    with tempfile.TemporaryFile(dir=folder, prefix=".vlm-lab-probe-"):  # a name of its own: others may be probing too
        pass
