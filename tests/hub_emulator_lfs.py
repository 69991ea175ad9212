"""The Git LFS side of the Hub emulator (tests/hub_emulator.py): how large files reach a repo.

Large files go through Git LFS as on the Hub (the "LFS bridge" huggingface_hub uses without hf_xet, or with
``HF_HUB_DISABLE_XET=1``; the emulator speaks no Xet). Three mixins, each named for what it is mixed into:

- ``LfsRepo`` (into ``Repo``): which paths the Hub stores with LFS (the repo's ``.gitattributes`` patterns, or
  a file over 10 MiB), the repo's LFS storage, and tree entries as the Hub lists them (an LFS file carries
  its sha256 and its pointer's blob id).
- ``LfsHub`` (into ``HubEmulator``): preupload's "regular"/"lfs" answers; the batch API
  (``{prefix}{repo}.git/info/lfs/objects/batch``), which answers an upload and a verify action for an object
  the repo's storage lacks and none for one it has; the presigned upload hrefs (no token), basic or, for
  objects over ``multipart_chunk``, multipart (part PUTs, then a completion POST); verify; the commit's
  ``lfsFile`` entries (only for objects that were uploaded) and its refusal of a large file sent inline.
  Knobs: ``lfs_drop`` (drop the PUTs of an object mid-body, N times), ``multipart_chunk``; inspection:
  ``lfs_uploads(since)``.
- ``LfsUploadDrop`` (into the request handler): the ``lfs_drop`` knob at work, an upload cut off mid-body.

``LfsHub`` relies on its host for ``repos``, ``endpoint``, ``requests``, ``lock``, ``can_read``,
``can_write`` and ``_error`` (the emulator's HTTP error reply, to raise).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import math
import re
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub_emulator import Repo

LFS_SIZE = 10 * 1024 * 1024  # the Hub sends a file over this to LFS whatever .gitattributes says
STORAGE = "/lfs-storage/"  # the presigned upload hrefs (S3 on the Hub)


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _tree_file(path: str, data: bytes, *, lfs: bool) -> dict:
    """A tree entry as the Hub lists it: an LFS file (weights, a large file) carries ``lfs`` (the
    sha256 of its bytes) and the blob id of its pointer file, as on the real Hub."""
    if not lfs:
        return {"type": "file", "oid": git_sha1(data), "size": len(data), "path": path}
    sha256 = hashlib.sha256(data).hexdigest()
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {len(data)}\n".encode()
    return {"type": "file", "oid": git_sha1(pointer), "size": len(data), "path": path,
            "lfs": {"oid": sha256, "size": len(data), "pointerSize": len(pointer)}}


def _upload_oid(path: str) -> str:
    """The object a storage href names: ``.../<oid>`` or ``.../<oid>/part/<n>``."""
    return path.split("/")[-1] if "/part/" not in path else path.split("/")[-3]


class LfsRepo:
    """A repo's LFS side; ``Repo`` holds ``files`` (the tree) and ``lfs`` (its LFS storage: sha256 -> bytes)."""

    files: dict[str, bytes]
    lfs: dict[str, bytes]

    def lfs_patterns(self) -> list[str]:
        text = self.files.get(".gitattributes", b"").decode(errors="replace")
        return [line.split()[0] for line in text.splitlines() if "filter=lfs" in line.split()[1:]]

    def is_lfs(self, path: str, size: int) -> bool:
        """Whether the Hub stores ``path`` with LFS: its .gitattributes rules (git's: a pattern without a
        slash matches the file name), or its size."""
        name = path.rsplit("/", 1)[-1]
        return size > LFS_SIZE or any(fnmatch.fnmatchcase(path if "/" in p else name, p.lstrip("/"))
                                      for p in self.lfs_patterns())

    def keep_lfs(self) -> None:
        """Put the LFS files of the tree into the repo's storage (a seeded repo's, as if pushed)."""
        for path, data in self.files.items():
            if self.is_lfs(path, len(data)):
                self.lfs.setdefault(hashlib.sha256(data).hexdigest(), data)

    def tree_file(self, path: str, data: bytes) -> dict:
        return _tree_file(path, data, lfs=self.is_lfs(path, len(data)))


