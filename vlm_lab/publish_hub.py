"""The Hub side of publishing: the token, its rights, retries, and errors that name the fix.

Every call to huggingface_hub goes through ``Hub.call``, which retries network
failures with backoff and turns HTTP errors into ``PublishError`` subclasses
whose message says what failed, on which repo, and what to do. The token (and
every secret value being sent) is scrubbed from each message: it never reaches
output, logs or re-raised exception texts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import time
from typing import Any, Callable, Iterator, TypeVar

from vlm_lab.errors import PublishError

R = TypeVar("R")

TOKENS_URL = "https://huggingface.co/settings/tokens"
BILLING_URL = "https://huggingface.co/settings/billing"
PRICING_URL = "https://huggingface.co/pricing"
_TOKEN_LIKE = re.compile(r"\bhf_[A-Za-z0-9]{20,}")
# A presigned upload URL (the LFS batch API's hrefs) is a credential until it expires: its signature goes.
_SIGNED_QUERY = re.compile(r"(?i)([?&](?:x-amz-[a-z-]+|sig|signature|token|policy|key-pair-id)=)[^&\s'\"]+")
# huggingface_hub wraps a failed LFS upload as RuntimeError(this) from the HTTP or network error.
_LFS_UPLOAD_FAILED = re.compile(r"^Error while uploading '(.+)' to the Hub\.$")
_RETRY_STATUS = (408, 429, 500, 502, 503, 504)


class HubAuthError(PublishError, PermissionError):
    """The token is missing, invalid, read-only, or the account cannot pay for what was asked."""

    exit_code = 3


class HubNotFoundError(PublishError, LookupError):
    """The Hub answered 404 for a repo or an endpoint."""

    exit_code = 4


class HubConflictError(PublishError):
    """The Hub answered 409: the repo exists as another type, or changed under us."""

    exit_code = 4


class HubNetworkError(PublishError, ConnectionError):
    """The Hub could not be reached after retries."""

    exit_code = 5


def scrub(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """``text`` with every secret and anything shaped like a Hugging Face token replaced by ``***``."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _SIGNED_QUERY.sub(r"\1***", _TOKEN_LIKE.sub("hf_***", text))


def _lfs_upload_cause(e: BaseException) -> tuple[BaseException, str]:
    """The error under huggingface_hub's wrapper of a failed LFS upload, and the file it was sending."""
    m = _LFS_UPLOAD_FAILED.match(str(e)) if isinstance(e, RuntimeError) else None
    if m is None or e.__cause__ is None:
        return e, ""
    return e.__cause__, m.group(1)


