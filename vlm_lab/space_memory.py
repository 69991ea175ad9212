"""Memory around the Space's requests: the memory plan for the offered checkpoints on the Space's
hardware, memory snapshots logged around each request, and freeing memory after an out-of-memory error.

Moved out of ``space_service`` (which re-exports these names). torch is imported only inside the
functions that use it. The plan counts every generation the serving plan (``space_settings``) runs at
once, and caps how many where memory holds fewer, and then a Compare's beams at the length it asks for.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import gc
import logging
import time
from typing import Any, Iterator, Mapping, Sequence

from vlm_lab.space_settings import MAX_BEAMS, Hardware, Slots, SpaceSettings, generation_slots

log = logging.getLogger("vlm_lab.space")
PROMPT_CHARS = SpaceSettings.max_prompt_chars  # the longest question a Space accepts by default


# -- memory around a request ------------------------------------------------------------------


def memory_snapshot(device: str = "cpu") -> dict[str, float]:
    """Process memory in MB: RSS always, CUDA allocated/reserved/peak on a GPU."""
    import psutil

    snap = {"rss_mb": psutil.Process().memory_info().rss / 2**20}
    if device == "cuda":
        import torch

        snap["cuda_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
        snap["cuda_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
    return snap


def format_snapshot(snap: Mapping[str, float]) -> str:
    return " ".join(f"{k.removesuffix('_mb')}={v:.0f}MB" for k, v in snap.items())


def free_memory(cache: Any, device: str, *, only: Sequence[Any] | None = None) -> None:
    """Empty the model cache (or evict ``only`` those checkpoints) and give freed memory back (after an out-of-memory error)."""
    if only is None:
        cache.clear()
    for ref in only or ():
        cache.evict(ref)
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


@contextlib.contextmanager
def logged_request(what: str, detail: str) -> Iterator[None]:
    """Log memory before and after a request (RSS; CUDA memory on a GPU), and how long it took."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    log.info("%s start (%s): %s", what, detail, format_snapshot(memory_snapshot(device)))
    outcome = "failed"
    try:
        yield
        outcome = "done"
    finally:
        took = time.perf_counter() - start
        log.info("%s %s in %.2fs: %s", what, outcome, took, format_snapshot(memory_snapshot(device)))


