"""Sizes for people to read: one formatter per convention, so a size reads the same everywhere (torch-free: a
notebook that only shows a saved comparison imports this, not the model cache)."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """Binary units, named as such: ``1536 -> '1.50 KiB'``, ``1 << 30 -> '1.00 GiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_bytes(n: float | None) -> str:
    """Decimal units, as a model's size is quoted: ``673608 -> '673.61 kB'``; ``'-'`` for None or NaN."""
    if n is None or n != n:
        return "-"
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"
