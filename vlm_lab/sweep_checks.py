"""A sweep checked against its notebook before anything runs.

Every grid point would otherwise start a kernel only to fail in its first cells: a
parameter the notebook's ``parameters`` cell does not declare, a value of another type
than the one it declares (``max_new_tokens: "8"``), a kernel not installed here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from vlm_lab.config import SweepConfig, did_you_mean
from vlm_lab.errors import SweepError


def read_notebook(notebook: str | os.PathLike[str], text: str | None = None) -> Any:
    """The notebook as nbformat reads it (version 4); ``text``: its content, when already read.

    Raises:
        SweepError: it is missing, a folder, or not a notebook (empty, a Git LFS pointer, merge
            conflict markers, cut short): one line naming the file and the fix, exit 2, instead
            of nbformat's traceback (exit 1, which a CI job reads as 'a run failed').
    """
    import nbformat

    where = f"notebook {os.fspath(notebook)!r}"
    try:
        if text is None:
            text = Path(notebook).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SweepError(f"{where} not found (paths are relative to {os.getcwd()})") from None
    except IsADirectoryError:
        raise SweepError(f"{where} is a folder; give the .ipynb file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError(f"cannot read {where}: {e}") from None
    if not text.strip():
        why = "is empty (a save cut short?)"
    elif text.startswith("version https://git-lfs"):
        why = "is a Git LFS pointer, not the notebook: run `git lfs pull`"
    elif re.search(r"^(<{7}|>{7}) ", text, re.M):
        why = "holds merge conflict markers (<<<<<<<): resolve the merge conflict (e.g. `nbdime mergetool`)"
    else:
        try:
            return nbformat.reads(text, as_version=4)
        except Exception as e:  # noqa: BLE001 - NotJSONError, NBFormatError, ValidationError, AttributeError ...
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            why = f"is not a notebook nbformat can read ({first[:200]})"
    raise SweepError(f"{where} {why}; restore it (git checkout -- {os.fspath(notebook)}) or save it again from Jupyter")


def notebook_parameters(notebook: str | os.PathLike[str]) -> dict[str, str]:
    """``{name: default source}`` of the notebook's ``parameters`` cell."""
    return {name: default for name, (default, _type) in _declared_parameters(notebook).items()}


