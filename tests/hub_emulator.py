"""A local Hugging Face Hub emulator for the publishing tests.

A stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (port 0) that answers the routes
huggingface_hub 2.x calls when publishing a Space: whoami-v2, repos/create,
validate-yaml, the NDJSON commit (file / deletedFile / deletedFolder),
tree listing and repo info at any revision (main, a branch or tag in ``refs``, a commit), file downloads
(``resolve/<revision>/<path>``, HEAD and GET, as ``hf_hub_download`` and transformers fetch them), an owner's Spaces (``list_spaces(author=)``),
settings (visibility), and the Space runtime / hardware / sleeptime / secrets /
variables / pause / restart / logs endpoints. State is in memory. The real client
is pointed at it with ``HF_ENDPOINT`` (or ``HfApi(endpoint=...)``).

Knobs for tests: tokens and their roles (classic or fine-grained), a forced status
on create (402) or on any route, paid hardware refused (403), the stage sequence a Space walks
through after a change, build and run logs, dropped connections (before or after the request is handled), and a request log
(``requests``, ``writes()``) to assert on, and an ``on_request`` hook to look at the client's
side while a request is in flight; bodies cut short (``cut``) and ranged GETs (a download resuming).

How large files get in (preupload's "regular"/"lfs" answers, the Git LFS batch API, presigned uploads,
verify, ``lfsFile`` commit entries, the ``lfs_drop`` and ``multipart_chunk`` knobs, ``lfs_uploads()``) is in
tests/hub_emulator_lfs.py, mixed into ``Repo``, ``HubEmulator`` and the request handler here. Xet (the
write token, the CAS server hf_xet uploads to, ``lfsFile`` entries for files it uploaded) is in
tests/hub_emulator_xet.py, on only with the ``xet`` knob; off, the xet-write-token route answers 501 and
the client must run with ``HF_HUB_DISABLE_XET=1``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from hub_emulator_lfs import STORAGE, LfsHub, LfsRepo, LfsUploadDrop
from hub_emulator_xet import CAS, GRANTS, XetHub, XetUploadDrop

GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
DEFAULT_README = b"---\ntitle: New Space\nsdk: gradio\n---\n"
SPACE_SDKS = ("gradio", "docker", "static", "streamlit")
COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
READ_ONLY_POSTS = ("/preupload/", "/api/validate-yaml", "/info/lfs/objects/")  # POSTs that change nothing


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclasses.dataclass
class Repo(LfsRepo):
    repo_type: str  # "space" | "model"
    repo_id: str
    private: bool = True
    sdk: str | None = None
    files: dict[str, bytes] = dataclasses.field(default_factory=dict)
    commits: list[dict] = dataclasses.field(default_factory=list)  # {"oid", "title", "ops", "files": the tree after it}
    refs: dict[str, str] = dataclasses.field(default_factory=dict)  # branches other than main and tags -> commit
    secrets: dict[str, dict] = dataclasses.field(default_factory=dict)  # key -> {"value", "description", "updatedAt"}
    variables: dict[str, dict] = dataclasses.field(default_factory=dict)
    hardware: str | None = None  # current
    requested: str | None = "cpu-basic"
    sleep: int | None = None  # gcTimeout
    stage: str = "NO_APP_FILE"
    pending: list[str] = dataclasses.field(default_factory=list)  # stages still to walk through
    running_sha: str | None = None
    lfs: dict[str, bytes] = dataclasses.field(default_factory=dict)  # the repo's LFS storage: sha256 -> bytes

    @property
    def sha(self) -> str:
        return self.commits[-1]["oid"] if self.commits else "0" * 40

    def commit(self, title: str, ops: list) -> str:
        oid = hashlib.sha1(f"{self.sha}{title}{json.dumps(ops, sort_keys=True)}{len(self.commits)}".encode()).hexdigest()
        self.commits.append({"oid": oid, "title": title, "ops": ops, "files": dict(self.files)})
        return oid

    def at(self, revision: str | None) -> tuple[str, dict[str, bytes]]:
        """The commit ``revision`` names (main, a branch or tag in ``refs``, a full commit id) and its files.

        Raises:
            _Reply: 404 RevisionNotFound, as the Hub answers an unknown revision.
        """
        oid = self.sha if revision in (None, "", "main") else self.refs.get(revision, revision)
        if oid == self.sha:  # the head: its files as they are now (a test may edit them in place)
            return oid, self.files
        commit = next((c for c in self.commits if c["oid"] == oid), None)
        if commit is None:
            raise _error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return oid, commit["files"]

    def runtime(self) -> dict:
        return {
            "stage": self.stage,
            "hardware": {"current": self.hardware, "requested": self.requested},
            "gcTimeout": self.sleep,
            "storage": None,
            "devMode": False,
            "sha": self.running_sha,
            "replicas": {"current": 1, "requested": 1},
        }


class _Reply(Exception):
    def __init__(self, status: int, body=None, headers: dict | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


def _error(status: int, message: str, code: str | None = None) -> _Reply:
    headers = {"X-Error-Message": message}
    if code:
        headers["X-Error-Code"] = code
    return _Reply(status, {"error": message}, headers)


class HubEmulator(XetHub, LfsHub):
    """In-memory Hub. ``start()`` returns the endpoint URL; use as a context manager or call ``stop()``."""

    _error = staticmethod(_error)  # how the LFS routes (LfsHub) raise an error reply

    def __init__(self) -> None:
        super().__init__()  # XetHub and LfsHub: their knobs and upload state
        self.tokens: dict[str, dict] = {}
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[dict] = []  # {"method", "path", "status", "user"}
        self.create_status: int | None = None  # e.g. 402: every repos/create answers this
        self.paid_hardware_status: int | None = None  # e.g. 403: paid hardware refused (no payment method)
        self.stage_sequence: list[str] = ["RUNNING", "BUILDING", "APP_STARTING", "RUNNING"]  # first: the stale old stage
        self.build_log: list[str] = ["Successfully built the image"]
        self.run_log: list[str] = ["Running on local URL:  http://0.0.0.0:7860"]
        self.force_status: dict[str, int] = {}  # path suffix -> answer this status instead (e.g. {"/commit/main": 409})
        self.drop: dict[str, int] = {}  # path -> close the connection without answering the next N requests to it
        self.drop_reply: dict[str, int] = {}  # path -> handle the next N requests to it, then close without answering
        self.cut: dict[str, int] = {}  # path suffix -> send at most this many bytes of each body, then close (cut short)
        self.on_request = None  # called as on_request(method, path) before each request is answered
        self.lock = threading.RLock()
        self.endpoint = ""
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> str:
        emulator = self

        class Handler(_Handler):
            hub = emulator

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "HubEmulator":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- knobs and inspection ----------------------------------------------------------------
    def add_token(self, token: str, user: str, *, role: str = "write", orgs: tuple[str, ...] = (),
                  scoped: list[dict] | None = None, org_roles: dict[str, str] | None = None) -> None:
        """Register a token. ``role``: "read", "write" or "fineGrained" (with ``scoped`` permissions).
        ``org_roles``: the user's role in each org of ``orgs`` (read, contributor, write, admin; default write)."""
        self.tokens[token] = {"user": user, "role": role, "orgs": list(orgs), "scoped": scoped or [],
                              "org_roles": {o: (org_roles or {}).get(o, "write") for o in orgs}}

    def add_space(self, repo_id: str, *, files: dict[str, bytes] | None = None, hardware: str = "cpu-basic",
                  stage: str = "RUNNING", sleep: int | None = None, private: bool = True) -> Repo:
        """Seed a Space that already exists (as if made by hand on the Hub)."""
        repo = Repo("space", repo_id, private=private, sdk="gradio", hardware=hardware, requested=hardware,
                    sleep=sleep, stage=stage)
        repo.files = {".gitattributes": GITATTRIBUTES, "README.md": DEFAULT_README, **(files or {})}
        repo.commit("initial commit", [])
        repo.keep_lfs()
        repo.running_sha = repo.sha
        self.repos[("space", repo_id)] = repo
        return repo

    def space(self, repo_id: str) -> Repo:
        return self.repos[("space", repo_id)]

    def writes(self) -> list[dict]:
        """Requests that could change state (all but GETs and the read-only POSTs)."""
        return [r for r in self.requests if r["method"] != "GET" and not any(p in r["path"] for p in READ_ONLY_POSTS)]

    def snapshot(self, repo_id: str, dest: str | Path, *, repo_type: str = "space") -> Path:
        """Write a repo's files (as stored) into ``dest``: what a clone of it would hold."""
        dest = Path(dest)
        for path, data in self.repos[(repo_type, repo_id)].files.items():
            (dest / path).parent.mkdir(parents=True, exist_ok=True)
            (dest / path).write_bytes(data)
        return dest

    # -- request handling --------------------------------------------------------------------
    def user_of(self, headers) -> dict | None:
        auth = headers.get("authorization") or ""
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        return self.tokens.get(token)

    def can_write(self, who: dict, repo_id: str) -> bool:
        owner = repo_id.split("/", 1)[0]
        if owner != who["user"] and owner not in who["orgs"]:
            return False
        if owner != who["user"] and who["org_roles"][owner] == "read":  # the org's member role caps any token
            return False
        if who["role"] in ("write", "admin"):
            return True
        if who["role"] == "fineGrained":
            return any("repo.write" in s.get("permissions", []) and s.get("entity", {}).get("name") in (owner, repo_id)
                       for s in who["scoped"])
        return False

    def can_read(self, who: dict, repo: Repo) -> bool:
        owner = repo.repo_id.split("/", 1)[0]
        return not repo.private or owner == who["user"] or owner in who["orgs"]

    def start_build(self, repo: Repo) -> None:
        repo.pending = list(self.stage_sequence)
        if repo.stage in ("PAUSED",):
            repo.pending = []

    def advance(self, repo: Repo) -> None:
        if repo.pending:
            repo.stage = repo.pending.pop(0)
            if repo.stage in ("BUILDING", "APP_STARTING", "RUNNING_BUILDING") or not repo.pending:
                repo.running_sha = repo.sha
            if repo.stage == "RUNNING" and not repo.pending:
                repo.hardware = repo.requested

    def handle(self, method: str, path: str, query: dict, headers, body: bytes) -> tuple[int, object, dict]:
        if path == "/api/agent-harnesses":  # huggingface_hub's once-a-day registry fetch; no auth
            return 200, {"standardEnvVars": [], "harnesses": {}}, {}
        if path.startswith(STORAGE):  # presigned: the href itself is the credential, as on S3
            return self._storage(method, path, query, body)
        if path.startswith((CAS + "/", GRANTS)):  # Xet's CAS: its own access tokens, or a grant URL
            return self._cas(method, path, headers, body)
        who = self.user_of(headers)
        if who is None:
            raise _error(401, "Invalid credentials in Authorization header")
        m = re.match(r"^/(?:(spaces|datasets)/)?([^/]+/[^/]+)\.git/info/lfs/objects/(batch|verify)$", path)
        if m and method == "POST":
            return self._lfs(who, (m.group(1) or "models")[:-1], m.group(2), m.group(3), json.loads(body or b"{}"))
        m = re.match(r"^/(?:(spaces|datasets)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if m and method in ("GET", "HEAD") and not path.startswith("/api/"):
            return self._resolve(who, (m.group(1) or "models")[:-1], m.group(2), m.group(3), m.group(4))
        if path == "/api/whoami-v2" and method == "GET":
            return 200, self._whoami(who), {}
        if path == "/api/validate-yaml" and method == "POST":
            return self._validate_yaml(json.loads(body or b"{}"))
        if path == "/api/repos/create" and method == "POST":
            return self._create(who, json.loads(body or b"{}"))
        if path == "/api/spaces" and method == "GET":  # list_spaces(author=...): one page, what the caller can read
            author = query.get("author", [""])[0]
            return 200, [{"id": r.repo_id, "private": r.private, "sdk": r.sdk} for (kind, rid), r in sorted(self.repos.items())
                         if kind == "space" and rid.split("/")[0] == author and self.can_read(who, r)], {}
        m = re.match(r"^/api/(spaces|models|datasets)/([^/]+/[^/]+)(?:/(.*))?$", path)
        if not m:
            raise _error(404, f"no route {method} {path}")
        repo_type, repo_id, rest = m.group(1)[:-1], m.group(2), m.group(3) or ""
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or not self.can_read(who, repo):
            raise _error(404, "Repository not found", "RepoNotFound")
        write = method != "GET" and "preupload" not in rest
        if write and not self.can_write(who, repo_id):
            raise _error(403, f"You don't have the rights to write to {repo_id}")
        if rest == "" or rest.startswith("revision/"):
            return 200, self._info(repo, unquote(rest[len("revision/"):]).strip("/") or None), {}
        if rest.startswith("tree/"):
            return 200, self._tree(repo, rest[len("tree/"):], query), {}
        if rest.startswith("preupload/"):
            return 200, self._preupload(repo, json.loads(body)), {}
        if rest.startswith("commit/"):
            return self._commit(repo, body)
        if rest.startswith("xet-write-token/") and method == "GET":
            return self._xet_token(who, repo)
        if rest == "settings" and method == "PUT":
            settings = json.loads(body or b"{}")
            if "visibility" in settings:
                repo.private = settings["visibility"] == "private"
            return 200, {}, {}
        if repo_type != "space":
            raise _error(404, f"no route {method} {path}")
        return self._space(repo, method, rest, json.loads(body) if body and method != "GET" else {})

    def _whoami(self, who: dict) -> dict:
        access: dict = {"displayName": "test token", "role": who["role"], "createdAt": _now()}
        if who["role"] == "fineGrained":
            access["fineGrained"] = {"canReadGatedRepos": False, "global": [], "scoped": who["scoped"]}
        return {"type": "user", "name": who["user"], "fullname": who["user"].title(),
                "orgs": [{"name": o, "type": "org", "roleInOrg": who["org_roles"][o]} for o in who["orgs"]],
                "auth": {"type": "access_token", "accessToken": access}}

    def _validate_yaml(self, payload: dict) -> tuple[int, object, dict]:
        import yaml

        content = payload.get("content", "")
        m = re.match(r"^---\s*\n(.*?)\n---\s*(?:\n|$)", content, re.S)
        errors = []
        try:
            meta = yaml.safe_load(m.group(1)) if m else {}
        except yaml.YAMLError as e:
            errors.append({"message": f"YAML parse error: {e}"})
            meta = {}
        if payload.get("repoType") == "space" and isinstance(meta, dict) and meta:
            if meta.get("sdk") not in SPACE_SDKS:
                errors.append({"message": f'"sdk" must be one of {SPACE_SDKS}'})
            for key in ("colorFrom", "colorTo"):
                if key in meta and meta[key] not in COLORS:
                    errors.append({"message": f'"{key}" must be one of {COLORS}'})
        if errors:
            raise _Reply(400, {"errors": errors})
        return 200, {"errors": [], "warnings": []}, {}

    def _create(self, who: dict, payload: dict) -> tuple[int, object, dict]:
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or who['user']}/{payload['name']}"
        if not self.can_write(who, repo_id):
            raise _error(403, f"You don't have the rights to create a {repo_type} under the namespace {repo_id.split('/')[0]}")
        if self.create_status is not None:
            raise _error(self.create_status, "Payment required: hosting a Space needs a paid plan")
        hardware = payload.get("hardware") or ("cpu-basic" if repo_type == "space" else None)
        if repo_type == "space" and hardware != "cpu-basic" and self.paid_hardware_status is not None:
            raise _error(self.paid_hardware_status, "Paid hardware needs a payment method on your account")
        if (repo_type, repo_id) in self.repos:  # with the repo's url, as the Hub answers (create_repo(exist_ok=True) reads it)
            prefix = "spaces/" if repo_type == "space" else ""
            raise _Reply(409, {"error": "You already created this repo", "url": f"{self.endpoint}/{prefix}{repo_id}"},
                         {"X-Error-Message": "You already created this repo"})
        repo = Repo(repo_type, repo_id, private=payload.get("visibility", "public") == "private", sdk=payload.get("sdk"),
                    requested=hardware, sleep=payload.get("sleepTimeSeconds"))
        repo.files = {".gitattributes": GITATTRIBUTES} | ({"README.md": DEFAULT_README} if repo_type == "space" else {})
        repo.commit("initial commit", [])
        for item in payload.get("secrets") or []:
            repo.secrets[item["key"]] = {"value": item["value"], "description": item.get("description"), "updatedAt": _now()}
        for item in payload.get("variables") or []:
            repo.variables[item["key"]] = {"value": item["value"], "description": item.get("description"), "updatedAt": _now()}
        self.repos[(repo_type, repo_id)] = repo
        prefix = "spaces/" if repo_type == "space" else ""
        return 200, {"url": f"{self.endpoint}/{prefix}{repo_id}", "name": repo_id}, {}

    def _info(self, repo: Repo, revision: str | None = None) -> dict:
        sha, files = repo.at(revision)
        info = {"id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": sha, "private": repo.private,
                "lastModified": _now(), "createdAt": _now(), "tags": [], "likes": 0,
                "siblings": [{"rfilename": p} for p in sorted(files)]}
        if repo.repo_type == "space":
            info |= {"sdk": repo.sdk, "runtime": repo.runtime(), "subdomain": repo.repo_id.replace("/", "-").lower()}
        return info

    def _resolve(self, who: dict, repo_type: str, repo_id: str, revision: str, path: str) -> tuple[int, object, dict]:
        """A file at a revision, with the headers ``hf_hub_download`` reads (the commit, the etag, the size)."""
        repo = self.repos.get((repo_type, repo_id))
        if repo is None or not self.can_read(who, repo):
            raise _error(404, "Repository not found", "RepoNotFound")
        sha, files = repo.at(revision)
        if path not in files:
            raise _error(404, f"{path} does not exist at {revision}", "EntryNotFound")
        entry = repo.tree_file(path, files[path])
        etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
        return 200, files[path], {"Content-Type": "application/octet-stream", "X-Repo-Commit": sha, "ETag": f'"{etag}"'}

    def _tree(self, repo: Repo, rest: str, query: dict) -> list:
        revision, _, prefix = rest.partition("/")
        _sha, files = repo.at(unquote(revision))
        prefix = unquote(prefix).strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        entries, folders = [], set()
        for path in sorted(files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rel = path[len(prefix) + 1:] if prefix else path
            parts = rel.split("/")
            base = f"{prefix}/" if prefix else ""
            for i in range(1, len(parts) if recursive else min(2, len(parts))):
                folders.add(base + "/".join(parts[:i]))
            if recursive or len(parts) == 1:
                entries.append(repo.tree_file(path, files[path]))
        entries += [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f} for f in sorted(folders)]
        return entries

    def _commit(self, repo: Repo, body: bytes) -> tuple[int, object, dict]:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next((item["value"] for item in lines if item["key"] == "header"), {})
        parent = header.get("parentCommit")
        if parent and not repo.sha.startswith(parent):
            raise _error(412, f"Parent commit {parent} is not the head of main ({repo.sha})")
        files = dict(repo.files)
        ops = []
        for item in lines:
            key, value = item["key"], item["value"]
            if key == "file":
                files[value["path"]] = self._inline_file(repo, value)
                ops.append(["file", value["path"]])
            elif key == "deletedFile":
                if value["path"] not in files:
                    raise _error(404, "A file with this name doesn't exist", "EntryNotFound")
                del files[value["path"]]
                ops.append(["deletedFile", value["path"]])
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: d for p, d in files.items() if not p.startswith(prefix)}
                ops.append(["deletedFolder", value["path"]])
            elif key == "lfsFile":
                files[value["path"]] = self._lfs_file(repo, value)
                ops.append(["lfsFile", value["path"]])
        repo.files = files
        oid = repo.commit(header.get("summary", ""), ops)
        if repo.repo_type == "space":
            self.start_build(repo)
        prefix = "spaces/" if repo.repo_type == "space" else ""
        return 200, {"commitUrl": f"{self.endpoint}/{prefix}{repo.repo_id}/commit/{oid}", "commitOid": oid,
                     "pullRequestUrl": None}, {}

    def _space(self, repo: Repo, method: str, rest: str, payload: dict) -> tuple[int, object, dict]:
        if rest == "runtime" and method == "GET":
            self.advance(repo)
            return 200, repo.runtime(), {}
        if rest == "hardware" and method == "POST":
            flavor = payload["flavor"]
            if flavor != "cpu-basic" and self.paid_hardware_status is not None:
                raise _error(self.paid_hardware_status, "Paid hardware needs a payment method on your account")
            repo.requested = flavor
            if "sleepTimeSeconds" in payload:
                repo.sleep = payload["sleepTimeSeconds"]
            self.start_build(repo)
            return 200, repo.runtime(), {}
        if rest == "sleeptime" and method == "POST":
            if (repo.requested or repo.hardware) == "cpu-basic":
                raise _error(400, "Sleep time is not configurable on free hardware")
            repo.sleep = payload["seconds"]
            return 200, repo.runtime(), {}
        if rest in ("secrets", "variables"):
            store = repo.secrets if rest == "secrets" else repo.variables
            if method == "GET":
                if rest == "secrets":
                    return 200, {k: {"description": v["description"], "updatedAt": v["updatedAt"]} for k, v in store.items()}, {}
                return 200, {k: {"value": v["value"], "description": v["description"], "updatedAt": v["updatedAt"]} for k, v in store.items()}, {}
            if method == "POST":
                store[payload["key"]] = {"value": payload["value"], "description": payload.get("description"), "updatedAt": _now()}
            elif method == "DELETE":
                store.pop(payload["key"], None)
            self.start_build(repo)  # the Hub restarts a Space whose secrets or variables change
            if rest == "secrets":
                return 200, None, {}
            return 200, {k: {"value": v["value"], "description": v["description"]} for k, v in store.items()}, {}
        if rest == "pause" and method == "POST":
            repo.stage, repo.pending = "PAUSED", []
            return 200, repo.runtime(), {}
        if rest == "restart" and method == "POST":
            repo.stage = "RUNNING" if repo.stage == "PAUSED" else repo.stage
            self.start_build(repo)
            return 200, repo.runtime(), {}
        m = re.match(r"^logs/(build|run)$", rest)
        if m and method == "GET":
            lines = self.build_log if m.group(1) == "build" else self.run_log
            stamp = datetime.fromtimestamp(time.time() - 2, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            text = "".join(f"data: {json.dumps({'data': line + chr(10), 'timestamp': stamp})}\n\n" for line in lines)
            return 200, text.encode(), {"Content-Type": "text/event-stream"}
        raise _error(404, f"no route {method} {rest}")


class _Handler(XetUploadDrop, LfsUploadDrop, BaseHTTPRequestHandler):
    hub: HubEmulator
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        hub = self.hub
        if method == "PUT" and path.startswith(STORAGE) and self._drop_upload(path):
            return
        if self._drop_xorb(method, path):
            return
        body = self._body()
        with hub.lock:
            who = hub.user_of(self.headers)
            entry = {"method": method, "path": path, "status": None, "user": who["user"] if who else None,
                     "range": self.headers.get("range"), "size": len(body)}
            hub.requests.append(entry)
            if hub.on_request is not None:
                hub.on_request(method, path)
            if hub.drop.get(path, 0) > 0:
                hub.drop[path] -= 1
                entry["status"] = "dropped"
                self.close_connection = True
                return
            forced = next((code for suffix, code in hub.force_status.items() if path.endswith(suffix)), None)
            try:
                if forced is not None:
                    raise _error(forced, f"forced by the test: {forced}")
                status, payload, headers = hub.handle(method, path, query, self.headers, body)
            except _Reply as r:
                status, payload, headers = r.status, r.body, r.headers
            except Exception as e:  # an emulator bug: answer 500 so the test shows it
                status, payload, headers = 500, {"error": f"emulator error: {type(e).__name__}: {e}"}, {}
            entry["status"] = status
            if hub.drop_reply.get(path, 0) > 0:  # done, but the answer is lost on the way back
                hub.drop_reply[path] -= 1
                self.close_connection = True
                return
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        if status == 200 and isinstance(payload, bytes) and (m := re.fullmatch(r"bytes=(\d+)-", entry["range"] or "")):
            start = int(m.group(1))  # a download resuming, as the Hub serves it
            status, headers["Content-Range"], data = 206, f"bytes {start}-{len(data) - 1}/{len(data)}", data[start:]
            entry["status"] = status
        cut = next((n for suffix, n in hub.cut.items() if path.endswith(suffix)), None)
        self.send_response(status)
        self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if method != "HEAD":  # HEAD: the headers of the GET (Content-Length included), no body
            self.wfile.write(data if cut is None else data[:cut])
            if cut is not None:
                self.close_connection = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")
