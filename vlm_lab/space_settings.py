"""How the Hugging Face Space is set up: process environment, settings from the Space
variables, and the Gradio serving plan (queue, concurrency, batch size) for the hardware.

``space/app.py`` calls ``prepare_environment`` before gradio is imported, then builds
``SpaceSettings.from_env`` and ``plan_serving``. Nothing here imports gradio, and torch only
inside ``Hardware.detect``, so this module is cheap to import before the environment is ready.

How many generations run at once (``generation_slots``) is decided here, from the hardware, and
the memory plan (``space_memory.plan_memory``) counts the KV cache and activations of all of them;
where memory holds fewer, the serving plan runs only as many as it holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

from vlm_lab.config import DEVICES, DTYPES, ConfigBase, parse_bytes
from vlm_lab.errors import CheckpointNotFoundError, ConfigError, DeviceError, MemoryBudgetError

if TYPE_CHECKING:
    from vlm_lab.space_memory import MemoryPlan

EMBEDDED_CHECKPOINTS = "checkpoints/shapes"  # where the publisher stages them next to app.py
MAX_SLOTS = 3  # checkpoints compared side by side
# Decoding choices shown in the UI: label -> strategy string (the API takes any valid strategy,
# beam(N) up to MAX_BEAMS).
STRATEGIES = {"greedy": "greedy", "nucleus (top-p 0.9)": "nucleus(0.9)", "temperature 0.7": "temperature(0.7)"}
NONE_CHOICE = "(none)"
# beam(N) is open to API callers, but its cost grows with N: a public Space caps it (beam(2000)
# took 12 s on the 0.17M-parameter checkpoints and would run a T4 out of memory).
MAX_BEAMS = 4


# The Space variables the app reads (SpaceSettings.from_env); another VLM_LAB_* name is a typo.
SPACE_VARIABLES = ("VLM_LAB_CHECKPOINTS", "VLM_LAB_ROOT", "VLM_LAB_DEVICE", "VLM_LAB_DTYPE", "VLM_LAB_MAX_PIXELS",
                   "VLM_LAB_MAX_FILE_SIZE", "VLM_LAB_MAX_PROMPT_CHARS", "VLM_LAB_MAX_NEW_TOKENS",
                   "VLM_LAB_DEFAULT_MAX_NEW_TOKENS", "VLM_LAB_QUEUE_SIZE", "VLM_LAB_MAX_BATCH_SIZE", "VLM_LAB_CACHE_BUDGET",
                   "VLM_LAB_TARGET", "VLM_LAB_UPLOAD_TTL_S", "VLM_LAB_HUB_REFRESH_S")


def unknown_space_variables(names: Sequence[str]) -> list[str]:
    """``VLM_LAB_*`` names neither the app nor the library reads, each with the name it probably meant."""
    from vlm_lab.checkpoints import CACHE_ENV  # the library's own (per-user caches): not a typo

    unknown = []
    for name in names:
        if name.upper().startswith("VLM_LAB_") and name not in (*SPACE_VARIABLES, CACHE_ENV):
            close = difflib.get_close_matches(name.upper(), SPACE_VARIABLES, n=1, cutoff=0.6)
            unknown.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return unknown


def check_space_variables(variables: Mapping[str, str], *, app_dir: str | os.PathLike[str]) -> None:
    """Refuse ``VLM_LAB_*`` Space variables the app would not start with (or would ignore), before publishing.

    Raises:
        ConfigError: names the variable, its value and the fix; nothing has been sent yet.
    """
    unknown = unknown_space_variables(list(variables))
    if unknown:
        raise ConfigError(f"--var {', '.join(unknown)}: not a variable the app reads; it reads {', '.join(SPACE_VARIABLES)}")
    env = dict(variables)
    if not env.get("VLM_LAB_CHECKPOINTS", "").strip():  # the checkpoints are checked by the publish itself
        env["VLM_LAB_CHECKPOINTS"] = "owner/model"
    try:
        SpaceSettings.from_env(env, app_dir=app_dir)
    except ConfigError as e:
        raise ConfigError(f"--var {e}; the Space would not start with it") from None


def _check_device(value: str) -> None:
    if value not in DEVICES and not value.startswith("cuda:"):
        raise ConfigError(f"use one of {', '.join(DEVICES)}")


def _check_dtype(value: str) -> None:
    if value not in DTYPES:
        raise ConfigError(f"use one of {', '.join(DTYPES)}")


# Gradio's launch(max_file_size=) reads "<whole number><unit>" (spaces dropped, any case), 1 kb = 1024 bytes, and
# raises at launch (after the models loaded and the examples were answered) on anything else.
_FILE_SIZE_RE = re.compile(r"^(\d+)(b|kb|mb|gb|tb)$")


def file_size(value: str) -> str:
    """``value`` as Gradio's ``max_file_size`` reads it, written plainly (``" 50 MB"`` -> ``"50mb"``).

    Raises:
        ConfigError: not Gradio's form (a bare number is refused: 20 bytes or 20 MB?), or 0.
    """
    m = _FILE_SIZE_RE.match(str(value).replace(" ", "").lower())
    if not m:
        raise ConfigError("not a file size Gradio reads; use a whole number and b, kb, mb, gb or tb (1 kb = 1024 bytes), "
                          "e.g. 20mb")
    if int(m[1]) == 0:
        raise ConfigError("every upload would be refused; use e.g. 20mb")
    return f"{int(m[1])}{m[2]}"


def _check_target(value: str) -> None:
    from vlm_lab.memory_targets import get_target

    get_target(value)


def prepare_environment(environ: dict[str, str] | None = None, *, data_dir: str = "/data") -> list[str]:
    """Process-wide settings that must be in place before gradio/huggingface_hub/transformers import.

    Analytics off and cached examples computed afresh at every start, unless asked otherwise; with
    Space persistent storage (``/data``) model downloads go to ``/data/.huggingface`` so a restart
    does not download them again. Returns what was set, for the log.
    """
    env = os.environ if environ is None else environ
    notes = []
    if "GRADIO_ANALYTICS_ENABLED" not in env:
        env["GRADIO_ANALYTICS_ENABLED"] = "False"
        notes.append("GRADIO_ANALYTICS_ENABLED=False")
    if "GRADIO_RESET_EXAMPLES_CACHE" not in env:
        # Gradio names an examples cache by the component's id, not by what it holds: another
        # checkpoint set or retrained weights would show the last run's answers. Cache afresh.
        env["GRADIO_RESET_EXAMPLES_CACHE"] = "True"
        notes.append("GRADIO_RESET_EXAMPLES_CACHE=True (examples answered by this run's checkpoints)")
    data = Path(data_dir)
    if "HF_HOME" not in env and data.is_dir() and os.access(data, os.W_OK):
        env["HF_HOME"] = str(data / ".huggingface")
        notes.append(f"HF_HOME={env['HF_HOME']} (persistent storage)")
    return notes


def _int_env(env: Mapping[str, str], name: str, default: int, *, minimum: int = 1) -> int:
    """A whole-number Space variable; the error names the variable (what its owner set), not the field."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a whole number; set it to e.g. {default}") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be at least {minimum}; set it to e.g. {default}")
    return value


