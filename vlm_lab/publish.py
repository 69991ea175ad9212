"""Publish ``space/`` to a Hugging Face Space: one command, the same end state every time.

``publish(config)`` runs four phases and returns a ``PublishReport``:

1. **Preflight** (no writes): a token that can write there, README front matter that
   parses locally and on the Hub, ``sdk_version`` equal to requirements.txt's gradio
   pin, secrets present in the environment, no credential in any staged file, and no
   ``--var`` that looks like one (variables are public; credentials go in ``--secret``).
2. **Stage**: list, scan and hash ``space/`` + the ``vlm_lab`` package + the embedded
   checkpoints in place (nothing is copied: checkpoints can be many GB), or upload the
   checkpoints to a model repo and point ``VLM_LAB_CHECKPOINTS`` at it.
3. **Apply**: create the Space if missing, commit only what differs from the remote
   tree (adds, updates, deletes; nothing when nothing changed), then compare the
   runtime's hardware / sleep time / secrets / variables with the wanted ones and
   set those that differ. ``create_repo`` settings alone are not enough: an
   existing Space ignores them.
4. **Wait** until the Space runs the new build, or fail with the tail of its logs.

``dry_run`` stops after computing the plan: it writes nothing to the hub (it builds the embedded
checkpoints locally when their default folder holds none, as the publish would, so that the plan lists them).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any, Callable

from vlm_lab.config import PublishConfig
from vlm_lab.errors import ConfigError, PublishError
from vlm_lab.publish_checks import (
    check_examples, check_zero_gpu, memory_notes, new_space_notes, served_hub_refs, served_model_notes,
)
from vlm_lab.publish_files import commit_plan, plan_files, repo_info
from vlm_lab.publish_hub import TOKENS_URL, Hub, HubNotFoundError, check_can_write, connect, scrubbed_logs
from vlm_lab.publish_report import FilePlan, PublishReport, SettingChange, estimate_cost, human_seconds
from vlm_lab.publish_stage import (
    SPACE_REPO_LIMIT,
    Stage,
    card_with_models,
    check_variables,
    credentials_at_hand,
    find_secret_in_value,
    human_bytes,
    read_space_card,
    stage,
)
from vlm_lab.publish_wait import ERROR_STAGES, WAITING_STAGES, Progress, space_failed, wait_for_build
from vlm_lab.publish_wait import SpaceFailedError, SpaceTimeoutError  # noqa: F401 - raised by publish(), importable from here
from vlm_lab.space_settings import check_space_variables

CHECKPOINTS_VARIABLE = "VLM_LAB_CHECKPOINTS"  # read by space/app.py: comma-separated checkpoint refs
DEFAULT_PAID_SLEEP = 3600

Action = tuple[SettingChange, Callable[[], Any]]


def publish(config: PublishConfig, *, progress: Progress | None = None) -> PublishReport:
    """Publish (or pause, restart) the Space ``config.space``; see the module docstring.

    Raises:
        PublishError: with the fix in the message; subclasses carry distinct exit codes.
    """
    say = progress or (lambda _msg: None)
    check_repo_name(config.space, f"Space name {config.space!r}")
    if config.checkpoints_repo:
        check_repo_name(config.checkpoints_repo, f"checkpoints_repo={config.checkpoints_repo!r}")
    hub = connect(endpoint=config.endpoint, retries=config.retries)
    _secret_values(config)  # a --secret not set in the environment stops here, before any write
    known = credentials_at_hand(hub.token, config.secrets)
    _refuse_publishing_token(hub, config)
    hub.secrets.extend(known.values())
    with scrubbed_logs(hub):
        return _publish(hub, config, known, say)


def _check_keys(config: PublishConfig) -> None:
    """A Space key is a secret or a variable, once: refuse ``--secret X --var X=...`` and two values for one ``--var``."""
    values: dict[str, set[str]] = {}
    for item in config.variables:
        key, _, value = item.partition("=")
        values.setdefault(key, set()).add(value)
    both = sorted(set(config.secrets) & set(values))
    if both:
        raise ConfigError(f"{', '.join(both)}: given as both --secret and --var; a Space key is one or the other: keep "
                          "--secret for a credential, --var for a public setting; nothing was uploaded")
    twice = sorted(key for key, seen in values.items() if len(seen) > 1)
    if twice:  # the values are not shown: one of them may be a credential
        raise ConfigError(f"--var {', '.join(twice)} given twice with different values; keep one; nothing was uploaded")
    if config.checkpoints_repo and CHECKPOINTS_VARIABLE in values:
        raise ConfigError(f"--checkpoints-repo {config.checkpoints_repo} and --var {CHECKPOINTS_VARIABLE}=... both say what "
                          f"the Space serves (--checkpoints-repo sets {CHECKPOINTS_VARIABLE} to the checkpoints it uploads); "
                          "keep one; nothing was uploaded")


def _publish(hub: Hub, config: PublishConfig, known: dict[str, str], say: Progress) -> PublishReport:
    _check_keys(config)
    try:  # first: a mistyped VLM_LAB_MAX_NEW_TOKEN is a typo, not a credential to send as a secret
        check_space_variables(config.variable_map(), app_dir=config.space_dir)
    except ConfigError as e:  # the Space would fail minutes later in its run log, or ignore a typo
        raise ConfigError(f"{e}; nothing was uploaded") from None
    check_variables(config.variable_map(), known=known)
    say(f"token: {hub.user}")
    if config.action != "publish":
        return _pause_or_restart(hub, config, say)

    space_dir = Path(config.space_dir)
    if not (space_dir / "app.py").is_file() and not (space_dir / "README.md").is_file():
        raise PublishError(f"no Space app in {str(space_dir)!r} (no app.py, no README.md); pass space_dir='DIR', the app folder")
    card = read_space_card(space_dir)
    check_zero_gpu(config.hardware, space_dir / card.app_file)
    check_examples(space_dir)
    info = repo_info(hub, config.space, "space")
    how = check_can_write(hub, config.space, exists=info is not None)
    say(f"can write {config.space}: {how}")
    typo = new_space_notes(hub, config.space) if info is None else []  # my-vml for my-vlm: a second, billed Space
    model_info = None
    if config.checkpoints_repo:
        model_info = repo_info(hub, config.checkpoints_repo, "model")
        check_can_write(hub, config.checkpoints_repo, exists=model_info is not None)
    served = served_hub_refs(_served_specs(config, _kept_checkpoints_variable(hub, config, info)), config.space_dir)
    repos = [config.checkpoints_repo] if config.checkpoints_repo else [ref.repo_id for ref in served]
    readme = card_with_models(card.front_matter, list(dict.fromkeys(repos)))
    _validate_on_hub(hub, readme)

    # --var VLM_LAB_CHECKPOINTS names what the app serves (it wins over checkpoints next to app.py): none are uploaded
    told = CHECKPOINTS_VARIABLE in config.variable_map()
    embed = config.embed_checkpoints and not config.checkpoints_repo and not told
    checkpoints = Path(config.checkpoints)
    if (embed or config.checkpoints_repo) and _is_embedded_default(checkpoints):
        _build_if_missing(checkpoints, config, say)
    staged = stage(space_dir=space_dir, checkpoints=checkpoints if embed else None, known=known,
                   max_bytes=SPACE_REPO_LIMIT, readme=readme)
    ckpt_staged = (stage(checkpoints=checkpoints, checkpoints_prefix="", known=known)
                   if config.checkpoints_repo else None)
    sizes = dict(staged.sizes) | (ckpt_staged.sizes if ckpt_staged else {})
    left_out = len(staged.excluded) + (len(ckpt_staged.excluded) if ckpt_staged else 0)
    say(f"staged {len(staged.files)} files, {human_bytes(sum(sizes.values()))}; {left_out} left out (the report says which)")
    warned = [*typo, *staged.notes, *(ckpt_staged.notes if ckpt_staged else ())]
    configs = [f.source for st in (staged, ckpt_staged) if st for f in st.files.values() if f.source.name == "config.json"]
    warned += memory_notes(config.hardware, configs)
    if served:
        warned += served_model_notes(hub, served, space=config.space, space_has_token=_space_has_hf_token(hub, config, exists=info is not None))
    if told and config.embed_checkpoints:
        warned.append(f"the checkpoints of {config.checkpoints} are not uploaded: the Space serves what "
                        f"--var {CHECKPOINTS_VARIABLE} names")
    for note in warned:
        say(f"warning: {note}")

    ckpt_plan = plan_files(hub, config.checkpoints_repo, "model", ckpt_staged, model_info) if ckpt_staged else None
    plan = plan_files(hub, config.space, "space", staged, info)
    runtime = hub.call("read the Space runtime", hub.api.get_space_runtime, config.space) if info else None
    plans = tuple(p for p in (ckpt_plan, plan) if p is not None)

    if config.dry_run:
        ckpt_value = _checkpoints_value(config, ckpt_staged, ckpt_plan, None)
        actions = _settings(hub, config, runtime, exists=info is not None, checkpoints_value=ckpt_value,
                            private=getattr(info, "private", None))
        return _report(hub, config, info, plans, [a[0] for a in actions], runtime, (staged, ckpt_staged), sizes,
                       created=False, new_commit=plan.changed, dry_run=True, private=_visibility(config, info),
                       notes=warned + _checkpoints_token_note(hub, config, model_info, space_exists=info is not None))

    ckpt_commit = None
    if ckpt_plan is not None and ckpt_staged is not None:
        if model_info is None:
            say(f"creating model repo {config.checkpoints_repo}")
            hub.call(f"create model repo {config.checkpoints_repo}", hub.api.create_repo, config.checkpoints_repo,
                     repo_type="model", private=not config.public, exist_ok=True, repo=config.checkpoints_repo)
        ckpt_commit = commit_plan(hub, ckpt_staged, ckpt_plan, config.commit_message + " (checkpoints)", say)
        if ckpt_commit is None:
            ckpt_commit = ckpt_plan.parent
        if ckpt_commit is None:  # a repo just created and nothing to commit: ask for its head
            ckpt_commit = repo_info(hub, config.checkpoints_repo, "model").sha  # type: ignore[union-attr]
    ckpt_value = _checkpoints_value(config, ckpt_staged, ckpt_plan, ckpt_commit)

    created = info is None
    initial: list[SettingChange] = []
    if created:  # create_repo applies the settings; the report lists them as changed
        initial = [a[0] for a in _settings(hub, config, None, exists=False, checkpoints_value=ckpt_value)]
        say(f"creating Space {config.space} ({'public' if config.public else 'private'}, {config.hardware})")
        _create_space(hub, config, ckpt_value)
        plan = plan_files(hub, config.space, "space", staged, repo_info(hub, config.space, "space"))
        plans = tuple(p for p in (ckpt_plan, plan) if p is not None)
        runtime = hub.call("read the Space runtime", hub.api.get_space_runtime, config.space)
    before_stage = "NO_APP_FILE" if created else str(runtime.stage)
    # Settings before files: a refused setting (403: no payment method) stops before any commit.
    actions = _settings(hub, config, runtime, exists=True, checkpoints_value=ckpt_value,
                        private=not config.public if created else getattr(info, "private", None))
    for change, apply in actions:
        say(f"setting {change.name}: {change.current} -> {change.wanted}")
        apply()
    commit = commit_plan(hub, staged, plan, config.commit_message, say)

    # Visibility and sleep time change in place; waiting for a build they never start would time out.
    restarts = [a for a in actions if a[0].name not in ("visibility", "sleep time")]
    changed = commit is not None or bool(restarts) or created
    if config.wait and changed:
        runtime = wait_for_build(hub, config, before_stage=before_stage, commit=commit, say=say)
    else:
        runtime = hub.call("read the Space runtime", hub.api.get_space_runtime, config.space)
        if str(runtime.stage) in ERROR_STAGES and not changed:
            raise space_failed(hub, config.space, runtime, commit=None)
        if config.wait and str(runtime.stage) in WAITING_STAGES:  # a wait cut short before: running again resumes it
            say(f"{config.space} is still building an earlier publish: waiting for it")
            runtime = wait_for_build(hub, config, before_stage=str(runtime.stage), commit=None, say=say)
    head = commit or repo_info(hub, config.space, "space").sha  # type: ignore[union-attr]
    return _report(hub, config, {"sha": head}, plans, initial + [a[0] for a in actions], runtime, (staged, ckpt_staged), sizes,
                   created=created, new_commit=commit is not None, dry_run=False, private=_visibility(config, info),
                   notes=warned + _checkpoints_token_note(hub, config, model_info, space_exists=True))


def check_repo_name(repo_id: str, what: str) -> None:
    """Refuse a repo id the Hub would refuse, before any request (huggingface_hub's own rules); ``what`` names it
    (``checkpoints_repo='a--b'``).

    Raises:
        PublishError: naming the value, the rule it breaks and the rules in full.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise PublishError(
            f"{what} is not a valid repo id ({str(e).split(':', 1)[0].rstrip('.')}); use owner/name where name "
            "has letters, digits, '-', '_' or '.', at most 96 characters, does not start or end with '-' or '.', "
            "has no '--' or '..', and does not end in '.git'"
        ) from None


def _kept_checkpoints_variable(hub: Hub, config: PublishConfig, info: Any | None) -> str:
    """The Space's ``VLM_LAB_CHECKPOINTS`` that this publish keeps as it is (``--no-checkpoints``, no ``--var``
    for it: set by hand on the Hub or by an earlier publish), or "" when the publish sets or removes it."""
    if info is None or config.embed_checkpoints or CHECKPOINTS_VARIABLE in config.variable_map():
        return ""
    remote = hub.call("list the Space's variables", hub.api.get_space_variables, config.space, repo=config.space)
    kept = remote.get(CHECKPOINTS_VARIABLE)
    return kept.value if kept is not None else ""


def _served_specs(config: PublishConfig, kept: str = "") -> str:
    """The ``VLM_LAB_CHECKPOINTS`` the Space will have: this publish's ``--var``, or the one it keeps."""
    return config.variable_map().get(CHECKPOINTS_VARIABLE, kept)


def _build_if_missing(checkpoints: Path, config: PublishConfig, say: Progress) -> None:
    """Train the embedded checkpoints into the default folder when it holds none, saying so first: it takes minutes.

    Only the embedded default is built (a mistyped path must not become a fresh build). A dry run builds them
    too, locally (nothing goes to the hub), so that its plan lists the files and the cost the publish would have.
    """
    from vlm_lab.checkpoints import discover_checkpoints
    from vlm_lab.publish_build import build_embedded_checkpoints

    if discover_checkpoints(checkpoints):
        return
    say(f"--checkpoints {str(checkpoints)!r} holds no checkpoints: training the embedded ones there first (once, "
        "a few minutes on 2 CPU cores)" + ("; a dry run builds them too, so that its plan lists their files" if config.dry_run else ""))
    build_embedded_checkpoints(checkpoints, progress=True)  # a bar on stderr, as `vlm-lab checkpoints build` shows


def _is_embedded_default(checkpoints: Path) -> bool:
    """Whether ``checkpoints`` is the embedded default folder, the only one built when it is missing."""
    default = next(f.default for f in dataclasses.fields(PublishConfig) if f.name == "checkpoints")
    return checkpoints.resolve() == Path(str(default)).resolve()


def _secret_values(config: PublishConfig) -> dict[str, str]:
    """The values of ``--secret NAME`` from the environment; a missing one stops before any write."""
    values = {}
    for name in config.secrets:
        value = os.environ.get(name)
        if not value:
            raise PublishError(f"--secret {name}: ${name} is not set; export {name}=... first (secret values are read from the environment, never from the command line)")
        values[name] = value
    return values


def _refuse_publishing_token(hub: Hub, config: PublishConfig) -> None:
    """A ``--secret`` may not carry the token this command writes with: the Space's code could read it."""
    for name, value in _secret_values(config).items():
        if value.strip() == hub.token:
            raise PublishError(
                f"--secret {name}: ${name} holds the token this command publishes with (it can write to the repos of "
                f"{hub.user}); sent as a Space secret, the Space's code could read it. Nothing was uploaded. Give the "
                f"Space its own read-only token: create one at {TOKENS_URL} and add it as the secret {name} at "
                f"{hub.endpoint}/spaces/{config.space}/settings (publishing leaves secrets it is not given alone), "
                f"then publish without --secret {name}"
            )


def _checkpoints_token_note(hub: Hub, config: PublishConfig, model_info: Any | None, *, space_exists: bool) -> list[str]:
    """The step left to do by hand when the Space cannot read a private checkpoints repo: none once the
    Space has its HF_TOKEN secret (the app loads with it) or the repo is public."""
    if not config.checkpoints_repo:
        return []
    private = getattr(model_info, "private", None) if model_info is not None else not config.public
    if private is False:
        return []
    if _space_has_hf_token(hub, config, exists=space_exists):
        return []
    stays = " (--public does not change an existing repo's visibility)" if config.public else ""
    return [f"{config.checkpoints_repo} is private{stays}: the Space needs a read-only token to load it; add one as "
            f"the secret HF_TOKEN at {hub.endpoint}/spaces/{config.space}/settings"
            + ("" if config.public else " (or publish with --public)")]


def _space_has_hf_token(hub: Hub, config: PublishConfig, *, exists: bool) -> bool:
    """Whether the Space will have an ``HF_TOKEN`` secret to load private models with: sent now, or set before."""
    if "HF_TOKEN" in config.secrets:
        return True
    return exists and "HF_TOKEN" in hub.call("list the Space's secrets", hub.api.get_space_secrets, config.space, repo=config.space)


def _shown(hub: Hub, value: str) -> str:
    """A variable's value for output; hidden when it looks like a credential (left by an older publish)."""
    if hub.scrub(value) != value or find_secret_in_value(value) is not None:
        return "(a value that looks like a credential: rotate it, Space variables are public)"
    return repr(value)


def _validate_on_hub(hub: Hub, readme: str) -> None:
    """The Hub's own check of the README front matter (POST validate-yaml; writes nothing)."""
    try:  # the private helper create_commit itself uses; there is no public one
        hub.call("validate README.md front matter", hub.api._validate_yaml, readme, repo_type="space")
    except json.JSONDecodeError:
        raise PublishError(f"the Hub at {hub.endpoint} answered validate-yaml with something that is not JSON; "
                           "check HF_ENDPOINT, or try again later") from None
    except ValueError as e:  # huggingface_hub raises ValueError listing the Hub's errors on 400
        raise PublishError(f"the Hub rejects README.md's front matter: {hub.scrub(str(e))}; fix it in the Space folder") from None


def _wanted_sleep(config: PublishConfig) -> int | None:
    if config.hardware == "cpu-basic":
        return None  # not configurable on free hardware
    return config.sleep_time if config.sleep_time is not None else DEFAULT_PAID_SLEEP


def _fingerprint(hub: Hub, name: str, value: str) -> str:
    """A tag of a secret's value keyed by the token, kept in the secret's description.

    Secret values cannot be read back; this lets a re-publish tell "unchanged" from
    "rotated" without re-sending (and restarting the Space). Keyed by the token, so
    the tag says nothing about the value to anyone without it.
    """
    return hmac.new(hub.token.encode(), f"{name}={value}".encode(), hashlib.sha256).hexdigest()[:16]


def _secret_description(hub: Hub, name: str, value: str) -> str:
    return f"set by vlm_lab publish (fingerprint {_fingerprint(hub, name, value)})"


def _checkpoints_value(config: PublishConfig, staged: Stage | None, plan: FilePlan | None, commit: str | None) -> str | None:
    """``owner/models@COMMIT:checkpoint-N,...`` for the model repo, pinned to the commit that holds them."""
    if staged is None or plan is None:
        return None
    rev = commit or (plan.parent if not plan.changed else None)
    at = f"@{rev}" if rev else "@<new commit>"
    steps = sorted({p.split("/", 1)[0] for p in staged.files}, key=lambda n: int(n.rsplit("-", 1)[1]))
    return ",".join(f"{config.checkpoints_repo}{at}:{name}" for name in steps)


def _create_space(hub: Hub, config: PublishConfig, checkpoints_value: str | None) -> None:
    values = _secret_values(config)
    variables = config.variable_map() | ({CHECKPOINTS_VARIABLE: checkpoints_value} if checkpoints_value else {})
    hub.call(
        f"create Space {config.space} on {config.hardware} hardware", hub.api.create_repo, config.space,
        # exist_ok: a retry after a lost answer finds the Space its first attempt made (409); settings are compared next
        repo_type="space", space_sdk="gradio", private=not config.public, space_hardware=config.hardware, exist_ok=True,
        space_sleep_time=_wanted_sleep(config),
        space_secrets=[{"key": k, "value": v, "description": _secret_description(hub, k, v)} for k, v in values.items()] or None,
        space_variables=[{"key": k, "value": v} for k, v in variables.items()] or None,
        repo=config.space,
    )


def _settings(hub: Hub, config: PublishConfig, runtime: Any | None, *, exists: bool, checkpoints_value: str | None,
              private: bool | None = None) -> list[Action]:
    """Each wanted setting that differs from the Space's, with the call that sets it.

    ``private``: the Space's visibility now (None: new). ``--public`` makes a private Space public;
    without it an existing public Space is left public (making it private is done on purpose, by hand).
    """
    api, space = hub.api, config.space
    actions: list[Action] = []
    if config.public and private:
        actions.append((SettingChange("visibility", "private", "public"), lambda: hub.call(
            "make the Space public", api.update_repo_settings, space, repo_type="space", private=False, repo=space)))
    new = "(new Space)"
    current_hw = (runtime.requested_hardware or runtime.hardware) if runtime is not None else None
    if current_hw != config.hardware:
        actions.append((SettingChange("hardware", str(current_hw or new), config.hardware), lambda: hub.call(
            f"request hardware {config.hardware} for {space} (it has {current_hw or 'none yet'})", api.request_space_hardware,
            space, config.hardware, repo=space)))
    sleep = _wanted_sleep(config)
    if sleep is not None:
        current, never = (runtime.sleep_time if runtime is not None else None), (None, -1)
        if runtime is None or not (current == sleep or (current in never and sleep in never)):
            free = current_hw == "cpu-basic" and current is None
            shown = new if runtime is None else "48 h (free hardware)" if free else "never" if current in never else human_seconds(current)
            actions.append((SettingChange("sleep time", shown, human_seconds(sleep)), lambda: hub.call(
                f"set the sleep time of {space} to {sleep} s (it has {shown})", api.set_space_sleep_time, space, sleep, repo=space)))

    remote_secrets = hub.call("list the Space's secrets", api.get_space_secrets, space, repo=space) if exists else {}
    for name, value in _secret_values(config).items():
        description = _secret_description(hub, name, value)
        remote = remote_secrets.get(name)
        if remote is None or remote.description != description:
            current = new if not exists else "missing" if remote is None else "another value"
            actions.append((SettingChange(f"secret {name}", current, f"${name} from the environment"),
                            lambda n=name, v=value, d=description: hub.call(f"set secret {n}", api.add_space_secret, space, n, v, description=d, repo=space)))

    remote_vars = hub.call("list the Space's variables", api.get_space_variables, space, repo=space) if exists else {}
    wanted = config.variable_map()
    if checkpoints_value:
        wanted[CHECKPOINTS_VARIABLE] = checkpoints_value
    for key, value in wanted.items():
        remote = remote_vars.get(key)
        if remote is None or remote.value != value:
            current = new if not exists else "missing" if remote is None else _shown(hub, remote.value)
            actions.append((SettingChange(f"variable {key}", current, repr(value)),
                            lambda k=key, v=value: hub.call(f"set variable {k}", api.add_space_variable, space, k, v, repo=space)))
    # Embedded checkpoints replace what the variable names (the app prefers the variable). With
    # --no-checkpoints the variable is all the app has to serve: it stays, whoever set it.
    if CHECKPOINTS_VARIABLE in remote_vars and CHECKPOINTS_VARIABLE not in wanted and config.embed_checkpoints:
        actions.append((SettingChange(f"variable {CHECKPOINTS_VARIABLE}", _shown(hub, remote_vars[CHECKPOINTS_VARIABLE].value),
                                      "(removed: checkpoints are in the Space)"),
                        lambda: hub.call(f"delete variable {CHECKPOINTS_VARIABLE}", api.delete_space_variable, space, CHECKPOINTS_VARIABLE, repo=space)))
    return actions


def _pause_or_restart(hub: Hub, config: PublishConfig, say: Progress) -> PublishReport:
    info = repo_info(hub, config.space, "space")
    if info is None:
        raise HubNotFoundError(f"there is no Space {config.space} to {config.action}; publish it first (make publish SPACE={config.space})")
    check_can_write(hub, config.space, exists=True)
    runtime = hub.call("read the Space runtime", hub.api.get_space_runtime, config.space)
    if not config.dry_run:
        fn = hub.api.pause_space if config.action == "pause" else hub.api.restart_space
        say(f"{config.action} {config.space}")
        before = str(runtime.stage)
        runtime = hub.call(f"{config.action} the Space", fn, config.space, repo=config.space)
        if config.action == "restart" and config.wait:
            runtime = wait_for_build(hub, config, before_stage=before, commit=None, say=say)
    return _report(hub, config, info, (), [], runtime, (), {}, created=False, new_commit=False, dry_run=config.dry_run)


def _visibility(config: PublishConfig, info: Any | None) -> bool | None:
    """Whether the Space is private once published: --public makes it public; a new one is private without it;
    an existing one keeps its visibility."""
    if config.public:
        return False
    return True if info is None else getattr(info, "private", None)


def _report(hub: Hub, config: PublishConfig, info: Any, plans: tuple[FilePlan, ...], settings: list[SettingChange],
            runtime: Any | None, stages: tuple[Stage | None, ...], sizes: dict[str, int], *, created: bool, new_commit: bool,
            dry_run: bool, notes: list[str] | None = None, private: bool | None = None) -> PublishReport:
    if runtime is not None and not dry_run:
        hardware = str(runtime.requested_hardware or runtime.hardware or config.hardware)
        sleep = runtime.sleep_time
    else:
        hardware, sleep = config.hardware, _wanted_sleep(config)
    notes = list(notes or [])
    stage_name = str(runtime.stage) if runtime is not None else None
    if stage_name == "PAUSED":
        notes.append(f"paused: not billed; start it with --restart (make publish SPACE={config.space} ARGS=--restart)")
    sha = info.get("sha") if isinstance(info, dict) else getattr(info, "sha", None)
    staged = [st for st in stages if st is not None]
    return PublishReport(
        space=config.space, url=f"{hub.endpoint}/spaces/{config.space}", action=config.action, dry_run=dry_run,
        created=created, commit=sha, new_commit=new_commit, plans=plans, settings=tuple(settings),
        hardware=hardware, sleep_time=sleep, stage=stage_name,
        cost=estimate_cost(hardware, sleep if hardware != "cpu-basic" else None, active_hours_per_day=config.active_hours_per_day),
        sizes=sizes, left_out=tuple(f for st in staged for f in st.excluded), notes=tuple(notes), private=private,
        checkpoints=tuple(o for st in staged for o in st.origins), checkpoints_embedded=_is_embedded_default(Path(config.checkpoints)),
        checkpoints_to=f"model {config.checkpoints_repo}" if config.checkpoints_repo else "the Space",
        org=config.space.split("/", 1)[0] != hub.user,
    )
