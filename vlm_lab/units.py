"""Sizes for people to read: one formatter, so a size reads the same everywhere."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """Binary units, named as such: ``1536 -> '1.50 KiB'``, ``1 << 30 -> '1.00 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
