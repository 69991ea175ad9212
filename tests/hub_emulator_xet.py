"""The Xet side of the Hub emulator (tests/hub_emulator.py): large files as hf_xet uploads them.

With hf_xet installed (the default), huggingface_hub 2.x still asks preupload for "regular"/"lfs", but
sends every "lfs" file through Xet instead of the LFS batch API: it fetches a write token
(``GET /api/{type}s/{repo}/xet-write-token/{revision}``: ``casUrl``, ``accessToken``, ``exp``), hands it
to hf_xet, which chunks the files and talks to the CAS server, then commits ``lfsFile`` entries named by
sha256, as for LFS. The emulator acts as that CAS server, speaking the wire protocol of hf_xet 1.8
(xet-core's xet_client: the Xet protocol spec's xorb and shard formats, upload grants, NDJSON shard
progress):

- ``GET /v1/chunks/default/{hash}`` (global dedup query): 404, no match; a re-upload is spared by
  hf_xet's own shard cache and by ``xorb-grants`` answering 200 for a xorb already stored.
- ``POST /v1/xorb-grants/default/{hash}`` (``{"length", "checksum"}``): 200 for a stored xorb, else 201
  and a grant ``{"id", "method", "url", "headers"}``; ``PUT {url}`` (the grant is the credential);
  ``POST /v1/xorb-commits/default/{hash}/grant/{id}`` stores it (404 if nothing arrived for the grant).
  ``POST /v1/xorbs/default/{hash}`` (the legacy direct upload) stores it too.
- ``POST /v2/shards`` (NDJSON progress frames, then ``{"type": "result"}``) and ``POST /v1/shards``.

A xorb is stored as sent, after its chunks are parsed and decompressed (none, LZ4 frame, byte-grouped
LZ4); a shard is refused unless every term of every file names a stored xorb and a chunk range it
holds. A shard's files are recorded for the token's repo by sha256 (the file's metadata extension);
a commit's ``lfsFile`` to such a sha256 is rebuilt from the xorbs and accepted only if the bytes hash
to it. What the emulator does not check: the Xet merkle hashes (BLAKE3) of chunks, xorbs and files, and
the xorb's CRC-64 checksum; the sha256 of the rebuilt bytes stands for them. Downloads are not served
through Xet (tree entries carry no ``xetHash``): a stored file is read back as an LFS file.

Knobs: ``xet`` (off: the token route answers 501 and the client must run with ``HF_HUB_DISABLE_XET=1``),
``xet_drop`` (cut the next N xorb uploads mid-body and close the connection), ``xet_html`` (a CAS route,
"xorb-grants" or "shards", answered by an HTML page, as a proxy or captive portal in the way does: hf_xet's
errors then name no URL, "domain: no-url", or none at all); inspection:
``xet_uploads(since)``, ``xorbs``, ``shards``. ``XetHub`` relies on its host for ``repos``,
``endpoint``, ``requests``, ``lock``, ``can_read``, ``can_write`` and ``_error``.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import struct
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub_emulator import Repo

# The casUrl the write token names (cas-server.xethub.hf.co on the Hub). publish_hub.py tells a Xet failure
# by where it was raised, not by this word in hf_xet's text: xet_html makes errors that name no URL.
CAS = "/xet-cas"
GRANTS = "/xet-grants/"  # the upload grant URLs (S3 on the Hub)
SHARD_TAG = bytes([72, 70, 82, 101, 112, 111, 77, 101, 116, 97, 68, 97, 116, 97, 0, 85, 105, 103, 69, 106, 123,
                   129, 87, 131, 165, 189, 217, 92, 205, 209, 74, 169])  # "HFRepoMetaData\0" + magic
ENTRY = 48  # every shard record (file and xorb headers and entries) is 48 bytes
BOOKEND = b"\xff" * 32
WITH_VERIFICATION, WITH_METADATA_EXT = 1 << 31, 1 << 30


def xet_hex(raw: bytes) -> str:
    """A 32-byte hash as Xet prints it: four little-endian u64 words, each in hex."""
    return b"".join(raw[i:i + 8][::-1] for i in range(0, 32, 8)).hex()


def _bg4_regroup(grouped: bytes) -> bytes:
    """Undo byte grouping: the bytes were split into four groups (offsets 0, 1, 2, 3 mod 4)."""
    n, out, start = len(grouped), bytearray(len(grouped)), 0
    for i in range(4):
        size = n // 4 + (1 if i < n % 4 else 0)
        out[i::4] = grouped[start:start + size]
        start += size
    return bytes(out)


def parse_xorb(data: bytes) -> list[bytes]:
    """The chunks of a serialized xorb, decompressed: 8-byte headers (version, compressed length u24,
    scheme, uncompressed length u24) each followed by the chunk's bytes.

    Raises:
        ValueError: a header or a chunk that does not parse.
    """
    import lz4.frame

    chunks, pos = [], 0
    while pos < len(data):
        if data[pos:pos + 7] == b"XETBLOB":  # a footer (hf_xet 1.8 sends none): the chunks are done
            break
        if pos + 8 > len(data):
            raise ValueError(f"truncated chunk header at byte {pos}")
        version, scheme = data[pos], data[pos + 4]
        packed, size = (int.from_bytes(data[pos + a:pos + a + 3], "little") for a in (1, 5))
        body = data[pos + 8:pos + 8 + packed]
        if version != 0 or scheme > 2 or len(body) != packed:
            raise ValueError(f"bad chunk {len(chunks)} at byte {pos} (version {version}, scheme {scheme})")
        chunk = body if scheme == 0 else lz4.frame.decompress(body)
        chunk = _bg4_regroup(chunk) if scheme == 2 else chunk
        if len(chunk) != size:
            raise ValueError(f"chunk {len(chunks)} decompresses to {len(chunk)} bytes, its header says {size}")
        chunks.append(chunk)
        pos += 8 + packed
    return chunks


def parse_shard(data: bytes) -> tuple[list[dict], list[dict]]:
    """The files and xorbs an uploaded shard describes (header, file info section, xorb info section,
    each section closed by a bookend; an upload has no footer).

    Returns:
        files: ``{"hash", "sha256" (or None), "terms": [(xorb, first chunk, end chunk, bytes)]}``;
        xorbs: ``{"hash", "chunks", "bytes"}``.
    """
    if data[:32] != SHARD_TAG:
        raise ValueError("not a shard (wrong magic number)")
    pos, files, xorbs = 48, [], []

    def record() -> tuple[bytes, tuple]:
        nonlocal pos
        if pos + ENTRY > len(data):
            raise ValueError("shard truncated")
        raw = data[pos:pos + ENTRY]
        pos += ENTRY
        return raw[:32], struct.unpack("<4I", raw[32:48])

    while True:
        file_hash, (flags, n, _, _) = record()
        if file_hash == BOOKEND:
            break
        terms = []
        for _ in range(n):
            xorb, (_, size, start, end) = record()
            terms.append((xet_hex(xorb), start, end, size))
        pos += ENTRY * n if flags & WITH_VERIFICATION else 0
        sha256 = xet_hex(record()[0]) if flags & WITH_METADATA_EXT else None
        files.append({"hash": xet_hex(file_hash), "sha256": sha256, "terms": terms})
    while True:
        xorb, (_, n, size, _) = record()
        if xorb == BOOKEND:
            break
        pos += ENTRY * n
        xorbs.append({"hash": xet_hex(xorb), "chunks": n, "bytes": size})
    return files, xorbs


class XetHub:
    """The emulator's Xet write token and CAS routes (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()  # LfsHub
        self.xet = False  # serve Xet write tokens and act as the CAS server
        self.xet_drop = 0  # cut the next N xorb uploads mid-body (a CAS that fails mid-upload)
        self.xet_html = ""  # a CAS route ("xorb-grants", "shards") answered by an HTML page (a proxy in the way)
        self.xorbs: dict[str, list[bytes]] = {}  # xorb hash -> its chunks, decompressed
        self.shards: list[bytes] = []  # the shards accepted, as sent
        self._xet_tokens: dict[str, tuple[str, str, float]] = {}  # access token -> (repo type, repo id, expiry)
        self._xet_files: dict[tuple[str, str], dict[str, dict]] = {}  # repo -> sha256 -> a shard's file entry
        self._grants: dict[str, dict] = {}  # grant id -> {"hash", "length", "data"}

    def xet_uploads(self, since: int = 0) -> list[dict]:
        """The xorb bodies and shards sent after request ``since``: ``{"kind", "bytes", "status"}``."""
        kinds = ((GRANTS, "xorb"), (f"{CAS}/v1/xorbs/", "xorb"), (f"{CAS}/v2/shards", "shard"),
                 (f"{CAS}/v1/shards", "shard"))
        return [{"kind": kind, "bytes": r["size"], "status": r["status"]} for r in self.requests[since:]
                for prefix, kind in kinds if r["method"] in ("PUT", "POST") and r["path"].startswith(prefix)]

    def _xet_token(self, who: dict, repo: Repo) -> tuple[int, object, dict]:
        if not self.xet:
            raise self._error(501, "the Hub emulator speaks Git LFS, not Xet: run huggingface_hub with "
                                   "HF_HUB_DISABLE_XET=1 (or set the emulator's xet knob)")
        if not self.can_write(who, repo.repo_id):
            raise self._error(403, f"You don't have the rights to write to {repo.repo_id}")
        token, exp = secrets.token_hex(16), int(time.time()) + 3600
        self._xet_tokens[token] = (repo.repo_type, repo.repo_id, exp)
        cas = f"{self.endpoint}{CAS}"
        return 200, {"casUrl": cas, "accessToken": token, "exp": exp}, {
            "X-Xet-Cas-Url": cas, "X-Xet-Access-Token": token, "X-Xet-Token-Expiration": str(exp)}

    def _cas(self, method: str, path: str, headers, body: bytes) -> tuple[int, object, dict]:
        """The CAS routes; a grant URL needs no token (it is the credential, as on S3)."""
        if path.startswith(GRANTS) and method == "PUT":
            grant = self._grants.get(path[len(GRANTS):])
            if grant is None or len(body) != grant["length"]:
                raise self._error(403, "the upload grant is unknown or the body is not the length granted")
            grant["data"] = body
            return 200, b"", {}
        auth = headers.get("authorization") or ""
        scope = self._xet_tokens.get(auth[7:]) if auth.lower().startswith("bearer ") else None
        if scope is None or scope[2] < time.time():
            raise self._error(401, "invalid or expired Xet access token")
        route = path[len(CAS):]
        if self.xet_html and route.split("/")[2:3] == [self.xet_html]:
            status = 201 if self.xet_html == "xorb-grants" else 200  # a grant's status: hf_xet then reads the body
            return status, b"<html><body>Access denied by your network's proxy</body></html>", {"Content-Type": "text/html"}
        if route == "/v1/telemetry":
            return 200, {}, {}
        if re.fullmatch(r"/v1/chunks/default/[0-9a-f]{64}", route) and method == "GET":
            raise self._error(404, "no shard knows this chunk")  # global dedup: no match
        if m := re.fullmatch(r"/v1/xorb-grants/default/([0-9a-f]{64})", route):
            if m.group(1) in self.xorbs:
                return 200, {}, {}  # already stored: nothing to upload
            grant_id = secrets.token_hex(16)
            self._grants[grant_id] = {"hash": m.group(1), "length": json.loads(body)["length"], "data": None}
            return 201, {"id": grant_id, "method": "PUT", "url": f"{self.endpoint}{GRANTS}{grant_id}",
                         "headers": {}}, {}
        if m := re.fullmatch(r"/v1/xorb-commits/default/([0-9a-f]{64})/grant/([0-9a-f]+)", route):
            grant = self._grants.get(m.group(2))
            if grant is None or grant["hash"] != m.group(1) or grant["data"] is None:
                raise self._error(404, "no data was uploaded for this grant")
            return self._store_xorb(m.group(1), self._grants.pop(m.group(2))["data"])
        if m := re.fullmatch(r"/v1/xorbs/default/([0-9a-f]{64})", route):
            return self._store_xorb(m.group(1), body)
        if route in ("/v1/shards", "/v2/shards") and method == "POST":
            return self._store_shard(scope[:2], body, ndjson=route == "/v2/shards")
        raise self._error(404, f"no CAS route {method} {route}")

    def _store_xorb(self, xorb: str, data: bytes) -> tuple[int, object, dict]:
        try:
            chunks = parse_xorb(data)
        except ValueError as e:
            raise self._error(400, f"xorb {xorb} does not parse: {e}") from None
        inserted = xorb not in self.xorbs
        self.xorbs.setdefault(xorb, chunks)
        return 200, {"was_inserted": inserted}, {}

    def _store_shard(self, repo: tuple[str, str], data: bytes, *, ndjson: bool) -> tuple[int, object, dict]:
        try:
            files, xorbs = parse_shard(data)
        except (ValueError, struct.error) as e:
            raise self._error(400, f"the shard does not parse: {e}") from None
        for x in xorbs:  # the xorbs this upload made: all stored, as the shard describes them
            stored = self.xorbs.get(x["hash"])
            if stored is None or len(stored) != x["chunks"] or sum(map(len, stored)) != x["bytes"]:
                raise self._error(400, f"the shard lists xorb {x['hash']}, which was never uploaded as described")
        for f in files:
            for xorb, start, end, size in f["terms"]:
                chunks = self.xorbs.get(xorb, [])
                if not (0 <= start < end <= len(chunks)) or sum(map(len, chunks[start:end])) != size:
                    raise self._error(400, f"file {f['hash']} names chunks {start}..{end} of xorb {xorb}, "
                                           "which the CAS does not hold")
        self.shards.append(data)
        for f in files:
            if f["sha256"]:
                self._xet_files.setdefault(repo, {})[f["sha256"]] = f
        if not ndjson:
            return 200, {"result": 1}, {}
        frames = [{"type": "validating", "verified": len(files), "total": len(files)}, {"type": "result"}]
        return 200, "".join(json.dumps(f) + "\n" for f in frames).encode(), {"Content-Type": "application/x-ndjson"}

    def _lfs_file(self, repo: Repo, value: dict) -> bytes:
        """A commit's ``lfsFile`` entry: an object in the repo's LFS storage, or a file a shard uploaded
        for this repo through Xet, rebuilt from its xorbs (it must hash to the sha256 named)."""
        oid = value.get("oid", "")
        f = self._xet_files.get((repo.repo_type, repo.repo_id), {}).get(oid)
        if f is not None and oid not in repo.lfs:
            data = b"".join(b"".join(self.xorbs[x][start:end]) for x, start, end, _ in f["terms"])
            if hashlib.sha256(data).hexdigest() == oid:
                repo.lfs[oid] = data
        return super()._lfs_file(repo, value)


class XetUploadDrop:
    """The request handler's side of ``xet_drop``; ``hub`` is the emulator."""

    def _drop_xorb(self, method: str, path: str) -> bool:
        """Read part of a xorb upload's body, then close the connection: an upload lost mid-way."""
        hub = self.hub
        if not (method == "PUT" and path.startswith(GRANTS) or method == "POST" and path.startswith(f"{CAS}/v1/xorbs/")):
            return False
        with hub.lock:
            if hub.xet_drop <= 0:
                return False
            hub.xet_drop -= 1
        got = len(self.rfile.read(int(self.headers.get("content-length") or 0) // 2))
        with hub.lock:
            hub.requests.append({"method": method, "path": path, "status": "dropped", "user": None, "range": None,
                                 "size": got})
        self.close_connection = True
        return True