class LfsHub:
    """The emulator's LFS routes and knobs (see the module docstring for what the host provides)."""

    def __init__(self) -> None:
        self.lfs_drop: dict[str, int] = {}  # sha256 -> drop the next N PUTs of that object mid-body (a lost upload)
        self.multipart_chunk: int | None = None  # objects larger than this are uploaded in parts of this size
        self._signing_key = secrets.token_bytes(16)  # signs the presigned upload hrefs
        self._parts: dict[tuple[str, str, str], dict[int, bytes]] = {}  # multipart uploads in flight

    def lfs_uploads(self, since: int = 0) -> list[dict]:
        """The LFS object PUTs (whole objects or parts) after request ``since``: ``{"oid", "bytes", "status"}``."""
        return [{"oid": _upload_oid(r["path"]), "bytes": r["size"], "status": r["status"]}
                for r in self.requests[since:] if r["method"] == "PUT" and r["path"].startswith(STORAGE)]

    def _preupload(self, repo: Repo, payload: dict) -> dict:
        files = []
        for f in payload.get("files", []):
            lfs = repo.is_lfs(f["path"], int(f.get("size") or 0))
            existing = repo.files.get(f["path"])
            oid = None if existing is None else hashlib.sha256(existing).hexdigest() if lfs else git_sha1(existing)
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return {"files": files, "commitOid": repo.sha}

    def _sign(self, repo: Repo, oid: str) -> str:
        return hmac.new(self._signing_key, f"{repo.repo_type}/{repo.repo_id}/{oid}".encode(), hashlib.sha256).hexdigest()

    def _href(self, repo: Repo, oid: str, part: int | None = None) -> str:
        tail = f"/part/{part}" if part is not None else ""
        return f"{self.endpoint}{STORAGE}{repo.repo_type}/{repo.repo_id}/{oid}{tail}?sig={self._sign(repo, oid)}"

    def _lfs(self, who: dict, repo_type: str, repo_id: str, op: str, payload: dict) -> tuple[int, object, dict]:
        """The Git LFS batch API (upload) and its verify step, as the Hub answers them."""
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or not self.can_read(who, repo):
            raise self._error(404, "Repository not found", "RepoNotFound")
        if not self.can_write(who, repo_id):
            raise self._error(403, f"You don't have the rights to write to {repo_id}")
        repo.keep_lfs()  # files a test put in the tree by hand count as pushed
        lfs_type = {"Content-Type": "application/vnd.git-lfs+json"}
        if op == "verify":
            data = repo.lfs.get(str(payload.get("oid")))
            if data is None or len(data) != payload.get("size"):
                raise self._error(404, f"LFS object {payload.get('oid')} of size {payload.get('size')} not found")
            return 200, {}, lfs_type
        if payload.get("operation") != "upload":
            raise self._error(400, "only the upload operation is supported")
        prefix = {"space": "spaces/", "dataset": "datasets/"}.get(repo_type, "")
        objects, multipart = [], False
        for obj in payload.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if not (isinstance(oid, str) and re.fullmatch(r"[0-9a-f]{64}", oid) and isinstance(size, int) and size >= 0):
                objects.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                                "error": {"code": 422, "message": "Invalid oid or size"}})
                continue
            if oid in repo.lfs:  # already stored: no actions, so the client sends nothing
                objects.append({"oid": oid, "size": size, "authenticated": True})
                continue
            upload: dict = {"href": self._href(repo, oid), "expires_in": 86400}
            if self.multipart_chunk and size > self.multipart_chunk:
                multipart = True
                parts = math.ceil(size / self.multipart_chunk)
                upload["header"] = {"chunk_size": str(self.multipart_chunk),
                                    **{f"{i:05d}": self._href(repo, oid, i) for i in range(1, parts + 1)}}
            verify = {"href": f"{self.endpoint}/{prefix}{repo_id}.git/info/lfs/objects/verify"}
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {"upload": upload, "verify": verify}})
        return 200, {"transfer": "multipart" if multipart else "basic", "objects": objects, "hash_algo": "sha256"}, lfs_type

    def _storage(self, method: str, path: str, query: dict, body: bytes) -> tuple[int, object, dict]:
        """The presigned upload hrefs: a whole object (PUT), a part (PUT .../part/N), a multipart completion (POST)."""
        m = re.match(r"^/lfs-storage/(space|model|dataset)/([^/]+/[^/]+)/([0-9a-f]{64})(?:/part/(\d+))?$", path)
        repo = self.repos.get((m.group(1), m.group(2))) if m else None
        if repo is None or not hmac.compare_digest(query.get("sig", [""])[0], self._sign(repo, m.group(3))):
            raise self._error(403, "SignatureDoesNotMatch: the upload URL is not one the batch API gave")
        oid, part, key = m.group(3), m.group(4), (repo.repo_type, repo.repo_id, m.group(3))
        if method == "PUT" and part is not None:
            self._parts.setdefault(key, {})[int(part)] = body
            return 200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}
        if method == "PUT":
            data = body
        elif method == "POST" and part is None:  # multipart completion: {"oid", "parts": [{"partNumber", "etag"}]}
            stored = self._parts.get(key, {})
            listed = json.loads(body or b"{}").get("parts", [])
            if [p["partNumber"] for p in listed] != sorted(stored) or any(
                    p["etag"].strip('"') != hashlib.md5(stored[p["partNumber"]]).hexdigest() for p in listed):
                raise self._error(400, "InvalidPart: the parts listed are not the parts uploaded")
            data = b"".join(stored[n] for n in sorted(stored))
            self._parts.pop(key, None)
        else:
            raise self._error(405, f"no route {method} {path}")
        if hashlib.sha256(data).hexdigest() != oid:
            raise self._error(400, f"BadDigest: the {len(data)} bytes uploaded do not hash to {oid}")
        repo.lfs[oid] = data
        return 200, b"", {"ETag": f'"{hashlib.md5(data).hexdigest()}"'}

    def _inline_file(self, repo: Repo, value: dict) -> bytes:
        """A commit's ``file`` entry (the bytes inline): refused over 10 MiB, as the Hub does."""
        data = base64.b64decode(value["content"])
        if len(data) > LFS_SIZE:  # the Hub refuses large files sent inline
            raise self._error(400, f"Your push was rejected because it contains files larger than 10 MiB "
                                   f"({value['path']}): store them with Git LFS (preupload says 'lfs')")
        if repo.is_lfs(value["path"], len(data)):  # git's LFS filter stores it, as a push would
            repo.lfs.setdefault(hashlib.sha256(data).hexdigest(), data)
        return data

    def _lfs_file(self, repo: Repo, value: dict) -> bytes:
        """A commit's ``lfsFile`` entry (a pointer): only to an object the repo's storage holds."""
        data = repo.lfs.get(value.get("oid", "")) if value.get("algo", "sha256") == "sha256" else None
        if data is None or value.get("size", len(data)) != len(data):
            raise self._error(400, "Your push was rejected because an LFS pointer pointed to a file that does not "
                                   f"exist. Offending file: {value['path']}")
        return data


class LfsUploadDrop:
    """The request handler's side of ``lfs_drop``; ``hub`` is the emulator."""

    def _drop_upload(self, path: str) -> bool:
        """Read part of an LFS PUT's body, then close the connection: an upload lost mid-way."""
        hub = self.hub
        oid = _upload_oid(path)
        with hub.lock:
            if hub.lfs_drop.get(oid, 0) <= 0:
                return False
            hub.lfs_drop[oid] -= 1
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            size = int(self.rfile.readline().strip() or b"0", 16)
            got = len(self.rfile.read(min(size, 4096)))
        else:
            got = len(self.rfile.read(int(self.headers.get("content-length") or 0) // 2))
        with hub.lock:
            hub.requests.append({"method": "PUT", "path": path, "status": "dropped", "user": None, "range": None, "size": got})
        self.close_connection = True
        return True
