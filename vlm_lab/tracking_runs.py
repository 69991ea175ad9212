"""Starting and finishing W&B runs: the mode, ``start_run``/``finish_run``, and what a logging call
returns (``TrackedRun``, or a falsy ``NotLogged`` saying why not).

Offline by default: with no ``WANDB_API_KEY`` and no ``WANDB_MODE`` a run is written under
``$WANDB_DIR/wandb/offline-run-*``. When online fails (no key configured, a key the server refuses, no
network) the run is logged offline instead (``_start_or_offline``), with one warning naming why (the setting
to fix) and the ``wandb sync`` command; a failed online start leaves no online ``run-*`` folder behind. The API key is never printed or logged (``_redact``). ``vlm_lab.tracking`` re-exports the
public names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import secrets
import shlex
import string
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

from vlm_lab.errors import VlmLabError

MODES = ("online", "offline", "disabled")
DEFAULT_PROJECT = "vlm-lab"
MAX_TAG = 64  # W&B refuses a run whose tag is longer (the whole wandb.init fails)
# A gateway's "the server behind me is not there" (502 Bad Gateway, 503 Unavailable, 504 Gateway Timeout): wandb.init
# retries these for its whole init_timeout, as it waits on a refused connection.
GATEWAY_DOWN = (502, 503, 504)
_ID_CHARS = string.ascii_lowercase + string.digits
PROBE_TIMEOUT_S = 10.0  # at most this long to learn the W&B server does not answer (wandb.init waits init_timeout, 90 s)


class TrackingWarning(UserWarning):
    """W&B logging failed; the experiment and its files on disk are unaffected."""


@dataclasses.dataclass(frozen=True)
class TrackedRun:
    """Where a logged W&B run went."""

    id: str
    mode: str  # online | offline
    dir: Path | None  # the offline-run-* / run-* folder
    url: str | None  # online only
    online_error: str = ""  # online was asked for and failed (key redacted): why this run is offline
    earlier: tuple[Path, ...] = ()  # offline: the earlier starts of this run (same id, resumed), oldest first

    @property
    def sync_command(self) -> str | None:
        """``wandb sync DIR`` for an offline run (every start of it, oldest first: ``offline_runs.OfflineRun.sync_paths``),
        else None."""
        if self.mode != "offline" or self.dir is None:
            return None
        return "wandb sync " + " ".join(shlex.quote(str(p)) for p in (*self.earlier, self.dir))  # pasted into a shell

    def __str__(self) -> str:
        if self.mode == "online":
            return f"W&B run {self.id}: {self.url}"
        starts = f" ({len(self.earlier) + 1} starts)" if self.earlier else ""
        why = f" (online failed: {self.online_error})" if self.online_error else ""
        return f"W&B offline run {self.id} in {self.dir}{starts}{why}; upload it with: {self.sync_command}"


@dataclasses.dataclass(frozen=True)
class NotLogged:
    """Why a comparison was not logged: W&B is disabled, or it failed (also warned as a ``TrackingWarning``).

    Falsy, so ``if tracked:`` still means "logged"; printing it says what happened.
    """

    reason: str  # API key redacted
    attempted: bool  # True: a run was asked for and W&B failed; False: W&B is disabled

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        if self.attempted:
            return f"W&B logging was attempted and skipped: {self.reason}"
        return f"not logged to W&B: {self.reason}"


def resolve_mode(mode: str | None = None) -> str:
    """The W&B mode to use, read from the environment at call time.

    An explicit ``mode`` wins; then ``WANDB_MODE`` (``dryrun`` means offline) or
    ``WANDB_DISABLED=true``; then online when ``WANDB_API_KEY`` is set, else offline.
    """
    from vlm_lab.errors import ConfigError

    if mode is None:
        env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
        if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
            env_mode = "disabled"
        mode = {"dryrun": "offline", "run": "online"}.get(env_mode, env_mode)
        if not mode:
            mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    if mode not in MODES:
        raise ConfigError(f"W&B mode {mode!r} is not one of {', '.join(MODES)} (set WANDB_MODE or pass mode=)")
    return mode


def local_env(root: str | os.PathLike[str]) -> dict[str, str]:
    """Env vars that keep every W&B file (runs, staged media, cache, settings) under ``root``."""
    root = Path(root)
    return {
        "WANDB_DIR": str(root),
        "WANDB_DATA_DIR": str(root / "data"),
        "WANDB_CACHE_DIR": str(root / "cache"),
        "WANDB_CONFIG_DIR": str(root / "config"),
    }


def variant_tags(varied: Mapping[str, Any]) -> str:
    """``"key=value,..."`` tags of a variant, for a notebook's ``wandb_tags`` parameter (split on
    commas): a comma inside a value (``checkpoints: "a,b"``) becomes ``+``, keeping one tag per key."""
    return ",".join(f"{k}={v}".replace(",", "+") for k, v in sorted(varied.items()))


def _tag(text: str) -> str:
    """``text`` within W&B's 64-character limit; a longer tag keeps its start plus a hash of all of it."""
    if len(text) <= MAX_TAG:
        return text
    return f"{text[: MAX_TAG - 9]}~{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _redact(text: str) -> str:
    """Remove the API key from a message before it is shown anywhere."""
    key = os.environ.get("WANDB_API_KEY", "")
    return text.replace(key, "***") if len(key) >= 8 else text


