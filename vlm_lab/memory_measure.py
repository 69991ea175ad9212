"""Memory profiling, part 2: measure load + generate, one fresh subprocess per checkpoint.

Why a subprocess: on CPU the only honest peak is the process's resident set, and
its high-water mark only grows; a second model measured in the same process
would inherit the first one's peak (and its freed-but-kept allocator pages).
On CUDA a fresh process also means a fresh caching allocator and exact
``max_memory_reserved``. The child does, in order:

1. imports torch/transformers, the model's class module, builds the processor
   and the inputs, runs a tiny matmul (so none of that counts as the model's);
2. takes the baseline: resident set on CPU (peak reset via /proc/self/clear_refs),
   device memory in use (the CUDA context) on GPU;
3. loads the weights, then generates one batch of exactly ``max_new_tokens``;
4. prints one JSON line: the load peak and the load+generate peak above baseline.

On CUDA it can record a memory history and dump a snapshot (viewable at
https://pytorch.org/memory_viz), always when asked and automatically on
out-of-memory; and it can cap itself at a smaller GPU's memory
(``set_per_process_memory_fraction``) to rehearse a T4 on a bigger card.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from vlm_lab.checkpoints import CheckpointRef
from vlm_lab.errors import DeviceError
from vlm_lab.memory_targets import get_target
from vlm_lab.signals import signal_name

_RESULT_PREFIX = "VLM_LAB_MEMORY_RESULT "


class MeasurementFailedError(DeviceError):
    """The measuring process of one checkpoint failed or timed out; ``reason`` says so in one line."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Measurement:
    """What loading and generating actually took, above the process's baseline. Bytes."""

    checkpoint: str
    device: str  # cpu | cuda
    dtype: str
    batch_size: int
    sequence_tokens: int  # input length (text + image tokens) + new tokens
    prompt_tokens: int  # text tokens of one prompt (input length less image tokens)
    load_bytes: int  # peak while loading
    peak_bytes: int  # peak over load + generate (CUDA: reserved + the larger of context and runtime)
    allocated_peak_bytes: int = 0  # CUDA: torch.cuda.max_memory_allocated
    reserved_peak_bytes: int = 0  # CUDA: torch.cuda.max_memory_reserved
    context_bytes: int = 0  # CUDA: device memory in use before the first model tensor
    runtime_bytes: int = 0  # CUDA: device memory outside PyTorch's allocator after generate (context, kernels, library handles)
    out_of_memory: bool = False
    snapshot: str = ""  # path of the CUDA memory snapshot, if one was written
    rehearsal_target: str = ""  # the smaller GPU this run was capped to
    seconds: float = 0.0
    image_height: int = 0  # the test image generated with (pixels)
    image_width: int = 0
    image_tokens: int = 0  # image-token positions the processor put in one row's prompt (0: it names no image token)

    @property
    def image_shape(self) -> str:
        """``'728x1456'`` (height x width)."""
        return f"{self.image_height}x{self.image_width}"


def _die_with_parent(parent: int) -> None:
    """In the measuring process: the kernel kills it when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    Ctrl-C reaches the whole process group and ``subprocess.run`` kills its child on any
    exception, but a SIGTERM (``timeout``, ``systemctl stop``, a cancelled CI or Slurm job)
    ends the parent at once: the child lived on, up to ``timeout_s``, holding its memory
    (on a GPU, memory the next measurement counted as its own). Armed by the child itself, not
    through ``preexec_fn``: that runs the parent's fork hooks, where a Ctrl-C was swallowed.
    """
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: nothing to arm
        return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def check_measurable(*, dtype: str, device: str, rehearse: str = "", snapshot_dir: str = "") -> None:
    """Refuse, before any checkpoint, a measurement no checkpoint could get here.

    Errors name the arguments (``measure=False``, ``device='cuda'``), as notebook 03 passes them;
    ``vlm-lab memory`` says its flags instead (``vlm_lab.cli.flags_in_config_errors``).

    Raises:
        DeviceError: a quantized dtype, an unknown device, rehearsal or snapshots without CUDA.
        ConfigError: an unknown rehearsal target.
    """
    if dtype not in ("float32", "float16", "bfloat16"):
        raise DeviceError(
            f"cannot measure dtype={dtype!r}: the measurement loads float32, float16 or bfloat16 only (quantizing while loading "
            "is estimated, never measured, with or without bitsandbytes); use measure=False, or measure a checkpoint saved "
            "quantized (a quantization_config in its config.json) with device='cuda'"
        )
    if device not in ("cpu", "cuda"):
        raise DeviceError(f"cannot measure on device={device!r}; use cpu or cuda")
    if (rehearse or snapshot_dir) and device != "cuda":
        raise DeviceError("rehearsal and memory snapshots need CUDA; use device='cuda'")
    if rehearse:
        get_target(rehearse)