# -- memory plan ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """What the memory verdicts say for the offered checkpoints on the Space's hardware target."""

    target: str  # a vlm_lab.memory_targets.GPU_TARGETS name
    max_batch_size: int | None  # the batched API's batch: the biggest every generation at once leaves room for
    cache_budget_bytes: int | None  # weights the model cache may hold: the budget less room for all of them
    co_resident: int | None  # how many of the largest checkpoint fit the cache at once
    notes: tuple[str, ...]  # one line per checkpoint, and one for the generations at once, for the log
    slots: Slots | None = None  # the generations at once the memory holds (None: no estimate, no cap)
    max_beams: int = MAX_BEAMS  # the widest beam search any Compare may ask for at max_new_tokens (1: none)
    max_new_tokens: int = 0  # the longest answer the plan is for (the Space's max new tokens)
    refs: tuple[Any, ...] = ()  # the checkpoints it estimated
    # by checkpoint, then by beams above max_beams: the most new tokens a Compare of that many beams fits (0: none),
    # with a question of prompt_tokens_by_ref's tokens
    beam_tokens_by_ref: Mapping[Any, Mapping[int, int]] = dataclasses.field(default_factory=dict, compare=False)
    # by checkpoint: its estimate, whose rows beam_tokens weighs at a request's own question; and the bytes one
    # Compare's slot keeps for its beams
    estimates_by_ref: Mapping[Any, Any] = dataclasses.field(default_factory=dict, compare=False)
    beam_room: int = 0
    prompt_chars: int = 0  # the longest question the plan is for, in characters (the Space's max_prompt_chars)
    prompt_tokens: int = 0  # ... its most text tokens with any checkpoint: each row is counted with it
    prompt_how: str = ""  # with which checkpoint, counted how (for the notes)
    # by checkpoint: the text tokens its rows are counted with, and what counts a request's question (None: no tokenizer)
    prompt_tokens_by_ref: Mapping[Any, int] = dataclasses.field(default_factory=dict, compare=False)
    # (count_with adds those of checkpoints counted without a tokenizer, once loaded)
    counters: dict[Any, Any] = dataclasses.field(default_factory=dict, compare=False)

    def question_tokens(self, ref: Any, question: str) -> int | None:
        """``question``'s text tokens with ``ref`` (its tokenizer, at well under a millisecond); None without one."""
        counter = self.counters.get(ref)
        return counter(question) if counter is not None else None

    def count_with(self, ref: Any, processor: Any) -> None:
        """Count ``ref``'s questions from now on with ``processor`` (a copy of it), where the plan had no tokenizer for it
        (a hub model not downloaded at start): its rows stay counted at 4 tokens a character, and a request's question,
        counted, gets the beams its own length fits (``beam_tokens``). Once per checkpoint; a dict lookup afterwards."""
        if ref in self.counters or ref not in self.prompt_tokens_by_ref or not self.prompt_chars:
            return
        from vlm_lab.space_prompts import PromptCounter

        try:
            counter = PromptCounter.of_processor(processor)
            counter("a")  # a processor it cannot count with fails here, not in a visitor's request
        except Exception as e:  # noqa: BLE001 - without it the longest question is assumed, as before
            log.info("%s: its questions stay counted as the longest (%s: %s)", getattr(ref, "name", ref), type(e).__name__, e)
            counter = None
        self.counters.setdefault(ref, counter)  # two loads at once: the first one's (equal counts)

    def beam_tokens(self, ref: Any, beams: int, prompt_tokens: int | None = None) -> int:
        """The most new tokens (up to ``max_new_tokens``) a Compare of ``beam(beams)`` with ``ref`` fits (0: none);
        ``max_new_tokens`` for a checkpoint with no estimate (no cap: loading will tell).

        ``prompt_tokens``: the request's question's (``question_tokens``); the plan counted the longest question. A
        row's KV cache follows its prompt and answer together, but its prefill's headroom the prompt alone, so a
        shorter question's limit is weighed at its own length (arithmetic on the plan's estimate: nothing is built)."""
        table = self.beam_tokens_by_ref.get(ref, {})
        est = self.estimates_by_ref.get(ref)
        if beams not in table or est is None or prompt_tokens in (None, self.prompt_tokens_by_ref.get(ref)):
            return table.get(beams, self.max_new_tokens)
        return _most_tokens(est, beams, self.beam_room, prompt_tokens, self.max_new_tokens)

    def beams_at(self, ref: Any, max_new_tokens: int, prompt_tokens: int | None = None) -> int:
        """The most beams (up to ``MAX_BEAMS``) a Compare with ``ref`` fits at ``max_new_tokens`` (1: none)."""
        return next((b for b in range(MAX_BEAMS, 1, -1) if self.beam_tokens(ref, b, prompt_tokens) >= max_new_tokens), 1)

    def beams_note(self) -> str:
        """Up to how many new tokens each count of beams fits, for the page, where the longest answers hold fewer
        than ``MAX_BEAMS`` beams ('' otherwise): "on t4-small with the largest checkpoint and a question of 500
        characters (a shorter one leaves more), beam(3) fits up to 223 new tokens, beam(4) up to 143"."""
        if self.max_beams >= MAX_BEAMS:
            return ""
        said = []
        for b in range(self.max_beams + 1, MAX_BEAMS + 1):
            n = min(self.beam_tokens(ref, b) for ref in self.refs)  # the largest checkpoint's rows set it
            first = not said
            said.append(f"beam({b}) " + ("fits " if first else "")
                        + ((f"up to {n}" + (" new tokens" if first else "")) if n else "not at all"))
        question = f" and a question of {self.prompt_chars} characters (a shorter one leaves more)" if self.prompt_chars else ""
        return f"on {self.target} with the largest checkpoint{question}, {', '.join(said)}"

    def prompt_note(self) -> str:
        """What the plan assumed of the questions, for the page and the log: "rows counted for questions of up to
        500 characters: up to 504 text tokens (llava-7b: its tokenizer's worst, 'a.' repeated)"."""
        if not self.prompt_chars:
            return f"rows counted for prompts of {self.prompt_tokens} text tokens"
        return (f"rows counted for questions of up to {self.prompt_chars} characters: up to {self.prompt_tokens} text "
                f"tokens ({self.prompt_how})")