def _skip(what: str, error: BaseException) -> NotLogged:
    """Warn once that logging was skipped, and say why in the returned ``NotLogged``."""
    detail = _redact(f"{type(error).__name__}: {error}; results on disk are unaffected")
    warnings.warn(TrackingWarning(f"W&B logging skipped ({what}): {detail}"), stacklevel=3)
    return NotLogged(reason=f"{what}: {detail}", attempted=True)


def _disabled(mode: str | None) -> NotLogged:
    """What turned W&B off: the caller's ``mode`` or the environment."""
    if mode is not None:
        source = f"mode={mode!r} was passed"
    elif os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        source = "WANDB_DISABLED is set; unset it to log"
    else:
        source = f"WANDB_MODE={os.environ.get('WANDB_MODE', '').strip()} is set; unset it to log"
    return NotLogged(reason=f"W&B is disabled ({source})", attempted=False)


def _check_writable(directory: str | os.PathLike[str]) -> Path:
    """wandb silently falls back to /tmp when its folder is unwritable; we refuse instead."""
    from vlm_lab.errors import OutputPathError
    from vlm_lab.paths import probe_write

    # Absolute: the run's folder and its `wandb sync` command are printed and recorded (wandb.json) to be
    # used from elsewhere (a shell, the sweep's report); a relative WANDB_DIR made them relative to the kernel's cwd.
    # "~" as wandb reads it (WANDB_DIR=~/wandb-runs from a systemd EnvironmentFile, which no shell expanded).
    path = Path(directory).expanduser().absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe_write(path)
    except OSError as e:
        raise OutputPathError(
            f"W&B directory {str(path)!r} is not writable ({e.strerror or e}); set WANDB_DIR to a writable folder"
        ) from e
    return path


