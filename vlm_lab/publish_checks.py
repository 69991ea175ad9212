"""Checks of what a Space will run on, made before a publish writes anything.

A Space takes minutes to build; what cannot work on the chosen hardware is said now instead:
an app that ZeroGPU cannot give a GPU to, checkpoints that cannot answer even one question
in the hardware's memory (``vlm_lab.memory``'s estimate from their config alone), and hub
models it is told to serve that are not there or that it cannot read.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from vlm_lab.errors import ConfigError, PublishError
from vlm_lab.units import human_bytes

if TYPE_CHECKING:
    from vlm_lab.checkpoints import CheckpointRef
    from vlm_lab.publish_hub import Hub

_CHECKPOINT_DIR = re.compile(r"^checkpoint-\d+$")


def check_zero_gpu(hardware: str, app: Path) -> None:
    """ZeroGPU hardware lends a GPU only while a ``@spaces.GPU`` function runs: an app with none fails at start
    ("No @spaces.GPU function detected") or answers on CPU, after a publish that looked fine.

    Raises:
        ConfigError: ``hardware`` is a ZeroGPU flavor and ``app`` has no ``spaces.GPU`` function.
    """
    if not hardware.startswith("zero-") or "spaces.GPU" in app.read_text(encoding="utf-8", errors="replace"):
        return
    raise ConfigError(
        f"hardware={hardware!r}: ZeroGPU gives a Space a GPU only inside functions decorated with "
        f"@spaces.GPU, and {app} has none: the Space would fail at start or answer on CPU. Choose a GPU of its own "
        "(hardware='t4-small', l4x1, a10g-small) or hardware='cpu-basic'; nothing was uploaded"
    )


def memory_notes(hardware: str, config_files: Iterable[Path]) -> list[str]:
    """One line per checkpoint that cannot answer one question on ``hardware``, with the hardware that would hold it.

    Args:
        config_files: the staged ``checkpoint-N/config.json`` files; checkpoints of one run share a config,
            so each distinct one is estimated once (its last checkpoint named).
    """
    from vlm_lab import memory
    from vlm_lab.memory_targets import GPU_TARGETS, recommended_dtype

    target = GPU_TARGETS.get(hardware)
    if target is None:  # a flavor the memory table does not describe: nothing to say
        return []
    by_config: dict[bytes, Path] = {}
    for config in config_files:
        if _CHECKPOINT_DIR.match(config.parent.name):
            by_config[config.read_bytes()] = config.parent
    notes = []
    for folder in by_config.values():
        try:
            est = memory.estimate(folder, target=target)
        except Exception:  # noqa: BLE001 - an estimate is advice: an architecture it cannot build is left to the Space
            continue
        verdict = memory.verdict(est, target)
        if verdict.max_batch_size > 0:  # it answers; how many stay loaded at once is the app's model cache's call
            continue
        bigger = sorted((t for t in GPU_TARGETS.values() if t.device == "cuda" and t.memory_bytes > target.memory_bytes),
                        key=lambda t: t.price_per_hour)
        holds = next((t for t in bigger
                      if memory.verdict(est.with_dtype(recommended_dtype(t)).on_target(t), t).max_batch_size > 0), None)
        fix = (f"publish with --hardware {holds.name} (${holds.price_per_hour:.2f}/h)" if holds is not None
               else "no Space hardware holds it: publish smaller checkpoints")
        notes.append(f"{verdict.checkpoint} ({verdict.dtype}, batch 1) does NOT fit on {hardware}: it needs "
                     f"{human_bytes(verdict.required_bytes)} of a {human_bytes(verdict.budget_bytes)} "
                     f"budget, so the Space would run out of memory at start; {fix} ({folder})")
    return notes


def served_hub_refs(specs: str, space_dir: str | Path) -> list["CheckpointRef"]:
    """The hub references in a ``VLM_LAB_CHECKPOINTS`` value; folders inside the Space (the app resolves those) are left out."""
    from vlm_lab.checkpoints import parse_hub_ref
    from vlm_lab.errors import VlmLabError

    refs = []
    for spec in (s.strip() for s in specs.split(",")):
        repo_part = spec.split(":", 1)[0].split("@", 1)[0]
        if not spec or spec.startswith((".", "/", "~")) or (Path(space_dir) / repo_part).exists():
            continue
        try:
            refs.append(parse_hub_ref(spec))
        except VlmLabError:  # not a hub id: a path the app resolves inside the Space
            continue
    return refs


def served_model_notes(hub: "Hub", refs: Iterable["CheckpointRef"], *, space: str, space_has_token: bool) -> list[str]:
    """What the Space could not load among the hub models it is told to serve, asked of the Hub with the publishing
    token: a repo, revision or subfolder that is not there (a typo: the Space would offer it and fail when chosen),
    a private or gated repo while the Space has no ``HF_TOKEN`` secret to load it with."""
    from vlm_lab.publish_hub import HubNotFoundError

    notes: list[str] = []
    infos: dict[tuple[str, str | None], object] = {}  # one look-up per repo and revision; None: not there
    closed_said: set[str] = set()
    for ref in refs:
        key, at = (str(ref.repo_id), ref.revision), f" at revision {ref.revision!r}" if ref.revision else ""
        if key not in infos:
            infos[key] = None
            try:
                infos[key] = hub.call(f"look up model {ref.repo_id}", hub.api.model_info, ref.repo_id,
                                      revision=ref.revision, repo=ref.repo_id)
            except HubNotFoundError:
                notes.append(f"VLM_LAB_CHECKPOINTS names {ref.spec}, but the Hub has no model repo {ref.repo_id}{at} that "
                             f"{hub.user} can see (a typo?): the Space would offer it and fail to load it; check the name")
            except PublishError as e:  # advice only: a Hub that will not say is no reason to stop the publish
                notes.append(f"could not check {ref.spec} on the Hub ({e})")
        info = infos[key]
        if info is None:
            continue
        closed = "private" if getattr(info, "private", False) else "gated" if getattr(info, "gated", False) else ""
        if closed and not space_has_token and ref.repo_id not in closed_said:
            closed_said.add(str(ref.repo_id))
            notes.append(f"{ref.repo_id} is {closed}: the Space needs a read token of an account that can load it; "
                         f"add one as the secret HF_TOKEN at {hub.endpoint}/spaces/{space}/settings")
        files = [s.rfilename for s in (getattr(info, "siblings", None) or [])]
        folder = f"{ref.subfolder}/" if ref.subfolder else ""
        run = not folder and any(_CHECKPOINT_DIR.match(f.split("/", 1)[0]) and f.count("/") == 1 and f.endswith("/config.json")
                                 for f in files)  # a training run: the app serves its checkpoint-N folders
        if files and f"{folder}config.json" not in files and not run:
            where = f"folder {ref.subfolder!r}" if folder else "top folder (nor checkpoint-N folders)"
            notes.append(f"VLM_LAB_CHECKPOINTS names {ref.spec}, but {ref.repo_id}{at} has no config.json in its {where}: "
                         "the Space would fail to load it; name a folder that holds a checkpoint")
    return notes


def new_space_notes(hub: "Hub", space: str) -> list[str]:
    """A Space that does not exist yet, named a letter or two away from one its owner has (``my-vml`` for ``my-vlm``):
    a publish would create a second Space, billed on its own, where the user meant to update theirs."""
    import difflib

    owner, _, name = space.partition("/")
    try:
        names = {s.id.partition("/")[2].lower(): s.id for s in hub.api.list_spaces(author=owner, limit=1000)}
    except Exception:  # noqa: BLE001 - a hint only: a listing the Hub refuses or cannot answer never stops a publish
        return []
    close = [names[c] for c in difflib.get_close_matches(name.lower(), list(names), n=3, cutoff=0.8)]
    if not close:
        return []
    return [f"{space} does not exist: this publish creates a new Space, billed on its own; {owner} has "
            f"{', '.join(close)}: to update that one instead, publish to its name"]


def check_examples(space_dir: Path) -> None:
    """The Space's own examples (``examples/examples.jsonl``) read, with every image inside the Space folder: one
    outside is not uploaded, and the Space would say ``cannot start`` minutes after the upload.

    Raises:
        ConfigError: the file cannot be read (``vlm_lab.data``'s message, naming the line) or names images outside.
    """
    from vlm_lab.errors import DataError
    from vlm_lab.space_examples import EXAMPLES_FILE, load_examples

    folder = space_dir / "examples"
    try:
        examples, _ = load_examples(folder)
    except DataError as e:
        raise ConfigError(f"{folder / EXAMPLES_FILE}: {e}; the Space could not start with it; nothing was uploaded") from None
    root = space_dir.resolve()
    outside = [str(e.image) for e in examples if not e.image.resolve().is_relative_to(root)]
    if outside:
        raise ConfigError(f"{folder / EXAMPLES_FILE} names images outside the Space folder {str(space_dir)!r}, which are "
                          f"not uploaded: {', '.join(outside[:3])}{' ...' if len(outside) > 3 else ''}; copy them under "
                          f"{folder} and name them relative to {EXAMPLES_FILE}; nothing was uploaded")
