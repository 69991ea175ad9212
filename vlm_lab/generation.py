"""Batched generation through a processor's chat template, the way hub VLMs are served.

Each sample becomes one user turn with an image and a text prompt (a processor
without a chat template, such as PaliGemma's, gets the prompt as written); prompts are
left-padded into batches (so every row's new tokens start at the same column),
and ``model.generate`` runs once per batch. Per sample we keep the decoded text,
the number of new tokens (up to and including the first eos) and the batch's
latency; per batch, tokens per second; whether a row was cut off by
``max_new_tokens`` before its end token (a default tuned for short answers silently
truncates a real VLM's description), or where the checkpoint reads no further
(``context_room``: no answer runs past ``max_position_embeddings``, where it would be
noise, or an index error with learned position embeddings); and whether the model's next-token
scores held NaN or +inf at any step (float16 overflow, broken weights). Such a
row is ended at that step (see ``NonFiniteScores``): left alone it would be
whatever ``argmax`` makes of NaN ("!!!!"), and sampling would crash on it. Every checkpoint decodes with
the strategy asked alone: the settings its own generation config would add (a repetition penalty, an n-gram
ban, ...) are set aside unless ``checkpoint_generation`` (``generation_settings``).
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from typing import Any, Iterable, Iterator, Mapping, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.utils import logging as hf_logging

from vlm_lab.config import GenerationConfig
from vlm_lab.data import Sample
from vlm_lab.errors import DataError
from vlm_lab.generation_settings import SAMPLING, decoding_kwargs
from vlm_lab.model_construction import generating
from vlm_lab.models import LoadedModel

# PaliGemma's processor logs this on every call with a plain prompt, then places the image
# exactly as asked (``<image>`` tokens, bos, prompt, newline): passing plain prompts is meant here.
_PLAIN_PROMPT_NOTICE = "You are passing both `text` and `images` to `PaliGemmaProcessor`"


def _drop_plain_prompt_notice(record) -> bool:
    return not str(record.msg).startswith(_PLAIN_PROMPT_NOTICE)


hf_logging.get_logger("transformers.models.paligemma.processing_paligemma").addFilter(_drop_plain_prompt_notice)

# generate logs this on every call when the checkpoint's generation config sets max_length (it reads the model's own
# config, whatever the call passes); we always pass max_new_tokens, which rules, so in our calls it is noise once per
# batch. Dropped only in a thread inside our generate call (_GENERATING): a user's own call still hears it
_BOTH_LENGTHS_NOTICE = "Both `max_new_tokens` (="
_GENERATING: contextvars.ContextVar[bool] = contextvars.ContextVar("vlm_lab_generating", default=False)


def _drop_both_lengths_notice(record) -> bool:
    return not (_GENERATING.get() and str(record.msg).startswith(_BOTH_LENGTHS_NOTICE))


hf_logging.get_logger("transformers.generation.utils").addFilter(_drop_both_lengths_notice)


@dataclasses.dataclass
class GenerationOutput:
    """What one checkpoint produced for one sample."""

    sample_id: str
    text: str
    new_tokens: int
    latency_s: float  # wall time of the batch this sample ran in
    batch_size: int
    tokens_per_s: float  # the batch's new tokens / its latency
    nonfinite: bool = False  # NaN or +inf in the next-token scores at some step: the text is noise
    truncated: bool = False  # stopped before an end token (max_new_tokens, or at_context): the text is cut off
    at_context: bool = False  # ... stopped there because the checkpoint reads no further (its prompt left no more room)


class NonFiniteScores(LogitsProcessor):
    """Notes which rows' next-token scores hold NaN or +inf, and ends those rows there.

    A row with such scores is broken from that step on (float16 overflow, bad weights):
    it gets its end-of-sequence token instead of whatever argmax makes of NaN, so sampling
    does not crash on it and the text kept is what came before. Costs one reduction over
    the vocabulary per step. -inf alone is fine: other processors use it to mask tokens.
    """

    def __init__(self, eos_token_id: int | None) -> None:
        self.eos_token_id = eos_token_id
        self.rows: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        bad = ~torch.isfinite(scores.amax(dim=-1))  # amax propagates NaN; +inf stays +inf
        if not bad.any():  # one sync per step, as generate's own stopping check makes
            return scores
        self.rows = bad if self.rows is None else self.rows | bad
        scores = scores.masked_fill(bad[:, None], float("-inf") if self.eos_token_id is not None else 0.0)
        if self.eos_token_id is not None:
            scores[bad, self.eos_token_id] = 0.0
        return scores

    def per_sample(self, n: int) -> list[bool]:
        """One flag per input sample (beam search has several rows per sample)."""
        if self.rows is None:
            return [False] * n
        return self.rows.view(n, -1).any(dim=1).tolist()


class SeededDraw(LogitsProcessor):
    """Draws each row's next token from its (warped) scores with ``generator``, and leaves only that token.

    ``model.generate`` takes no generator: its sampling draws from torch's global one, which is the
    caller's (a notebook's own seeded work) and every thread's (another Compare, another Space visitor).
    Seeding it would reset the caller's stream, and any draw made elsewhere in the meantime would
    change our answers. So sampling runs as ``generate``'s greedy mode with this last processor: the
    same softmax and ``torch.multinomial`` that ``generate`` would make, on the generator of the batch,
    then every other token is masked so argmax takes the drawn one. A generator seeded as
    ``torch.manual_seed`` seeds the global one draws the same stream: the answers are those that
    seeding gave.
    """

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        probs = torch.nn.functional.softmax(scores, dim=-1)  # (B, V), as generate's sampling step computes it
        drawn = torch.multinomial(probs, num_samples=1, generator=self.generator)  # (B, 1)
        return torch.full_like(scores, float("-inf")).scatter_(1, drawn, 0.0)


def seeded_sampling(model_config: Any, kwargs: Mapping[str, Any], generator: torch.Generator) -> tuple[dict, list[LogitsProcessor]]:
    """``generate`` keyword arguments and logits processors that sample as ``kwargs`` asks, drawing from ``generator``.

    The warpers are the ones ``generate`` applies when ``do_sample`` (its ``_get_logits_processor``, in its order,
    for one beam), with the values ``generate`` would take: ``kwargs``'s, else the checkpoint's generation config's
    (``generation_settings.decoding_kwargs`` puts neutral values in ``kwargs`` for those a comparison sets aside).
    """
    from transformers import (
        EpsilonLogitsWarper, EtaLogitsWarper, MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
        TypicalLogitsWarper,
    )

    c = {k: kwargs[k] if k in kwargs else getattr(model_config, k, None) for k in SAMPLING}
    warpers: list[LogitsProcessor] = []
    if c["temperature"] is not None and c["temperature"] != 1.0:
        warpers.append(TemperatureLogitsWarper(c["temperature"]))
    if c["top_h"] is not None:
        from transformers.generation.logits_process import TopHLogitsWarper

        warpers.append(TopHLogitsWarper(top_h=c["top_h"]))
    if c["top_k"] is not None and c["top_k"] != 0:
        warpers.append(TopKLogitsWarper(top_k=c["top_k"]))
    if c["top_p"] is not None and c["top_p"] < 1.0:
        warpers.append(TopPLogitsWarper(top_p=c["top_p"]))
    if c["min_p"] is not None:
        warpers.append(MinPLogitsWarper(min_p=c["min_p"]))
    if c["typical_p"] is not None and c["typical_p"] < 1.0:
        warpers.append(TypicalLogitsWarper(mass=c["typical_p"]))
    if c["epsilon_cutoff"] is not None and 0.0 < c["epsilon_cutoff"] < 1.0:
        warpers.append(EpsilonLogitsWarper(epsilon=c["epsilon_cutoff"]))
    if c["eta_cutoff"] is not None and 0.0 < c["eta_cutoff"] < 1.0:
        warpers.append(EtaLogitsWarper(epsilon=c["eta_cutoff"], device=generator.device))
    greedy = {k: v for k, v in kwargs.items() if k not in SAMPLING} | {"do_sample": False}
    return greedy, [*warpers, SeededDraw(generator)]


def chat_messages(prompt: str, image=None) -> list[dict]:
    """One user turn: an image part then a text part, the layout VLM chat templates expect."""
    image_part = {"type": "image"} if image is None else {"type": "image", "image": image}
    return [{"role": "user", "content": [image_part, {"type": "text", "text": prompt}]}]


def render_prompt(processor, prompt: str) -> str:
    """The text the processor gets: the chat template's user turn, or the prompt as written.

    Processors without a chat template (PaliGemma; by their source also BLIP-2, Florence-2, Fuyu) take a
    plain prompt and place the image tokens themselves; ``models.load`` refuses one that does not.
    """
    if getattr(processor, "chat_template", None):
        return processor.apply_chat_template(chat_messages(prompt), add_generation_prompt=True, tokenize=False)
    return prompt


def check_prompts(processor, samples: Sequence[Sample]) -> None:
    """Refuse a prompt that holds the processor's image token: the processor places the image.

    Left in, the processor counts one image token more than images and fails deep inside.
    """
    token = getattr(processor, "image_token", None)
    token = str(token) if token is not None else None  # BLIP-2 keeps an AddedToken
    if token:
        places = "the chat template places" if getattr(processor, "chat_template", None) else "the processor places"
        for s in samples:
            if token in s.prompt:
                raise DataError(
                    f"{f'{s.line}: ' if s.line else ''}sample {s.id}: the prompt holds the image token {token!r}; {places} the image "
                    f"itself: remove {token!r} from the prompt (LLaVA-style data often starts with '{token}\\n')"
                )


def encode_inputs(processor, samples: Sequence[Sample]) -> dict:
    """Chat template + processor for a batch, left-padded, on the CPU.

    Depends only on the processor, so checkpoints of one training run (same
    tokenizer and image processor) can share it: ``compare`` encodes each batch once.
    """
    check_prompts(processor, samples)
    # the chat template is rendered once per distinct prompt (VQA sets repeat a few questions)
    rendered = {prompt: render_prompt(processor, prompt) for prompt in dict.fromkeys(s.prompt for s in samples)}
    prompts = [rendered[s.prompt] for s in samples]
    # one list per sample: processors that take several images per prompt (Gemma 3, Idefics3, Mllama) read a
    # flat list as all of them belonging to one prompt
    return dict(processor(images=[[s.image] for s in samples], text=prompts, return_tensors="pt", padding=True))


def encode_batch(loaded: LoadedModel, samples: Sequence[Sample], *, encoded: dict | None = None) -> dict:
    """Encode a batch (or take ``encoded`` from ``encode_inputs``) onto the model's device and dtype."""
    enc = encoded if encoded is not None else encode_inputs(loaded.processor, samples)
    out = {}
    for key, value in enc.items():
        if isinstance(value, torch.Tensor):
            value = value.to(loaded.device)
            if value.is_floating_point():
                value = value.to(loaded.dtype)  # pixel values follow the model's dtype
        out[key] = value
    return out