def start_run(
    config: Mapping[str, Any] | Any | None = None,
    *,
    project: str | None = None,
    entity: str | None = None,
    group: str | None = None,
    job_type: str = "compare",
    tags: Iterable[str] | str = (),
    name: str | None = None,
    mode: str | None = None,
    dir: str | os.PathLike[str] | None = None,
    id: str | None = None,
    resume: str | None = None,
) -> Any:
    """Start a W&B run (or return None when disabled). Raises on failure; see ``log_comparison``.

    ``config`` is a typed config (logged as ``config.to_dict()``, unchanged) or a mapping.
    ``project`` defaults to ``WANDB_PROJECT``, else ``vlm-lab`` (read at call time).
    ``entity`` is the team workspace (default: ``WANDB_ENTITY`` or the key's user); ``group`` the
    sweep or ablation; ``tags`` the variant (an iterable, or one comma-separated string).
    ``id`` and ``resume`` go to ``wandb.init``: ``id=..., resume="allow"`` continues that run when it
    exists (a sweep point re-run after a kill). Offline, each start writes another
    ``offline-run-*-<id>`` folder: ``offline_runs.latest_runs`` shows them as one run, and one
    ``wandb sync`` of all of them uploads them into that one W&B run, in start order.
    """
    mode = resolve_mode(mode)
    if mode == "disabled":
        return None
    run_dir = _check_writable(dir or os.environ.get("WANDB_DIR") or Path.cwd())
    import wandb

    if isinstance(tags, str):  # "strategy=greedy,max_new_tokens=4" from a notebook parameter
        tags = tags.split(",")
    if config is not None and hasattr(config, "to_dict"):
        config = config.to_dict()
    # Without a key wandb.init prompts on a terminal (a hang under nohup) or fails with no fix named.
    if mode == "online" and wandb.run is None and not _login(wandb):
        from vlm_lab.errors import ConfigError

        raise ConfigError(
            f"W&B mode is online ({_online_source()}) but no W&B API key is configured: "
            "set WANDB_API_KEY or run `wandb login` (or set WANDB_MODE=offline)"
        )
    if mode == "online" and wandb.run is None:
        _check_reachable(wandb.setup().settings)
        _check_key_accepted(wandb)
    # wandb reads WANDB_PROJECT only when no project is passed: passing our default would hide it
    project = project or os.environ.get("WANDB_PROJECT", "").strip() or DEFAULT_PROJECT
    # Online, a known id names the run-<time>-<id> folder a failed wandb.init leaves, to remove it and no other:
    # WANDB_RUN_ID's (which wandb would take), else a fresh one in wandb's own form (8 of [a-z0-9]).
    if mode == "online" and not id:
        id = os.environ.get("WANDB_RUN_ID", "").strip() or "".join(secrets.choice(_ID_CHARS) for _ in range(8))
    before = _run_folders(run_dir, id) if mode == "online" else set()
    try:
        return wandb.init(
            project=project,
            entity=entity or None,
            group=group or None,
            job_type=job_type,
            tags=[_tag(str(t).strip()) for t in tags if str(t).strip()],
            name=name or None,
            config=dict(config) if config is not None else None,
            id=id or None,
            resume=resume or None,
            mode=mode,
            dir=str(run_dir),
            reinit="create_new",  # never hijack or finish a run the user has open
            settings=wandb.Settings(console="off", x_disable_stats=True, disable_git=True),
        )
    except Exception as e:
        if mode != "online":
            raise
        _remove_dead_starts(run_dir, id, keep=before)
        if isinstance(e, wandb.errors.CommError) and "permission" in str(e).lower():
            where = f"project {project!r}" + (f" of entity {entity!r}" if entity else "")
            raise RunRefusedError(
                f"the W&B server accepted the API key but did not start the run in {where} ({_redact(f'{type(e).__name__}: {e}')}): "
                "check that the key's user may write there (entity=, WANDB_ENTITY; project=, WANDB_PROJECT)"
            ) from None
        raise


class KeyRefusedError(VlmLabError, PermissionError):
    """The API key cannot be used (malformed, or the W&B server did not accept it): ``_start_or_offline`` logs
    the run offline."""


class RunRefusedError(VlmLabError, PermissionError):
    """The W&B server accepted the key but refused to start the run (a project its user may not write to)."""


def _check_key_accepted(wandb: Any) -> None:
    """Ask the W&B server who the key is before ``wandb.init``: a refused key (401/403) made init fail with only
    the server's words ('permission denied'), after it had made an online run folder that held nothing.
    ``wandb.Api()`` verifies the session's key when built; ``wandb.login(verify=True)`` does not once the session
    has a key (``start_run``'s first login gave it one).

    Raises:
        KeyRefusedError: naming where the key came from (WANDB_API_KEY, or `wandb login`) and the fix; never the key.
    """
    try:
        wandb.Api(timeout=int(PROBE_TIMEOUT_S))
    except wandb.errors.AuthenticationError as e:
        url = _without_credentials(str(wandb.setup().settings.base_url).rstrip("/"))
        detail = re.sub(r"^Failed to (authenticate|verify credentials) with \S+: ", "", str(e))  # the URL is ours
        if detail.startswith("Failed to execute API request"):  # no verdict (5xx until wandb gave up): not the key
            raise ServerUnreachableError(_redact(
                f"the W&B server {url} could not check the API key ({detail}); try again later, or check "
                "WANDB_BASE_URL for a self-hosted server (or set WANDB_MODE=offline)"
            )) from None  # fmt: skip
        source, fix = _key_source_and_fix()
        raise KeyRefusedError(
            _redact(f"the W&B server {url} did not accept the API key {source} ({detail}): {fix}")
        ) from None


