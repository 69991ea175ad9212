"""Stage what a Space publish uploads, and check it before anything is written.

The stage lists exactly the Space's files, each read in place at upload time (no copy:
checkpoints can be many GB): ``space/`` (app.py,
requirements.txt, README.md), the ``vlm_lab`` package next to it so ``app.py``
can import it, and the embedded checkpoints at ``checkpoints/shapes/checkpoint-N``
(inference files only: no optimizer or trainer state). Junk (``.env``, ``.venv``,
``__pycache__``, ``.ipynb_checkpoints``, ``wandb/``, ``runs/``...) is never
staged, and a file that looks like it holds a credential stops the publish,
naming the file but never echoing what matched. The same patterns check each
``--var``: Space variables are public, so one that looks like a credential
(by its name or its value) stops the publish too; it belongs in ``--secret``.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import hashlib
import os
import re
import warnings
from pathlib import Path
from typing import Iterable, Mapping

from vlm_lab.errors import PublishError
from vlm_lab.units import human_bytes

STAGED_CHECKPOINTS = "checkpoints/shapes"  # where space/app.py looks next to itself by default
EXCLUDED_DIRS = (".venv", "venv", "__pycache__", ".ipynb_checkpoints", "wandb", "runs", ".git", ".pytest_cache",
                 ".mypy_cache", ".ruff_cache", ".gradio", "flagged", ".cache", "node_modules", "*.egg-info")
EXCLUDED_FILES = (".env", ".env.*", "*.pyc", "*.pyo", ".DS_Store", "*.swp", "*~", ".netrc", "*.pem", "*.key")
# What a credential looks like; the names (never the match) go into the error.
SECRET_PATTERNS = (
    ("a Hugging Face token (hf_...)", re.compile(r"\bhf_[A-Za-z0-9]{30,}")),
    ("a W&B API key", re.compile(r"(?i)\b(?:wandb|wb)\b[^\n]{0,80}?\b(?:local-)?[0-9a-f]{40}\b")),
    ("an api_key= assignment", re.compile(r"(?i)\bapi[_-]?key['\"]?\s*[=:]\s*['\"]?(?=[^'\"\s]*\d)[A-Za-z0-9_\-.]{16,}")),
    ("a secret in an environment assignment",
     re.compile(r"(?m)^\s*(?:export\s+)?\w*(?:TOKEN|SECRET|PASSWORD|API_KEY)\w*\s*=\s*['\"]?(?=[^'\"\s]*\d)[A-Za-z0-9_\-]{16,}['\"]?\s*$")),
    ("an OpenAI-style key (sk-...)", re.compile(r"\bsk-[A-Za-z0-9_\-]{20,}")),
    ("an AWS access key", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    ("a GitHub token (ghp_...)", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{50,})")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
)
# A file needs context to tell a W&B key from a git commit sha (see above); a bare --var value has
# none, so 40 hex characters on their own count as a key there.
_BARE_WANDB_KEY = re.compile(r"(?:local-)?[0-9a-f]{40}")
# A word of an environment variable name that says it holds a credential (HF_TOKEN, WANDB_API_KEY, APIKEY).
_SECRET_WORD = re.compile(r"(?i)(?:TOKEN|SECRETS?|KEY|PASSWORD|PASSWD)$")
_SCAN_LIMIT = 10 << 20  # larger files are weights, not config
# What a Space repo may hold on the Hub: larger ones are refused (its build clones it). Larger
# weights belong in a model repo the Space loads from (--checkpoints-repo).
SPACE_REPO_LIMIT = 1 << 30
_GRADIO_PIN = re.compile(r"^\s*gradio(?:\[[^\]]*\])?\s*==\s*([^\s;#]+)", re.IGNORECASE)


class SecretFileError(PublishError, PermissionError):
    """A staged file looks like it contains a credential."""


class SecretVariableError(PublishError, PermissionError):
    """A ``--var`` looks like a credential; Space variables are public."""


@dataclasses.dataclass(frozen=True)
class LocalFile:
    """One staged file: its path in the repo and the ids the Hub compares against."""

    path: str  # posix path inside the repo
    source: Path  # the file it is read from at upload time (never copied: checkpoints can be huge)
    size: int
    sha256: str  # what the Hub reports for an LFS file (weights): remembered across runs by stat

    @functools.cached_property
    def git_sha1(self) -> str:
        """The git blob id, what the Hub reports for a regular file; read only when one is compared."""
        return git_blob_id(self.source)


@dataclasses.dataclass(frozen=True)
class Stage:
    """The files to mirror to a repo, each read in place from its source."""

    files: dict[str, LocalFile]
    excluded: tuple[str, ...]  # source paths left out as junk
    sizes: dict[str, int]  # bytes per part: space, package, checkpoints
    notes: tuple[str, ...] = ()  # what was left out and why (a checkpoint still being written)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())


@dataclasses.dataclass(frozen=True)
class SpaceCardInfo:
    """What the README front matter says about the Space."""

    sdk: str
    sdk_version: str | None
    app_file: str
    front_matter: str  # the README text, for the server's validate-yaml


def _excluded(rel: Path) -> bool:
    if any(fnmatch.fnmatch(part, pat) for part in rel.parts[:-1] for pat in EXCLUDED_DIRS):
        return True
    return any(fnmatch.fnmatch(rel.name, pat) for pat in (*EXCLUDED_FILES, *EXCLUDED_DIRS))


def publishable_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """Files under ``folder`` to publish, and those left out as junk (both relative, sorted)."""
    keep, drop = [], []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(folder)
        (drop if _excluded(rel) else keep).append(rel)
    return keep, drop


def find_secret(path: Path, known: Mapping[str, str] | None = None) -> str | None:
    """The kind of credential ``path`` seems to hold, or None. Huge files are skipped, binary ones
    are searched only for the ``known`` values.

    Args:
        known: ``{where: secret}`` of credentials at hand (``credentials_at_hand``): a file holding one
            of these values holds "the value of WHERE", whatever its shape (a bare W&B key, a password).
    """
    if path.stat().st_size > _SCAN_LIMIT:
        return None
    data = path.read_bytes()
    for where, secret in (known or {}).items():
        if len(secret) >= 8 and secret.encode() in data:
            return f"the value of {where}"
    if b"\0" in data[:8192]:
        return None
    text = data.decode("utf-8", errors="replace")
    for kind, pattern in SECRET_PATTERNS:
        if pattern.search(text):
            return kind
    return None


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name says it holds a credential.

    True when a ``_``-separated word ends in TOKEN, SECRET(S), KEY, PASSWORD or PASSWD
    (HF_TOKEN, WANDB_API_KEY, APIKEY, DB_PASSWORD, and also PAD_TOKEN or SORT_KEY);
    False for MAX_NEW_TOKENS, TOKENIZERS_PARALLELISM, KEYBOARD_LAYOUT.
    """
    return any(_SECRET_WORD.search(word) for word in name.split("_") if word)