def _count_new_tokens(row: torch.Tensor, eos_ids: set[int]) -> tuple[int, bool]:
    """New tokens up to and including the first eos, and whether there was one (the row ended).

    ``generate`` pads a row only after it ended with an eos (a finished beam too), so a pad token
    before the first eos is content the model emitted (untrained or random models do) and counts;
    the decoded text skips it but holds what followed. A row without an eos was cut off.
    """
    for n, tok in enumerate(row.tolist(), start=1):
        if tok in eos_ids:
            return n, True
    return len(row), False


def _eos_ids(loaded: LoadedModel) -> set[int]:
    eos = getattr(loaded.model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = getattr(loaded.processor.tokenizer, "eos_token_id", None)
    if eos is None:
        return set()
    return set(eos) if isinstance(eos, (list, tuple)) else {int(eos)}


def context_length(model_config: Any) -> int | None:
    """How many positions the checkpoint reads, answer included (its language model's ``max_position_embeddings``);
    None when the config does not say, and for encoder-decoders (Florence-2 and the like: the inputs go to the
    encoder, the answer has positions of its own). Generation and the memory estimate stop answers there."""
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    if any(getattr(c, "is_encoder_decoder", False) for c in (model_config, text_config)):
        return None
    context = getattr(text_config, "max_position_embeddings", None)
    if not isinstance(context, int) or isinstance(context, bool) or context <= 0:
        return None
    return context


def context_room(model_config: Any, encoded: Mapping[str, Any]) -> tuple[int, list[int]] | None:
    """``(context, room per row)``: how many positions the checkpoint reads (``context_length``) and how many
    each row's image and prompt leave for its answer; None when ``context_length`` is None."""
    context = context_length(model_config)
    if context is None:
        return None
    mask = encoded.get("attention_mask")
    lengths = mask.sum(dim=1).tolist() if mask is not None else [encoded["input_ids"].shape[1]] * len(encoded["input_ids"])
    return context, [context - int(n) for n in lengths]


def _limits(loaded: LoadedModel, samples: Sequence[Sample], enc: Mapping[str, Any], asked: int, name: str) -> list[int]:
    """Per row, the new tokens it may have: ``asked``, or fewer where its prompt leaves less room.

    Raises:
        ContextOverflowError: a row's image and prompt alone fill the context.
    """
    fit = context_room(loaded.model.config, enc)
    if fit is None:
        return [asked] * len(samples)
    context, room = fit
    for sample, left in zip(samples, room):
        if left < 1:
            where = {sample.id: sample.line} if sample.line else None
            raise ContextOverflowError(sample.id, context - left, context, name, lines=where)
    return [min(asked, left) for left in room]


class ContextOverflowError(DataError):
    """A sample's image and prompt alone take every position the checkpoint reads: no room for an answer.

    ``overflows``: every such (sample id, tokens, context, checkpoint) found, the first one's also as attributes;
    ``compare`` checks all samples against all checkpoints before generating and names them all in one error.
    """

    SHOWN = 20  # samples named per checkpoint; more are counted

    def __init__(self, sample_id: str | None, tokens: int, context: int, checkpoint: str, *,
                 others: Sequence[tuple[str, int, int, str]] = (), lines: Mapping[str, str] | None = None) -> None:
        """``sample_id`` None: one image and prompt typed in (the explorer), not a sample of a data set. ``lines``:
        per sample id, where its data file gives it (``Sample.line``, "d.jsonl:3"), named with it: where to shorten."""
        self.sample_id, self.tokens, self.context, self.checkpoint = sample_id, tokens, context, checkpoint
        self.overflows = [(sample_id, tokens, context, checkpoint), *others]
        what = f"the image and prompt take {tokens} tokens, and {checkpoint} reads at most {context} (the answer included)"
        fix = "a smaller image helps where the processor's image tokens grow with its size"  # Idefics3, Qwen2-VL
        if sample_id is None:
            super().__init__(f"{what}; shorten the prompt")
        elif not others:
            at = f" ({lines[sample_id]})" if lines and sample_id in lines else ""
            super().__init__(f"sample {sample_id}{at}: {what}; shorten the prompt, or leave the sample out ({fix})")
        else:
            super().__init__(f"{_overflows(self.overflows, self.SHOWN, lines or {})}; shorten their prompts, or leave them out "
                             f"of the data ({fix})")


def _overflows(overflows: Sequence[tuple[str | None, int, int, str]], shown: int, lines: Mapping[str, str]) -> str:
    """``N samples leave no room ...: checkpoint-5, checkpoint-9 read at most 128 tokens ...: a (130), b (128)``;
    checkpoints whose offending samples and counts are the same are said together."""
    per_checkpoint: dict[tuple[str, int], list[tuple[str | None, int]]] = {}
    for sample_id, tokens, context, checkpoint in overflows:
        per_checkpoint.setdefault((checkpoint, context), []).append((sample_id, tokens))
    together: dict[tuple, list[str]] = {}
    for (checkpoint, context), rows in per_checkpoint.items():
        together.setdefault((context, tuple(rows)), []).append(checkpoint)
    parts = []
    for (context, rows), checkpoints in together.items():
        named = ", ".join(f"{sample_id} ({tokens}){_at_line(lines.get(sample_id))}" for sample_id, tokens in rows[:shown])
        more = f" and {len(rows) - shown} more" if len(rows) > shown else ""
        reads = "reads" if len(checkpoints) == 1 else "read"
        parts.append(f"{', '.join(checkpoints)} {reads} at most {context} tokens (the answer included), and the image and "
                     f"prompt of {len(rows)} sample(s) take that many or more: {named}{more}")
    count = len({sample_id for sample_id, *_ in overflows})
    return f"{count} samples leave no room for an answer: " + "; ".join(parts)


def _at_line(line: str | None) -> str:
    """``" at line 3"`` for ``"d.jsonl:3"`` (the data file is the one --data names), or ``""``."""
    return f" at line {line.rsplit(':', 1)[1]}" if line else ""


def batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.inference_mode()
def generate_batch(
    loaded: LoadedModel, samples: Sequence[Sample], config: GenerationConfig, *, encoded: dict | None = None,
    seed: int | None = None, name: str | None = None,
) -> list[GenerationOutput]:
    """Run one batch through ``model.generate``; seeded so sampling strategies repeat.

    No row runs past what the checkpoint reads (``context_room``): a row whose prompt leaves fewer
    than ``config.max_new_tokens`` positions gets that many, in a ``generate`` call with the rows
    that have the same limit (a row's answer never depends on its batch mates'; rarely more than one call).

    ``encoded``: the batch already through ``encode_inputs`` with this model's processor.
    ``seed``: this batch's seed for sampling (default ``config.seed``).
    ``name``: the checkpoint as errors name it (default its folder's name).

    Runs inside ``model_construction.generating()``: a build in another thread never has torch's default dtype
    swapped while this batch runs (some families' forward passes make tensors in it), and waits for it instead.

    Raises:
        ContextOverflowError: a sample's image and prompt leave no room for an answer.
    """
    with generating():
        return _generate_batch(loaded, samples, config, encoded, seed, name)


def _generate_batch(loaded: LoadedModel, samples: Sequence[Sample], config: GenerationConfig, encoded: dict | None,
                    seed: int | None, name: str | None) -> list[GenerationOutput]:
    enc = encode_batch(loaded, samples, encoded=encoded)
    limits = _limits(loaded, samples, enc, config.max_new_tokens, name or loaded.ref.name)
    # greedy and beam search draw nothing; sampling draws from a generator of this batch's own (see SeededDraw)
    draws = torch.Generator(device=loaded.device).manual_seed(config.seed if seed is None else seed) \
        if config.generate_kwargs()["do_sample"] else None  # fmt: skip
    groups: dict[int, list[int]] = {}
    for i, limit in enumerate(limits):
        groups.setdefault(limit, []).append(i)
    if len(groups) == 1:
        return _generate(loaded, samples, enc, dataclasses.replace(config, max_new_tokens=limits[0]), config.max_new_tokens, draws)
    out: list[GenerationOutput | None] = [None] * len(samples)
    for limit, rows in groups.items():  # each group encoded afresh: processors' outputs cannot be sliced generically
        group = [samples[i] for i in rows]
        for i, o in zip(rows, _generate(loaded, group, encode_batch(loaded, group), dataclasses.replace(config, max_new_tokens=limit),
                                         config.max_new_tokens, draws)):
            out[i] = o
    return out  # type: ignore[return-value]


def _generate(loaded: LoadedModel, samples: Sequence[Sample], enc: dict, config: GenerationConfig, asked: int,
              draws: torch.Generator | None) -> list[GenerationOutput]:
    """One ``model.generate`` call; ``config.max_new_tokens`` below ``asked`` is where the context ends;
    ``draws``: the generator a sampling strategy draws from."""
    # the strategy alone, not the checkpoint's own repetition penalty, n-gram ban, ... (generation_settings)
    kwargs = decoding_kwargs(loaded.model.generation_config, config.generate_kwargs(), checkpoint_generation=config.checkpoint_generation)
    tokenizer = loaded.processor.tokenizer
    pad_id = tokenizer.pad_token_id
    if pad_id is not None:
        kwargs["pad_token_id"] = pad_id
    if loaded.device.type == "cuda":
        torch.cuda.synchronize(loaded.device)
    eos_ids = _eos_ids(loaded)
    flags = NonFiniteScores(min(eos_ids) if eos_ids else None)
    processors = [flags]
    if draws is not None:
        kwargs, sampling = seeded_sampling(loaded.model.generation_config, kwargs, draws)
        processors += sampling
    start = time.perf_counter()
    quiet = _GENERATING.set(True)
    try:
        out = loaded.model.generate(**enc, **kwargs, logits_processor=LogitsProcessorList(processors))
    finally:
        _GENERATING.reset(quiet)
    if loaded.device.type == "cuda":
        torch.cuda.synchronize(loaded.device)
    latency = time.perf_counter() - start
    new = out[:, enc["input_ids"].shape[1] :].cpu()
    texts = loaded.processor.batch_decode(new, skip_special_tokens=True)
    counts, ended = zip(*(_count_new_tokens(row, eos_ids) for row in new))
    tps = sum(counts) / latency if latency > 0 else 0.0
    cut = [not done and c >= config.max_new_tokens for c, done in zip(counts, ended)]
    return [
        GenerationOutput(
            sample_id=s.id,
            text=t.strip(),
            new_tokens=c,
            latency_s=latency,
            batch_size=len(samples),
            tokens_per_s=tps,
            nonfinite=bad,
            truncated=stopped,
            at_context=stopped and config.max_new_tokens < asked,
        )
        for s, t, c, stopped, bad in zip(samples, texts, counts, cut, flags.per_sample(len(samples)))
    ]


def generate(loaded: LoadedModel, samples: Iterable[Sample], config: GenerationConfig | None = None) -> list[GenerationOutput]:
    """Generate for every sample in batches of ``config.batch_size``."""
    config = config or GenerationConfig()
    samples = list(samples)
    out: list[GenerationOutput] = []
    for chunk in batches(samples, config.batch_size):
        out.extend(generate_batch(loaded, chunk, config))
    return out
