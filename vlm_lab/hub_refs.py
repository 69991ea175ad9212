"""Hub references: ``org/name[@revision][:subfolder]`` parsed, checked and resolved to a commit.

The hub half of ``vlm_lab.checkpoints`` (which resolves every reference and re-exports these names):

- ``parse_hub_ref``: the reference's parts; a browser's or ``hf://`` address is named as the reference to write;
- ``hub_commit`` / ``hub_fingerprint``: the commit a revision points at (the hub, else the local cache), and
  the fingerprint that names those weights;
- a repo a Trainer pushed with ``hub_strategy="all_checkpoints"`` expands to its ``checkpoint-N`` folders,
  listed by the hub (remembered per commit) or, offline or unreachable, by the cached snapshot
  (``CachedListingWarning`` says what the cache may lack);
- ``check_hub_config``: a reference's config.json can be had before transformers tries; when the hub
  cannot be reached the cached snapshot loads (``HubUnreachableWarning``);
- the errors: what the hub answered, or what the local cache lacks and holds near it, and the fix.

A hub that cannot be reached is remembered for this process (per endpoint, ``UNREACHABLE_RETRY_S``): later
references go straight to the local cache, and a ``HubUnreachableWarning`` is given once per repo and commit,
not once per checkpoint. Without that, a hub that accepts connections and never answers (a firewall, a
proxy) cost every checkpoint three request timeouts; huggingface_hub's ``model_info`` has no timeout of its
own and waited forever.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import time
import warnings
from pathlib import Path, PurePosixPath

from vlm_lab.checkpoints import (
    _HUB_ID,
    WEIGHT_SUFFIXES,
    CheckpointRef,
    _absolute,
    _incomplete,
    _nearby,
    _run_order,
    by_step,
    digest_memo_path,
    discover_checkpoints,
)
from vlm_lab.errors import CheckpointNotFoundError

HUB_LISTING_ENTRIES = 2_000  # hub runs' checkpoint lists remembered, newest kept
UNREACHABLE_RETRY_S = 300.0  # how long a hub found unreachable is not asked again in this process

# This process's memory of the hub: endpoint -> (time.monotonic() it failed, the error), while it cannot be
# reached; and the (endpoint, repo, commit) a HubUnreachableWarning already named.
_UNREACHABLE: dict[str, tuple[float, Exception]] = {}
_WARNED: set[tuple[str, str, str]] = set()


def parse_hub_ref(spec: str) -> CheckpointRef:
    """Parse ``org/name[@revision][:subfolder]`` into a hub reference."""
    rest, subfolder = spec, None
    if ":" in rest:
        rest, subfolder = rest.split(":", 1)
    revision = None
    if "@" in rest:
        rest, revision = rest.split("@", 1)
    if not _HUB_ID.match(rest) or revision == "" or subfolder == "":
        raise CheckpointNotFoundError(
            f"{spec!r} is neither a local folder nor a hub id; use a path, or org/name[@revision][:subfolder]"
        )
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:  # a name huggingface_hub refuses ("--", "..") would fail each call to it, read as the hub being unreachable
        validate_repo_id(rest)
    except HFValidationError as e:
        raise CheckpointNotFoundError(
            f"{spec!r} names no hub repo huggingface_hub accepts ({e}); fix the name, or pass a local folder"
        ) from None
    if revision is None and subfolder is not None and "@" in subfolder:  # org/run:checkpoint-0@main
        folder, named = subfolder.rsplit("@", 1)
        raise CheckpointNotFoundError(
            f"{spec!r}: the revision goes before the subfolder: {rest}@{named}:{folder} "
            f"(if {subfolder!r} is the folder's name, name the revision first: {rest}@main:{subfolder})"
        )
    if subfolder is not None:  # a path inside the repo, as the hub names it: "/ckpt/" is "ckpt", "." the root
        parts = [p for p in subfolder.replace("\\", "/").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise CheckpointNotFoundError(
                f"{spec!r}: subfolder {subfolder!r} points outside the repo; name a folder inside it, e.g. {rest}:checkpoint-500"
            )
        subfolder = "/".join(parts) or None
    return CheckpointRef(spec=spec, repo_id=rest, revision=revision, subfolder=subfolder)


# A model's address on the hub as a browser shows it, https://huggingface.co/org/name[/tree|blob|resolve/<rev>[/<path>]],
# or as huggingface_hub's file system writes it, hf://[models/]org/name[@<rev>][/<path>]
_HUB_URL = re.compile(
    r"^(?:https?://(?:www\.)?(?:huggingface\.co|hf\.co)/(?P<repo>[^/@]+/[^/@]+)/*(?:/(?P<kind>tree|blob|resolve)/(?P<rev>[^/]+)(?P<path>/.*)?)?"
    r"|hf://(?:models/)?(?P<fs_repo>[^/@]+/[^/@]+)(?:@(?P<fs_rev>[^/]+))?(?P<fs_path>/.*)?)$"
)


_FILE_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".md", ".py", *WEIGHT_SUFFIXES)


def _spec_of_url(url: re.Match) -> str:
    """``org/name[@revision][:subfolder]`` for a hub address: a file's address names its folder."""
    repo, revision, path = url["repo"] or url["fs_repo"], url["rev"] or url["fs_rev"], url["path"] or url["fs_path"] or ""
    parts = [p for p in path.split("/") if p]
    if parts and url["kind"] != "tree" and PurePosixPath(parts[-1]).suffix in _FILE_SUFFIXES:  # .../blob/main/ckpt/config.json
        parts = parts[:-1]
    return repo + (f"@{revision}" if revision and revision != "main" else "") + (f":{'/'.join(parts)}" if parts else "")


