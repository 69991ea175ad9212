"""What a publish leaves out, and why, said so a reader can trust it at a glance.

Two kinds: the files of a checkpoint the Space does not load (a Trainer's optimizer, scheduler, RNG state,
trainer_state.json), and junk of the app folder and the package (``__pycache__/``, ``.env``, ``wandb/``...).
The report groups them by pattern (``optimizer.pt x4``, ``rng_state*.pth x8``, ``__pycache__/ x52``), so that a
processor or tokenizer file missing from the groups is plainly not left out; ``--list-files`` names each file.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from pathlib import Path

CHECKPOINT_STATE = "not loaded by the Space"  # a kind, as the report says it
JUNK = "junk"
_DIGITS = re.compile(r"\d+")


@dataclasses.dataclass(frozen=True)
class LeftOut:
    """One file a publish does not upload."""

    source: str  # the file, as found on disk
    group: str  # its pattern in a summary: 'optimizer.pt', 'rng_state*.pth', '__pycache__/'
    kind: str  # CHECKPOINT_STATE or JUNK


def checkpoint_left_out(checkpoint: Path, kept: list[Path]) -> list[LeftOut]:
    """The files under ``checkpoint`` (a checkpoint-N folder) that are not ``kept`` (its model files).

    Numbers in a name become ``*`` in its group (``rng_state_3.pth`` -> ``rng_state_*.pth``, DeepSpeed's
    ``global_step300/`` -> ``global_step*/``), so that eight processes' RNG files are one group, not eight.
    """
    keep = {p.resolve() for p in kept}
    out = []
    for root, dirs, files in os.walk(checkpoint):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            if path.resolve() in keep:
                continue
            rel = path.relative_to(checkpoint)
            group = f"{rel.parts[0]}/" if len(rel.parts) > 1 else rel.name
            out.append(LeftOut(source=str(path), group=_DIGITS.sub("*", group), kind=CHECKPOINT_STATE))
    return out


def summary(left_out: tuple[LeftOut, ...], *, groups: int = 6) -> str:
    """One line: ``N files: not loaded by the Space: optimizer.pt x4, ...; junk: __pycache__/ x52, ...``.

    Each kind shows its ``groups`` largest groups, then how many more; the reader is told where to see each file.
    """
    if not left_out:
        return "nothing"
    parts = []
    for kind in (CHECKPOINT_STATE, JUNK):
        counts = collections.Counter(f.group for f in left_out if f.kind == kind)
        if not counts:
            continue
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = [f"{group} x{n}" for group, n in ranked[:groups]]
        if len(ranked) > groups:
            shown.append(f"{len(ranked) - groups} more pattern(s)")
        parts.append(f"{kind}: {', '.join(shown)}")
    return f"{len(left_out)} file(s); {'; '.join(parts)} (--list-files names each)"


def lines(left_out: tuple[LeftOut, ...]) -> list[str]:
    """Every file left out, one a line, with its kind."""
    return [f"  x {f.source}  ({f.kind}: {f.group})" for f in left_out]
