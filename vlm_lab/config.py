"""Typed experiment configs: one frozen dataclass per experiment kind.

The same object is built from a notebook's ``parameters`` cell, a sweep YAML,
the CLI and the Space, and is what W&B logs (``dataclasses.asdict``). Fields are
primitives (or tuples of primitives), validated in ``__post_init__``; unknown
keys are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Iterable, Mapping, TypeVar

from vlm_lab.errors import ConfigError

T = TypeVar("T", bound="ConfigBase")

DTYPES = ("auto", "float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")
METRICS = ("exact", "normalized", "vqa")

# "greedy", "nucleus(0.9)", "temperature(0.7)", "beam(4)"
_EXAMPLES = {"greedy": "greedy", "nucleus": "nucleus(0.9)", "temperature": "temperature(0.7)", "beam": "beam(4)"}
_STRATEGY_RE = re.compile(r"^(greedy|nucleus|temperature|beam)(?:\(\s*([^()]*?)\s*\))?$")


def did_you_mean(unknown: list[str], known: Iterable[str]) -> str:
    """``"did you mean grid?"`` (``"did you mean fail_on for fail_onn, sleep_s for sleep?"`` for several) for the
    misspelt names in ``unknown`` that are close to one in ``known``, else ``""``."""
    import difflib

    known = sorted(known)
    close = {name: m[0] for name in unknown if (m := difflib.get_close_matches(name, known, n=1, cutoff=0.6))}
    if len(unknown) == 1 and close:
        return f"did you mean {close[unknown[0]]}?"
    return f"did you mean {', '.join(f'{m} for {name}' for name, m in close.items())}?" if close else ""


class ConfigBase:
    """Shared construction helpers for the experiment configs."""

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any]) -> T:
        """Build from a mapping (a YAML file, a notebook's parameters, a JSON body).

        Raises:
            ConfigError: a key is unknown, a required key is missing, or a value has the wrong
                type (``jobs: "2"``); then whatever ``__post_init__`` rejects.
        """
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        names = {f.name for f in fields}
        unknown = sorted(str(k) for k in set(values) - names)
        if unknown:
            raise ConfigError(
                f"unknown {cls.__name__} field(s): {', '.join(unknown)} "
                f"(known: {', '.join(sorted(names))}){'; ' + hint if (hint := did_you_mean(unknown, names)) else ''}"
            )
        required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        missing = [name for name in required if name not in values]
        if missing:
            raise ConfigError(
                f"missing required {cls.__name__} field(s): {', '.join(missing)} "
                f"(a {cls.__name__} needs {', '.join(required)}); add {'it' if len(missing) == 1 else 'them'}"
            )
        hints = typing.get_type_hints(cls)
        for name, value in values.items():
            if not _has_type(value, hints[name]):
                raise ConfigError(f"{name} must be {_describe_type(hints[name])}, got {value!r} ({type(value).__name__})")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples become lists) for JSON, YAML and ``wandb.init(config=...)``."""
        out = dataclasses.asdict(self)  # type: ignore[call-overload]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _has_type(value: Any, hint: Any) -> bool:
    """Whether ``value`` fits a field annotation; the coercions ``__post_init__`` makes are allowed
    (a list or a comma-separated string for a tuple, an int for a float)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_has_type(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_int(value) or isinstance(value, float)
    if hint is dict:
        return isinstance(value, Mapping)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, str) or (isinstance(value, (list, tuple)) and all(_has_type(v, item) for v in value))
    return isinstance(value, hint) if isinstance(hint, type) else True


_TYPE_WORDS = {int: "a whole number", float: "a number", str: "text", bool: "true or false", dict: "a mapping", type(None): "null"}


def _describe_type(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return f"a list of {_describe_type(typing.get_args(hint)[0])}"
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe_type(h) for h in typing.get_args(hint))
    return _TYPE_WORDS.get(hint, getattr(hint, "__name__", str(hint)))


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(choices)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # True is an int to Python, not to a config


def _check_int(name: str, value: int, *, minimum: int, maximum: int | None = None, meaning: str = "", fix: str = "") -> None:
    """``value`` is a whole number within ``minimum..maximum``.

    ``meaning`` explains a special value (``" (0 = no limit)"``); ``fix`` follows the bad value.
    """
    if not _is_int(value) or value < minimum or (maximum is not None and value > maximum):
        if maximum is not None:
            within = f"a whole number from {minimum:,} to {maximum:,}"
        else:
            within = "a positive integer" if minimum == 1 else f"a whole number >= {minimum}"
        raise ConfigError(f"{name} must be {within}{meaning}, got {value!r}{fix}")


def _check_positive(name: str, value: int) -> None:
    _check_int(name, value, minimum=1)


def _check_seed(value: int) -> None:
    # 2**64 - 1 is torch.manual_seed's limit; numpy's bootstrap refuses a negative seed
    _check_int("seed", value, minimum=0, maximum=2**64 - 1, fix="; pick a seed >= 0, e.g. 0")


def _check_number(name: str, value: float, *, above: float) -> None:
    """A finite int or float greater than ``above``."""
    if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value) or not value > above:
        raise ConfigError(f"{name} must be a finite number > {above:g}, got {value!r}")


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?(?:e\+?\d+)?)\s*([a-z]*)\s*$")
_POWERS = {"k": 3, "m": 6, "g": 9, "t": 12}
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str | int, *, name: str = "") -> int:
    """A memory size: ``"16GB"`` -> 16_000_000_000, ``"15GiB"`` -> 15 * 2**30, ``123`` -> 123.

    ``name``: the field it came from, named in the error (``memory_budget='16G'``, which the CLI reads as its flag).
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return text
    shown = f"{name}={text!r}" if name else repr(text)
    m = _SIZE_RE.match(str(text).lower())
    if m and m.group(2) in ("k", "m", "g", "t"):  # Slurm and Docker read 16G as GiB, disk makers as GB: 7% apart
        raise ConfigError(f"{shown} is ambiguous: write {m.group(1)}{m.group(2).upper()}B ({m.group(1)} x 10^{_POWERS[m.group(2)]} "
                          f"bytes) or {m.group(1)}{m.group(2).upper()}iB ({m.group(1)} x 2^{_POWERS[m.group(2)] // 3 * 10} bytes)")
    if not m or m.group(2) not in _SIZE_UNITS:
        raise ConfigError(f"cannot read a memory size from {shown}; use bytes or a unit, e.g. 16GB, 15GiB, 500MB, 1e10")
    size = float(m.group(1)) * _SIZE_UNITS[m.group(2)]
    if not size.is_integer():  # 1.5 (bytes) became a 1-byte budget
        raise ConfigError(f"{shown} is not a whole number of bytes; give a unit, e.g. {m.group(1)}GB or {m.group(1)}GiB")
    return int(size)


_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)\s*d)?\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m)?\s*(?:(\d+(?:\.\d+)?)\s*s?)?$")


