"""What the local Hugging Face cache holds near a hub reference it cannot serve.

Offline (``HF_HUB_OFFLINE=1``) a hub reference ``org/name[@revision][:subfolder]`` loads
only from the cache. When it is not there, ``cache_miss`` says which part is missing
and what the cache holds instead, most useful first:

- the repo is not cached: cached models with close names (same spelling but for case,
  difflib matches, the same org), or that the cache holds none;
- the revision is not cached: the cached branches and tags (with their short commit)
  and commits without a name (in full: only a full id loads offline);
- the revision is cached without ``config.json`` in the subfolder (or at the root): the
  folders of that snapshot that hold one, ``checkpoint-N`` by N, and other cached
  revisions that do have the subfolder.

It reads the cache with huggingface_hub's ``scan_cache_dir`` (every cached repo: only
on the error path).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

LIMIT = 8  # names listed in one hint; the rest are counted


@dataclasses.dataclass(frozen=True)
class CacheMiss:
    """Why the cache cannot serve a reference: ``problem``, what it holds ``nearby`` ("" when
    nothing useful), and the ``download`` command that fetches what is missing. ``missing`` is
    the part: "repo", "revision", "config" (in the subfolder or root) or "files" (the config is
    there, other files are not). ``named``: ``nearby`` names a cached reference to use instead."""

    missing: str
    problem: str
    nearby: str
    download: str
    named: bool = False

    @property
    def fix(self) -> str:
        """``download it while online (hf download ...)``, as an alternative when a cached reference is named."""
        return f"{'or ' if self.named else ''}download it while online ({self.download})"


def natural_key(name: str) -> list:
    """Sort key that puts ``checkpoint-50`` before ``checkpoint-500`` and ``checkpoint-1000``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def nearness(name: str, typed: str) -> tuple:
    """Sort key, nearest to ``typed`` first: the same shape (``checkpoint-N``), then the nearest
    number (step 500 is nearer to 450 than step 1000), then the closest spelling."""
    shape = difflib.SequenceMatcher(None, re.sub(r"\d+", "#", name), re.sub(r"\d+", "#", typed)).ratio()
    a, b = re.findall(r"\d+", name), re.findall(r"\d+", typed)
    number = abs(int(a[-1]) - int(b[-1])) if a and b else float("inf")
    return -round(shape, 2), number, -difflib.SequenceMatcher(None, name, typed).ratio()


def listed(names: Iterable[str], typed: str, *, limit: int = LIMIT) -> str:
    """``names`` in natural order; when they do not all fit, the ``limit`` nearest to ``typed``
    (still in natural order), the rest counted with the range they span."""
    names = sorted(set(names), key=natural_key)
    if len(names) <= limit:
        return ", ".join(names)
    keep = set(sorted(names, key=lambda n: nearness(n, typed))[:limit])
    shown = ", ".join(n for n in names if n in keep)
    return f"{shown} and {len(names) - limit} more ({names[0]} to {names[-1]})"


def cache_miss(repo_id: str, revision: str | None, subfolder: str | None, *, cache_dir: str) -> CacheMiss:
    """What of ``repo_id@revision:subfolder`` the cache at ``cache_dir`` lacks, and what it holds near it."""
    info = _scan(cache_dir)
    repos = [r for r in info.repos if r.repo_type == "model"] if info is not None else []
    repo = next((r for r in repos if r.repo_id == repo_id), None)
    if repo is None:
        return _missing_repo(repo_id, info, [r.repo_id for r in repos], cache_dir, download_command(repo_id, revision, subfolder))
    name = revision or "main"
    snapshot = _revision(repo, name)
    if snapshot is None:
        return CacheMiss(
            "revision",
            f"revision {name!r} of {repo_id!r} is not in the local Hugging Face cache ({cache_dir})",
            _cached_revisions(repo, name),
            download_command(repo_id, name, subfolder),
            named=bool(repo.revisions),
        )
    return _missing_config(repo, revision, snapshot, (subfolder or "").strip("/"), cache_dir)


