"""Memory profiling, part 3: profile checkpoints end to end, as tables and plots.

``profile(MemoryConfig)`` (``iter_profile``: a row at a time) estimates every
checkpoint first, then measures each (once per distinct architecture and weight
size: the checkpoints of one training run take the same memory, so they share one
measurement), and gives each a verdict for the target GPU. The notebook, the CLI and the Space show what this returns.

A checkpoint that cannot be measured (a folder with config.json but no weights or
no tokenizer, or a measuring process that failed) keeps its estimate and verdict;
its row says why (``not_measured``) and a ``NotMeasuredWarning`` names it. The
other checkpoints are measured as usual.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

from vlm_lab.checkpoints import resolve_all
from vlm_lab.config import MemoryConfig
from vlm_lab.memory import DTYPE_BYTES, MemoryEstimate, Verdict, estimate, human_bytes, resident_together, verdict
from vlm_lab.memory_checkpoint import local_folder, missing_for_loading
from vlm_lab.memory_measure import Measurement, MeasurementFailedError, check_measurable, measure
from vlm_lab.memory_targets import GPU_TARGETS, MIB, GpuTarget, budget_bytes, get_target, recommended_dtype


class NotMeasuredWarning(UserWarning):
    """A checkpoint could not be measured; its row keeps the estimate and the verdict from it."""


@dataclasses.dataclass(frozen=True)
class ProfileRow:
    """One checkpoint: estimated, measured (or None), and the verdict for the target."""

    path: str
    estimate: MemoryEstimate
    verdict: Verdict
    measurement: Measurement | None = None
    not_measured: str = ""  # why a measurement that was asked for is missing ("no weights or tokenizer in the folder")
    listed: int = 0  # checkpoints in the profile this row is one of (``iter_profile`` sets it; 0: not said)

    @property
    def measured_bytes(self) -> int | None:
        return self.measurement.peak_bytes if self.measurement else None

    @property
    def error_fraction(self) -> float | None:
        """(estimated - measured) / measured, at the measured device and batch (None after an out-of-memory: cut short)."""
        if not self.measurement or not self.measurement.peak_bytes or self.measurement.out_of_memory:
            return None
        return (self.estimate.peak_bytes() - self.measurement.peak_bytes) / self.measurement.peak_bytes

    def to_dict(self) -> dict[str, Any]:
        """The ``vlm-lab memory --json`` object."""
        m, v, e = self.measurement, self.verdict, self.estimate
        return {
            "checkpoint": e.checkpoint,
            "path": self.path,
            "model_type": e.model_type,
            "dtype": e.dtype,
            "device": e.device,
            "target": v.target,
            "params": e.num_params,
            "params_by_component": e.params,
            "params_in_weight_files": e.file_params or None,  # from the safetensors headers; null when unknown
            "weights_note": e.weights_note or None,  # config.json and the weight files disagree on the model's size
            "image_tokens": e.image.tokens,
            "image_shape": e.image.shape,  # the image (height x width) estimated and measured with: the worst one planned for
            "image_shape_plan": e.image.plan,
            "image_tokens_by_shape": e.image.by_shape,  # False: the count does not depend on the shape (a fixed resize)
            "image_token_rule": e.image.rule,
            "image_tokens_guessed": e.image.guessed,
            # a pre-quantized checkpoint's stored format (dtype is then what it stores), and whether the target dequantizes it
            "quantization": v.quantization or None,
            "batch_size": e.batch_size,
            "max_new_tokens": e.max_new_tokens,  # as generated: fewer than asked where the model's context ends
            "asked_max_new_tokens": e.asked_new_tokens or e.max_new_tokens,
            "context_tokens": e.context_tokens or None,
            "estimated_bytes": e.peak_bytes(),
            "estimated_load_bytes": e.load_bytes(),
            "measured_bytes": m.peak_bytes if m else None,
            "measured_load_bytes": m.load_bytes if m else None,
            "measured_image_shape": m.image_shape if m else None,
            "measured_image_tokens": m.image_tokens if m and m.image_tokens else None,
            "error_pct": None if self.error_fraction is None else round(100 * self.error_fraction, 2),
            "out_of_memory": m.out_of_memory if m else None,
            "required_bytes": v.required_bytes,
            # what required_bytes is made of on the target: max(weights + load_copy, weights + kv_cache + activations) + overhead
            "required_breakdown_bytes": e.on_target(v.target).breakdown(get_target(v.target).device),
            "budget_bytes": v.budget_bytes,
            "process_bytes": v.process_bytes,  # the Space's own process (CPU targets), left out of budget_bytes
            "margin_bytes": v.margin_bytes,
            "fits": v.fits,
            "max_batch_size": v.max_batch_size,
            "max_batch_capped": v.max_batch_capped,  # the search stopped at its cap: a larger batch may fit too
            "co_resident": v.co_resident,
            "recommended_dtype": v.recommended_dtype,
            "suggestion": v.suggestion or None,
            "snapshot": m.snapshot if m and m.snapshot else None,
            "not_measured": self.not_measured or None,
        }


def profile_row(path: str, est: MemoryEstimate, target: str | GpuTarget, measurement: Measurement | None = None,
                not_measured: str = "") -> ProfileRow:
    """A checkpoint's row: the verdict from the estimate, unless the measurement ran out of memory.

    A measurement that ran out of memory is no measurement (its peak was cut short): the row
    says so in ``not_measured``. When it was a rehearsal of the target itself (``--rehearse``:
    the process capped at the target's memory) it also overrules a verdict that said "fits".
    """
    v = verdict(est, target)
    m = measurement
    if m is not None and m.out_of_memory:
        where = f"in the {m.rehearsal_target} rehearsal" if m.rehearsal_target else f"on {m.device}"
        snapshot = f"; memory snapshot: {m.snapshot}" if m.snapshot else ""
        not_measured = f"it ran OUT OF MEMORY {where} (at {human_bytes(m.peak_bytes)}){snapshot}"
        if m.rehearsal_target == v.target and v.fits:  # running it on the target's memory is the proof
            smaller = f"try a batch of {est.batch_size // 2}" if est.batch_size > 1 else "try a lighter dtype or a larger target"
            v = dataclasses.replace(v, fits=False, suggestion=f"the estimate said it fits, but the {v.target} rehearsal ran out of memory; {smaller}")
    return ProfileRow(path=path, estimate=est, verdict=v, measurement=m, not_measured=not_measured)


def _measure_device(device: str) -> str:
    from vlm_lab.models import resolve_device

    return resolve_device(device).type


def _not_loadable(ref) -> str:
    """Why ``ref`` cannot be loaded to measure it ("" when it can), seen before starting a process.

    A hub id is read from the local Hugging Face cache when the measuring process is
    offline (``measure`` keeps ``HF_HUB_OFFLINE=1`` unless it is set otherwise): an
    estimate needs only config.json there, a measurement the weights and tokenizer too.
    """
    if ref.path is not None:
        return missing_for_loading(Path(ref.path))
    if os.environ.get("HF_HUB_OFFLINE", "1").strip().lower() not in ("1", "true", "yes", "on"):
        return ""  # online: the measuring process downloads what it needs
    why = missing_for_loading(local_folder(ref))
    return f"{why.replace('in the folder', 'in the local Hugging Face cache')} (hf download {ref.repo_id})" if why else ""


def _not_measurable_here(est: MemoryEstimate, device: str) -> str:
    """Why ``est``'s checkpoint cannot be measured on ``device`` ("" when it may be).

    A pre-quantized checkpoint loads only on CUDA. On CPU, one whose estimated peak is more
    than the memory available (a container's limit counts) is not started: the measuring
    process would fill the machine's memory and the kernel's out-of-memory killer would end
    it, or whatever else it picks (a notebook's kernel, another user's job).
    """
    if est.quantization and device != "cuda":
        return f"it is pre-quantized ({est.quantization}), which loads only on CUDA with its quantization library; measure it on a CUDA GPU"
    if device == "cpu":
        from vlm_lab.cgroup_memory import available_memory

        memory = available_memory()
        need = est.peak_bytes(device="cpu")
        if need > memory.available:
            where = f" under this container's {human_bytes(memory.limit)} memory limit" if memory.limit else " on this machine"
            return (f"measuring it on cpu needs ~{human_bytes(need)} (the estimate) and {human_bytes(memory.available)} is "
                    f"available{where}; measure it where it fits (on a CUDA GPU, or a machine with more memory)")
    return ""


def profile(config: MemoryConfig, *, progress: bool = False) -> list[ProfileRow]:
    """Estimate, measure and judge every checkpoint in ``config``: ``list(iter_profile(config))``."""
    return list(iter_profile(config, progress=progress))


def iter_profile(config: MemoryConfig, *, progress: bool = False) -> Iterator[ProfileRow]:
    """Estimate, measure and judge every checkpoint in ``config``, one row as each is done.

    ``dtype='auto'`` is the target's recommended dtype (float16 for a T4), used for
    the estimate, the measurement and the verdict alike. Every checkpoint is estimated
    before any is measured, so a broken reference fails in seconds, not after the
    measurements before it. Checkpoints with the same architecture and weight size are
    measured once, on the image the estimate planned for (``config.image_size``: the worst
    shape at that size, ``memory_shapes``). A checkpoint that cannot be measured keeps its estimate and verdict,
    with the reason in ``not_measured`` and a ``NotMeasuredWarning``.

    Raises:
        CheckpointNotFoundError: a reference points at nothing with a config.json, or a
            weight file is a Git-LFS pointer or not a valid safetensors file.
        ConfigError: bfloat16 for a T4, an unknown target.
        DeviceError: nothing can be measured as asked (a quantized dtype, no CUDA).
    """
    target = get_target(config.target)
    dtype = recommended_dtype(target) if config.dtype == "auto" else config.dtype
    device = _measure_device(config.device) if config.measure else target.device
    shape = dict(batch_size=config.batch_size, prompt_tokens=config.prompt_tokens, max_new_tokens=config.max_new_tokens)
    image = dict(image_size=config.image_size)
    options = dict(dtype=dtype, device=device, rehearse=target.name if config.rehearse else "", snapshot_dir=config.snapshot_dir)
    if config.measure:
        check_measurable(**options)  # once, before any checkpoint: these would fail every one of them
    estimates = [(ref, estimate(ref, dtype=dtype, device=device, target=target, **shape, **image)) for ref in resolve_all(config.checkpoints)]
    measured: dict[tuple, Measurement] = {}
    failed: dict[tuple, str] = {}  # a failed measurement is not retried for its look-alikes (each can take minutes)
    for ref, est in estimates:
        m, why = None, ""
        if config.measure:
            key = (est.model_type, est.params["vision"], est.params["language"], est.file_bytes, est.converts, est.image.shape)
            why = _not_loadable(ref) or _not_measurable_here(est, device) or failed.get(key, "")
            if not why and key not in measured:
                if progress:
                    print(f"measuring {ref.name} ({dtype}, {device}, batch {config.batch_size}, a {est.image.shape} image) ...",
                          file=sys.stderr, flush=True)
                try:  # on the image the estimate planned for (the worst shape) and the answers it fits, so the two describe the same input
                    measured[key] = measure(ref, image_shape=(est.image.height, est.image.width), **options,
                                            **{**shape, "max_new_tokens": est.max_new_tokens})
                except MeasurementFailedError as e:  # this checkpoint's process failed: the others still get measured
                    failed[key] = why = e.reason
            if not why:
                m = dataclasses.replace(measured[key], checkpoint=ref.name)
                if m.prompt_tokens != est.prompt_tokens:  # compare like with like: the prompt the child built
                    est = estimate(ref, dtype=dtype, device=device, target=target, **{**shape, "prompt_tokens": m.prompt_tokens}, **image)
        row = dataclasses.replace(profile_row(ref.path or ref.spec, est, target, m, why), listed=len(estimates))
        if row.not_measured:
            # notebook 03 and `vlm-lab memory` both warn this: it names the argument and the flag
            message = (f"cannot measure {row.path}: {row.not_measured} (estimate only; to skip measuring pass measure=False, "
                       "or --no-measure on the command line)")
            warnings.warn(message, NotMeasuredWarning, stacklevel=2)
        yield row


# --------------------------------------------------------------------- tables


def report_table(rows: Sequence[ProfileRow]):
    """One row per checkpoint (MiB columns), in two groups that can be on different devices.

    ``device``: where ``estimated_MiB`` and ``measured_MiB`` (and ``error_%`` between
    them) are, the measuring device (cpu or cuda), or the target's device with
    ``measure=False``. ``target``: the Space GPU that ``needs_MiB`` (the estimate on
    that GPU), ``fits``, ``margin_GiB``, ``max_batch`` and ``co_resident`` are for.
    ``max_batch`` is ``'>= 4096'`` where the search stopped at its cap. ``image`` is the
    image (height x width) estimated and measured with, ``image_tokens`` what it makes.
    """
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "checkpoint": r.estimate.checkpoint,
                "dtype": r.verdict.dtype,  # as the target loads it (an FP8 checkpoint is 16-bit on a T4)
                "params_M": round(r.estimate.num_params / 1e6, 3),
                "device": r.estimate.device,
                "estimated_MiB": round(r.estimate.peak_bytes() / MIB, 1),
                "measured_MiB": _measured_cell(r),
                "error_%": None if r.error_fraction is None else round(100 * r.error_fraction, 1),
                "target": r.verdict.target,
                "needs_MiB": round(r.verdict.required_bytes / MIB, 1),
                "fits": r.verdict.fits,
                "margin_GiB": round(r.verdict.margin_bytes / 1024**3, 2),
                "max_batch": _max_batch_cell(r.verdict),
                "co_resident": r.verdict.co_resident,
                "image": r.estimate.image.shape,  # height x width: the worst shape planned for, measured with
                "image_tokens": r.estimate.image.tokens,
            }
            for r in rows
        ]
    )


def _measured_cell(r: ProfileRow) -> float | str | None:
    """MiB, or ``'OOM at 14500.0'`` when measuring ran out of memory (a peak cut short, not a measurement)."""
    if r.measured_bytes is None:
        return None
    mib = round(r.measured_bytes / MIB, 1)
    return f"OOM at {mib}" if r.measurement.out_of_memory else mib


def _max_batch_cell(v: Verdict) -> int | str:
    """The number, or ``'>= 4096'`` where the search stopped at its cap (not an exact limit)."""
    return v.max_batch_text if v.max_batch_capped else v.max_batch_size


def components_table(est: MemoryEstimate):
    """Parameters per component and the weights' bytes in every dtype."""
    import pandas as pd

    rows = [{"component": c, "params": n} for c, n in est.params.items()]
    rows.append({"component": "total", "params": est.num_params})
    table = pd.DataFrame(rows)
    for dtype in DTYPE_BYTES:
        table[f"{dtype}_MiB"] = [round(est.param_bytes(dtype, c if c != "total" else None) / MIB, 2) for c in table["component"]]
    return table


def targets_table(est: MemoryEstimate):
    """One row per Space hardware: memory, price, recommended dtype and the verdict in it."""
    import pandas as pd

    rows = []
    for t in GPU_TARGETS.values():
        dt = est.dtype if est.pre_quantized else recommended_dtype(t)  # pre-quantized weights load as stored
        v = verdict(est.with_dtype(dt), t)
        rows.append({
            "target": t.name, "memory_GiB": round(t.memory_gib, 1), "usd_per_hour": t.price_per_hour, "dtype": v.dtype,
            "needs_MiB": round(v.required_bytes / MIB, 1), "fits": v.fits, "max_batch": _max_batch_cell(v), "co_resident": v.co_resident,
        })
    return pd.DataFrame(rows)


# --------------------------------------------------------------------- plots


def plot_estimate_vs_measured(rows: Sequence[ProfileRow], ax=None):
    """Each measurement as a point, named by its checkpoints; the diagonal is a perfect estimate, the band +-15%."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    shared: dict[tuple[float, float], list[str]] = {}  # a run's checkpoints share one measurement: one point
    for r in rows:
        if r.error_fraction is not None:
            shared.setdefault((r.measured_bytes / MIB, r.estimate.peak_bytes() / MIB), []).append(r.estimate.checkpoint)
    pts = [(x, y, names[0] if len(names) == 1 else f"{names[0]} … {names[-1]} ({len(names)})") for (x, y), names in shared.items()]
    if pts:
        hi = max(max(p[0], p[1]) for p in pts) * 1.15
        ax.plot([0, hi], [0, hi], color="gray", lw=1, label="estimate = measured")
        ax.fill_between([0, hi], [0, hi * 0.85], [0, hi * 1.15], color="gray", alpha=0.15, label="+-15%")
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], zorder=3)
        for x, y, name in pts:
            ax.annotate(name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlim(0, hi)
        ax.set_ylim(0, hi)
        ax.legend(fontsize=7, loc="best")  # a fixed corner hid the points of an over-estimate (upper left)
    else:  # estimate only (measure=False, or nothing could be measured): say so and why, not empty axes 0..1 MiB
        why = next((r.not_measured for r in rows if r.not_measured), "") or "estimate only (measure=False): set measure=True to measure"
        ax.axis("off")
        ax.text(0.5, 0.5, textwrap.fill(f"nothing measured: {why}", 48), ha="center", va="center", transform=ax.transAxes)
        ax.set_title("estimate vs measurement")
        return ax.figure
    ax.set_xlabel("measured peak (MiB)")
    ax.set_ylabel("estimated peak (MiB)")
    ax.set_title("estimate vs measurement")
    return ax.figure


def plot_memory_vs_batch(est: MemoryEstimate, *, targets: Sequence[str] = ("t4-small", "l4x1"), max_batch: int = 64,
                         measured: Sequence[Measurement] = (), ax=None):
    """Estimated peak against batch size on each target's device and each measurement's, with the targets' budgets.

    A measurement is drawn beside the estimate on its own device: a CPU measurement next to
    the GPU line alone (which carries the CUDA context) would read as a huge estimate error.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4), layout="constrained")  # room for the log axis's wide tick labels
    sizes = sorted({1, *range(1, max_batch + 1, max(1, max_batch // 16)), max_batch})
    for device in dict.fromkeys([*(get_target(t).device for t in targets), *(m.device for m in measured)]):
        ax.plot(sizes, [est.peak_bytes(b, device) / MIB for b in sizes], marker=".", label=f"estimate ({device})")
    for m in measured:  # a run that ran out of memory is a cross where it stopped, not a measurement
        oom = " out of memory" if m.out_of_memory else ""
        ax.scatter([m.batch_size], [m.peak_bytes / MIB], color="tab:red" if oom else "black", marker="x" if oom else "o", zorder=3,
                   label=f"measured ({m.device}){oom}")
    for t in targets:
        ax.axhline(budget_bytes(t) / MIB, ls="--", lw=1, color="tab:red", alpha=0.6)
        ax.annotate(f"{t} budget", (sizes[0], budget_bytes(t) / MIB), fontsize=7, va="bottom")
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("peak memory (MiB)")
    # two short lines: one ran past the figure's edge (a folder's absolute path, or only its closing bracket)
    name = est.checkpoint if len(est.checkpoint) <= 48 else "…" + est.checkpoint[-47:]
    ax.set_title(f"{name}\nmemory vs batch ({est.dtype}, {est.sequence_tokens} tokens/row)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return ax.figure


def overhead_note(est: MemoryEstimate) -> str:
    """" (a fixed 32 MiB CPU runtime overhead is 91% of this estimate, ...)" when the fixed overhead is most of it; else "".

    On a tiny model the estimate is mostly that constant, so its error % (+50% and more on
    the 0.17M-parameter checkpoints) says nothing about the estimate of a real model.
    """
    overhead = est.overhead_bytes()
    share = overhead / max(1, est.peak_bytes())
    if share <= 0.5:
        return ""
    what = "CUDA context" if est.device == "cuda" else "CPU runtime"
    return f" (a fixed {human_bytes(overhead)} {what} overhead is {share:.0%} of this estimate, so its error says little about larger models)"


def summary(rows: Sequence[ProfileRow]) -> str:
    """The verdicts in words: one line per checkpoint, or per group of checkpoints whose lines are the same
    but for the name (a training run's checkpoints: same architecture and size), naming them all; then, for
    several checkpoints, how many of them fit loaded at once (``together``)."""
    shared: dict[str, list[str]] = {}  # the line less its leading checkpoint name -> the checkpoints it is for
    for r in rows:
        line = _summary_line(r)
        shared.setdefault(line.removeprefix(r.estimate.checkpoint), []).append(r.estimate.checkpoint)
    lines = [", ".join(names) + rest for rest, names in shared.items()]
    at_once = together(rows) if len(rows) > 1 else ""
    return "\n".join([*lines, at_once] if at_once else lines)


def loaded_together(rows: Sequence[ProfileRow]) -> list[ProfileRow]:
    """The rows of the most of these checkpoints that fit loaded at once on the target, smallest first
    (``memory.resident_together`` of those whose verdict says they fit; [] when none does)."""
    fitting = [r for r in rows if r.verdict.fits]
    if not fitting:
        return []
    target = fitting[0].verdict.target
    left = list(fitting)
    chosen = []
    for est in resident_together([r.estimate for r in fitting], target):  # as the target loads them: match them back
        row = next(r for r in left if r.estimate.on_target(target) == est)
        left.remove(row)
        chosen.append(row)
    return chosen


def together_json(rows: Sequence[ProfileRow]) -> dict[str, Any]:
    """``vlm-lab memory --json``'s ``together``: ``loaded_together`` of ``rows`` (the checkpoints printed so far), with
    how many those are (``counted``) of how many are listed: where the two are equal, it is the whole list's answer."""
    chosen = loaded_together(rows)
    return {"target": rows[-1].verdict.target, "counted": len(rows), "listed": max(len(rows), rows[-1].listed),
            "fit": len(chosen), "loaded": [r.path for r in chosen]}


def together(rows: Sequence[ProfileRow]) -> str:
    """How many of these checkpoints fit loaded at once on the target ('' when none fits alone): a comparison's
    model cache holds them so, and loads the others in turn (``loaded_together``)."""
    target = rows[0].verdict.target
    chosen = [r.estimate.on_target(target) for r in loaded_together(rows)]  # their weights as the target loads them
    if not chosen:
        return ""
    room = "fit loaded at once, with room for one to generate"
    if len(chosen) == len(rows):
        every = "both" if len(rows) == 2 else f"all {len(rows)}"
        return f"together on {target}: {every} {room} ({human_bytes(sum(e.weight_bytes for e in chosen))} of weights)"
    names = ", ".join(e.checkpoint for e in chosen)
    if len(chosen) == 1:  # one at a time: "1 ... fits", and no order to tell
        room = room.replace("fit ", "fits ", 1)
    else:
        names = f"the smallest first: {names}"
    return (f"together on {target}: {len(chosen)} of these {len(rows)} checkpoints {room} ({names}); "
            "the model cache loads the others in turn, evicting the least recently used")


def _summary_line(r: ProfileRow) -> str:
    """One checkpoint's verdict, measurement and notes, starting with its name (``Verdict.message``)."""
    if r.error_fraction is not None:
        meas = f"; measured {human_bytes(r.measured_bytes)} on {r.measurement.device}, estimate {100 * r.error_fraction:+.1f}% off"
        meas += overhead_note(r.estimate)
    else:
        meas = f"; not measured: {r.not_measured}" if r.not_measured else ""
    guess = f"; image tokens guessed (one tile), {r.estimate.image.tokens} per image" if r.estimate.image.guessed else ""
    context = f"; {r.estimate.context_note}" if r.estimate.context_note else ""
    context += f"; {r.estimate.weights_note}" if r.estimate.weights_note else ""
    return r.verdict.message() + meas + guess + context + (f"; image: {r.estimate.image.plan}" if r.estimate.image.plan else "")