def _text_env(env: Mapping[str, str], name: str, default: str, check: Callable[[str], object]) -> str:
    """A text Space variable, checked now: a bad value stops the start with its name, not a later traceback."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        check(raw)
    except ConfigError as e:
        raise ConfigError(f"{name}={raw!r}: {e}") from None
    return raw


# The settings the library's device errors name as a Python caller passes them (device='cpu'), and the
# variable a Space's owner sets each with.
_VARIABLE_OF = {"device": "VLM_LAB_DEVICE", "dtype": "VLM_LAB_DTYPE"}


@contextlib.contextmanager
def variables_in_errors(variable: str = "", value: str = "") -> Iterator[None]:
    """Inside, a ``DeviceError`` or ``MemoryBudgetError`` names the Space variables its owner sets, not the library's
    arguments.

    ``use device='cpu'`` reads ``use VLM_LAB_DEVICE=cpu``, the model cache's ``ModelCache(budget_bytes='2GB')``
    ``VLM_LAB_CACHE_BUDGET=2GB``; a ``DeviceError`` that names no variable (``unknown dtype 'fp16'``) starts with the one
    at fault, ``variable`` (if given) set to ``value``. In place, as the CLI's ``flags_in_config_errors``.
    """
    try:
        yield
    except (DeviceError, MemoryBudgetError) as e:
        from vlm_lab.model_cache import budget_as

        said = re.sub(r"\b(device|dtype)=('[^']*'|\w+)", lambda m: f"{_VARIABLE_OF[m[1]]}={m[2].strip(chr(39))}", str(e))
        said = budget_as(said, "VLM_LAB_CACHE_BUDGET={}")
        e.args = (f"{variable}={value!r}: {said}" if variable and isinstance(e, DeviceError) and variable not in said
                  else said,)
        raise


@dataclasses.dataclass(frozen=True, kw_only=True)
class SpaceSettings(ConfigBase):
    """How the Space serves: which checkpoints, where, and its limits. Holds no token (safe to log)."""

    checkpoints: tuple[str, ...]  # references, resolved with checkpoints.resolve_all
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    max_pixels: int = 4096 * 4096  # larger uploads are refused before they are decoded
    max_prompt_chars: int = 500
    max_new_tokens: int = 64  # the slider's (and the API's) upper bound
    default_max_new_tokens: int = 16
    queue_size: int = 32  # waiting events beyond this get Gradio's "busy, try again"
    max_batch_size: int = 0  # batched API; 0: from the memory verdict (or 16)
    cache_budget: str = ""  # model cache budget, e.g. "12GB"; empty: from the memory verdict
    target: str = ""  # hardware the memory verdict plans for; empty: t4-small on a GPU, cpu-basic on CPU
    max_file_size: str = "20mb"  # uploads above this are refused by Gradio (its form: 20mb is 20 x 1024^2 bytes)
    upload_ttl_s: int = 86400  # uploads older than this are deleted (a long-running Space would fill its disk)
    hub_refresh_s: int = 300  # a hub revision (org/name@main) is asked again after this: new pushes are served

    def __post_init__(self) -> None:
        object.__setattr__(self, "checkpoints", tuple(self.checkpoints))
        try:
            object.__setattr__(self, "max_file_size", file_size(self.max_file_size))
        except ConfigError as e:
            raise ConfigError(f"max_file_size={self.max_file_size!r}: {e}") from None
        if not self.checkpoints:
            raise ConfigError("no checkpoints configured; set VLM_LAB_CHECKPOINTS=path-or-hub-id[,...]")
        for name in ("max_pixels", "max_prompt_chars", "max_new_tokens", "default_max_new_tokens", "queue_size",
                     "upload_ttl_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.hub_refresh_s, bool) or not isinstance(self.hub_refresh_s, int) or self.hub_refresh_s < 0:
            raise ConfigError(f"hub_refresh_s must be a whole number of seconds >= 0, got {self.hub_refresh_s!r}")
        if self.max_batch_size < 0:
            raise ConfigError(f"max_batch_size must be >= 0 (0: automatic), got {self.max_batch_size!r}")
        if self.default_max_new_tokens > self.max_new_tokens:
            raise ConfigError(f"default_max_new_tokens={self.default_max_new_tokens} exceeds max_new_tokens={self.max_new_tokens}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, app_dir: str | os.PathLike[str]) -> "SpaceSettings":
        """Read the Space variables (``VLM_LAB_*``); relative checkpoint paths mean inside the Space.

        ``VLM_LAB_CHECKPOINTS`` (comma-separated) wins; else the embedded checkpoints next to
        ``app.py`` (as published), else under the project root (``VLM_LAB_ROOT``, as ``make space`` runs;
        else the repository ``app.py`` is in, as ``python space/app.py`` runs it).
        """
        env = os.environ if environ is None else environ
        app_dir = Path(app_dir).resolve()
        roots = [app_dir]
        root = env.get("VLM_LAB_ROOT", "").strip()
        if root:
            roots.append(Path(root).expanduser().resolve())
        elif (app_dir.parent / "pyproject.toml").is_file() and (app_dir.parent / "vlm_lab").is_dir():
            roots.append(app_dir.parent)  # a checkout, not a Space: there the package sits next to app.py
        specs = [s.strip() for s in env.get("VLM_LAB_CHECKPOINTS", "").split(",") if s.strip()]
        if not specs:
            found = [r / EMBEDDED_CHECKPOINTS for r in roots if (r / EMBEDDED_CHECKPOINTS).is_dir()]
            if not found:
                where = " or ".join(str(r / EMBEDDED_CHECKPOINTS) for r in roots)
                raise CheckpointNotFoundError(
                    f"no embedded checkpoints at {where}; run `make checkpoints` (or `make space`, which does), "
                    "or set VLM_LAB_CHECKPOINTS=path-or-hub-id[,...]"
                )
            specs = [str(found[0])]
        specs = [_in_space(spec, roots) for spec in specs]
        max_new_tokens = _int_env(env, "VLM_LAB_MAX_NEW_TOKENS", cls.max_new_tokens)
        # unset, the slider starts within a short VLM_LAB_MAX_NEW_TOKENS; set, it must be within it
        default_max_new_tokens = _int_env(env, "VLM_LAB_DEFAULT_MAX_NEW_TOKENS", min(cls.default_max_new_tokens, max_new_tokens))
        if default_max_new_tokens > max_new_tokens:
            raise ConfigError(f"VLM_LAB_DEFAULT_MAX_NEW_TOKENS={env['VLM_LAB_DEFAULT_MAX_NEW_TOKENS'].strip()!r} exceeds "
                              f"VLM_LAB_MAX_NEW_TOKENS ({max_new_tokens}): set it to at most {max_new_tokens}, or raise "
                              "VLM_LAB_MAX_NEW_TOKENS")
        return cls(
            checkpoints=tuple(specs),
            device=_text_env(env, "VLM_LAB_DEVICE", "auto", _check_device),
            dtype=_text_env(env, "VLM_LAB_DTYPE", "auto", _check_dtype),
            max_pixels=_int_env(env, "VLM_LAB_MAX_PIXELS", cls.max_pixels),
            max_file_size=_text_env(env, "VLM_LAB_MAX_FILE_SIZE", cls.max_file_size, file_size),
            max_prompt_chars=_int_env(env, "VLM_LAB_MAX_PROMPT_CHARS", cls.max_prompt_chars),
            max_new_tokens=max_new_tokens,
            default_max_new_tokens=default_max_new_tokens,
            queue_size=_int_env(env, "VLM_LAB_QUEUE_SIZE", cls.queue_size),
            max_batch_size=_int_env(env, "VLM_LAB_MAX_BATCH_SIZE", cls.max_batch_size, minimum=0),
            cache_budget=_text_env(env, "VLM_LAB_CACHE_BUDGET", "", parse_bytes),
            target=_text_env(env, "VLM_LAB_TARGET", "", _check_target),
            upload_ttl_s=_int_env(env, "VLM_LAB_UPLOAD_TTL_S", cls.upload_ttl_s),
            hub_refresh_s=_int_env(env, "VLM_LAB_HUB_REFRESH_S", cls.hub_refresh_s, minimum=0),
        )


def _in_space(spec: str, roots: Sequence[Path]) -> str:
    """A relative path that exists under the app folder (or project root) becomes absolute; hub ids stay."""
    path = Path(spec).expanduser()
    if path.is_absolute():
        return str(path)
    for root in roots:
        if (root / path).exists():
            return str(root / path)
    return spec


# -- serving plan -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class Hardware:
    """What the Space serves on: the device, the CPU cores, and the GPU's memory and name."""

    device: str  # "cuda" or "cpu"
    cores: int
    gpu_memory: int = 0  # bytes (torch's total_memory)
    gpu_name: str = ""

    @classmethod
    def detect(cls, device: str = "auto") -> "Hardware":
        """This machine's, for ``device`` (auto | cpu | cuda[:N])."""
        import torch

        from vlm_lab.models import resolve_device

        dev, cores = resolve_device(device), os.cpu_count() or 1
        if dev.type != "cuda":
            return cls(device="cpu", cores=cores)
        props = torch.cuda.get_device_properties(dev)
        return cls(device="cuda", cores=cores, gpu_memory=props.total_memory, gpu_name=torch.cuda.get_device_name(dev))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Slots:
    """Generations that may run at once: ``compare`` of the Compare button (and its API), ``batch`` of the
    batched API; ``shared``: one concurrency group holds both (a GPU: ``compare`` of either kind at once)."""

    compare: int
    batch: int
    shared: bool

    @property
    def generations(self) -> int:
        return self.compare if self.shared else self.compare + self.batch

    def rows(self, batch_size: int, beams: int = MAX_BEAMS) -> int:
        """Sequences generated at once: a Compare is one image, but may ask for ``beam(beams)`` (a row per beam);
        a batch of the API is ``batch_size`` rows."""
        if self.shared:
            return self.compare * max(batch_size, beams)
        return self.compare * beams + self.batch * batch_size

    def compare_rows(self, batch_size: int, beams: int = MAX_BEAMS) -> int:
        """The rows one Compare's slot holds: its beams, or in a shared group the batch that takes turns with it."""
        return max(batch_size, beams) if self.shared else beams

    def fewer(self) -> "Slots":
        """One generation fewer at once (at least one of each kind)."""
        if self.shared:
            n = max(1, self.compare - 1)
            return Slots(compare=n, batch=n, shared=True)
        return Slots(compare=max(1, self.compare - 1), batch=self.batch, shared=False)