def measure(
    ref: CheckpointRef | str | os.PathLike[str],
    *,
    dtype: str,
    device: str = "cpu",
    batch_size: int = 1,
    prompt_tokens: int = 32,
    max_new_tokens: int = 32,
    image_shape: tuple[int, int] | None = None,
    image_side: int = 64,
    rehearse: str = "",
    snapshot_dir: str = "",
    timeout_s: float = 900,
) -> Measurement:
    """Load ``ref`` and generate one batch in a fresh subprocess; return its peaks.

    Args:
        dtype: float32 | float16 | bfloat16 (int8/int4 are estimate-only here).
        device: cpu | cuda.
        image_shape: (height, width) of the test image: the estimate's planned image
            (``(est.image.height, est.image.width)``: the worst shape), so both describe
            the same input. Without it, a square of ``image_side``.
        rehearse: a target name (e.g. "t4-small"): cap the process at that GPU's memory.
        snapshot_dir: write a CUDA memory snapshot here (and on out-of-memory).

    Raises:
        DeviceError: the device/dtype cannot be measured here.
        MeasurementFailedError: the child failed (the message carries the end of its
            stderr, ``reason`` its last line) or timed out.
    """
    check_measurable(dtype=dtype, device=device, rehearse=rehearse, snapshot_dir=snapshot_dir)
    if not isinstance(ref, CheckpointRef):
        ref = str(ref)
        ref = CheckpointRef(spec=ref, path=ref) if Path(ref).is_dir() else CheckpointRef(spec=ref, repo_id=ref)
    job = {
        "ref": dataclasses.asdict(ref),
        "name": ref.name,
        "dtype": dtype,
        "device": device,
        "batch_size": batch_size,
        "prompt_tokens": prompt_tokens,
        "max_new_tokens": max_new_tokens,
        "image_height": (image_shape or (image_side, image_side))[0],
        "image_width": (image_shape or (image_side, image_side))[1],
        "rehearse": rehearse,
        "snapshot_dir": snapshot_dir,
        "parent_pid": os.getpid(),
    }
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false"}
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "vlm_lab.memory_measure", json.dumps(job)],
            capture_output=True, text=True, timeout=timeout_s, env=env,
        )
    except subprocess.TimeoutExpired as e:
        reason = f"measuring took over {timeout_s:.0f}s"
        raise MeasurementFailedError(f"{reason} for {ref.name}; measure a smaller batch_size, or estimate only (measure=False, "
                                     "--no-measure on the command line)", reason=reason) from e
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(_RESULT_PREFIX):
            return Measurement(**json.loads(line[len(_RESULT_PREFIX):]))
    # progress bars ("Loading weights: 100%|...") are no reason: a process killed after loading ended on one
    tail = [line for line in proc.stderr.strip().splitlines() if line.strip() and not _PROGRESS_BAR.search(line)][-6:]
    if proc.returncode < 0:  # killed by a signal: its own last words are not why
        reason = f"the measuring process was killed by {signal_name(-proc.returncode, if_sigkill=_IF_SIGKILL)}"
        raise MeasurementFailedError(f"measuring {ref.name}: {reason}", reason=reason)
    reason = f"the measuring process failed (exit {proc.returncode}): {tail[-1].strip() if tail else 'no output'}"
    raise MeasurementFailedError(f"measuring {ref.name} failed (exit {proc.returncode}):\n" + "\n".join(tail), reason=reason)


_PROGRESS_BAR = re.compile(r"\d+%\|")
_IF_SIGKILL = ("most often the out-of-memory killer: dmesg -T | grep -i oom; a smaller batch, max_new_tokens or image "
               "size needs less memory, measure=False (--no-measure) none")


# --------------------------------------------------------------------- the child process


def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark (Linux >= 4.0); False where it cannot be."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _inputs(processor, job: dict[str, Any]):
    """One batch: a test image of the planned shape and a prompt of about ``prompt_tokens`` text tokens."""
    from PIL import Image

    from vlm_lab.generation import render_prompt

    image = Image.new("RGB", (job["image_width"], job["image_height"]), (120, 60, 200))  # PIL: (width, height)

    def text_for(words: int) -> str:
        prompt = " ".join(["the"] * words)
        if getattr(processor, "chat_template", None):
            return render_prompt(processor, prompt)
        return f"{getattr(processor, 'image_token', '<image>')} {prompt}"

    tokenizer = processor.tokenizer
    base = len(tokenizer(text_for(0), add_special_tokens=False)["input_ids"])
    per_word = max(1, len(tokenizer(text_for(8), add_special_tokens=False)["input_ids"]) - base) / 8
    words = max(0, round((job["prompt_tokens"] - base) / per_word))
    texts = [text_for(words)] * job["batch_size"]
    # Gemma 3's processor overrides the pan-and-scan its checkpoint's image processor asks for unless told: do as the estimate plans
    crops = {"do_pan_and_scan": True} if getattr(getattr(processor, "image_processor", None), "do_pan_and_scan", None) else {}
    return processor(images=[[image]] * job["batch_size"], text=texts, return_tensors="pt", padding=True, **crops)  # one list per prompt (Gemma 3)


