"""The model cache the explorers of a Python process (a notebook's kernel) share, one per device.

``vlm_lab.widgets`` re-exports ``shared_cache``; ``Explorer.cache`` is it unless ``explore(cache=...)`` gives one.
"""

from __future__ import annotations

from typing import Any

from vlm_lab.errors import VlmLabError

_CACHES: dict[str, Any] = {}  # device -> the ModelCache the explorers on it share


def shared_cache(device: str = "auto"):
    """The ``ModelCache`` every explorer on ``device`` shares in this Python process (the kernel).

    An explorer made again (its notebook cell run a second time) answers from the models the
    first one loaded instead of loading a second copy beside them. ``shared_cache().clear()``
    frees them; pass ``explore(cache=...)`` for a cache of its own.
    """
    from vlm_lab.model_cache import ModelCache
    from vlm_lab.models import resolve_device

    try:
        key = str(resolve_device(device))  # "auto" and "cuda" on a GPU machine are one device
    except VlmLabError:
        key = device  # the load says what is wrong with it, in each checkpoint's row
    if key not in _CACHES:
        _CACHES[key] = ModelCache()
    return _CACHES[key]
