"""A sweep file (YAML) read into a ``SweepConfig``, with one clear error for each way it can be wrong."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from vlm_lab.config import SweepConfig
from vlm_lab.errors import ConfigError, SweepError
from vlm_lab.sweep_yaml import load_yaml


def load_sweep(path: str | os.PathLike[str], **overrides: Any) -> SweepConfig:
    """Read a sweep YAML file into a ``SweepConfig`` (its ``sweep_file``: ``path``); ``overrides`` (e.g. jobs=4) win over the file.

    Errors name an override as it was passed (``jobs=0``, ``runs_dir='$SCRATCH/runs'``) and the file's
    own values by the file and key; ``vlm-lab sweep`` says its flags instead (``--runs-dir``:
    ``vlm_lab.cli.flags_in_config_errors`` on ``error.overrides``).

    Raises:
        SweepError: the file is missing, not YAML, or not a mapping.
        ConfigError: a key is unknown, missing or of the wrong type, or a value is invalid; the message
            starts with the file's path when the file is at fault; when overrides are, the error's
            ``overrides`` attribute holds them (as passed).
    """
    import yaml

    path = Path(path)
    try:
        values = load_yaml(path.read_text(encoding="utf-8"), path)
    except FileNotFoundError as e:
        raise SweepError(f"no sweep file at {str(path)!r}; see sweeps/shapes-ablation.yaml for an example") from e
    except IsADirectoryError as e:
        found = ", ".join(sorted(str(p) for p in path.glob("*.y*ml"))[:5]) or "no *.yaml in it"
        raise SweepError(
            f"{path} is a folder ({found}); give one sweep file, or run them all with scripts/run_experiments.py {path}/*.yaml"
        ) from e
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError(f"cannot read the sweep file {path}: {e}") from e
    except yaml.YAMLError as e:
        raise SweepError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(values, dict):
        raise SweepError(f"{path} must be a mapping with name, notebook, parameters and grid")
    if "sweep_file" in values:  # the field says where the config was read from: never the file's to say
        raise ConfigError(f"{path}: sweep_file is not a sweep file key (load_sweep records the file it reads); remove it")
    given = {k: v for k, v in overrides.items() if v is not None}
    # A path the caller overrides is not read from the file: `runs_dir: $SCRATCH/runs` must not stop a
    # crontab line that passes another runs folder where $SCRATCH is not set.
    values = {**values, **_expanded_paths({k: v for k, v in values.items() if k not in given}, path)}
    given = {**given, **_expanded_paths(given, path, override=True)}
    try:
        return SweepConfig.from_dict({**values, **given, "sweep_file": str(path)})
    except ConfigError as e:
        try:
            SweepConfig.from_dict(values)
        except ConfigError:
            raise ConfigError(f"{path}: {e}") from e
        # The file is fine: the bad value came with the overrides (jobs=0), not from the file.
        fault = {key: overrides.get(key, value) for key, value in _at_fault(values, given).items()}  # as passed
        raise _blaming(ConfigError(f"{e} ({_given_as(fault)} with {path}; the file itself is fine)"), fault) from e


def _blaming(error: ConfigError, overrides: dict[str, Any]) -> ConfigError:
    """``error`` with the overrides at fault, so the CLI can say them as the flags that set them."""
    error.overrides = overrides
    return error


def _at_fault(values: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """The overrides that the file's values refuse one at a time; all of them when only their mix is refused."""
    alone = {}
    for key, value in given.items():
        try:
            SweepConfig.from_dict({**values, key: value})
        except ConfigError:
            alone[key] = value
    return alone or given


def _given_as(fault: dict[str, Any]) -> str:
    """``jobs=0 was given``, as a Python caller writes it."""
    words = ", ".join(f"{key}={value!r}" for key, value in fault.items())
    return f"{words} {'was' if len(fault) == 1 else 'were'} given"


PATH_KEYS = ("notebook", "runs_dir")  # read as paths: `~` and `$VARS` expanded, as a shell would


def _expanded_paths(values: dict[str, Any], path: Path, *, override: bool = False) -> dict[str, str]:
    """``notebook`` and ``runs_dir`` with ``~`` and ``$VAR``/``${VAR}`` expanded.

    No shell reads a YAML file: ``runs_dir: $SCRATCH/runs`` made a folder named ``$SCRATCH`` in the
    working directory (and ``~/runs`` one named ``~``, which ``rm -rf ~`` then takes for the home).

    Raises:
        ConfigError: a variable is not set (cron and systemd start with few variables).
    """
    expanded = {}
    for key in PATH_KEYS:
        value = values.get(key)
        if not isinstance(value, str):
            continue  # SweepConfig names the wrong type
        out = os.path.expanduser(os.path.expandvars(value))
        unset = list(dict.fromkeys(re.findall(r"\$\{?([A-Za-z_]\w*)", out)))
        if unset:
            where = f"{key}={value!r}" if override else f"{path}: {key} {value!r}"
            names = ", ".join(f"${name}" for name in unset)
            error = ConfigError(
                f"{where} uses {names}, which {'is' if len(unset) == 1 else 'are'} not set here (cron and "
                f"systemd start with few variables: set {names.replace('$', '')} in the crontab line or the service's "
                "Environment=, or write the path out)"
            )
            raise _blaming(error, {key: value}) if override else error
        expanded[key] = out
    return expanded