def environment_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """``{"$NAME": value}`` for each variable of ``environ`` whose name says it holds a credential."""
    return {f"${name}": value for name, value in environ.items() if is_secret_name(name) and len(value) >= 8}


def credentials_at_hand(token: str | None, secrets: Iterable[str] = (), variables: Iterable[str] = (),
                        environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{where: value}`` of every credential at hand: none may be printed, logged, uploaded or put in a variable.

    The one list of them, for the publish itself and for what scripts/publish_space.py prints.

    Args:
        token: the Hugging Face token in use (None: none found).
        secrets: the ``--secret`` items: NAME, whose value is read from ``environ``, or a refused NAME=VALUE.
        variables: the ``--var KEY=VALUE`` items; a value that looks like a credential is one (it is refused,
            but an error may quote it), as is a whole item that has no ``=``.
        environ: the environment (default ``os.environ``); its secret-named variables are credentials.
    """
    environ = os.environ if environ is None else environ
    found = {"the Hugging Face token in use": token or ""}
    for item in secrets:
        name, _, typed = item.partition("=")
        found[f"${name} (--secret {name})"] = environ.get(name, "")
        if typed:
            found[f"the value typed after --secret {name}="] = typed
    found |= environment_secrets(environ)
    for n, item in enumerate(variables, 1):
        key, eq, value = item.partition("=")
        value = value if eq else key  # the whole item when it has no '=' (then not named by itself)
        if find_secret_in_value(value) is not None:
            found[f"the value of --var {key}" if eq else f"--var item {n} (no '=')"] = value
    return {where: value for where, value in found.items() if value}


def find_secret_in_value(value: str, known: Mapping[str, str] | None = None) -> str | None:
    """The kind of credential a bare value holds, or None.

    Args:
        value: e.g. the VALUE of ``--var KEY=VALUE``.
        known: ``{where: secret}`` of credentials at hand ("$HF_TOKEN": its value); a value
            holding one of them is "a copy of WHERE".
    """
    for where, secret in (known or {}).items():
        if len(secret) >= 8 and secret in value:
            return f"a copy of {where}"
    for kind, pattern in SECRET_PATTERNS:
        if pattern.search(value):
            return kind
    if _BARE_WANDB_KEY.fullmatch(value.strip()):
        return "a W&B API key (40 hex characters)"
    return None


def check_variables(variables: Mapping[str, str], *, known: Mapping[str, str] | None = None) -> None:
    """Refuse Space variables that look like credentials: anyone who can open the Space reads them.

    Args:
        variables: ``{KEY: VALUE}`` from ``--var``.
        known: ``{where: secret}`` of credentials at hand (the token, secret environment variables).

    Raises:
        SecretVariableError: names each such variable and why, never its value, and the fix (``--secret``).
    """
    problems = []
    for name, value in variables.items():
        if is_secret_name(name):
            problems.append((name, "its name says it holds a credential (a word ending in TOKEN, SECRET, KEY or PASSWORD)"))
        elif (kind := find_secret_in_value(value, known)) is not None:
            problems.append((name, f"its value looks like {kind}"))
    if problems:
        first = problems[0][0]
        raise SecretVariableError(
            "refused " + "; ".join(f"--var {name}: {why}" for name, why in problems)
            + ". Space variables are public (anyone who can open the Space can read them); nothing was uploaded. "
            f"Send it as a secret instead: export {first}=... and pass --secret {first} (the value is read from the "
            "environment, never from the command line; the app reads a secret from os.environ like a variable)"
        )


def read_space_card(space_dir: Path) -> SpaceCardInfo:
    """Parse and check README.md's front matter with huggingface_hub's SpaceCard.

    Raises:
        PublishError: README missing or invalid, not a Gradio Space, app file missing, or
            ``sdk_version`` disagreeing with requirements.txt's gradio pin.
    """
    from huggingface_hub import SpaceCard

    readme = space_dir / "README.md"
    if not readme.is_file():
        raise PublishError(f"no README.md in {space_dir}; a Space needs one with front matter (sdk: gradio, sdk_version, app_file)")
    text = readme.read_text(encoding="utf-8")
    try:
        card = SpaceCard(text)
    except Exception as e:  # yaml errors, non-dict front matter
        raise PublishError(f"{readme}: front matter does not parse ({e}); fix the YAML between the '---' lines") from e
    data = card.data.to_dict()
    if not data:
        raise PublishError(f"{readme} has no front matter; start it with ---, sdk: gradio, sdk_version: X, app_file: app.py, ---")
    sdk = str(data.get("sdk") or "")
    if sdk != "gradio":
        raise PublishError(f"{readme}: sdk is {sdk or 'missing'!r}; this project publishes a Gradio Space: set sdk: gradio")
    app_file = str(data.get("app_file") or "app.py")
    if not (space_dir / app_file).is_file():
        raise PublishError(f"{readme}: app_file {app_file!r} does not exist in {space_dir}")
    sdk_version = str(data["sdk_version"]) if data.get("sdk_version") is not None else None
    pin = gradio_pin(space_dir / "requirements.txt")
    if sdk_version is None:
        raise PublishError(f"{readme}: no sdk_version; pin the Gradio the Space runs, e.g. sdk_version: {pin or '6.31.0'}")
    if pin is not None and pin != sdk_version:
        raise PublishError(
            f"{readme} says sdk_version: {sdk_version} but {space_dir / 'requirements.txt'} pins gradio=={pin}; "
            "make them the same (the Space installs sdk_version first, and a different pin breaks the build)"
        )
    return SpaceCardInfo(sdk=sdk, sdk_version=sdk_version, app_file=app_file, front_matter=text)


def gradio_pin(requirements: Path) -> str | None:
    """The version in ``gradio==X`` of a requirements file, or None."""
    if not requirements.is_file():
        return None
    for line in requirements.read_text(encoding="utf-8").splitlines():
        m = _GRADIO_PIN.match(line)
        if m:
            return m.group(1)
    return None


def git_blob_id(path: Path) -> str:
    """The git blob sha1 of a file's bytes."""
    sha1 = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            sha1.update(chunk)
    return sha1.hexdigest()


def is_training_state(name: str) -> bool:
    """Whether a checkpoint folder's file ``name`` is a trainer's state for resuming (optimizer, scheduler,
    trainer_state.json), not part of the model: never staged, and never deleted from a checkpoints repo."""
    from vlm_lab.checkpoints import _TRAINING_STATE  # the rule model_files leaves them out by

    return bool(_TRAINING_STATE.match(name))


def checkpoint_sources(folder: Path, *, build_missing: bool = False) -> tuple[list[tuple[str, Path]], list[str]]:
    """``(checkpoint-N/file, source)`` for the inference files of every complete checkpoint-N under ``folder``,
    and a note for each left out.

    A checkpoint-N a trainer is still writing (cut-short weights, no tokenizer yet) is left out when others
    beside it are complete, as ``vlm-lab compare`` leaves it out: uploaded, the Space would offer a checkpoint
    that cannot load, and the next publish would send it again.

    Args:
        build_missing: train the embedded tiny shapes checkpoints into ``folder`` when it holds
            none (only for the embedded default: a mistyped path must not become a fresh build).

    Raises:
        PublishError: ``folder`` holds no checkpoint-N folder (and is not to be built), naming what is there.
    """
    from vlm_lab.checkpoints import IncompleteCheckpointWarning, discover_checkpoints, model_files, resolve

    found = discover_checkpoints(folder)
    if not found and build_missing:
        from vlm_lab import tiny
        from vlm_lab.config import TrainConfig

        found = tiny.train(TrainConfig(out=str(folder)), progress=False)
    if not found:
        raise PublishError(f"--checkpoints {str(folder)!r}: {_no_checkpoints_reason(folder)}; pass the training output "
                           "that holds the checkpoint-N folders (each with a config.json), or --no-checkpoints")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IncompleteCheckpointWarning)
        complete = {Path(ref.path) for ref in resolve(str(folder))}  # the same rule as compare and the Space
    left_out = [c for c in found if c not in complete]
    notes = [str(w.message) for w in caught if issubclass(w.category, IncompleteCheckpointWarning)
             and any(str(c) in str(w.message) for c in left_out)]  # not the final model at the root: never published
    return [(f"{ckpt.name}/{f.name}", f) for ckpt in found if ckpt in complete for f in model_files(ckpt)], notes