def plan_memory(refs: Sequence[Any], *, device: str, target: str = "", max_new_tokens: int = 16,
                batch_cap: int = 64, batch_size: int = 0, slots: Slots | None = None,
                prompt_chars: int = PROMPT_CHARS, prompt_tokens: int | None = None) -> MemoryPlan:
    """Estimate every offered checkpoint (config only, nothing loaded) against the hardware target, with
    room for the KV cache and activations of every generation that runs at once.

    ``slots``: the generations at once (``space_settings.generation_slots`` of this machine by default, as
    the serving plan runs them). What they generate at once (``Slots.rows``) must fit beside the largest
    checkpoint: the batch shrinks first (not below 1), then fewer run at once (not below 1); the plan's
    ``slots`` say how many, and the serving plan runs no more. Where even that holds no Compare of
    ``beam(MAX_BEAMS)`` at ``max_new_tokens``, ``max_beams`` says how many beams it holds (1: none); a Compare
    asking for more is checked at its own length (``MemoryPlan.beam_tokens``). ``batch_size``: the owner's batch
    (``VLM_LAB_MAX_BATCH_SIZE``), kept as set; 0: the largest that fits, up to ``batch_cap`` and the verdicts'.
    ``target`` defaults to the largest Space GPU that fits in this GPU's memory (t4-small, the
    Space's suggested hardware, when none does) and to cpu-basic on CPU.
    A checkpoint that cannot be estimated (a hub id not downloaded yet) is skipped and noted.

    Each row is counted with the longest question the Space accepts (``prompt_chars`` characters, its
    ``max_prompt_chars``) through each checkpoint's own tokenizer and chat template (``space_prompts.longest_question``),
    up to what the checkpoint reads beside its image (a longer question is refused as it generates); its notes say so.
    ``prompt_tokens``: count every row with that many text tokens instead (a caller that knows its prompts).
    """
    from vlm_lab import memory
    from vlm_lab.memory_targets import budget_bytes, get_target
    from vlm_lab.space_prompts import longest_question

    hardware = Hardware.detect(device) if slots is None or not target else None
    t = get_target(target or _detect_target(hardware))
    notes, batches, ests, refs_estimated, prompts, counters, hows = [], [], [], [], {}, {}, {}
    for ref in refs:
        name = getattr(ref, "name", ref)
        try:
            est = memory.estimate(ref, device=t.device, target=t, max_new_tokens=max_new_tokens)
            if prompt_tokens is None:
                p, counter, how = longest_question(ref, prompt_chars)
                if est.context_tokens and p + est.image.tokens >= est.context_tokens:  # generation refuses longer
                    p, how = est.context_tokens - est.image.tokens - 1, f"{how}, cut to what {name} reads beside its image"
                counters[ref], hows[ref] = counter, how
            else:
                p = prompt_tokens
            est = memory.estimate(ref, device=t.device, target=t, max_new_tokens=max_new_tokens, prompt_tokens=p)
            v = memory.verdict(est, t)
        except Exception as e:  # noqa: BLE001 - an estimate is advice; loading will tell for sure
            notes.append(f"{name}: no estimate ({type(e).__name__}: {e})")
            continue
        batches.append(max(1, min(batch_cap, v.max_batch_size)))
        ests.append(est)
        refs_estimated.append(ref)
        prompts[ref] = p
        notes.append(v.message())
    if not ests:
        return MemoryPlan(t.name, None, None, None, tuple(notes))
    longest = max(prompts, key=prompts.get)
    asked = dict(prompt_chars=0 if prompt_tokens is not None else prompt_chars, prompt_tokens=prompts[longest],
                 prompt_how=f"{getattr(longest, 'name', longest)}: {hows[longest]}" if hows else "",
                 prompt_tokens_by_ref=prompts, counters={r: c for r, c in counters.items() if c is not None})
    wanted = slots or generation_slots(hardware)
    weights = max(est.weight_bytes for est in ests)
    row = max(est.per_sample_bytes for est in ests)  # any of them may be generating in each slot
    # the runtime, and a checkpoint loading beside the others (on CPU, its file while its dtype converts)
    fixed = max(est.overhead_bytes(t.device) for est in ests) + max(
        est.load_bytes(t.device) - est.weight_bytes - est.overhead_bytes(t.device) for est in ests)
    room = budget_bytes(t) - fixed - weights  # for the rows generated at once, beside the largest checkpoint
    held, batch = _fit(wanted, batch_size or min(batches), room, row, keep_batch=bool(batch_size))
    # one at a time may still not hold a Compare's beam(MAX_BEAMS): fewer beams, or the Space would offer what runs out
    beams = next((n for n in range(MAX_BEAMS, 1, -1) if held.rows(batch, n) * row <= room), 1)
    rows = held.rows(batch, beams) * row
    cache = max(1, budget_bytes(t) - fixed - rows)
    notes.append(_slots_note(wanted, held, batch, beams, rows, cache, max_new_tokens, fits=rows <= room))
    beam_room = held.compare_rows(batch, beams) * row
    tokens = _beam_tokens(refs_estimated, ests, beam_room, beams, max_new_tokens)
    plan = MemoryPlan(t.name, batch, cache, cache // max(1, weights), tuple(notes), held, beams, max_new_tokens,
                      tuple(refs_estimated), tokens, dict(zip(refs_estimated, ests)), beam_room, **asked)
    return dataclasses.replace(plan, notes=(*notes[:-1], plan.prompt_note(), notes[-1]))  # the generations' last