def parse_duration(name: str, value: str | int) -> int:
    """Whole seconds from ``90`` or text with units: ``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"``, ``"1.5h"``, ``"1d"``."""
    if _is_int(value):
        _check_int(name, value, minimum=0, meaning=" (seconds, or text such as 30m; 0 = no limit)")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a whole number of seconds or text such as 30m, got {value!r}")
    text = value.strip().lower()
    m = _DURATION_RE.match(text)
    # "1h30" is 1h30m to a reader, 1h30s to the pattern: a number after a unit needs its own
    if not text or not m or not any(m.groups()) or (m.group(4) and any(m.groups()[:3]) and not text.endswith("s")):
        raise ConfigError(f"{name} {value!r} is not a duration: give seconds (1800) or a number with s, m, h or d "
                          "(90s, 30m, 2h, 1h30m); 0 = no limit")
    seconds = sum(float(n) * unit for n, unit in zip(m.groups(), (86400, 3600, 60, 1)) if n)
    if 0 < seconds < 1:  # rounded to 0, it would mean no limit
        raise ConfigError(f"{name} {value!r} is under a second: give at least 1s (or 0 for no limit)")
    return round(seconds)


def parse_strategy(strategy: str) -> tuple[str, float | None]:
    """Split a decoding strategy string into its name and argument.

    >>> parse_strategy("nucleus(0.9)")
    ('nucleus', 0.9)
    """
    if not isinstance(strategy, str):
        raise ConfigError(f"strategy must be text such as greedy or nucleus(0.9), got {strategy!r}")
    m = _STRATEGY_RE.match(strategy.strip().lower())
    if not m:
        raise ConfigError(
            f"unknown strategy {strategy!r}; use greedy, nucleus(P), temperature(T) or beam(N), "
            "e.g. nucleus(0.9)"
        )
    name, arg = m.group(1), m.group(2)
    try:
        value = float(arg) if arg else None
    except ValueError:
        raise ConfigError(f"{name} takes a number in its parentheses, e.g. {_EXAMPLES[name]}; got {strategy!r}") from None
    if value is not None and not math.isfinite(value):
        raise ConfigError(f"{name} needs a finite number, e.g. {_EXAMPLES[name]}; got {strategy!r}")
    if name == "greedy" and value is not None:
        raise ConfigError(f"greedy takes no argument, got {strategy!r}")
    if name == "nucleus" and not (value is not None and 0 < value <= 1):
        raise ConfigError(f"nucleus needs a probability in (0, 1], e.g. nucleus(0.9); got {strategy!r}")
    if name == "temperature" and not (value is not None and value > 0):
        raise ConfigError(f"temperature needs a value > 0, e.g. temperature(0.7); got {strategy!r}")
    if name == "beam" and not (value is not None and value >= 1 and float(value).is_integer()):
        raise ConfigError(f"beam needs a whole number of beams, e.g. beam(4); got {strategy!r}")
    return name, value


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerationConfig(ConfigBase):
    """How each checkpoint generates: decoding strategy, length, batching, seed; with its own generation config's
    settings only when ``checkpoint_generation`` (``vlm_lab.generation_settings``)."""

    strategy: str = "greedy"  # greedy | nucleus(P) | temperature(T) | beam(N)
    max_new_tokens: int = 8
    batch_size: int = 16
    seed: int = 0
    checkpoint_generation: bool = False  # also decode with each checkpoint's generation_config.json (generation_settings)

    def __post_init__(self) -> None:
        parse_strategy(self.strategy)
        _check_positive("max_new_tokens", self.max_new_tokens)
        _check_positive("batch_size", self.batch_size)
        _check_seed(self.seed)  # up front: scoring's bootstrap would refuse a negative one after every generation

    def generate_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``model.generate`` implementing the strategy."""
        name, value = parse_strategy(self.strategy)
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if name == "greedy":
            kwargs.update(do_sample=False, num_beams=1)
        elif name == "nucleus":
            kwargs.update(do_sample=True, top_p=value, top_k=0, temperature=1.0, num_beams=1)
        elif name == "temperature":
            kwargs.update(do_sample=True, temperature=value, top_k=0, top_p=1.0, num_beams=1)
        else:  # beam
            kwargs.update(do_sample=False, num_beams=int(value or 1))
        return kwargs


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(ConfigBase):
    """How the embedded tiny shapes VLM is trained (``vlm-lab checkpoints build``)."""

    out: str = "checkpoints/shapes"
    steps: int = 1000
    save_every: int = 250
    seed: int = 0
    batch_size: int = 32
    learning_rate: float = 3e-3
    train_images: int = 1200

    def __post_init__(self) -> None:
        _check_positive("steps", self.steps)
        _check_positive("save_every", self.save_every)
        _check_positive("batch_size", self.batch_size)
        _check_positive("train_images", self.train_images)
        _check_seed(self.seed)
        _check_number("learning_rate", self.learning_rate, above=0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CompareConfig(ConfigBase):
    """One checkpoint comparison: which checkpoints, on which data, generating how.

    The field names are the ``parameters`` of notebooks/02_compare_checkpoints.ipynb,
    the keys of a sweep's ``parameters``/``grid``, and the CLI's options.
    """

    checkpoints: tuple[str, ...] = ("checkpoints/shapes",)  # folders, training outputs (checkpoint-N), hub ids
    data: str = "shapes:val"  # shapes:SPLIT[:N] or a JSONL of {image, prompt, reference?}
    num_samples: int = 0  # at most this many samples; 0 = all the data gives (shapes:SPLIT without N: 64)
    strategy: str = "greedy"  # greedy | nucleus(P) | temperature(T) | beam(N)
    max_new_tokens: int = 8
    batch_size: int = 16
    seed: int = 0
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    device: str = "auto"  # auto | cpu | cuda
    output_dir: str = "runs/compare"
    use_cache: bool = True  # reuse per-sample results cached on disk
    cache_dir: str = ""  # where per-sample results are cached; "" = OUTPUT_DIR/.cache
    metric: str = "exact"  # exact | normalized | vqa (VQA accuracy against a list of human answers)
    memory_budget: str = ""  # model cache budget, e.g. "16GB"; "" = 90% of the GPU / half the RAM
    checkpoint_generation: bool = False  # also decode with each checkpoint's generation_config.json (repetition_penalty, ...)

    def __post_init__(self) -> None:
        checkpoints = self.checkpoints
        if isinstance(checkpoints, str):  # "a,b" from the CLI or a papermill -p
            checkpoints = tuple(c.strip() for c in checkpoints.split(",") if c.strip())
        object.__setattr__(self, "checkpoints", tuple(checkpoints))
        if not self.checkpoints:
            raise ConfigError("checkpoints is empty; give at least one folder or hub id")
        _check_int("num_samples", self.num_samples, minimum=0, meaning=" (0 = all)")
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("device", self.device, DEVICES)
        _check_choice("metric", self.metric, METRICS)
        if self.memory_budget and parse_bytes(self.memory_budget, name="memory_budget") <= 0:
            raise ConfigError(f"memory_budget={self.memory_budget!r} leaves no room for a model; give a size such as 16GB, or '' for automatic")
        self.generation()  # validates strategy, max_new_tokens, batch_size, seed

    def generation(self) -> GenerationConfig:
        return GenerationConfig(
            strategy=self.strategy, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, seed=self.seed,
            checkpoint_generation=self.checkpoint_generation,
        )


_SPACE_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PUBLISH_ACTIONS = ("publish", "pause", "restart")


@dataclasses.dataclass(frozen=True, kw_only=True)
class PublishConfig(ConfigBase):
    """One publish of ``space/`` to a Hugging Face Space (``make publish`` / scripts/publish_space.py).

    Holds no token and no secret value: secrets are named here and read from the
    environment at publish time, so this object is safe to log.
    """

    space: str  # owner/name of the Space
    space_dir: str = "space"  # the app folder to publish (app.py, requirements.txt, README.md)
    hardware: str = "t4-small"  # any SpaceHardware name; cpu-basic stops paying
    sleep_time: int | None = None  # seconds idle before sleeping; -1 never; None: 3600 on paid hardware
    public: bool = False  # new Spaces (and the checkpoints repo) are private unless set
    secrets: tuple[str, ...] = ()  # names of environment variables sent as Space secrets
    variables: tuple[str, ...] = ()  # KEY=VALUE Space variables
    checkpoints: str = "checkpoints/shapes"  # training output whose checkpoint-N folders are published
    embed_checkpoints: bool = True  # stage them inside the Space (False: --no-checkpoints)
    checkpoints_repo: str = ""  # owner/name of a model repo to hold them instead (sets VLM_LAB_CHECKPOINTS)
    action: str = "publish"  # publish | pause | restart
    dry_run: bool = False  # print the plan, write nothing
    wait: bool = True  # after a change, wait until the Space runs again
    timeout: float = 1800.0  # seconds to wait for the build
    poll_interval: float = 5.0  # seconds between runtime polls while waiting
    active_hours_per_day: float = 8.0  # assumption behind the monthly cost estimate with sleep time
    commit_message: str = "Publish vlm_lab Space"
    endpoint: str = ""  # Hub URL; empty: huggingface_hub's default (HF_ENDPOINT or huggingface.co)
    retries: int = 3  # attempts for a step that fails on the network

    def __post_init__(self) -> None:
        for name in ("secrets", "variables"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if not _SPACE_ID.match(self.space):
            raise ConfigError(f"space={self.space!r} is not owner/name; e.g. make publish SPACE=my-user/vlm-lab")
        if self.checkpoints_repo and not _SPACE_ID.match(self.checkpoints_repo):
            raise ConfigError(f"checkpoints_repo={self.checkpoints_repo!r} is not owner/name, e.g. my-user/vlm-lab-checkpoints")
        if self.checkpoints_repo and not self.embed_checkpoints:
            # said as a Python caller passes them; scripts/publish_space.py says its flags (flags_in_config_errors)
            raise ConfigError(f"checkpoints_repo={self.checkpoints_repo!r} and embed_checkpoints=False contradict each "
                              "other; choose one")
        from huggingface_hub import SpaceHardware

        known = [h.value for h in SpaceHardware]
        if self.hardware not in known:
            raise ConfigError(f"hardware={self.hardware!r} is not a Space hardware; use one of {', '.join(known)}")
        if self.sleep_time is not None:
            if isinstance(self.sleep_time, bool) or not isinstance(self.sleep_time, int) or not (self.sleep_time == -1 or self.sleep_time > 0):
                raise ConfigError(f"sleep_time must be seconds > 0 or -1 (never sleep), got {self.sleep_time!r}")
            if self.hardware == "cpu-basic":
                raise ConfigError(
                    "sleep_time cannot be set on cpu-basic (free hardware always sleeps after 48 h idle); "
                    f"drop sleep_time={self.sleep_time} or choose paid hardware such as hardware='t4-small'"
                )
        for key in self.secrets:
            if "=" in key:
                raise ConfigError(
                    f"secret {key.split('=', 1)[0]!r} was given a value on the command line; values never go there: "
                    f"export {key.split('=', 1)[0]}=... and pass --secret {key.split('=', 1)[0]}"
                )
            if not _ENV_NAME.match(key):
                raise ConfigError(f"secret name {key!r} is not an environment variable name (letters, digits, _)")
        for item in self.variables:
            key = item.split("=", 1)[0]
            if "=" not in item or not _ENV_NAME.match(key):
                raise ConfigError(f"variable {item!r} is not KEY=VALUE, e.g. --var LOG_LEVEL=info")
        _check_choice("action", self.action, PUBLISH_ACTIONS)
        for name in ("timeout", "poll_interval"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if not 0 <= self.active_hours_per_day <= 24:
            raise ConfigError(f"active_hours_per_day must be within 0..24, got {self.active_hours_per_day!r}")
        _check_positive("retries", self.retries)
        if not self.commit_message.strip():
            raise ConfigError("commit_message is empty; give a one-line summary")

    def variable_map(self) -> dict[str, str]:
        """``--var KEY=VALUE`` items as a dict (a later KEY wins)."""
        return dict(item.split("=", 1) for item in self.variables)


_SWEEP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SWEEP_RESERVED = ("output_dir", "wandb_group", "wandb_tags", "wandb_id", "wandb_notebook")  # the sweep sets these for each run


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepConfig(ConfigBase):
    """A papermill sweep: one notebook run per point of a parameter grid (sweeps/*.yaml).

    ``parameters`` are the same for every run; ``grid`` maps a parameter to its list of
    values, and the sweep runs the cartesian product. Both are plain dicts of primitives
    (the one exception to primitive-only fields: a grid is a mapping by nature).
    """

    name: str  # the sweep's folder under runs_dir and its W&B group
    notebook: str  # the papermill notebook, relative to the working directory
    parameters: dict = dataclasses.field(default_factory=dict)
    grid: dict = dataclasses.field(default_factory=dict)
    runs_dir: str = "runs"  # runs go to runs_dir/name/<run-id>/
    jobs: int = 1  # runs executed at once, each with its own kernel
    shard_index: int = 0  # this invocation runs shard_index of shard_count (0-based)
    shard_count: int = 1
    execution_timeout: int = 0  # seconds per cell; 0 = no limit
    run_timeout: int | str = 0  # a whole run (its kernel is killed past it): seconds, or text such as 30m, 2h; 0 = no limit
    kernel: str = ""  # kernel name; "" = the notebook's own kernelspec
    sweep_file: str = ""  # the YAML it was read from (load_sweep sets it); summary.md's command to complete the runs names it

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _SWEEP_NAME.match(self.name):
            raise ConfigError(f"sweep name {self.name!r} must be letters, digits, '-', '_' or '.', e.g. shapes-ablation")
        if not isinstance(self.notebook, str) or not self.notebook.endswith(".ipynb"):
            raise ConfigError(f"notebook {self.notebook!r} must be a .ipynb path, e.g. notebooks/02_compare_checkpoints.ipynb")
        for field in ("parameters", "grid"):
            if not isinstance(getattr(self, field), Mapping):
                raise ConfigError(f"{field} must be a mapping of parameter name to value, got {getattr(self, field)!r}")
        object.__setattr__(self, "parameters", dict(self.parameters))
        grid = {}
        for key, values in self.grid.items():
            if values is None or (isinstance(values, (list, tuple)) and not values):  # `x:` or `x: []`
                raise ConfigError(f"grid.{key} has no values: give one or more in brackets, e.g. {key}: [1, 2]")
            if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
                raise ConfigError(f"grid.{key} must be a non-empty list of values, e.g. {key}: [{values!r}]")
            if len({repr(v) for v in values}) != len(values):
                raise ConfigError(f"grid.{key} repeats a value: {list(values)!r}")
            grid[key] = list(values)
        object.__setattr__(self, "grid", grid)
        both = sorted(set(self.parameters) & set(self.grid))
        if both:
            raise ConfigError(f"{', '.join(both)} set in both parameters and grid; keep each in one place")
        reserved = sorted(set(_SWEEP_RESERVED) & (set(self.parameters) | set(self.grid)))
        if reserved:
            raise ConfigError(f"{', '.join(reserved)} are set by the sweep for each run; remove them from the sweep file")
        _check_positive("jobs", self.jobs)
        _check_positive("shard_count", self.shard_count)
        if not _is_int(self.shard_index) or not 0 <= self.shard_index < self.shard_count:
            raise ConfigError(
                f"shard {self.shard_index}/{self.shard_count} is out of range; shards are 0-based: 0/{self.shard_count} .. "
                f"{self.shard_count - 1}/{self.shard_count}"
            )
        _check_int("execution_timeout", self.execution_timeout, minimum=0, meaning=" (seconds; 0 = no limit)")
        object.__setattr__(self, "run_timeout", parse_duration("run_timeout", self.run_timeout))  # seconds from here on


MEMORY_DTYPES = ("auto", "float32", "float16", "bfloat16", "int8", "int4")


def checkpoint_tuple(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Checkpoint references as a non-empty tuple; "a,b" (CLI, papermill -p) splits on commas."""
    items = value.split(",") if isinstance(value, str) else value
    out = tuple(str(c).strip() for c in items if str(c).strip())
    if not out:
        raise ConfigError("checkpoints is empty; give at least one folder or hub id")
    return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryConfig(ConfigBase):
    """One memory profile: which checkpoints, in what dtype, for which target GPU.

    The field names are the ``parameters`` of notebooks/03_memory_profile.ipynb and
    the options of ``vlm-lab memory``.
    """

    checkpoints: tuple[str, ...] = ("checkpoints/shapes",)  # folders, training outputs (checkpoint-N), hub ids
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16 | int8 | int4 (auto: what the target should run)
    device: str = "auto"  # where to measure: auto | cpu | cuda
    target: str = "t4-small"  # Space hardware for the verdict: cpu-basic | t4-small | l4x1 | a10g-small | a100-large
    batch_size: int = 1
    prompt_tokens: int = 32  # text tokens per prompt; image tokens are added per model
    max_new_tokens: int = 32
    image_size: int | str = 0  # images to plan for: 0 = any size, N = up to N px on the longer side (worst aspect), "HxW" = exactly that
    measure: bool = True  # load and generate to measure (else estimate only)
    rehearse: bool = False  # on a larger GPU, cap this process at the target's memory and run it
    snapshot_dir: str = ""  # CUDA memory snapshots go here (and on out-of-memory); "" = off

    def __post_init__(self) -> None:
        from vlm_lab.memory_shapes import image_size_text
        from vlm_lab.memory_targets import check_dtype_on_target, get_target

        object.__setattr__(self, "checkpoints", checkpoint_tuple(self.checkpoints))
        _check_choice("dtype", self.dtype, MEMORY_DTYPES)
        _check_choice("device", self.device, DEVICES)
        get_target(self.target)
        check_dtype_on_target(self.dtype, self.target)
        _check_positive("batch_size", self.batch_size)
        _check_positive("max_new_tokens", self.max_new_tokens)
        _check_int("prompt_tokens", self.prompt_tokens, minimum=0)
        object.__setattr__(self, "image_size", image_size_text(self.image_size))
        if self.rehearse and self.device == "cpu":
            raise ConfigError("rehearse=True runs on a GPU larger than the target; use device='cuda' (or 'auto')")
        asked = ["rehearse=True"] * self.rehearse + [f"snapshot_dir={self.snapshot_dir!r}"] * bool(self.snapshot_dir)
        if asked and not self.measure:
            what = " and ".join(asked)
            raise ConfigError(f"{what} {'need' if len(asked) > 1 else 'needs'} a measurement, which measure=False skips; "
                              f"drop measure=False to measure, or drop {what}")