def generation_slots(hardware: Hardware) -> Slots:
    """How many generations the hardware runs at once, following Gradio's performance guide.

    On a GPU generation is the bottleneck and concurrent generations compete for the same memory:
    1 at a time on a GPU under 24 GB (a T4), 2 above, shared by both endpoints. On CPU about one
    comparison per core (at most 4), and one batch at a time: requests that wait meanwhile make the
    next batch bigger, and a second concurrent batch only contends for the GIL (bench/space_load.py,
    tiny checkpoints, 2 cores: two at a time answered fewer requests/s than one).
    """
    if hardware.device == "cuda":
        n = 1 if hardware.gpu_memory < 24 * 2**30 else 2
        return Slots(compare=n, batch=n, shared=True)
    return Slots(compare=max(1, min(4, hardware.cores)), batch=1, shared=False)


@dataclasses.dataclass(frozen=True)
class ServingPlan:
    """Gradio queue and concurrency settings chosen for the hardware."""

    device: str  # "cuda" or "cpu"
    generate_limit: int  # concurrent UI comparisons (concurrency group "generate")
    batch_limit: int  # concurrent batches of the batched API
    batch_group: str  # its concurrency group: "generate" on a GPU (one memory to share), "batch" on CPU
    cheap_limit: int  # concurrent cheap events (clear, ...)
    torch_threads: int | None  # torch intra-op threads per generation on CPU (None: leave torch's default)
    max_threads: int  # launch(max_threads=)
    queue_size: int  # queue(max_size=)
    status_update_rate: float  # queue(status_update_rate=): seconds between queue-position updates
    max_batch_size: int  # the batched API's max_batch_size
    why: str  # one line for the log


