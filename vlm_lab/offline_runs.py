"""Read W&B offline runs back from disk, without a server.

wandb 0.31 writes no ``wandb-summary.json`` or ``config.yaml`` for offline runs:
everything lives in ``offline-run-*/run-<id>.wandb``, a leveldb-style log
(https://github.com/google/leveldb/blob/main/doc/log_format.md) of
``wandb.proto.wandb_internal_pb2.Record`` protobufs. Tables and images are staged
as ``run_table`` artifacts whose manifest names each file's local copy (under
``WANDB_DATA_DIR``). This module decodes that log with wandb's own protobuf
classes and rebuilds config, group, tags, summary, history, tables and images.

A run started again with its id (``wandb.init(id=..., resume="allow")``: a sweep point re-run
after a kill) gets one more ``offline-run-*-<id>`` folder per start; ``latest_runs`` shows
each run once, its starts merged as W&B merges them (every start's config and summary in start
order, later values winning; the state of the latest start), with the earlier folders in
``earlier``, and its ``sync_command`` uploads all of them into the one W&B run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import struct
import time
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from vlm_lab.errors import DataError

# The log format wandb-core writes (header, then 32 KiB blocks of chunked records).
_HEADER = struct.Struct("<4sHB")  # ident ":W&B", magic 0xBEE1, version 0
_IDENT, _MAGIC = b":W&B", 0xBEE1
_CHUNK = struct.Struct("<IHB")  # crc32 of type+data, length, type
_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


# A log still at its header this long after wandb-core last wrote it belongs to no live run: wandb-core
# writes the run record within seconds of creating the log, even on a loaded machine.
SETTLED_S = 600
LOGGED_NOTHING = "logged nothing"  # what a start killed as W&B started (EmptyRunLogError) is called in tables


class EmptyRunLogError(DataError):
    """A run folder whose log holds no record (its header, or less): W&B was stopped as the run started, before
    wandb-core wrote anything. There is nothing to upload; the message says the folder can be deleted, unless
    its log was written in the last ``SETTLED_S`` seconds: a run starting right now looks the same."""

    def __init__(self, log: Path) -> None:
        stat = log.stat()
        folder = shlex.quote(str(log.parent))
        if time.time() - stat.st_mtime >= SETTLED_S:  # why and fix: a table's cell says them (Ablation.wandb_runs)
            self.why, self.fix = "W&B was stopped as the run started", f"safe to delete: rm -r {folder}"
        else:
            self.why = "a run starting right now, or one stopped as it started"
            self.fix = f"if no run is starting, it is safe to delete (rm -r {folder}); else run `vlm-lab runs` again once it has"
        super().__init__(f"nothing logged: its log {log.name} holds {stat.st_size} bytes, no record ({self.why}); "
                         f"nothing to upload; {self.fix}")


@dataclasses.dataclass(frozen=True)
class Artifact:
    """An artifact logged by the run: name, type, and ``{path in artifact: local file}``."""

    name: str
    type: str
    client_id: str
    files: dict[str, str]


@dataclasses.dataclass(frozen=True)
class OfflineRun:
    """One offline run as it would appear on W&B after ``wandb sync``."""

    id: str
    dir: Path  # the offline-run-* folder
    project: str
    entity: str
    group: str
    job_type: str
    name: str
    tags: tuple[str, ...]
    config: dict[str, Any]
    summary: dict[str, Any]  # nested keys as nested dicts
    artifacts: tuple[Artifact, ...]
    finished: bool  # the log ends with an exit record
    exit_code: int | None
    started_at: float = 0.0  # the run record's start time (seconds since the epoch)
    earlier: tuple[Path, ...] = ()  # earlier starts of the same run (same id), oldest first
    history: tuple[dict[str, Any], ...] = ()  # each logged row (what W&B charts draw), every start's in start order
    damaged_at: int | None = None  # the byte where the log is damaged (not a torn tail): nothing after it is read

    @property
    def state(self) -> str:
        """``finished``, ``failed (exit N)`` or ``incomplete`` (killed, or still running): the latest start's,
        which is what W&B shows for the run; a run started more than once whose latest start did not
        finish says so (``incomplete, latest of 2 starts``). A log damaged in the middle says where."""
        if self.damaged_at is not None:
            return f"damaged at byte {self.damaged_at}: the records after it cannot be read"
        state = ("finished" if not self.exit_code else f"failed (exit {self.exit_code})") if self.finished else "incomplete"
        if self.earlier and state != "finished":
            return f"{state}, latest of {len(self.sync_paths)} starts"  # short: a table cell (metrics merge them all)
        return state

    @property
    def sync_paths(self) -> tuple[Path, ...]:
        """Every folder of this run, oldest first: ``wandb sync`` given them together uploads them
        into one W&B run in start order (given apart, an earlier one synced later would win)."""
        return (*self.earlier, self.dir)

    @property
    def sync_command(self) -> str:
        return "wandb sync " + " ".join(shlex.quote(str(p)) for p in self.sync_paths)  # pasted into a shell

    @property
    def synced(self) -> bool:
        """Uploaded: ``wandb sync`` marks each log it uploaded with a ``run-*.wandb.synced`` file beside
        it (and skips marked logs next time). Every start of the run must be marked."""
        return all(any(folder.glob("run-*.wandb.synced")) for folder in self.sync_paths)

    def metrics(self) -> dict[str, Any]:
        """Flat ``{key: number-or-string}`` of the summary, without wandb's own ``_*`` keys and tables."""
        flat: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                if "_type" in value:  # a table, an image: not a metric
                    return
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            elif not prefix.startswith("_"):
                flat[prefix] = value

        walk("", self.summary)
        return flat

    def headline(self, limit: int = 4) -> dict[str, Any]:
        """The few metrics worth a column in a listing: ``best/*`` when logged (not the per-value breakdowns
        ``best/accuracy/question_type=shape``: one column each would bury the listing), else the first numbers."""
        metrics = self.metrics()
        best = {k: v for k, v in metrics.items() if k.startswith("best/") and k.count("/") == 1}
        if best:
            return best
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return dict(list(numbers.items())[:limit])

    def eval_rows(self, step: str = "eval/step") -> list[dict[str, Any]]:
        """The history rows drawn against ``step`` (``tracking.log_comparison``: one per checkpoint), one per
        step, in step order: where a step was logged more than once (a run resumed by a vlm_lab that logged
        every checkpoint again at each start), the latest row, as the latest start's summary says."""
        rows = {row[step]: row for row in self.history if isinstance(row.get(step), (int, float))}
        return [rows[key] for key in sorted(rows)]

    def table(self, key: str) -> list[dict[str, Any]]:
        """Rows of the table logged under ``key``; image cells become local PNG paths (str).

        Once the staged copy is gone (synced, or ``WANDB_DATA_DIR`` cleared) the rows come from the
        run folder's copy, where wandb wrote each image as the text ``"Image"``.
        """
        entry = self.summary.get(key)
        if not isinstance(entry, dict) or entry.get("_type") not in ("table-file", "incremental-table-file"):
            tables = [k for k, v in self.summary.items() if isinstance(v, dict) and v.get("_type") == "table-file"]
            raise DataError(f"run {self.id} has no table {key!r} (tables: {', '.join(tables) or 'none'})")
        artifact, name = self._artifact_file(entry.get("artifact_path", ""))
        staged = Path(artifact.files[name]) if artifact is not None else None
        if staged is None or not staged.is_file():
            # No staged artifact (synced, or WANDB_DATA_DIR cleared): the folder of the start that logged it
            # keeps a copy without media (an earlier start's, when a resume did not log the table again).
            copies = [folder / "files" / entry["path"] for folder in reversed(self.sync_paths)]
            staged = next((copy for copy in copies if copy.is_file()), copies[0])
        payload = json.loads(staged.read_text(encoding="utf-8"))
        rows = []
        for values in payload["data"]:
            row = {}
            for col, value in zip(payload["columns"], values):
                if isinstance(value, dict) and value.get("_type") == "image-file":
                    value = artifact.files.get(value["path"]) if artifact else None
                row[col] = value
            rows.append(row)
        return rows

    def tables(self) -> list[str]:
        return [k for k, v in self.summary.items() if isinstance(v, dict) and v.get("_type") == "table-file"]

    def images(self) -> list[str]:
        """Local paths of every image the run logged (in tables or as media) that is still on disk."""
        return [
            path
            for artifact in self.artifacts
            for name, path in artifact.files.items()
            if name.startswith("media/images/") and Path(path).is_file()
        ]

    def _artifact_file(self, uri: str) -> tuple[Artifact | None, str]:
        # "wandb-client-artifact://<client_id>[:latest]/<name>"
        if not uri.startswith("wandb-client-artifact://"):
            return None, ""
        head, _, name = uri.removeprefix("wandb-client-artifact://").partition("/")
        client_id = head.split(":")[0]
        for artifact in self.artifacts:
            if artifact.client_id == client_id and name in artifact.files:
                return artifact, name
        return None, name


