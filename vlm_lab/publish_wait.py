"""Waiting for a published Space: poll its runtime until it runs the new build, or say why it failed.

A Space's stage right after a commit may still be the previous build's; ``wait_for_build`` counts
a verdict only once the Space has moved. A failed build is a ``SpaceFailedError`` carrying the
tail of its log (tokens scrubbed).
"""

from __future__ import annotations

import time
from typing import Any, Callable

from vlm_lab.config import PublishConfig
from vlm_lab.errors import PublishError
from vlm_lab.publish_hub import Hub

WAITING_STAGES = ("BUILDING", "RUNNING_BUILDING", "APP_STARTING", "RUNNING_APP_STARTING")
ERROR_STAGES = ("BUILD_ERROR", "RUNTIME_ERROR", "CONFIG_ERROR", "NO_APP_FILE")
IDLE_STAGES = ("PAUSED", "STOPPED", "SLEEPING")
LOG_TAIL = 40

Progress = Callable[[str], None]


class SpaceFailedError(PublishError):
    """The Space ended in BUILD_ERROR, RUNTIME_ERROR, CONFIG_ERROR or NO_APP_FILE."""

    exit_code = 6


class SpaceTimeoutError(PublishError, TimeoutError):
    """The Space did not finish building within --timeout."""

    exit_code = 7


def space_failed(hub: Hub, space: str, runtime: Any, *, commit: str | None) -> SpaceFailedError:
    """The error for a Space in an error stage, with the tail of its build or run log."""
    stage_name = str(runtime.stage)
    build = stage_name in ("BUILD_ERROR", "CONFIG_ERROR", "NO_APP_FILE")
    kind = "build" if build else "run"
    try:
        lines = [line.rstrip("\n") for line in hub.call(f"fetch the {kind} logs", lambda: list(hub.api.fetch_space_logs(space, build=build)))]
        tail = "\n".join(f"  | {hub.scrub(line)}" for line in lines[-LOG_TAIL:]) or "  | (the log is empty)"
    except PublishError as e:
        tail = f"  | (could not fetch the {kind} log: {e})"
    detail = runtime.raw.get("errorMessage") if isinstance(runtime.raw, dict) else None
    after = f" after commit {commit[:12]}" if commit else ""
    return SpaceFailedError(
        f"Space {space} is in {stage_name}{after}" + (f": {hub.scrub(str(detail))}" if detail else "")
        + f"\nlast {LOG_TAIL} lines of the {kind} log:\n{tail}\n"
        f"fix the cause in the Space folder and publish again; full logs at {hub.endpoint}/spaces/{space}?logs={kind}"
    )


def wait_for_build(hub: Hub, config: PublishConfig, *, before_stage: str, commit: str | None, say: Progress) -> Any:
    """Poll the runtime until the Space runs the new build (or fails, or times out).

    The stage right after a change may still be the previous build's RUNNING: it
    counts only once the Space has moved (a building/starting stage was seen, or the
    runtime reports the new commit's sha). An error stage counts once it differs from
    the stage before the change (an old BUILD_ERROR is not the new build's verdict).
    """
    deadline = time.monotonic() + config.timeout
    moved, last = False, None
    while True:
        runtime = hub.call("read the Space runtime", hub.api.get_space_runtime, config.space)
        stage_name = str(runtime.stage)
        if stage_name != last:
            say(f"stage: {stage_name}")
            last = stage_name
        sha = runtime.raw.get("sha") if isinstance(runtime.raw, dict) else None
        if stage_name in WAITING_STAGES or (commit and sha == commit):
            moved = True
        if stage_name in ERROR_STAGES and stage_name != before_stage:
            moved = True  # e.g. CONFIG_ERROR straight from RUNNING, with no build in between
        if moved and stage_name == "RUNNING":
            return runtime
        if moved and stage_name in ERROR_STAGES:
            raise space_failed(hub, config.space, runtime, commit=commit)
        if stage_name in ("PAUSED", "STOPPED") or (moved and stage_name in IDLE_STAGES):
            return runtime  # a paused Space does not build; the report says how to restart it
        if time.monotonic() >= deadline:
            raise SpaceTimeoutError(
                f"Space {config.space} is still {stage_name} after {config.timeout:g} s; it may yet finish: "
                f"watch {hub.endpoint}/spaces/{config.space}, or run again with a larger timeout "
                f"(e.g. timeout={max(2 * config.timeout, 1800):g}) or wait=False"
            )
        time.sleep(config.poll_interval)