def _no_checkpoints_reason(folder: Path) -> str:
    """Why ``folder`` gives no checkpoints, with what is there (or near it) to pick from."""
    if (folder / "config.json").is_file():
        return f"this is one model folder, not a training output; its parent {str(folder.parent)!r} may be the one"
    if folder.is_dir():
        children = sorted(c.name for c in folder.iterdir() if not c.name.startswith("."))
        return f"no checkpoint-N folder with a config.json in it (found: {', '.join(children[:8]) or 'nothing'})"
    parent = folder.parent
    siblings = sorted(c.name for c in parent.iterdir() if c.is_dir()) if parent.is_dir() else []
    close = difflib.get_close_matches(folder.name, siblings, n=3, cutoff=0.5)
    return "no such folder" + (f" (did you mean {', '.join(repr(str(parent / c)) for c in close)}?)" if close else "")


def stage(
    *,
    space_dir: Path | None = None,
    checkpoints: Path | None = None,
    checkpoints_prefix: str = STAGED_CHECKPOINTS,
    build_missing: bool = False,
    known: Mapping[str, str] | None = None,
    max_bytes: int | None = None,
) -> Stage:
    """List the files to publish, scan them, and hash them; nothing is copied or written.

    Args:
        space_dir: the app folder; with it the vlm_lab package is staged next to it.
        checkpoints: a training output whose checkpoint-N folders are staged under ``checkpoints_prefix``.
        checkpoints_prefix: folder in the repo for them ("" for a checkpoints-only model repo).
        build_missing: train the embedded checkpoints into ``checkpoints`` when it holds none.
        known: ``{where: secret}`` of credentials at hand; a file holding one of the values is refused.
        max_bytes: refuse a stage larger than this (a Space repo's limit), before any file is read.

    Raises:
        SecretFileError: a file looks like it holds a credential (names the file).
        PublishError: ``checkpoints`` holds no checkpoint-N folder, or the stage exceeds ``max_bytes``.
    """
    import vlm_lab

    sources: list[tuple[str, str, Path]] = []  # (part, path in repo, source)
    excluded: list[str] = []
    notes: list[str] = []
    if space_dir is not None:
        package = Path(vlm_lab.__file__).resolve().parent
        for part, folder, prefix in (("space", space_dir, ""), ("package", package, "vlm_lab/")):
            keep, drop = publishable_files(folder)
            sources += [(part, prefix + rel.as_posix(), folder / rel) for rel in keep]
            excluded += [str(folder / rel) for rel in drop]
    if checkpoints is not None:
        prefix = f"{checkpoints_prefix.strip('/')}/" if checkpoints_prefix else ""
        found, notes = checkpoint_sources(checkpoints, build_missing=build_missing)
        sources += [("checkpoints", prefix + rel, src) for rel, src in found]

    if max_bytes is not None:
        _check_stage_size(sources, max_bytes)

    from vlm_lab.checkpoints import file_digest, load_digest_memo, save_digest_memo

    memo = load_digest_memo()  # the digests compare and fingerprints keep: unchanged weights are not re-read
    memo_size = len(memo)
    files: dict[str, LocalFile] = {}
    sizes: dict[str, int] = {}
    for part, rel, src in sources:
        kind = find_secret(src, known)
        if kind is not None:
            raise SecretFileError(
                f"{src} looks like it contains {kind}; nothing was uploaded. Remove the credential from the file "
                "(pass secrets with --secret NAME, read from the environment), or delete the file"
            )
        size = src.stat().st_size
        files[rel] = LocalFile(path=rel, source=src, size=size, sha256=file_digest(src, memo))
        sizes[part] = sizes.get(part, 0) + size
    if len(memo) != memo_size:
        save_digest_memo(memo)
    return Stage(files=files, excluded=tuple(excluded), sizes=sizes, notes=tuple(notes))


def _check_stage_size(sources: list[tuple[str, str, Path]], max_bytes: int) -> None:
    """Refuse a Space stage over ``max_bytes`` from the files' sizes alone: hashing many GB only to be refused wastes minutes."""
    sizes: dict[str, int] = {}
    for part, _, src in sources:
        sizes[part] = sizes.get(part, 0) + src.stat().st_size
    total = sum(sizes.values())
    if total <= max_bytes:
        return
    parts = ", ".join(f"{part} {human_bytes(n)}" for part, n in sizes.items())
    raise PublishError(
        f"the Space would hold {human_bytes(total)} ({parts}), over the {human_bytes(max_bytes)} a Space repo may hold "
        "on the Hub; nothing was uploaded. Keep the checkpoints in a model repo the Space loads them from: add "
        "--checkpoints-repo OWNER/NAME (e.g. your-name/vlm-checkpoints), or pass --checkpoints a folder holding only "
        "the checkpoints to show"
    )