def _image_token_count(processor, input_ids) -> int:
    """Image-token positions in one row: the processor's image token ids (Gemma 3's soft tokens, not its begin-of-image marker)."""
    import torch

    ids = [i for i in (getattr(processor, "image_token_ids", None) or [getattr(processor, "image_token_id", None)]) if i is not None]
    return int(torch.isin(input_ids, torch.tensor(ids)).sum()) if ids else 0


def _child(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    ref = CheckpointRef(**job["ref"])
    kwargs = ref.pretrained_kwargs()
    dtype = getattr(torch, job["dtype"])
    # an explicit index: some torch.cuda calls (set_per_process_memory_fraction) refuse a bare "cuda"
    device = torch.device("cuda", torch.cuda.current_device()) if job["device"] == "cuda" else torch.device(job["device"])
    config = AutoConfig.from_pretrained(**kwargs)
    MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(config)]  # import the model's module now, not during the load
    processor = AutoProcessor.from_pretrained(**kwargs)
    enc = _inputs(processor, job)
    (torch.ones(64, 64) @ torch.ones(64, 64)).sum().item()  # kernels and thread pools up before the baseline

    result: dict[str, Any] = {"checkpoint": job["name"], "device": device.type, "dtype": job["dtype"], "batch_size": job["batch_size"]}
    cuda = device.type == "cuda"
    snapshot_dir = job["snapshot_dir"]
    if cuda:
        torch.cuda.init()
        torch.empty(1, device=device)  # creates the context
        free, total = torch.cuda.mem_get_info(device)
        result["context_bytes"] = total - free - torch.cuda.memory_reserved(device)
        if job["rehearse"]:
            target = get_target(job["rehearse"])
            fraction = (target.memory_bytes - result["context_bytes"]) / total
            torch.cuda.set_per_process_memory_fraction(min(1.0, fraction), device)
            result["rehearsal_target"] = target.name
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        if snapshot_dir:
            torch.cuda.memory._record_memory_history(max_entries=100_000)
        baseline = 0
    else:
        _reset_peak_rss()
        baseline = _rss_now()

    def peak() -> int:
        if cuda:
            return torch.cuda.max_memory_reserved(device) + max(result["context_bytes"], result.get("runtime_bytes", 0))
        return max(0, _peak_rss() - baseline)

    def dump(suffix: str) -> None:
        if cuda and snapshot_dir:
            Path(snapshot_dir).mkdir(parents=True, exist_ok=True)
            path = Path(snapshot_dir) / f"{job['name'].replace('/', '_')}-{job['dtype']}-b{job['batch_size']}{suffix}.pickle"
            tmp = path.with_suffix(".tmp")
            torch.cuda.memory._dump_snapshot(str(tmp))
            tmp.replace(path)  # atomic: a viewer never opens half a snapshot
            result["snapshot"] = str(path)

    start = time.perf_counter()
    result["sequence_tokens"] = int(enc["input_ids"].shape[1]) + job["max_new_tokens"]
    image_len = _image_token_count(processor, enc["input_ids"][0])
    result["prompt_tokens"] = int(enc["input_ids"].shape[1]) - image_len
    result.update(image_height=job["image_height"], image_width=job["image_width"], image_tokens=image_len)
    pad = getattr(processor.tokenizer, "pad_token_id", None)
    try:
        model = AutoModelForImageTextToText.from_pretrained(**kwargs, dtype=dtype).to(device).eval()
        result["load_bytes"] = peak()
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() else v.to(device)) for k, v in enc.items() if torch.is_tensor(v)}
        with torch.inference_mode():
            n = job["max_new_tokens"]
            model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=pad)
        if cuda:
            torch.cuda.synchronize(device)
    except torch.OutOfMemoryError:
        result["out_of_memory"] = True
        result.setdefault("load_bytes", peak())
        dump("-oom")
    else:
        dump("")
    if cuda:  # device memory outside PyTorch's allocator now: the context plus what the first kernels loaded
        free, total = torch.cuda.mem_get_info(device)
        result["runtime_bytes"] = total - free - torch.cuda.memory_reserved(device)
    result["peak_bytes"] = peak()
    if cuda:
        result["allocated_peak_bytes"] = torch.cuda.max_memory_allocated(device)
        result["reserved_peak_bytes"] = torch.cuda.max_memory_reserved(device)
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


if __name__ == "__main__":
    _job = json.loads(sys.argv[1])
    _die_with_parent(_job["parent_pid"])
    print(_RESULT_PREFIX + json.dumps(_child(_job)), flush=True)
