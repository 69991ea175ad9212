"""A hub reference's weight files, downloaded into the local Hugging Face cache before its model is built.

``models.load_model`` builds a model inside the process-wide build turn (``model_construction``: one build at a
time). For a hub reference whose weights are not cached, ``from_pretrained`` downloads them, and did so holding
that turn: every other thread's load (the Space's other visitors, the model cache's parallel loads, the
explorer's background run) waited for a download that needs no turn. ``download_weights`` fetches them first,
with the settings the load passes ``from_pretrained`` (revision, subfolder, token, cache folder, cache only; and
``HF_HUB_OFFLINE``, which huggingface_hub reads itself), into the cache entries ``from_pretrained`` reads, at
the commit the revision points at (resolved once, as ``from_pretrained`` resolves it): loading with the
revision pinned to that commit, ``from_pretrained`` reads them from the cache without asking the hub.

Only the files ``from_pretrained`` reads (transformers 5.23, ``_get_resolved_checkpoint_files``, with
``use_safetensors`` unset and no remote code, as ``load_model`` calls it): the file the config's
``transformers_weights`` names, else the first of ``model.safetensors``, ``model.safetensors.index.json``,
``pytorch_model.bin`` and ``pytorch_model.bin.index.json`` the revision has, with the shards an index lists
(fetched in parallel, as transformers fetches them).

Whatever stops a download here is left to ``from_pretrained``, which asks again (a request the hub dropped once
costs nothing) and reports a missing file or a cache-only miss as before (``load_model``'s messages). Where the
hub failed here (5xx, a connection cut) and ``from_pretrained`` fails too, transformers says the repo has no
weights ("does not appear to have a file named ..."): ``download_weights`` returns the hub's failure, which
``load_model`` raises instead. A connection cut midway is resumed within the download (huggingface_hub asks for
the rest, 5 times); a file it gives up on is deleted (huggingface_hub 2.4: a partial file of its own per download),
so the next try downloads it from its start, as the message says. A download cannot be stopped midway (huggingface_hub has no
way to): the model cache's ``cancel`` ends waits for room, for a load and for the build turn, not a download.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from vlm_lab.checkpoints import CheckpointRef, index_shards
from vlm_lab.errors import CheckpointNotFoundError

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")  # transformers' order


def download_weights(ref: CheckpointRef, kwargs: dict, config: Any = None) -> tuple[dict, CheckpointNotFoundError | None]:
    """Download the weight files ``from_pretrained(**kwargs, config=config)`` reads for the hub reference ``ref``
    into the local Hugging Face cache (nothing for a local folder, or what is cached already).

    Returns:
        ``kwargs`` to load with: the revision pinned to the commit the weights were downloaded at (a
        ``ResolvedRevision``, which reads as the revision asked for), as ``from_pretrained`` would pin it
        itself; it then reads them from the cache without asking the hub. ``kwargs`` unchanged for a local
        folder, or when the commit cannot be had (``from_pretrained`` then reports why). With it, the error to
        raise should ``from_pretrained`` fail with an ``OSError``: the hub's failure on a weight file here
        (None when there was none).
    """
    if ref.path is not None:
        return kwargs, None
    from huggingface_hub import hf_hub_download, is_offline_mode
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    from vlm_lab.hub_refs import hub_api

    where = {
        "repo_id": kwargs["pretrained_model_name_or_path"],
        "cache_dir": kwargs.get("cache_dir"),
        "token": kwargs.get("token"),
        "local_files_only": kwargs.get("local_files_only", False) or is_offline_mode(),
    }
    try:  # as from_pretrained resolves it (its model_info bounded by hub_refs' HfApi)
        where["revision"] = hub_api().resolve_revision(revision=kwargs.get("revision"), **where)
    except Exception:  # noqa: BLE001 - from_pretrained meets it too, and says it as load_model always has
        return kwargs, None
    pinned = kwargs | {"revision": where["revision"]}
    subfolder = kwargs.get("subfolder") or None
    named = getattr(config, "transformers_weights", None)
    for name in (named,) if named else WEIGHTS:
        file = f"{ref.repo_id}/{PurePosixPath(subfolder or '', name)}"
        try:
            first = Path(hf_hub_download(filename=name, subfolder=subfolder, **where))
        except RemoteEntryNotFoundError:  # not in the revision: the next name
            continue
        except LocalEntryNotFoundError as e:
            if where["local_files_only"]:  # not cached: the next name (from_pretrained's miss says what the cache lacks)
                continue
            return pinned, _hub_failed(ref, file, e)  # the hub failed on it (and it is not cached)
        except Exception as e:  # noqa: BLE001 - cut off midway, an error answer: from_pretrained asks again
            return pinned, _hub_failed(ref, file, e)
        if name.endswith(".index.json"):
            return pinned, _download_shards(ref, first, file, subfolder, where)
        break
    return pinned, None


def _download_shards(ref: CheckpointRef, index: Path, file: str, subfolder: str | None, where: dict) -> CheckpointNotFoundError | None:
    """The shards ``index`` (the repo's ``file``) lists, downloaded as transformers does (``snapshot_download`` of
    just those files); the hub's failure on one of them, as ``download_weights`` returns it."""
    from huggingface_hub import snapshot_download

    shards = index_shards(index)
    if not shards:  # a broken index: from_pretrained names it
        return None
    try:
        snapshot_download(allow_patterns=[str(PurePosixPath(subfolder or "", shard)) for shard in shards], **where)
    except Exception as e:  # noqa: BLE001 - as in download_weights (cache only: from_pretrained names what the cache lacks)
        return None if where["local_files_only"] else _hub_failed(ref, f"the shards {file} lists", e)
    return None


def _hub_failed(ref: CheckpointRef, what: str, error: Exception) -> CheckpointNotFoundError:
    """``cannot load 'spec': the hub at <endpoint> answered 503 for <what> (...); try again ...``: the hub's
    failure, worded as ``hub_refs`` words the hub's other failures."""
    from huggingface_hub.errors import HfHubHTTPError

    from vlm_lab.hub_refs import hub_endpoint, first_line

    chain = [error]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 8:
        chain.append(cause)
    answer = next((e for e in chain if isinstance(e, HfHubHTTPError) and e.response is not None), None)
    retry = "try again (a file cut short is downloaded again from its start)"
    if answer is None:  # the connection failed: no answer, or one cut off
        problem = f"the hub at {hub_endpoint()} stopped answering for {what} ({first_line(chain[-1])}); check the connection (or HF_ENDPOINT) and {retry}"
    elif (status := answer.response.status_code) >= 500 or status == 429:
        problem = f"the hub at {hub_endpoint()} answered {status} for {what} ({first_line(answer)}); {retry}"
    else:
        problem = f"the hub at {hub_endpoint()} refused {what} ({first_line(answer)}); check that your token can read {ref.repo_id}"
    return CheckpointNotFoundError(f"cannot load {ref.spec!r}: {problem}")