def iter_records(path: str | os.PathLike[str], *, damage: list[int] | None = None) -> Iterator[Any]:
    """Yield each ``Record`` protobuf of a ``run-*.wandb`` file, in order.

    A truncated tail (the process was killed mid-write) ends the iteration quietly. So does a chunk that fails
    its checksum with more data after it (the log is damaged, not cut short); its offset is appended to ``damage``.
    """
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if len(data) < _HEADER.size:
        if _HEADER.pack(_IDENT, _MAGIC, 0).startswith(data[:6]):  # killed as wandb-core created it
            raise EmptyRunLogError(Path(path))
        raise DataError(f"{path} is not a W&B run log (empty or truncated header)")
    ident, magic, _version = _HEADER.unpack_from(data)
    if ident != _IDENT or magic != _MAGIC:
        raise DataError(f"{path} is not a W&B run log (header {data[:7]!r})")
    pos, pending = _HEADER.size, b""
    while pos + _CHUNK.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _CHUNK.size:  # block trailer: zero padding
            pos += left
            continue
        crc, length, kind = _CHUNK.unpack_from(data, pos)
        chunk = data[pos + _CHUNK.size : pos + _CHUNK.size + length]
        if kind == 0 or len(chunk) < length or zlib.crc32(bytes([kind]) + chunk) & 0xFFFFFFFF != crc:
            rest = data[pos + _CHUNK.size + length :]
            if damage is not None and kind != 0 and len(chunk) == length and rest.strip(b"\0"):
                damage.append(pos)  # a whole chunk, wrong, with records after it: damaged, not torn
            return  # padding to the end, or a torn write
        pos += _CHUNK.size + length
        if kind in (_FULL, _FIRST):
            pending = chunk
        else:
            pending += chunk
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _set_item(target: dict[str, Any], item: Any) -> None:
    keys = list(item.nested_key) or [item.key]
    for k in keys[:-1]:
        target = target.setdefault(k, {})
        if not isinstance(target, dict):
            return
    target[keys[-1]] = json.loads(item.value_json)