def _declared_parameters(notebook: str | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """``{name: (default source, annotation source or "")}`` of the notebook's ``parameters`` cell.

    Python cells are parsed with ``ast``: papermill's ``inspect_notebook`` drops a parameter
    whose ``# help`` comment contains ``=`` (e.g. ``num_samples: int = 96  # 0 = all``).
    Other kernels' notebooks fall back to ``inspect_notebook``.
    """
    import ast

    nb = read_notebook(notebook)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise SweepError(f"{notebook} has no cell tagged `parameters`; tag the cell that holds its parameters")
    source = cells[0].source
    try:
        tree = ast.parse(source)
    except SyntaxError:
        import papermill

        return {name: (p["default"], "") for name, p in papermill.inspect_notebook(str(notebook)).items()}
    declared = {}
    for node in tree.body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        annotation = ast.get_source_segment(source, node.annotation) if isinstance(node, ast.AnnAssign) else ""
        for target in targets:
            if isinstance(target, ast.Name):
                default = ast.get_source_segment(source, node.value) if node.value else ""
                declared[target.id] = (default or "", annotation or "")
    return declared


# What a value must be for a parameter annotated with one of these (other annotations: anything).
_FITS = {
    "int": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    "str": (lambda v: isinstance(v, str), "text"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
}
_KIND_WORDS = {str: "text", bool: "true or false", int: "a whole number", float: "a number", list: "a list",
               dict: "a mapping", type(None): "null"}  # fmt: skip


# An unannotated parameter's type, from its literal default (``flag = True``): an int default takes
# any number (``lr = 1`` swept over 0.5 is meant), None or an expression takes anything.
_DEFAULT_TYPES = {bool: "bool", int: "float", float: "float", str: "str"}


def _default_type(default: str) -> str:
    """The annotation an unannotated parameter's default implies ("" when none is checked)."""
    import ast

    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return ""
    return _DEFAULT_TYPES.get(type(value), "")


def _type_problem(where: str, name: str, value: Any, annotation: str, notebook: str, default: str = "") -> str | None:
    """Why ``value`` does not fit the parameter's annotation, or with none, the type of its literal
    ``default`` (None when it fits, or the type is not checked)."""
    declares = f"declares {name}: {annotation}"
    if not annotation and (annotation := _default_type(default)):
        declares = f"sets {name} = {default} ({_FITS[annotation][1]})"
    if annotation not in _FITS or _FITS[annotation][0](value):
        return None
    kind = _KIND_WORDS.get(type(value), type(value).__name__)
    fix = f"give {_FITS[annotation][1]}"
    if isinstance(value, str) and annotation in ("int", "float", "bool"):
        from vlm_lab.sweep_yaml import read_plain

        # As the sweep file would read it unquoted (YAML 1.2): "8" is 8, "yes" is still text.
        if _FITS[annotation][0](read_plain(value)):
            fix = f"write {value} without quotes"
    elif annotation == "str" and isinstance(value, (int, float, bool)):
        from vlm_lab.sweep_yaml import spell

        fix = f"quote it: {spell(str(value).lower() if isinstance(value, bool) else str(value))}"
    if declares.startswith("sets"):
        fix += f" (or annotate {name} in its parameters cell to take other values)"
    return f"{where}.{name} = {value!r} is {kind}, but {notebook} {declares}; {fix}"


def check_parameters(config: SweepConfig) -> dict[str, str]:
    """Raise before anything runs when the sweep sets a parameter the notebook does not declare,
    or a value whose type is not the one the ``parameters`` cell declares (``int``, ``float``,
    ``str``, ``bool``; an int is a float), or for a parameter without an annotation, the type of its
    literal default (``flag = True``: a sweep's ``flag: 'no'`` would be truthy text).
    Returns ``{name: default source}``."""
    declared = _declared_parameters(config.notebook)
    unknown = sorted((set(config.parameters) | set(config.grid)) - set(declared))
    if unknown:
        raise SweepError(
            f"{config.notebook} has no parameter(s) {', '.join(unknown)} in its `parameters` cell "
            f"(it declares: {', '.join(sorted(declared)) or 'none'}); {hint + ' ' if (hint := did_you_mean(unknown, declared)) else ''}"
            "fix the sweep file or the notebook"
        )
    _check_kernel(config)
    values = [("parameters", k, v) for k, v in config.parameters.items()]
    values += [("grid", k, v) for k, vs in config.grid.items() for v in vs]
    for where, name, value in values:
        default, annotation = declared[name]
        problem = _type_problem(where, name, value, annotation, config.notebook, default)
        if problem:
            raise SweepError(problem)
    return {name: default for name, (default, _type) in declared.items()}


def _check_kernel(config: SweepConfig) -> None:
    """The kernel the runs would start exists here (else every run of the grid would fail on it)."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from papermill.utils import nb_kernel_name

    try:
        name = nb_kernel_name(read_notebook(config.notebook), config.kernel or None)
    except ValueError:  # papermill: the notebook names no kernel and none was given
        raise SweepError(f"{config.notebook} names no kernel; set `kernel: python3` in the sweep file") from None
    manager = KernelSpecManager()
    try:
        manager.get_kernel_spec(name)
    except NoSuchKernel:
        source = "the sweep's `kernel`" if config.kernel else f"{config.notebook}'s kernelspec"
        raise SweepError(
            f"no Jupyter kernel named {name!r} ({source}) here (installed: {', '.join(sorted(manager.find_kernel_specs()))}); "
            f"set `kernel:` in the sweep file to one of those, or install it: python -m ipykernel install --user --name {name}"
        ) from None


def notebook_fingerprint(config: SweepConfig, notebook: Any = None) -> str:
    """sha256 of what the runs execute: the notebook's code cells and the kernel that runs them.

    Part of every run id, so a sweep run again after its notebook (or ``kernel:``) changed makes
    new runs instead of serving results the earlier notebook made. Markdown, outputs, execution
    counts and metadata are left out: saving the notebook in JupyterLab changes nothing. Code is
    compared as written (less trailing spaces), not by syntax tree: the same on every Python
    version, so shards on machines with different Pythons agree on the run ids.
    ``notebook``: the notebook as read (a ``NotebookNode``); default: read ``config.notebook``.
    """
    import hashlib
    import json

    from papermill.utils import nb_kernel_name

    if notebook is None:
        notebook = read_notebook(config.notebook)
    try:
        kernel = nb_kernel_name(notebook, config.kernel or None)
    except ValueError:  # names no kernel: check_parameters says so before anything runs
        kernel = config.kernel
    code = ["\n".join(line.rstrip() for line in c.source.strip().splitlines()) for c in notebook.cells if c.cell_type == "code"]
    return hashlib.sha256(json.dumps({"kernel": kernel, "code": code}).encode()).hexdigest()


def snapshot_notebook(config: SweepConfig, folder: Path) -> tuple[Path, str]:
    """Copy the notebook, as it is now, to ``folder/<fingerprint>.ipynb``; returns (copy, fingerprint).

    Every run of the invocation executes the copy: the notebook edited while a sweep runs (a cron
    job at night, an edit in the morning) would otherwise run the later points with other code
    than the fingerprint in their run ids and status says.
    """
    from vlm_lab.data import atomic_write_text

    try:
        text = Path(config.notebook).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = None  # read_notebook names what is wrong
    fingerprint = notebook_fingerprint(config, read_notebook(config.notebook, text))
    copy = folder / f"{fingerprint[:16]}.ipynb"
    atomic_write_text(copy, text, if_changed=True)
    return copy, fingerprint