def hub_fingerprint(ref: CheckpointRef, commit: str) -> str:
    """``fingerprint`` of a hub reference whose revision resolved to ``commit``."""
    return hashlib.sha256(json.dumps([ref.repo_id, commit, ref.subfolder]).encode()).hexdigest()[:16]


def hub_commit(ref: CheckpointRef) -> str:
    """The commit a hub revision points at: asked of the hub, or read from the local cache offline.

    Raises:
        CheckpointNotFoundError: neither knows it (offline and not cached, unknown repo or revision).
    """
    from huggingface_hub import is_offline_mode

    known = None
    try:
        # huggingface_hub's own resolution: the hub when online (and refs/ updated), the cache's
        # refs/ when offline or unreachable, a commit id as is.
        known = None if is_offline_mode() else _known_unreachable()  # then the cache's refs/ only, at once
        return hub_api().resolve_revision(ref.repo_id, revision=ref.revision, local_files_only=known is not None or is_offline_mode()).resolved
    except Exception as e:  # noqa: BLE001 - whatever the reason, the weights are unknown: refuse to guess
        raise _hub_not_found(ref, _hub_problem(ref, known if known is not None else e)) from e


def _expand_hub_run(ref: CheckpointRef) -> list[CheckpointRef]:
    """A hub repo pushed by a Trainer (``hub_strategy="all_checkpoints"``) as a training output folder
    is: ``org/run[@rev]:checkpoint-N`` by N, then ``ref`` itself when its root holds a model too.
    Empty when the revision has no ``checkpoint-N/config.json``.

    The folders come from the hub's file list of the revision online (remembered per commit), from its
    cached snapshot offline (or when the hub cannot be reached): only the folders whose config.json is
    cached, with a ``CachedListingWarning`` naming the ones the hub listed and the cache lacks, or, when
    the hub was never asked about that commit, saying the cache cannot tell.

    Raises:
        CheckpointNotFoundError: the hub says the repo or revision does not exist or is gated.
    """
    folders, cached = _hub_config_folders(ref)
    base = ref.repo_id + (f"@{ref.revision}" if ref.revision else "")
    steps = [dataclasses.replace(ref, spec=f"{base}:{n}", subfolder=n) for n in by_step(folders)]
    if steps and cached is not None and (message := _cached_listing(ref, cached, [s.subfolder for s in steps])):
        warnings.warn(message, CachedListingWarning, stacklevel=3)
    return _run_order(steps, ref if "" in folders else None) if steps else []


class CachedListingWarning(UserWarning):
    """A hub run (``org/run``) was expanded from the local Hugging Face cache, offline or with the hub
    unreachable, and the cache may lack some of its checkpoint-N folders: the warning names the folders
    found, the ones known to be missing (or that the cache cannot tell), and the download that fetches them."""