def _missing_repo(repo_id: str, info: Any, cached: list[str], cache_dir: str, download: str) -> CacheMiss:
    damaged = _damaged(info, repo_id)
    near = damaged or _close_repos(repo_id, cached)
    if near:
        none = ""
    elif cached:
        none = f", which holds no model with a close name ({len(cached)} cached; hf cache ls lists them)"
    else:
        none = ", which holds no models"
    return CacheMiss("repo", f"hub model {repo_id!r} is not in the local Hugging Face cache ({cache_dir}){none}", near, download, named=bool(near) and not damaged)


def _missing_config(repo: Any, revision: str | None, snapshot: Any, sub: str, cache_dir: str) -> CacheMiss:
    """The revision is cached; its ``sub`` folder ("" the root) has no config.json, or lacks other files."""
    repo_id, name = repo.repo_id, revision or "main"
    at = f"{repo_id!r} at {name}" + ("" if name == snapshot.commit_hash else f" (commit {snapshot.commit_hash[:7]})")
    named = f"{repo_id}{'@' + revision if revision else ''}"
    download = download_command(repo_id, revision, sub)
    folders = config_folders(snapshot)
    if sub in folders:  # what resolving checks is there; the rest of the model may not be (a partial download)
        folder = Path(snapshot.snapshot_path, sub)
        inside = [f for f in snapshot.files if f.file_path.parent == folder]
        problem = f"the local Hugging Face cache ({cache_dir}) holds only part of {sub or 'the root'} of {at}"
        return CacheMiss("files", problem, _holds(folder, inside), download)
    hints = []
    elsewhere = [r for r in _named(repo) if repo.refs[r] != snapshot and sub in config_folders(repo.refs[r])]
    if elsewhere:
        hints.append(f"{sub or 'its root'} is cached at revision {', '.join(elsewhere)} ({repo_id}@{elsewhere[0]}{':' + sub if sub else ''})")
    hints.append(config_folders_hint(folders, sub, named) or f"no folder of it holds a config.json ({_holds(snapshot.snapshot_path, snapshot.files)})")
    wanted = f"{sub}/config.json" if sub else "config.json at its root"
    problem = f"the local Hugging Face cache ({cache_dir}) holds {at} but no {wanted}"
    return CacheMiss("config", problem, "; ".join(hints), download, named=bool(folders or elsewhere))


def download_command(repo_id: str, revision: str | None, subfolder: str | None) -> str:
    """``hf download org/name [--revision R] [--include 'sub/*']``: only the folder named, not every checkpoint of a run."""
    sub = (subfolder or "").strip("/")
    return f"hf download {repo_id}" + (f" --revision {revision}" if revision else "") + (f" --include '{sub}/*'" if sub else "")


def config_folders_hint(folders: Iterable[str], sub: str, named: str) -> str:
    """Which of a revision's ``folders`` with a config.json ("" its root) to name instead of ``sub``,
    as ``named`` (``org/name[@rev]``) plus ``:folder``; "" when there are none."""
    folders = sorted(folders, key=natural_key)
    if folders == [""]:
        return f"only its root holds a config.json: name it without a subfolder, {named}"
    if not folders:
        return ""
    use = min(folders, key=lambda f: nearness(f, sub))
    return f"its folders with a config.json: {listed([f or '.' for f in folders], sub)}; name one, e.g. {named}{':' + use if use else ''}"


def cached_snapshot(repo_id: str, revision: str | None, *, cache_dir: str) -> Path | None:
    """The cached snapshot folder of ``repo_id`` at ``revision`` (a branch or tag through ``refs/``,
    or a full commit id), as huggingface_hub resolves it offline; None when it is not cached.
    Reads only that repo's folder (unlike ``cache_miss``, which scans the whole cache)."""
    from huggingface_hub import HfApi
    from huggingface_hub.file_download import repo_folder_name

    try:
        commit = HfApi().resolve_revision(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True).resolved
    except Exception:  # noqa: BLE001 - not cached (or a repo id huggingface_hub refuses): nothing to list
        return None
    folder = Path(cache_dir, repo_folder_name(repo_id=repo_id, repo_type="model"), "snapshots", commit)
    return folder if folder.is_dir() else None


