"""A hub reference's weight files, downloaded into the local Hugging Face cache before its model is built.

``models.load_model`` builds a model inside the process-wide build turn (``model_construction``: one build at a
time). For a hub reference whose weights are not cached, ``from_pretrained`` downloads them, and did so holding
that turn: every other thread's load (the Space's other visitors, the model cache's parallel loads, the
explorer's background run) waited for a download that needs no turn. ``download_weights`` fetches them first,
with the settings the load passes ``from_pretrained`` (revision, subfolder, token, cache folder, cache only; and
``HF_HUB_OFFLINE``, which huggingface_hub reads itself), into the cache entries ``from_pretrained`` reads, at
the commit the revision points at (resolved once, as ``from_pretrained`` resolves it): loading with the
revision pinned to that commit, ``from_pretrained`` reads them from the cache without asking the hub.

Only the files ``from_pretrained`` reads (transformers 5.23, ``_get_resolved_checkpoint_files``): the file the
config's ``transformers_weights`` names, else ``model.safetensors``, else ``model.safetensors.index.json`` and
the shards it lists (fetched in parallel, as transformers fetches them). Torch pickles (``pytorch_model.bin``,
a repo without safetensors) are left to ``from_pretrained``, in the turn, as before.

Whatever stops a download here (no such file, not cached offline, the hub unreachable or failing midway) is left
to ``from_pretrained``, which meets the same problem and reports it as before (``load_model``'s messages); a
file cut short resumes from what was downloaded. A download cannot be stopped midway (huggingface_hub has no
way to): the model cache's ``cancel`` ends waits for room, for a load and for the build turn, not a download.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from vlm_lab.checkpoints import CheckpointRef, index_shards

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")  # transformers' order


def download_weights(ref: CheckpointRef, kwargs: dict, config: Any = None) -> dict:
    """Download the weight files ``from_pretrained(**kwargs, config=config)`` reads for the hub reference ``ref``
    into the local Hugging Face cache (nothing for a local folder, or what is cached already).

    Returns:
        ``kwargs`` to load with: the revision pinned to the commit the weights were downloaded at (a
        ``ResolvedRevision``, which reads as the revision asked for), as ``from_pretrained`` would pin it
        itself; it then reads them from the cache without asking the hub. ``kwargs`` unchanged for a local
        folder, or when the commit cannot be had (``from_pretrained`` then reports why).
    """
    if ref.path is not None:
        return kwargs
    from huggingface_hub import hf_hub_download, is_offline_mode
    from huggingface_hub.errors import EntryNotFoundError

    from vlm_lab.hub_refs import _hub_api

    where = {
        "repo_id": kwargs["pretrained_model_name_or_path"],
        "cache_dir": kwargs.get("cache_dir"),
        "token": kwargs.get("token"),
        "local_files_only": kwargs.get("local_files_only", False) or is_offline_mode(),
    }
    try:  # as from_pretrained resolves it (its model_info bounded by hub_refs' HfApi)
        where["revision"] = _hub_api().resolve_revision(revision=kwargs.get("revision"), **where)
    except Exception:  # noqa: BLE001 - from_pretrained meets it too, and says it as load_model always has
        return kwargs
    pinned = kwargs | {"revision": where["revision"]}
    subfolder = kwargs.get("subfolder") or None
    named = getattr(config, "transformers_weights", None)
    for name in (named,) if named else SAFE_WEIGHTS:
        try:
            first = Path(hf_hub_download(filename=name, subfolder=subfolder, **where))
        except EntryNotFoundError:  # not in the revision (or, cache only, not cached): the next name
            continue
        except Exception:  # noqa: BLE001 - as above: from_pretrained reports it (a download cut short resumes)
            break
        if name.endswith(".index.json"):
            _download_shards(first, subfolder, where)
        break
    return pinned


def _download_shards(index: Path, subfolder: str | None, where: dict) -> None:
    """The shards ``index`` lists, downloaded as transformers does (``snapshot_download`` of just those files)."""
    from huggingface_hub import snapshot_download

    shards = index_shards(index)
    if not shards:  # a broken index: from_pretrained names it
        return
    try:
        snapshot_download(allow_patterns=[str(PurePosixPath(subfolder or "", shard)) for shard in shards], **where)
    except Exception:  # noqa: BLE001 - as in download_weights: from_pretrained reports it
        pass
