"""Short labels for long checkpoint names, told apart: the explorer's list and the accuracy plot's ticks."""

from __future__ import annotations

LIST_CHARS = 40  # what the 360px checkpoint list shows of a name; the rest was cut off at its right edge


def list_labels(names: list[str], width: int = LIST_CHARS) -> list[str]:
    """The checkpoint list's labels: a name longer than ``width`` keeps its start and its last part (its run's
    name and ``checkpoint-N``), so two checkpoints of one long-named run do not read the same; where that leaves
    two alike, their ends; where those are alike too, the full names (the table always shows them)."""

    def cut(name: str) -> str:
        if len(name) <= width:
            return name
        head, sep, tail = name.rpartition("/")
        if sep and len(tail) + 2 < width:
            return head[: width - len(tail) - 2] + "…/" + tail
        return name[: width // 2 - 1] + "…" + name[-(width - width // 2) :]

    for labels in ([cut(n) for n in names], [n if len(n) <= width else "…" + n[-(width - 1) :] for n in names]):
        if len(set(labels)) == len(set(names)):
            return labels
    return list(names)
