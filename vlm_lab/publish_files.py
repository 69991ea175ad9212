"""What a publish commits: the staged files against the repo's tree at its head, and the one commit.

A Space repo is mirrored (what is not staged is deleted); a checkpoints model repo keeps what is
not the model files of the checkpoints sent (``plan_files``). ``commit_plan`` commits against the
head the plan was made from, so a concurrent change is a conflict, not a silent overwrite.
"""

from __future__ import annotations

from typing import Any

from vlm_lab.publish_hub import Hub, HubConflictError, HubNotFoundError
from vlm_lab.publish_report import FilePlan
from vlm_lab.publish_stage import Stage, human_bytes, is_training_state
from vlm_lab.publish_wait import Progress

KEEP_REMOTE = (".gitattributes",)  # the Hub's LFS rules: never deleted by a mirror


def repo_info(hub: Hub, repo_id: str, repo_type: str) -> Any | None:
    """The repo's info (``.sha`` is its head), or None when it does not exist."""
    fn = hub.api.space_info if repo_type == "space" else hub.api.model_info
    try:
        return hub.call(f"look up {repo_type} {repo_id}", fn, repo_id, repo=repo_id)
    except HubNotFoundError:
        return None


def _remote_files(hub: Hub, repo_id: str, repo_type: str, revision: str | None) -> dict[str, Any]:
    entries = hub.call(
        f"list the files of {repo_id}",
        lambda: list(hub.api.list_repo_tree(repo_id, recursive=True, repo_type=repo_type, revision=revision)),
        repo=repo_id,
    )
    return {e.path: e for e in entries if hasattr(e, "blob_id")}  # files only, not folders


def _same(local: Any, remote: Any) -> bool:
    if remote.lfs is not None:
        return remote.lfs.sha256 == local.sha256
    return remote.blob_id == local.git_sha1


def plan_files(hub: Hub, repo_id: str, repo_type: str, staged: Stage, info: Any | None) -> FilePlan:
    """Compare the staged files with the remote tree at its head commit.

    A Space repo is mirrored: what is not staged is deleted. A checkpoints model repo is the user's
    (a Trainer may have pushed its run there): only the model files of the ``checkpoint-N/`` folders
    being sent are replaced (a stale weight or index file left beside them would be loaded instead);
    other checkpoint folders, training state (optimizer, trainer_state.json), subfolders and the model
    card stay.
    """
    parent = getattr(info, "sha", None) if info is not None else None
    remote = _remote_files(hub, repo_id, repo_type, parent) if info is not None else {}
    add, update, unchanged = [], [], 0
    for path, local in sorted(staged.files.items()):
        if path not in remote:
            add.append(path)
        elif _same(local, remote[path]):
            unchanged += 1
        else:
            update.append(path)

    sent = {p.split("/", 1)[0] for p in staged.files}

    def managed(path: str) -> bool:
        if path in KEEP_REMOTE:
            return False
        if repo_type == "space":
            return True
        folder, _, name = path.partition("/")
        return folder in sent and "/" not in name and not is_training_state(name)

    delete = sorted(p for p in remote if p not in staged.files and managed(p))
    return FilePlan(
        repo_id=repo_id, repo_type=repo_type, exists=info is not None, add=tuple(add), update=tuple(update),
        delete=tuple(delete), unchanged=unchanged, upload_bytes=sum(staged.files[p].size for p in add + update),
        total_bytes=staged.total_bytes, parent=parent,
    )


def commit_plan(hub: Hub, staged: Stage, plan: FilePlan, message: str, say: Progress) -> str | None:
    """Commit the plan (adds, updates, deletes) in one commit; None when there is nothing to commit."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    if not plan.changed:
        say(f"{plan.repo_id}: no file changed, no commit")
        return None
    ops: list[Any] = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=staged.files[p].upload()) for p in plan.add + plan.update]
    ops += [CommitOperationDelete(path_in_repo=p) for p in plan.delete]
    say(f"{plan.repo_id}: committing {len(plan.add)} added, {len(plan.update)} updated, {len(plan.delete)} deleted "
        f"({human_bytes(plan.upload_bytes)})")
    try:
        info = hub.call(
            f"commit to {plan.repo_id}", hub.api.create_commit, plan.repo_id, ops, commit_message=message,
            repo_type=plan.repo_type, parent_commit=plan.parent, repo=plan.repo_id,
        )
    except HubConflictError:
        # The head moved: a retried commit whose first attempt landed (its answer lost on the
        # network), or another publish of the same files. The repo as it is now decides.
        now = repo_info(hub, plan.repo_id, plan.repo_type)
        if now is None or plan_files(hub, plan.repo_id, plan.repo_type, staged, now).changed:
            raise
        say(f"{plan.repo_id}: the files are already there at {now.sha[:12]} (an earlier attempt landed)")
        return str(now.sha)
    return str(info.oid)