def _beam_tokens(refs: Sequence[Any], ests: Sequence[Any], room: int, max_beams: int,
                 max_new_tokens: int) -> dict[Any, dict[int, int]]:
    """For each checkpoint and each count of beams above ``max_beams``: the most new tokens whose rows fit ``room``
    (what one Compare's slot keeps) with the longest question (``est.prompt_tokens``); 0 where none does. Shorter
    answers, and shorter questions, hold more beams (``MemoryPlan.beam_tokens`` weighs a request's own)."""
    if max_beams >= MAX_BEAMS:
        return {}
    return {ref: {b: _most_tokens(est, b, room, est.prompt_tokens, max_new_tokens) for b in range(max_beams + 1, MAX_BEAMS + 1)}
            for ref, est in zip(refs, ests)}


def _most_tokens(est: Any, beams: int, room: int, prompt_tokens: int, max_new_tokens: int) -> int:
    """The most new tokens (up to ``max_new_tokens``; 0: none) whose ``beams`` rows, with a question of ``prompt_tokens``,
    fit ``room``. Arithmetic on ``est`` (``_row_bytes``), not a new estimate: an estimate builds the model from its
    config, and transformers sets torch's process-wide default dtype meanwhile, which would reach the generations
    other visitors' requests run at the time."""
    def fits(n: int) -> bool:
        return beams * _row_bytes(est, prompt_tokens, n) <= room

    if fits(max_new_tokens):
        return max_new_tokens
    # the first length that does not fit, less one (rows only grow with the length)
    return bisect.bisect_left(range(1, max_new_tokens + 1), True, key=lambda n: not fits(n))


def _row_bytes(est: Any, prompt_tokens: int, n: int) -> int:
    """One row's bytes with a question of ``prompt_tokens`` and ``n`` new tokens, as ``memory.estimate`` counts them
    (up to where the model's context ends)."""
    at = dataclasses.replace(est, prompt_tokens=prompt_tokens)
    if est.context_tokens:
        n = max(0, min(n, est.context_tokens - at.prefill_tokens))
    return at.with_new_tokens(n).per_sample_bytes


def _fit(slots: Slots, batch: int, room: int, row: int, *, keep_batch: bool) -> tuple[Slots, int]:
    """The most generations at once, then the biggest batch (not above ``batch``), whose rows fit ``room``."""
    while True:
        b = batch
        while not keep_batch and b > 1 and slots.rows(b) * row > room:
            b -= 1
        if slots.rows(b) * row <= room or slots.fewer() == slots:
            return slots, b
        slots = slots.fewer()


def _slots_note(wanted: Slots, held: Slots, batch: int, beams: int, rows_bytes: int, cache: int, max_new_tokens: int, *,
                fits: bool) -> str:
    from vlm_lab.units import human_bytes

    at_once = f"{held.compare} generation{'s' if held.compare > 1 else ''} at a time"
    if not held.shared:
        at_once += f" and {held.batch} batch"
    beam = f"a Compare may ask for beam({beams})" if beams > 1 else "no beam search"
    if beams < MAX_BEAMS:
        beam += f"; beam({beams + 1}) would not fit at {max_new_tokens} new tokens"
    note = (f"generating: {at_once} (batches of up to {batch}; {beam}) "
            f"need {human_bytes(rows_bytes)}; the model cache holds {human_bytes(cache)} of weights")
    if held != wanted:
        note += f"; {wanted.compare} at a time would not fit"
    if not fits:
        note += "; even that may not fit beside the largest checkpoint: use a bigger target or fewer new tokens"
    return note


def _detect_target(hardware: Hardware) -> str:
    if hardware.device != "cuda":
        return "cpu-basic"
    from vlm_lab.memory_targets import GPU_TARGETS

    total = hardware.gpu_memory
    fitting = [t for t in GPU_TARGETS.values() if t.device == "cuda" and t.memory_bytes <= total * 1.02]
    return max(fitting, key=lambda t: t.memory_bytes).name if fitting else "t4-small"