@dataclasses.dataclass(frozen=True)
class _CachedRun:
    """Where an expansion read the cache instead of the hub: the snapshot folder and why."""

    snapshot: Path
    why: str  # "HF_HUB_OFFLINE=1", or the hub's connection error


def _cached_listing(ref: CheckpointRef, cached: _CachedRun, found: list[str]) -> str:
    """The ``CachedListingWarning`` text ("" when the hub's list of that commit is known and all cached)."""
    from vlm_lab.hub_cache import listed

    commit = cached.snapshot.name
    listing = _hub_listings().get(f"{ref.repo_id}@{commit}")
    if listing is not None:
        missing = by_step(set(listing) - set(found))
        if not missing:
            return ""
        lacks = f"it lacks {listed(missing, '')}, which the hub listed at that commit"
    else:
        lacks = "it cannot tell whether the hub has more (vlm_lab has not listed that commit online)"
    partial = by_step(c.name for c in cached.snapshot.iterdir() if c.is_dir() and c.name not in found)
    if partial:
        why = {n: _incomplete(cached.snapshot / n, trainer_state=False) for n in partial}
        lacks += "; " + "; ".join(f"{n} is cached " + (f"without {w[3:].removesuffix(' in the folder')}" if w.startswith("no ") else f"but {w}")
                                  for n, w in why.items())  # fmt: skip
        lacks += " (partly downloaded)"
    at = f"{ref.revision or 'main'}" + ("" if commit == ref.revision else f" (commit {commit[:7]})")
    revision = f" --revision {ref.revision}" if ref.revision else ""
    online = "without HF_HUB_OFFLINE=1" if cached.why == "HF_HUB_OFFLINE=1" else "once the hub can be reached"
    return (
        f"{ref.spec!r} is listed from the local Hugging Face cache ({_cache_dir()}), not the hub ({cached.why}): it holds "
        f"{listed(found, '')} of {at}; {lacks}; to compare every checkpoint, download them while online "
        f"(hf download {ref.repo_id}{revision} --include 'checkpoint-*/*' --exclude '*/optimizer.pt') or run {online}"
    )


def _hub_listings_path() -> Path:
    """The per-user file of the checkpoint folders the hub listed, by ``repo@commit``."""
    return digest_memo_path().with_name("hub-listings.json")


