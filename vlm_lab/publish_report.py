"""What a publish did (or, with --dry-run, would do), and what the Space will cost.

Prices come from ``vlm_lab.memory_targets.GPU_TARGETS`` (the project's one hardware
table); the few Space flavours it does not list are added here, and only those.
The monthly estimate assumes the Space is used ``active_hours_per_day`` in one
block each day and is billed until its sleep time runs out after the last visit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vlm_lab import publish_left_out
from vlm_lab.publish_left_out import LeftOut
from vlm_lab.publish_stage import human_bytes

HOURS_PER_MONTH = 730.0  # 8760 / 12
DAYS_PER_MONTH = HOURS_PER_MONTH / 24
# Space flavours GPU_TARGETS does not carry (USD/hour, Hugging Face's Spaces price list).
EXTRA_PRICES = {"cpu-upgrade": 0.03, "t4-medium": 0.60, "a10g-large": 1.50}
LIMIT = 12  # lines a list shows before "... and N more", unless the reader asks for all (--list-files)


def human_seconds(seconds: float) -> str:
    """A sleep time for people to read, in the unit the Hub's settings page uses: ``30 -> '30 s'``,
    ``90 -> '1.5 min'``, ``3600 -> '1 h'``, ``-1 -> 'never'``."""
    if seconds < 0:
        return "never"
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def hourly_price(hardware: str) -> float | None:
    """USD per hour for a Space hardware name, or None when the project has no price for it."""
    from vlm_lab.memory_targets import GPU_TARGETS

    if hardware in GPU_TARGETS:
        return GPU_TARGETS[hardware].price_per_hour
    return EXTRA_PRICES.get(hardware)


@dataclasses.dataclass(frozen=True)
class CostEstimate:
    """Hourly price and two monthly estimates: always on, and with the sleep time."""

    hardware: str
    per_hour: float | None
    always_on_month: float | None
    with_sleep_month: float | None
    billed_hours_per_day: float | None
    assumption: str

    def lines(self) -> list[str]:
        if self.per_hour is None:
            return [f"cost:      no price known for {self.hardware}; see https://huggingface.co/pricing#spaces"]
        if self.per_hour == 0:
            return [f"cost:      free ({self.hardware}); it sleeps after 48 h without visitors"]
        return [
            f"cost:      ${self.per_hour:.2f}/hour on {self.hardware}",
            f"           ${self.always_on_month:,.0f}/month running 24/7",
            f"           ${self.with_sleep_month:,.0f}/month with the sleep time "
            f"(~{self.billed_hours_per_day:.1f} billed h/day: {self.assumption})",
        ]


def estimate_cost(hardware: str, sleep_time: int | None, *, active_hours_per_day: float) -> CostEstimate:
    """Price a Space: 24/7, and with ``sleep_time`` after ``active_hours_per_day`` of use in one daily block.

    ``sleep_time`` None or -1 means it never sleeps, so both estimates are 24/7.
    """
    price = hourly_price(hardware)
    if sleep_time is None or sleep_time < 0:
        billed = 24.0
        assumption = "it never sleeps"
    else:
        billed = min(24.0, active_hours_per_day + sleep_time / 3600)
        assumption = (
            f"assumes {active_hours_per_day:g} active h/day in one block, then {human_seconds(sleep_time)} "
            "until it sleeps; set --active-hours to your usage"
        )
    return CostEstimate(
        hardware=hardware,
        per_hour=price,
        always_on_month=None if price is None else price * HOURS_PER_MONTH,
        with_sleep_month=None if price is None else price * billed * DAYS_PER_MONTH,
        billed_hours_per_day=billed,
        assumption=assumption,
    )


@dataclasses.dataclass(frozen=True)
class FilePlan:
    """How a repo's files differ from the staged folder."""

    repo_id: str
    repo_type: str
    exists: bool
    add: tuple[str, ...]
    update: tuple[str, ...]
    delete: tuple[str, ...]
    unchanged: int
    upload_bytes: int  # bytes of the files to add or update
    total_bytes: int  # bytes of every staged file
    parent: str | None  # the remote commit the plan was made against

    @property
    def changed(self) -> bool:
        return bool(self.add or self.update or self.delete)

    def lines(self, *, limit: int | None = LIMIT) -> list[str]:
        """The counts, then each file; past ``limit`` of a sign, how many more and how to see them (None: all)."""
        head = f"{self.repo_type} {self.repo_id}" + ("" if self.exists else " (new)")
        out = [
            f"files of {head}: {len(self.add)} to add, {len(self.update)} to update, {len(self.delete)} to delete, "
            f"{self.unchanged} unchanged; upload {human_bytes(self.upload_bytes)} of {human_bytes(self.total_bytes)}"
        ]
        for sign, paths in (("+", self.add), ("~", self.update), ("-", self.delete)):
            out += [f"  {sign} {p}" for p in paths[:limit]]
            if limit is not None and len(paths) > limit:
                out.append(f"  {sign} ... and {len(paths) - limit} more (--list-files lists them all)")
        return out