def _del_item(target: dict[str, Any], item: Any) -> None:
    keys = list(item.nested_key) or [item.key]
    for k in keys[:-1]:
        target = target.get(k, {})
    if isinstance(target, dict):
        target.pop(keys[-1], None)


def _log_of(path: Path) -> Path:
    log = path if path.is_file() else next(iter(sorted(path.glob("run-*.wandb"))), None)
    if log is None:
        raise DataError(f"no run-*.wandb log in {path}; point at a wandb/offline-run-* folder")
    return log


def _replay(log: Path, config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Apply the config and summary updates of one start's log to ``config`` and ``summary`` (in
    order, as the W&B server does on ``wandb sync``); return the rest of what the start recorded."""
    info: dict[str, Any] = {}
    artifacts: list[Artifact] = []
    history: list[dict[str, Any]] = []
    exit_code: int | None = None
    finished = False
    damage: list[int] = []
    records = 0
    for record in iter_records(log, damage=damage):
        records += 1
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            info = dict(
                id=run.run_id, project=run.project, entity=run.entity, group=run.run_group,
                job_type=run.job_type, name=run.display_name, tags=tuple(run.tags),
                started_at=run.start_time.seconds + run.start_time.nanos / 1e9,
            )  # fmt: skip
            for item in run.config.update:
                _set_item(config, item)
        elif kind == "config":
            for item in record.config.update:
                _set_item(config, item)
            for item in record.config.remove:
                _del_item(config, item)
        elif kind == "summary":
            for item in record.summary.update:
                _set_item(summary, item)
            for item in record.summary.remove:
                _del_item(summary, item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _set_item(row, item)
            history.append(row)
        elif kind == "artifact":
            a = record.artifact
            files = {entry.path: entry.local_path for entry in a.manifest.contents}
            artifacts.append(Artifact(name=a.name, type=a.type, client_id=a.client_id, files=files))
        elif kind == "exit":
            finished, exit_code = True, record.exit.exit_code
    if not records and not damage:
        raise EmptyRunLogError(log)
    if not info:
        raise DataError(f"{log} has no run record (the run never started properly)")
    config.pop("_wandb", None)
    return dict(info, dir=log.parent, artifacts=tuple(artifacts), history=tuple(history), finished=finished,
                exit_code=exit_code, damaged_at=damage[0] if damage else None)  # fmt: skip


def read_offline_run(path: str | os.PathLike[str]) -> OfflineRun:
    """Read an ``offline-run-*`` folder (or its ``run-*.wandb`` file).

    Raises:
        DataError: the folder holds no run log, or the log has no run record.
    """
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    return OfflineRun(config=config, summary=summary, **_replay(_log_of(Path(path)), config, summary))


def merge_starts(starts: Sequence[OfflineRun]) -> OfflineRun:
    """One W&B run from its starts (same id), oldest first, as ``wandb sync`` of all of them leaves it.

    Config and summary: every start's updates replayed in start order, so a later value wins per key
    and a key only an earlier start logged is kept (a resume killed before it logged anything hides
    nothing). Artifacts and history rows: all of them, in start order. Name, group, job type, tags: the latest start's (the earlier
    value where it set none). State (``finished``, ``exit_code``) and ``dir``: the latest start's;
    ``earlier``: the other folders.
    """
    if len(starts) == 1:
        return starts[0]
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for start in starts:
        try:
            _replay(_log_of(start.dir), config, summary)
        except (DataError, OSError):  # gone or rewritten since it was read: what was read then
            config.update(start.config)
            summary.update(start.summary)
    latest = starts[-1]
    named = {
        field: next((getattr(s, field) for s in reversed(starts) if getattr(s, field)), getattr(latest, field))
        for field in ("name", "group", "job_type", "tags")
    }
    return dataclasses.replace(
        latest, config=config, summary=summary, artifacts=tuple(a for s in starts for a in s.artifacts),
        history=tuple(row for s in starts for row in s.history), earlier=tuple(s.dir for s in starts[:-1]), **named,
    )  # fmt: skip


def read_merged_run(path: str | os.PathLike[str]) -> OfflineRun:
    """The W&B run one of whose starts is the ``offline-run-*`` folder ``path``, with every start of it
    beside that folder merged (``merge_starts``): what a report shows for a run it knows one folder of.

    Raises:
        DataError: ``path`` holds no readable run log.
    """
    start = read_offline_run(path)
    others = starts_beside(start.dir, start.id, project=start.project, entity=start.entity, exclude=start.dir)
    (merged,) = latest_runs([*others, start])
    return merged


def starts_beside(
    folder: str | os.PathLike[str], run_id: str, *, project: str | None, entity: str = "", exclude: str | os.PathLike[str] | None = None
) -> list[OfflineRun]:
    """The readable starts of W&B run ``run_id`` (in ``project``/``entity``; ``project=None``: in any) among the
    ``offline-run-*`` folders beside ``folder`` (wandb writes every start of a run under the same ``wandb/``), but
    ``exclude``; oldest first."""
    starts = []
    skip = Path(exclude) if exclude is not None else None
    for other in sorted(Path(folder).parent.glob(f"offline-run-*{run_id}*")):  # wandb may suffix a folder
        if other == skip:
            continue
        try:
            run = read_offline_run(other)
        except (DataError, OSError):  # a start killed before wandb-core wrote its run record
            continue
        if run.id == run_id and (project is None or (run.entity, run.project) == (entity, project)):
            starts.append(run)
    return sorted(starts, key=_start_order)


def is_start_folder(name: str, run_id: str) -> bool:
    """Whether folder ``name`` is a start of W&B run ``run_id`` by its name, ``offline-run-<time>-<id>`` (a suffix
    ``-N`` when starts share a second): what says whose a folder is when its log cannot be read."""
    import re

    return re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{re.escape(run_id)}(-\d+)?", name) is not None


def unreadable_later_start(run: OfflineRun) -> tuple[Path, str] | None:
    """The newest folder beside ``run``'s latest start that is a later start of it and cannot be read, with what it
    is (``logged nothing``: killed as W&B started, ``EmptyRunLogError``; else ``unreadable``), or None. Such a start
    means the run did not finish, whatever its readable starts say."""
    later = [f for f in run.dir.parent.glob(f"offline-run-*{run.id}*") if is_start_folder(f.name, run.id) and f.name > run.dir.name]
    if not later:
        return None
    newest = max(later, key=lambda f: f.name)
    try:
        read_offline_run(newest)
    except EmptyRunLogError:
        return newest, LOGGED_NOTHING
    except (DataError, OSError):
        return newest, "unreadable"
    return None  # a readable later start of another project, or one written since


def _start_order(run: OfflineRun) -> tuple[float, str]:
    # Starts within one second share a folder time; wandb then suffixes the folder (-1, -2, ...).
    return run.started_at, run.dir.name


def wait_until_written(path: str | os.PathLike[str], *, timeout_s: float = 30.0) -> bool:
    """Wait until the run log at ``path`` ends with its exit record; False on timeout.

    wandb-core writes the log asynchronously: right after ``run.finish()`` returns the file
    can still hold only its header, so a reader (or a copy of the folder) must wait.
    """
    folder = Path(path)
    deadline = time.monotonic() + timeout_s
    while True:
        logs = sorted(folder.glob("run-*.wandb")) if folder.is_dir() else [folder]
        try:
            if logs and any(r.WhichOneof("record_type") == "exit" for r in iter_records(logs[0])):
                return True
        except (DataError, OSError):
            pass  # the header is not there yet
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def unfinished_note(names: Sequence[str]) -> str:
    """What to know before uploading runs that did not finish (``names``): a killed run and a live one read the
    same (no exit record yet), and ``wandb sync`` of a live one uploads what is there and marks it synced, so later
    syncs skip the rest. "" for none."""
    if not names:
        return ""
    named = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
    one = len(names) == 1
    return (f"{len(names)} of them did not finish ({named}): if {'it is' if one else 'one is'} still running (a sweep in "
            f"progress), upload {'it' if one else 'that one'} once it ends; `wandb sync` marks what it uploaded and skips "
            "it afterwards (`--include-synced` uploads it again)")  # fmt: skip


def find_offline_runs(root: str | os.PathLike[str]) -> list[Path]:
    """Every ``offline-run-*`` folder under ``root`` (a WANDB_DIR, its ``wandb/``, or any tree), oldest first."""
    root = Path(root)
    if root.name.startswith("offline-run-") and root.is_dir():
        return [root]
    found = []
    for folder, subdirs, _ in os.walk(root):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]  # .venv, .git, caches: never runs
        for name in subdirs:
            if name.startswith("offline-run-") and any(Path(folder, name).glob("run-*.wandb")):
                found.append(Path(folder, name))
        subdirs[:] = [d for d in subdirs if not d.startswith("offline-run-")]
    return sorted(found, key=lambda p: p.name)  # names start with the start time


def latest_runs(runs: Iterable[OfflineRun]) -> list[OfflineRun]:
    """One entry per W&B run (entity, project, id), its starts merged as ``wandb sync`` merges them
    (``merge_starts``: the metrics of every start, the state of the latest, the earlier folders in
    ``earlier``); ordered by folder name (start time), as ``find_offline_runs``."""
    by_run: dict[tuple[str, str, str], list[OfflineRun]] = {}
    for run in runs:
        by_run.setdefault((run.entity, run.project, run.id), []).append(run)
    latest = []
    for starts in by_run.values():
        starts.sort(key=_start_order)
        latest.append(merge_starts(starts))
    return sorted(latest, key=lambda r: r.dir.name)