def _hub_listings() -> dict[str, list[str]]:
    try:
        listings = json.loads(_hub_listings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return listings if isinstance(listings, dict) else {}


def _remember_listing(repo_id: str, commit: str | None, folders: set[str]) -> None:
    """Remember the hub's ``checkpoint-N`` folders of ``repo_id`` at ``commit`` for offline expansion.
    Only a memo: an unwritable cache costs the exact warning later, never an error."""
    from vlm_lab.data import atomic_write_text

    if not commit:
        return
    listings = _hub_listings()
    listings.pop(key := f"{repo_id}@{commit}", None)
    listings[key] = by_step(folders)
    try:
        atomic_write_text(_hub_listings_path(), json.dumps(dict(list(listings.items())[-HUB_LISTING_ENTRIES:])))
    except OSError:
        pass


def _config_folders_listed(info) -> set[str]:  # info: huggingface_hub.ModelInfo
    """The folders of a hub revision's file list (``model_info(...).siblings``) that hold a config.json ("" its root)."""
    names = [PurePosixPath(s.rfilename) for s in info.siblings or ()]
    return {"" if p.parent.name == "" else str(p.parent) for p in names if p.name == "config.json"}


def _cached_snapshot(ref: CheckpointRef) -> Path | None:
    from vlm_lab.hub_cache import cached_snapshot

    return cached_snapshot(ref.repo_id, ref.revision, cache_dir=_cache_dir())


def _hub_config_folders(ref: CheckpointRef) -> tuple[set[str], _CachedRun | None]:
    """The folders of ``ref``'s revision that hold a config.json ("" its root): the hub's (and None),
    else the cache's (and which snapshot, and why)."""
    from huggingface_hub import is_offline_mode
    from huggingface_hub.errors import HfHubHTTPError

    if not is_offline_mode():
        error = _known_unreachable()
        try:
            if error is None:
                # One request, no retries: the commit the revision is now and its files (a recursive
                # list_repo_tree pages, and retries for half a minute when the hub is unreachable).
                info = hub_api().model_info(ref.repo_id, revision=ref.revision)
                folders = _config_folders_listed(info)
                if by_step(folders):
                    _remember_listing(ref.repo_id, info.sha, folders)
                return folders, None
        except HfHubHTTPError as e:
            if e.response is None or e.response.status_code < 500:  # the hub answered: no such repo, revision, access
                raise _hub_not_found(ref, _hub_problem(ref, e)) from e
            error = e
        except Exception as e:  # noqa: BLE001 - unreachable: the cached snapshot, as huggingface_hub's downloads do
            error = e
        snapshot = _cached_snapshot(ref)
        if snapshot is None:
            raise _hub_not_found(ref, _hub_problem(ref, error)) from error
        why = f"the hub could not be reached: {first_line(error)}"
    else:
        snapshot, why = _cached_snapshot(ref), "HF_HUB_OFFLINE=1"
    if snapshot is None:
        return set(), None  # not cached: _check_cached_if_offline says what the cache holds instead
    found = discover_checkpoints(snapshot)
    loadable = [p for p in found if not _incomplete(p, trainer_state=False)]  # a download cut short: config.json only
    folders = {p.name for p in loadable or found} | ({""} if (snapshot / "config.json").is_file() else set())
    return folders, _CachedRun(snapshot, why)


def _check_cached_if_offline(ref: CheckpointRef) -> None:
    """Offline, a hub reference must have its config in the local cache (what loading it needs first)."""
    from huggingface_hub import is_offline_mode, try_to_load_from_cache

    if not is_offline_mode():
        return  # online: asked of the hub when the commit is needed (fingerprint) or at load time
    config = f"{ref.subfolder.strip('/')}/config.json" if ref.subfolder else "config.json"
    try:
        if isinstance(try_to_load_from_cache(ref.repo_id, config, revision=ref.revision), str):
            return
    except ValueError:  # a repo id huggingface_hub refuses (e.g. "a--b"): it cannot be cached either
        pass
    raise _hub_not_found(ref, _offline_problem(ref))


def check_hub_config(ref: CheckpointRef, *, token: str | None = None) -> bool:
    """A hub reference's ``config.json`` (in its subfolder) can be had, from the hub or the local cache,
    before transformers tries: without it, ``AutoConfig`` reads an empty config and reports a missing
    ``model_type`` ("fix its model_type"), not the missing folder.

    The hub is asked once, without retries. When it cannot be reached (or fails, 5xx) and the config is
    cached, the caller loads from the cache only (``local_files_only=True``, as ``HF_HUB_OFFLINE=1``
    would): huggingface_hub retries each file it cannot find in the cache for about 25 s, and
    transformers looks for a dozen optional ones (minutes before a cached model loads).

    Returns:
        True when the hub could not be reached and ``ref`` must load from the local cache only
        (a ``HubUnreachableWarning`` says so); False when the hub answered, or offline.

    Raises:
        CheckpointNotFoundError: the hub (or offline, the cache) has no such repo, revision or file; a
            missing subfolder's error lists the revision's folders that hold a config.json; the hub
            cannot be reached and the cache lacks it.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url, is_offline_mode
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    where = {"repo_id": ref.repo_id, "filename": "config.json", "subfolder": ref.subfolder, "revision": ref.revision}
    if not is_offline_mode():
        error = _known_unreachable()
        if error is None:
            try:
                get_hf_file_metadata(hf_hub_url(**where), token=token)  # one HEAD, no retries
            except RemoteEntryNotFoundError as e:
                raise _hub_not_found(ref, _hub_missing_config(ref, token)) from e
            except Exception as e:  # noqa: BLE001 - an answer (no repo, revision, access) is an error, anything else: the cache
                if _hub_answered(e):
                    raise _hub_not_found(ref, _hub_problem(ref, e)) from e
                error = _note_unreachable(e)
        if error is not None:
            try:
                hf_hub_download(**where, cache_dir=_cache_dir(), local_files_only=True)
            except LocalEntryNotFoundError:
                raise _hub_not_found(ref, _unreachable_problem(ref, error)) from error
            _warn_unreachable(ref, error)
            return True
    try:
        hf_hub_download(**where, cache_dir=_cache_dir(), token=token)
    except LocalEntryNotFoundError as e:  # offline and not cached
        raise _hub_not_found(ref, _offline_problem(ref)) from e
    return False


class HubUnreachableWarning(UserWarning):
    """The hub could not be reached (or failed): a hub reference loads from the local Hugging Face cache,
    at the commit its revision had when it was downloaded. Given once per endpoint, repo and commit in a
    process: the other checkpoints of a run at that commit load the same way."""


def _warn_unreachable(ref: CheckpointRef, error: Exception) -> None:
    commit = hub_commit(ref)
    if (key := (hub_endpoint(), ref.repo_id, commit)) in _WARNED:
        return
    _WARNED.add(key)
    others = f", as will the other folders of {ref.repo_id} at that commit" if ref.subfolder else ""
    warnings.warn(
        f"the hub at {hub_endpoint()} could not be reached ({first_line(error)}): {ref.spec!r} loads from the local Hugging Face "
        f"cache ({_cache_dir()}), commit {commit[:7]}{others}; set HF_HUB_OFFLINE=1 to skip asking the hub",
        HubUnreachableWarning,
        stacklevel=3,
    )


def hub_api():  # -> huggingface_hub.HfApi
    """``HfApi`` whose ``model_info`` (and so ``resolve_revision``) gives up after ``HF_HUB_ETAG_TIMEOUT``
    seconds, as huggingface_hub's file requests do (its own waits forever on a hub that accepts the
    connection and never answers), and whose failures to reach the hub are remembered (``_known_unreachable``)."""
    return _hub_api_class()()


@functools.cache
def _hub_api_class() -> type:
    from huggingface_hub import HfApi, constants

    class HubApi(HfApi):
        def model_info(self, *args, timeout: float | None = None, **kwargs):
            try:
                info = super().model_info(*args, timeout=timeout or constants.HF_HUB_ETAG_TIMEOUT, **kwargs)
            except Exception as e:
                if not _hub_answered(e):
                    _note_unreachable(e)
                raise
            _UNREACHABLE.pop(hub_endpoint(), None)
            return info

    return HubApi


def _known_unreachable() -> Exception | None:
    """Why the hub could not be reached, when that happened in this process within ``UNREACHABLE_RETRY_S``."""
    seen = _UNREACHABLE.get(hub_endpoint())
    return seen[1] if seen is not None and time.monotonic() - seen[0] < UNREACHABLE_RETRY_S else None


def _note_unreachable(error: Exception) -> Exception:
    _UNREACHABLE[hub_endpoint()] = (time.monotonic(), error)
    return error


def _hub_answered(error: Exception) -> bool:
    """The hub answered with a refusal (no such repo or revision, gated, unauthorized): not a connection
    problem or a hub failure (5xx), which the local cache may stand in for."""
    from huggingface_hub.errors import HfHubHTTPError

    response = getattr(error, "response", None) if isinstance(error, HfHubHTTPError) else None
    return response is not None and response.status_code < 500


def hub_endpoint() -> str:
    """The hub huggingface_hub talks to (``HF_ENDPOINT``, or huggingface.co), for messages."""
    from huggingface_hub import constants

    return constants.ENDPOINT


def first_line(error: BaseException) -> str:
    """An error as one line for a message: its type and the first line of its text."""
    return f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"


def _unreachable_problem(ref: CheckpointRef, error: Exception) -> str:
    """The hub cannot be reached and the cache lacks ``ref``: say both, what the cache holds near it, and the fixes."""
    miss = _cache_miss(ref)
    nearby = f"; {miss.nearby}" if miss.nearby else ""
    return (
        f"the hub at {hub_endpoint()} could not be reached ({first_line(error)}) and {miss.problem}{nearby}; "
        f"check the connection (or HF_ENDPOINT) and try again, download it where the hub can be reached "
        f"({miss.download}), or set HF_HUB_OFFLINE=1 to use only what the cache holds"
    )


def _hub_missing_config(ref: CheckpointRef, token: str | None) -> str:
    """The hub has the revision but no config.json where ``ref`` points: which folders do have one."""
    from vlm_lab.hub_cache import config_folders_hint

    wanted = f"{ref.subfolder}/config.json" if ref.subfolder else "config.json at its root"
    named = ref.repo_id + (f"@{ref.revision}" if ref.revision else "")
    try:
        info = hub_api().model_info(ref.repo_id, revision=ref.revision, token=token)
    except Exception:  # noqa: BLE001 - the listing is only a hint
        return f"the hub has {named!r} but no {wanted}"
    folders = _config_folders_listed(info)
    at = f"{ref.revision or 'main'}" + ("" if info.sha == ref.revision else f" (commit {(info.sha or '')[:7]})")
    hint = config_folders_hint(folders, ref.subfolder or "", named) or "no folder of it holds a config.json"
    return f"the hub has {ref.repo_id!r} at {at} but no {wanted}; {hint}"


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _offline_problem(ref: CheckpointRef) -> str:
    """Which part of ``ref`` the local cache lacks, what it holds near it, and the download that fixes it."""
    miss = _cache_miss(ref)
    nearby = f"; {miss.nearby}" if miss.nearby else ""
    return f"{miss.problem}, and HF_HUB_OFFLINE=1 forbids downloading it{nearby}; {miss.fix}"


def offline_cache_hint(ref: CheckpointRef, *, cache_only: bool = False) -> str:
    """For a hub ref that failed to load from the cache (offline, or ``cache_only``: the hub unreachable):
    ``; <what the cache lacks>; <what it holds>; <the download>``.

    Empty online or for a local folder. Resolving checked only the config.json; a partial
    download (``hf download ... --include``) can lack the weights or the tokenizer.
    """
    from huggingface_hub import is_offline_mode

    if ref.path is not None or not (cache_only or is_offline_mode()):
        return ""
    miss = _cache_miss(ref)
    return f"; {miss.problem}" + (f": {miss.nearby}" if miss.nearby else "") + f"; {miss.fix}"


def _cache_miss(ref: CheckpointRef):  # -> hub_cache.CacheMiss
    from vlm_lab.hub_cache import cache_miss

    return cache_miss(ref.repo_id, ref.revision, ref.subfolder, cache_dir=_cache_dir())


def _hub_problem(ref: CheckpointRef, error: Exception) -> str:
    """One line on why the hub and the cache could not say which commit ``ref`` is."""
    from huggingface_hub import is_offline_mode
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError, RevisionResolutionError

    if isinstance(error, GatedRepoError):
        return f"{ref.repo_id!r} is gated on the hub: accept its terms there and log in (hf auth login)"
    if isinstance(error, RevisionResolutionError) and is_offline_mode():
        return _offline_problem(ref)
    nearby = ""
    if isinstance(error, (RepositoryNotFoundError, RevisionNotFoundError, RevisionResolutionError)):
        miss = _cache_miss(ref)  # the cached repos or revisions near it: a typo's likely fix
        if miss.missing in ("repo", "revision") and miss.nearby:
            nearby = f"; in the local Hugging Face cache: {miss.nearby}"
    if isinstance(error, RepositoryNotFoundError):
        return f"the hub has no model {ref.repo_id!r} you can see (a private one needs a token: hf auth login){nearby}"
    if isinstance(error, RevisionNotFoundError):
        return f"the hub has no revision {ref.revision!r} of {ref.repo_id!r}{nearby}"
    if isinstance(error, RevisionResolutionError) or not _hub_answered(error):
        return _unreachable_problem(ref, error.__cause__ or error)
    return f"the hub did not say which commit revision {ref.revision or 'main'!r} of {ref.repo_id!r} is ({first_line(error)})"


def _hub_not_found(ref: CheckpointRef, problem: str) -> CheckpointNotFoundError:
    """``cannot load 'spec': <problem>``; a plain ``org/name`` also says it is no local folder."""
    if "@" in ref.spec or ":" in ref.spec:  # unmistakably a hub reference
        return CheckpointNotFoundError(f"cannot load {ref.spec!r}: {problem}")
    where = _absolute(Path(ref.spec).expanduser())
    local = f"no local folder {str(where)!r} (relative to {os.getcwd()}; {_nearby(where)})"
    return CheckpointNotFoundError(f"cannot load {ref.spec!r}: {local}, and {problem}")