def plan_serving(settings: SpaceSettings, *, memory: "MemoryPlan | None" = None, verdict_batch_size: int | None = None,
                 hardware: Hardware | None = None) -> ServingPlan:
    """Concurrency from the hardware (``generation_slots``), capped to what the memory plan holds.

    ``memory``: the Space's memory plan (``space_memory.plan_memory``); its ``slots`` cap the generations at
    once and its ``max_batch_size`` is the batched API's (``verdict_batch_size`` where there is no plan).
    On CPU each comparison gets cores/comparisons torch threads. ``hardware``: this machine's by default.
    """
    with variables_in_errors("VLM_LAB_DEVICE", settings.device):
        hw = hardware or Hardware.detect(settings.device)
    slots = generation_slots(hw)
    if memory is not None:
        verdict_batch_size = memory.max_batch_size
    held = memory.slots if memory is not None and memory.slots is not None else slots
    capped = ""
    if held.generations < slots.generations:
        capped = f" (memory holds {held.generations} of {slots.generations})"
        slots = held
    threads = None
    if hw.device == "cuda":
        why = f"{hw.gpu_name} ({hw.gpu_memory / 2**30:.0f} GiB): {slots.compare} generation(s) at a time{capped}"
    else:
        threads = max(1, hw.cores // slots.compare)
        why = (f"CPU with {hw.cores} core(s): {slots.compare} generation(s) at a time{capped}, "
               f"{threads} torch thread(s) each")
    batch = settings.max_batch_size or verdict_batch_size or 16
    return ServingPlan(
        device=hw.device,
        generate_limit=slots.compare,
        batch_limit=slots.batch,
        batch_group="generate" if slots.shared else "batch",
        cheap_limit=8,
        torch_threads=threads,
        max_threads=max(16, slots.generations + 8 + 4),
        queue_size=settings.queue_size,
        # Gradio's "auto" sends every waiting client an estimate each time a job starts: O(waiting^2)
        # messages under load, parsed by every client. A fixed interval keeps that linear.
        status_update_rate=2.0,
        max_batch_size=max(1, batch),
        why=why + f"; batched API up to {batch} per batch; queue holds {settings.queue_size}",
    )