def _login(wandb: Any) -> bool:
    """``wandb.login`` with no prompt and no network: whether a key is configured. A malformed key (whitespace
    from a CRLF .env, too short) is named with where it came from: wandb's own words do not say which key."""
    try:
        return wandb.login(prompt=False, verify=False)
    except (wandb.errors.AuthenticationError, wandb.errors.UsageError) as e:
        source, fix = _key_source_and_fix()
        detail = str(e).removeprefix("WANDB_API_KEY invalid: ")
        raise KeyRefusedError(_redact(f"the W&B API key {source} cannot be used ({detail}): {fix}")) from None


def _key_source_and_fix() -> tuple[str, str]:
    """Where wandb took the key from (the environment first, then what `wandb login` saved), and how to mend it."""
    if os.environ.get("WANDB_API_KEY"):
        return "in WANDB_API_KEY", "set WANDB_API_KEY to a valid key (or unset it and run `wandb login --relogin`)"
    return "saved by `wandb login`", "run `wandb login --relogin` with a valid key (or set WANDB_API_KEY)"


def _run_folders(run_dir: Path, run_id: str) -> set[Path]:
    """The online run folders of ``run_id`` (wandb names them ``run-<time>-<id>``) in ``run_dir/wandb``."""
    return {p for p in (run_dir / "wandb").glob(f"run-*-{run_id}") if p.is_dir() and not p.is_symlink()}


def _remove_dead_starts(run_dir: Path, run_id: str, *, keep: set[Path]) -> None:
    """Remove the online run folder a failed ``wandb.init`` made (a header and its logs; the server has nothing of
    it), so `wandb sync` and ``vlm-lab runs`` never see a dead run beside the offline one that holds the data.
    Only this start's: ``run_id`` is this start's and ``keep`` the folders of it there before (earlier starts).
    wandb's links to the latest run (latest-run, debug.log) that pointed into it go too."""
    import shutil

    dead = _run_folders(run_dir, run_id) - keep
    for folder in dead:
        shutil.rmtree(folder, ignore_errors=True)
    for link in (run_dir / "wandb").iterdir() if dead else ():
        if link.is_symlink() and {f.name for f in dead}.intersection(Path(os.readlink(link)).parts):
            link.unlink(missing_ok=True)




class ServerUnreachableError(VlmLabError, ConnectionError):
    """The W&B server does not answer: ``_start_or_offline`` logs the run offline at once."""