@dataclasses.dataclass(frozen=True)
class SettingChange:
    """One Space setting that differs from what is wanted."""

    name: str  # "hardware", "sleep time", "secret WANDB_API_KEY", "variable X"
    current: str
    wanted: str

    def line(self) -> str:
        return f"  {self.name}: {self.current} -> {self.wanted}"


@dataclasses.dataclass(frozen=True)
class PublishReport:
    """The outcome of ``vlm_lab.publish.publish``: enough to print, test and log."""

    space: str
    url: str
    action: str
    dry_run: bool
    created: bool
    commit: str | None  # the Space's head commit after publishing (None: not created yet)
    new_commit: bool  # a commit was made (or, dry-run, would be)
    plans: tuple[FilePlan, ...]
    settings: tuple[SettingChange, ...]
    hardware: str
    sleep_time: int | None
    stage: str | None
    cost: CostEstimate
    sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    left_out: tuple[LeftOut, ...] = ()  # files not uploaded (junk, checkpoints' training state)
    checkpoints: tuple[tuple[str, str], ...] = ()  # (folder in the repo, where it is read from), by step
    checkpoints_to: str = "the Space"  # the repo they go to: the Space, or "model OWNER/NAME"
    checkpoints_embedded: bool = False  # they are the embedded demo ones (the default checkpoints/shapes)
    notes: tuple[str, ...] = ()
    private: bool | None = None  # the Space's visibility after publishing (None: not known, e.g. --pause)
    org: bool = False  # the Space's owner is an organization (not the token's user)

    def format(self, *, list_files: bool = False) -> str:
        """The report as printed; ``list_files``: every file, left-out file and checkpoint, not the first few."""
        limit = None if list_files else LIMIT
        verb = "would" if self.dry_run else "did"
        lines = [f"Space:     {self.url}" + ("  (dry run: nothing was written)" if self.dry_run else "")]
        if self.action != "publish":
            lines.append(f"action:    {verb} {self.action}")
        owner = self.space.split("/", 1)[0]
        if self.private:
            who = f"members of {owner}" if self.org else owner
            lines.append(f"visibility: private: only {who} can open it (visitors get 404); publish with --public to share it")
        elif self.private is False:
            lines.append("visibility: public: anyone with the URL can open it")
        if self.sizes:
            parts = ", ".join(f"{k} {human_bytes(v)}" for k, v in self.sizes.items())
            lines.append(f"upload:    {human_bytes(sum(self.sizes.values()))} staged ({parts})")
            lines.append(f"left out:  {publish_left_out.summary(self.left_out)}")
            if list_files:
                lines += publish_left_out.lines(self.left_out)
        lines += self._checkpoint_lines(limit)
        for plan in self.plans:
            lines += plan.lines(limit=limit)
        if self.action == "publish":
            if self.settings:
                lines.append(f"settings ({verb} change):")
                lines += [s.line() for s in self.settings]
            else:
                lines.append("settings:  already as wanted")
        commit = self.commit[:12] if self.commit else "(none yet)"
        made = "new commit" if self.new_commit else "no new commit: nothing changed"
        if self.dry_run:
            made = "a new commit" if self.new_commit else "no commit: nothing to change"
            lines.append(f"commit:    {commit} now; {verb} make {made}")
        elif self.action == "publish":
            lines.append(f"commit:    {commit} ({made})")
        sleep = "never" if self.sleep_time in (None, -1) else f"{human_seconds(self.sleep_time)} idle"
        if self.hardware == "cpu-basic":
            sleep = "48 h idle (fixed on free hardware)"
        lines.append(f"hardware:  {self.hardware}; sleep time: {sleep}")
        if self.stage:
            lines.append(f"stage:     {self.stage}")
        lines += self.cost.lines()
        lines += [f"note:      {n}" for n in self.notes]
        return "\n".join(lines)

    def _checkpoint_lines(self, limit: int | None) -> list[str]:
        """Where each checkpoint comes from: a user's own, uploaded to where the app looks for the demo ones
        (checkpoints/shapes/checkpoint-N), would otherwise read as the demo's."""
        if not self.checkpoints:
            return []
        first, last = (Path(src).name for src in (self.checkpoints[0][1], self.checkpoints[-1][1]))
        if self.checkpoints_embedded:
            where = Path(self.checkpoints[0][1]).parent
            return [f"checkpoints: the embedded demo ones: {first} .. {last} ({len(self.checkpoints)}) of {where}"]
        out = [f"checkpoints: {len(self.checkpoints)} of yours, not the embedded demo ones ({self.checkpoints_to} <- your folder):"]
        width = max(len(repo) for repo, _ in self.checkpoints)
        out += [f"  {repo:<{width}}  <- {src}" for repo, src in self.checkpoints[:limit]]
        if limit is not None and len(self.checkpoints) > limit:
            out.append(f"  ... and {len(self.checkpoints) - limit} more (--list-files lists them all)")
        return out