def cached_weights(repo_id: str, revision: str | None, subfolder: str | None, *, cache_dir: str) -> list[Path] | None:
    """The weight files transformers loads for ``repo_id@revision:subfolder``, when every one is in the cache at
    ``cache_dir`` (``memory_checkpoint.loaded_weight_files``, the rule for local folders too). None when any is
    missing (it would be downloaded)."""
    from vlm_lab.memory_checkpoint import loaded_weight_files

    snapshot = cached_snapshot(repo_id, revision, cache_dir=cache_dir)
    if snapshot is None:
        return None
    files, complete = loaded_weight_files(snapshot / (subfolder or "").strip("/"))  # is_file follows the cache's links
    return files if files and complete else None


def config_folders(snapshot: Any) -> list[str]:
    """The folders of a cached snapshot (``CachedRevisionInfo``) that hold a ``config.json``,
    relative to it ("" is its root)."""
    root = Path(snapshot.snapshot_path)
    return sorted(
        ("" if (p := PurePosixPath(f.file_path.relative_to(root).as_posix()).parent) == PurePosixPath(".") else str(p))
        for f in snapshot.files
        if f.file_name == "config.json"
    )


def _scan(cache_dir: str) -> Any:
    """huggingface_hub's view of the cache; None when there is no cache folder."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        return scan_cache_dir(cache_dir)
    except (CacheNotFound, ValueError, OSError):
        return None


def _damaged(info: Any, repo_id: str) -> str:
    """The scan's complaint about ``repo_id``'s cache folder (a ref to a missing snapshot, a broken link), if any."""
    folder = f"models--{repo_id.replace('/', '--')}"
    for warning in info.warnings if info is not None else ():
        if re.search(rf"{re.escape(folder)}(?![\w.-])", str(warning)):  # not models--org--name2
            return f"its cache folder is damaged ({str(warning).splitlines()[0]})"
    return ""


def _close_repos(repo_id: str, cached: list[str]) -> str:
    """Cached model ids close to ``repo_id``: the same but for case, difflib matches, then the same org."""
    by_lower = {r.lower(): r for r in cached}
    close = [by_lower[m] for m in difflib.get_close_matches(repo_id.lower(), list(by_lower), n=LIMIT, cutoff=0.6)]
    org = repo_id.split("/", 1)[0].lower()
    same_org = sorted((r for r in cached if r.split("/", 1)[0].lower() == org), key=natural_key)
    near = list(dict.fromkeys(close + same_org))
    if not near:
        return ""
    more = f" and {len(near) - LIMIT} more" if len(near) > LIMIT else ""
    return f"cached models with close names: {', '.join(near[:LIMIT])}{more}"


def _named(repo: Any) -> list[str]:
    """The repo's cached branches and tags, ``main`` first."""
    return sorted(repo.refs, key=lambda r: (r != "main", natural_key(r)))


def _revision(repo: Any, name: str) -> Any:
    """The cached snapshot a branch, tag or full commit id names, as ``try_to_load_from_cache`` finds it."""
    by_commit = {r.commit_hash: r for r in repo.revisions}
    return repo.refs.get(name) or by_commit.get(name)


def _cached_revisions(repo: Any, typed: str) -> str:
    """The repo's cached revisions: names with their short commit, then commits no name points at, in full."""
    detached = sorted((r for r in repo.revisions if not r.refs), key=lambda r: -r.last_modified)
    prefix = [r.commit_hash for r in repo.revisions if len(typed) >= 4 and r.commit_hash.startswith(typed.lower())]
    hints = []
    if len(prefix) == 1:  # a short commit id: offline only the full one finds the snapshot folder
        hints.append(f"{typed!r} is short for cached commit {prefix[0]}: pass it in full ({repo.repo_id}@{prefix[0]})")
    names = [f"{r} ({repo.refs[r].commit_hash[:7]})" for r in _named(repo)]
    shown = names[:LIMIT] + [r.commit_hash for r in detached][: max(0, 3 - len(names[:LIMIT]))]
    left = len(names) + len(detached) - len(shown)
    if shown:
        hints.append(f"cached revisions of {repo.repo_id!r}: {', '.join(shown)}" + (f" and {left} more" if left else ""))
    else:
        hints.append(f"the cache holds no snapshot of {repo.repo_id!r}")
    return "; ".join(hints)


def _holds(root: Path, files: Iterable[Any]) -> str:
    """``it holds a, b, c ...``: the cached files, relative to the snapshot folder ``root``."""
    names = [f.file_path.relative_to(root).as_posix() for f in files]
    return f"it holds {listed(names, '', limit=5)}" if names else "it is empty"