def _check_reachable(settings: Any) -> None:
    """Ask the W&B server anything before ``wandb.init``, which waits its whole ``init_timeout`` (90 s
    by default, measured 100 s) even when the connection is refused: each point of an overnight sweep
    without network would spend that long before logging offline. Any HTTP answer, error statuses
    included, means it is there, but a gateway's 502/503/504 (``GATEWAY_DOWN``: a proxy, or the load balancer
    of a self-hosted server that is down), which wandb also retries until its timeout (107 s measured);
    proxies are honoured as ``wandb`` honours them (the environment's).

    Raises:
        ServerUnreachableError: no answer within ``PROBE_TIMEOUT_S`` (or the init timeout, when shorter), or
            a gateway's 502/503/504.
    """
    import ssl
    import urllib.error
    import urllib.request

    base_url = _without_credentials(str(settings.base_url).rstrip("/"))
    timeout = min(PROBE_TIMEOUT_S, float(settings.init_timeout or PROBE_TIMEOUT_S))
    fix = "check the network, or WANDB_BASE_URL for a self-hosted server (or set WANDB_MODE=offline)"
    try:
        urllib.request.urlopen(urllib.request.Request(base_url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError as e:
        if e.code in GATEWAY_DOWN:  # a proxy or load balancer speaking for a server that is not there
            raise ServerUnreachableError(
                f"the W&B server {base_url} is down or cannot be reached: a proxy or gateway answered HTTP {e.code} "
                f"({e.reason}) for it; {fix}"
            ) from None
        return  # the server itself answered
    except (OSError, ValueError) as e:  # refused, no route, DNS, timeout; ValueError: not a URL
        reason = getattr(e, "reason", None) or e
        if isinstance(reason, ssl.SSLError):
            return  # it answered; certificates are wandb's to judge (REQUESTS_CA_BUNDLE, a company's CA)
        what = f"did not answer within {timeout:g} s" if isinstance(reason, TimeoutError) else f"cannot be reached ({reason})"
        raise ServerUnreachableError(f"the W&B server {base_url} {what}; {fix}") from None


def _without_credentials(url: str) -> str:
    """``url`` without a ``user:password@`` (a secret never to print; urllib would read it as the host name)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl() if "@" in parts.netloc else url


def _online_source() -> str:
    env_mode = os.environ.get("WANDB_MODE", "").strip()
    return f"WANDB_MODE={env_mode}" if env_mode.lower() in ("online", "run") else "mode='online' was passed"


def _start_or_offline(config: Any, *, mode: str | None, **options: Any) -> tuple[Any, str, str]:
    """``start_run``; when online fails (no key, no network), the run is logged offline instead so
    nothing is lost. Returns (run or None when disabled, the mode used, why online failed or "")."""
    resolved = resolve_mode(mode)
    try:
        return start_run(config, mode=resolved, **options), resolved, ""
    except Exception as e:  # noqa: BLE001 - online trouble is not a reason to lose the run
        if resolved != "online":
            raise
        why = " ".join(_redact(f"{e}" if isinstance(e, VlmLabError) else f"{type(e).__name__}: {e}").split())  # one line
    run = start_run(config, mode="offline", **options)
    warnings.warn(
        TrackingWarning(f"{why}; logged offline instead: upload it later with `{_tracked(run, 'offline').sync_command}`"),
        stacklevel=3,
    )
    return run, "offline", why


def finish_run(run: Any) -> TrackedRun | None:
    """Finish a run from ``start_run``; offline, return only once its log is complete on disk."""
    if run is None:
        return None
    return _finish(run, _tracked(run, _run_mode(run)))


def _finish(run: Any, tracked: TrackedRun) -> TrackedRun:
    """Finish the run; offline, return only once its log is on disk (wandb-core writes it asynchronously)."""
    run.finish()
    if tracked.mode == "offline" and tracked.dir is not None:
        from vlm_lab.offline_runs import wait_until_written

        wait_until_written(tracked.dir)
    return tracked


def _tracked(run: Any, mode: str, online_error: str = "") -> TrackedRun:
    sync_dir = getattr(run.settings, "sync_dir", None)
    url = getattr(run, "url", None) if mode == "online" else None
    earlier: tuple[Path, ...] = ()
    if mode == "offline" and sync_dir:  # a resumed run: wandb wrote each earlier start into its own folder beside it
        from vlm_lab.offline_runs import starts_beside

        starts = starts_beside(sync_dir, run.id, project=run.project, entity=run.entity or "", exclude=sync_dir)
        earlier = tuple(start.dir for start in starts)
    return TrackedRun(id=run.id, mode=mode, dir=Path(sync_dir) if sync_dir else None, url=url, online_error=online_error,
                      earlier=earlier)  # fmt: skip


def _run_mode(run: Any) -> str:
    return "offline" if getattr(run.settings, "_offline", False) or run.settings.mode == "offline" else "online"


def _finish_quietly(run: Any) -> None:
    """Close a run that failed or was interrupted, as failed: wandb-core then writes its log (an open run
    leaves only a header on disk until the process exits, which a notebook kernel may not do for hours)."""
    try:
        run.finish(exit_code=1)
    except Exception:  # noqa: BLE001 - already warned once
        pass