@contextlib.contextmanager
def scrubbed_logs(hub: "Hub") -> Iterator[None]:
    """Scrub the token and the secrets from every huggingface_hub log record while inside.

    With ``HF_DEBUG=1`` huggingface_hub logs each request as a curl command: it hides the
    Authorization header, but not the body, which carries secret values (add_space_secret).
    The filter sits on the handlers, since records from child loggers skip a logger's filters.
    """
    class Scrub(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.msg, record.args = hub.scrub(record.getMessage()), ()
            return True

    scrub_filter = Scrub()
    handlers = [*logging.getLogger("huggingface_hub").handlers, *logging.getLogger().handlers]
    for handler in handlers:
        handler.addFilter(scrub_filter)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(scrub_filter)


def _network_errors() -> tuple[type[BaseException], ...]:
    import httpx2  # huggingface_hub 2.x's HTTP client

    return (httpx2.TransportError, ConnectionError, TimeoutError)


# Where huggingface_hub hands the files to hf_xet. hf_xet's Rust code raises plain ConnectionError (network
# and HTTP-status failures) and RuntimeError (an answer it cannot read), with no attribute that names Xet and a
# text that may name no URL ("domain: no-url"); the innermost Python frame of the traceback says who raised it.
_XET_CALLERS = {("huggingface_hub._commit_api", "_upload_xet_files")}


def _raised_by_xet(e: BaseException) -> bool:
    """Whether ``e`` came out of hf_xet: one of its own exception types, or raised inside the call into it."""
    if type(e).__module__.split(".")[0] == "hf_xet":  # XetAuthenticationError, XetObjectNotFoundError
        return True
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and (tb.tb_frame.f_globals.get("__name__"), tb.tb_frame.f_code.co_name) in _XET_CALLERS


@dataclasses.dataclass
class Hub:
    """An authenticated huggingface_hub client plus the rules for calling it."""

    api: Any  # huggingface_hub.HfApi
    token: str
    user: str
    orgs: tuple[str, ...]
    retries: int = 3
    backoff: float = 1.0
    secrets: list[str] = dataclasses.field(default_factory=list)  # values to scrub besides the token
    whoami: dict = dataclasses.field(default_factory=dict)  # the Hub's whoami-v2 answer for the token
    source: str = "the token"  # where it came from, for messages: "the token in $HF_TOKEN", ...
    shadowed_login: bool = False  # $HF_TOKEN hides a different token saved by `hf auth login`

    def token_fix(self) -> str:
        """How to get a token that works, said for where this one came from."""
        fix = f"create a write token at {TOKENS_URL} and export HF_TOKEN=..."
        if self.shadowed_login:
            fix += " (or unset HF_TOKEN: it takes precedence over the different token saved by `hf auth login`)"
        return fix

    @property
    def endpoint(self) -> str:
        return str(self.api.endpoint).rstrip("/")

    def scrub(self, text: str) -> str:
        return scrub(text, [self.token, *self.secrets])

    def call(self, what: str, fn: Callable[..., R], *args: Any, repo: str = "", **kwargs: Any) -> R:
        """Run ``fn(*args, **kwargs)``: retry network failures and 5xx, translate the rest.

        Args:
            what: what the call does, for messages ("set hardware t4-small").
            repo: the repo it touches, for messages.
        """
        from huggingface_hub.errors import HfHubHTTPError

        network = _network_errors()
        for attempt in range(1, self.retries + 1):
            try:
                return fn(*args, **kwargs)
            except (HfHubHTTPError, RuntimeError, OSError, *network) as raised:
                # A large file's upload (Git LFS) fails inside create_commit: name the file, and say
                # that nothing was committed and that a new run skips the objects already stored.
                e, upload = _lfs_upload_cause(raised)
                lost = (f"; uploading {upload} (Git LFS) failed, so nothing was committed and the repo is as it was; "
                        "the large files already uploaded are not sent again" if upload else "")
                xet = _raised_by_xet(e)
                if isinstance(e, HfHubHTTPError):
                    status = e.response.status_code if e.response is not None else None
                    if status in _RETRY_STATUS and attempt < self.retries:
                        time.sleep(self.backoff * 2 ** (attempt - 1))
                        continue
                    raise self.translate(e, what=f"{what} (upload {upload})" if upload else what, repo=repo) from None
                if not isinstance(e, network) and not xet:
                    if upload:
                        raise PublishError(f"could not {what}: {type(e).__name__}: {self.scrub(str(e))}{lost}") from None
                    raise
                if attempt < self.retries and isinstance(e, network):
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                if xet:  # hf_xet (the default upload path) failed: the Hub itself may well have answered
                    raise HubNetworkError(
                        f"could not {what}: uploading the large files through Xet storage failed after {attempt} "
                        f"attempt{'s' * (attempt > 1)} ({type(e).__name__}: {self.scrub(str(e)) or 'no detail'}); nothing was committed and "
                        "the repo is as it was; run the same command again (what is stored is not sent again), or, where "
                        "a proxy or firewall blocks Xet's storage host, export HF_HUB_DISABLE_XET=1 to upload through "
                        "Git LFS instead"
                    ) from None
                raise HubNetworkError(
                    f"could not {what}: the Hub at {self.endpoint} did not answer after {self.retries} attempts "
                    f"({type(e).__name__}: {self.scrub(str(e)) or 'no detail'}){lost}; check your connection "
                    "(or HF_ENDPOINT) and run the same command again: it resumes where it stopped"
                ) from None
        raise AssertionError("unreachable")

    def translate(self, e: Exception, *, what: str, repo: str = "") -> PublishError:
        """A ``PublishError`` naming the fix for an HTTP error from the Hub (token scrubbed)."""
        response = getattr(e, "response", None)
        status = response.status_code if response is not None else None
        detail = self.scrub(str(getattr(e, "server_message", None) or "").strip() or str(e).splitlines()[0])
        where = f" {repo}" if repo else ""
        if status == 401:
            return HubAuthError(f"could not {what}: {self.source} was rejected (401: invalid or expired); {self.token_fix()}")
        asked = re.search(r"request hardware (\S+)|on (\S+) hardware", what)  # the flavor this call asks for
        flavor = next((g for g in asked.groups() if g), None) if asked else None
        plan = f"hosting a Gradio Space needs a paid plan (PRO for users, Team or Enterprise for organizations, {PRICING_URL})"
        if status == 402 and flavor and flavor != "cpu-basic":  # what free hardware is the way out of
            return HubAuthError(
                f"could not {what}: payment required (402): {flavor} is paid hardware, and the account has no payment "
                f"method: add one at {BILLING_URL}, or publish with hardware='cpu-basic' (free)"
                + (f"; or {plan}" if what.startswith("create") else "") + f"; server said: {detail}"
            )
        if status == 402:
            return HubAuthError(
                f"could not {what}: payment required (402): {plan} or paid hardware with a "
                f"payment method ({BILLING_URL}); server said: {detail}"
            )
        if status == 403 and asked and "cpu-basic" not in asked.groups():
            if what.startswith("create"):  # refused for the paid hardware, or for the owner: the 403 does not say which
                return HubAuthError(
                    f"could not {what}: forbidden (403): paid hardware needs a payment method (add one at {BILLING_URL}, "
                    f"or publish with hardware='cpu-basic'), or the token cannot create repos{where.replace(' ', ' for ', 1)} "
                    f"(use a write token from {TOKENS_URL}); server said: {detail}"
                )
            return HubAuthError(
                f"could not {what}: the Hub refused paid hardware (403); add a payment method at {BILLING_URL}, "
                f"or publish with hardware='cpu-basic'; server said: {detail}"
            )
        if status in (400, 403, 422) and "sleep time" in what:  # a value it does not offer, a grant's fixed sleep time
            return PublishError(
                f"could not {what}: the Hub refused it ({status}); pass sleep_time=N, one it accepts (a Space's "
                "settings page offers 300, 900, 1800, 3600, 36000, 86400, 172800, 259200 and 604800 seconds; -1: never "
                f"sleep), or the Space's current one to leave it as it is; server said: {detail}"
            )
        if status in (400, 422) and "hardware" in what:
            return PublishError(
                f"could not {what}: the Hub refused it ({status}); pass hardware='FLAVOR', another one (the flavors your "
                f"account may use are listed on the Space's settings page), or the Space's current one; server said: {detail}"
            )
        if status == 403:
            return HubAuthError(
                f"could not {what}{where}: forbidden (403); the token cannot write there: use a write token "
                f"(or a fine-grained one with write access to that owner) from {TOKENS_URL}; server said: {detail}"
            )
        if status == 404:
            return HubNotFoundError(
                f"could not {what}: not found (404){where}; check the owner/name and that the token's user "
                f"({self.user}) can see it; server said: {detail}"
            )
        if status in (409, 412):
            return HubConflictError(
                f"could not {what}: conflict ({status}){where}: the repo changed while publishing, or the name is "
                f"taken; run the same command again (it re-plans from the repo as it is now), or pick another name; "
                f"server said: {detail}"
            )
        return PublishError(f"could not {what}{where}: HTTP {status}: {detail}")


def connect(*, endpoint: str = "", retries: int = 3, backoff: float = 1.0) -> Hub:
    """Find the token (``HF_TOKEN`` or ``hf auth login``) and ask the Hub who it belongs to.

    Raises:
        HubAuthError: no token, or the Hub rejects it.
        HubNetworkError: the Hub cannot be reached.
    """
    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise PublishError("HF_HUB_OFFLINE=1 is set, and publishing needs the Hub; run with HF_HUB_OFFLINE=0")
    token = get_token()
    if not token:
        raise HubAuthError(f"no Hugging Face token: create a write token at {TOKENS_URL} and export HF_TOKEN=... (or run `hf auth login`)")
    hub = Hub(api=HfApi(endpoint=endpoint or None, token=token), token=token, user="?", orgs=(), retries=retries, backoff=backoff)
    hub.source, hub.shadowed_login = _token_source(token)
    info = hub.call("check the token (whoami)", hub.api.whoami)
    hub.user = str(info.get("name") or "?")
    hub.orgs = tuple(str(o.get("name")) for o in info.get("orgs") or [] if o.get("name"))
    hub.whoami = info
    return hub


def _token_source(token: str) -> tuple[str, bool]:
    """Where huggingface_hub found ``token`` (for messages), and whether it hides a different saved login.

    A stale read token left in ``HF_TOKEN`` (a shell profile, a .env) silently wins over a write
    token saved by ``hf auth login``: the fix is then to unset it, not to make another token.
    """
    import os

    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(name, "").strip() == token:
            try:
                saved = open(constants.HF_TOKEN_PATH, encoding="utf-8").read().strip()
            except OSError:
                saved = ""
            return f"the token in ${name}", bool(saved) and saved != token
    return "the token saved by `hf auth login`", False


def check_can_write(hub: Hub, repo_id: str, *, exists: bool) -> str:
    """Say why the token may write ``repo_id``, or raise ``HubAuthError`` naming the fix.

    Classic tokens need the ``write`` role. Fine-grained tokens need ``repo.write``
    on the owner (user or org), or on the repo itself when it already exists.
    """
    owner = repo_id.split("/", 1)[0]
    if owner != hub.user and owner not in hub.orgs:
        member = ", ".join((hub.user, *hub.orgs))
        if exists:  # a Space of someone else that the token can see (public): there is nothing to create
            raise HubAuthError(
                f"the token belongs to {hub.user!r}, who cannot write to {repo_id} (it is {owner}'s; {hub.user} can "
                f"write under: {member}); use a token of a member of {owner!r}, or publish under your own name "
                f"({hub.user}/{repo_id.split('/', 1)[1]})"
            )
        raise HubAuthError(
            f"the token belongs to {hub.user!r}, who cannot create repos under {owner!r} (can: {member}); "
            f"use a token of a member of {owner!r}, or publish under your own name"
        )
    org_role = next((o.get("roleInOrg") for o in hub.whoami.get("orgs") or [] if o.get("name") == owner), None)
    if owner != hub.user and org_role == "read":  # the member's role in the org caps what any of their tokens may do
        raise HubAuthError(
            f"{hub.user} is a read member of {owner!r}, who cannot write its repos with any token; ask an admin of "
            f"{owner!r} for the write role (or contributor, to create new repos), or publish under your own name "
            f"({hub.user}/{repo_id.split('/', 1)[1]})"
        )
    access = (hub.whoami.get("auth") or {}).get("accessToken") or {}
    role = access.get("role")
    if role in ("write", "admin"):
        return f"{role} token of {hub.user}"
    if role == "fineGrained":
        scoped = (access.get("fineGrained") or {}).get("scoped") or []
        for scope in scoped:
            entity = scope.get("entity") or {}
            perms = scope.get("permissions") or []
            if "repo.write" not in perms:
                continue
            if entity.get("type") in ("user", "org") and entity.get("name") == owner:
                return f"fine-grained token with repo.write on {owner}"
            if exists and entity.get("name") == repo_id:
                return f"fine-grained token with repo.write on {repo_id}"
        raise HubAuthError(
            f"{hub.source} (fine-grained, of {hub.user}) has no repo.write on {owner!r}"
            + ("" if exists else f" (needed to create {repo_id})")
            + f"; edit the token's permissions at {TOKENS_URL} (Repositories: write), or {hub.token_fix()}"
        )
    raise HubAuthError(f"{hub.source} (of {hub.user}) is {role or 'of unknown role'}, not write; {hub.token_fix()}")
