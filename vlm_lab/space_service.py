"""The comparison service the Space's events call: its checkpoints, their answers, and out-of-memory recovery.

What it needs around a request lives beside it and is re-exported here: the memory plan, memory
logging and freeing (``space_memory``) and the optional W&B log of interactions (``space_interactions``).

``space/app.py`` builds one ``ComparisonService`` and turns the ``VlmLabError`` raised here
into ``gr.Error``. Nothing here imports gradio, and torch or transformers only inside the
functions that use them.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import math
import threading
import traceback
from typing import Any, Iterator, Sequence

from vlm_lab.config import GenerationConfig, parse_strategy
from vlm_lab.errors import (
    CheckpointNotFoundError, ConfigError, DataError, MemoryBudgetError, VlmLabError,
)
from vlm_lab.space_images import image_path_of, read_image
from vlm_lab.space_interactions import InteractionLog  # noqa: F401 - re-exported
from vlm_lab.space_memory import (  # noqa: F401 - re-exported: they were defined here
    MemoryPlan, format_snapshot, free_memory, logged_request, memory_snapshot, plan_memory,
)
from vlm_lab.space_settings import MAX_BEAMS, MAX_SLOTS, NONE_CHOICE, STRATEGIES, SpaceSettings, variables_in_errors

log = logging.getLogger("vlm_lab.space")


class CheckpointFailedError(VlmLabError, RuntimeError):
    """A checkpoint broke while answering with an error vlm_lab did not foresee (its own bug, a
    processor that does not match its model): only that checkpoint's answers fail."""


# -- the comparison service -------------------------------------------------------------------


def _labels(refs: Sequence[Any], names: Sequence[str]) -> list[str]:
    """What the dropdowns and the API call each checkpoint: a hub run's ``checkpoint-N`` subfolder by that
    name, as the same folder on disk is (``org/run@<40-hex commit>:checkpoint-500`` filled the dropdown,
    and the API name changed with every new commit); ``names`` (``compare.unique_names``) where that
    would make two the same."""
    short = [f"checkpoint-{r.step}" if not r.is_local and r.step is not None else n for r, n in zip(refs, names)]
    return short if len(set(short)) == len(short) else list(names)


@dataclasses.dataclass(frozen=True)
class Answer:
    """One checkpoint's answer to one question."""

    checkpoint: str
    text: str
    new_tokens: int
    latency_s: float
    memory_mb: float  # peak CUDA memory on a GPU, the model's weights on CPU
    memory_kind: str  # "peak" | "weights"
    error: str = ""  # no answer: why (for NaN/inf scores, what they mean for this dtype and what to do)
    nonfinite: bool = False  # NaN/inf in the model's scores: the text is not an answer
    truncated: bool = False  # stopped at max new tokens before the end token: the text is cut off
    at_context: bool = False  # ... stopped there because the checkpoint can read no further (generation.context_room)

    @classmethod
    def failed(cls, checkpoint: str, error: str) -> "Answer":
        """No answer: ``error`` says why (bad request, checkpoint that cannot load, out of memory)."""
        return cls(checkpoint, "", 0, 0.0, 0.0, "", error=error)

    def stats_markdown(self) -> str:
        if self.nonfinite:  # an output, but noise: its stats still show (the text box holds the noise)
            empty = f"**NaN/inf in the model's scores:** {self.error} · "
        elif self.error:
            return f"**could not answer:** {self.error}"
        else:
            empty = "*no text: only special tokens* · " if not self.text.strip() else ""
        if self.truncated:
            empty += "*cut off: the checkpoint reads no further* · " if self.at_context else "*cut off at max new tokens* · "
        return (
            f"{empty}**latency** {self.latency_s * 1000:.0f} ms · **tokens** {self.new_tokens} · "
            f"**memory** {self.memory_mb:.1f} MB {self.memory_kind}"
        )


class ComparisonService:
    """The checkpoints a Space offers, one model cache, and the two ways to ask them.

    ``compare``: one image + question, up to ``MAX_SLOTS`` checkpoints, answers side by side.
    ``answer_batch``: many (image, question, checkpoint) requests that Gradio batched together.
    Both generate through ``_generate`` only: one place for out-of-memory recovery, memory
    reporting and the NaN/inf and truncation flags.
    """

    def __init__(self, settings: SpaceSettings, *, token: str | None = None, cache: Any = None,
                 interactions: InteractionLog | None = None) -> None:
        from vlm_lab.checkpoints import resolve_all
        from vlm_lab.compare import unique_names
        from vlm_lab.model_cache import ModelCache
        from vlm_lab.models import resolve_device, resolve_dtype

        self.settings = settings
        self.token = token or None
        # a checkpoint the hub (down) or the cache cannot give is planned and named in the log, not refused at start
        refs = resolve_all(list(settings.checkpoints), check_hub=False)
        self.refs = dict(zip(_labels(refs, unique_names(refs)), refs))
        self._aliases = {ref.spec: label for label, ref in self.refs.items()}  # the full reference works too
        with variables_in_errors("VLM_LAB_DEVICE", settings.device):  # its owner set VLM_LAB_DEVICE, not device=
            device = resolve_device(settings.device)
        self.device = device.type
        # a dtype the device refuses is the Space's setting, not one checkpoint's problem: refuse it now
        with variables_in_errors("VLM_LAB_DTYPE", settings.dtype):
            resolve_dtype(settings.dtype, device)
        self.memory = plan_memory(refs, device=self.device, target=settings.target,
                                  max_new_tokens=settings.max_new_tokens, batch_size=settings.max_batch_size,
                                  prompt_chars=settings.max_prompt_chars)  # rows counted with the longest question
        budget = settings.cache_budget or self.memory.cache_budget_bytes
        self.cache = cache if cache is not None else ModelCache(budget, loader=self._load,
                                                                hub_refresh_s=settings.hub_refresh_s)
        self.interactions = interactions or InteractionLog({})
        self._in_use: collections.Counter[str] = collections.Counter()  # label -> requests generating with it now
        self._lock = threading.Lock()
        self._settings_said: set[str] = set()  # labels whose set-aside generation settings the log has named

    @contextlib.contextmanager
    def _answering(self, label: str) -> Iterator[None]:
        """Count ``label`` as answering a request for the body (``out_of_memory_guard`` keeps its model)."""
        with self._lock:
            self._in_use[label] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_use[label] -= 1

    def _load(self, ref, *, dtype: str, device: str):
        from vlm_lab.models import load_model

        return load_model(ref, dtype=dtype, device=device, token=self.token)

    # -- choices --------------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self.refs)

    def default_selection(self) -> list[str]:
        """Up to three checkpoints spread over the list: first, middle, last (early vs late training)."""
        labels = self.labels
        if len(labels) <= MAX_SLOTS:
            return labels
        picks = [labels[round(i * (len(labels) - 1) / (MAX_SLOTS - 1))] for i in range(MAX_SLOTS)]
        return list(dict.fromkeys(picks))

    def startup_selection(self) -> list[str]:
        """``default_selection`` less the checkpoints that cannot load, loaded now (the examples use them next).

        One broken checkpoint must not stop the Space: it stays in the dropdowns (choosing it says
        what is wrong) but is left out of the defaults and the cached examples, with a warning in
        the log. Empty when none of the defaults loads.
        """
        usable, failures = [], []
        for label in self.default_selection():
            try:
                with self.out_of_memory_guard(label):
                    loaded = self.cache.get(self.refs[label], dtype=self.settings.dtype, device=self.settings.device)
                    self.memory.count_with(self.refs[label], loaded.processor)  # where the plan had no tokenizer
                    del loaded
            except Exception as e:  # noqa: BLE001 - whatever breaks one checkpoint, the Space serves the others
                log.warning("%s left out of the defaults and examples: it cannot be used (%s)", label, e)
                failures.append(e)
                continue
            usable.append(label)
        if failures and not usable:  # the owner's one line to act on: the Space "runs", yet every visitor gets an error
            hub = any(not self.refs[label].is_local for label in self.default_selection())
            token = ("; hub checkpoints that are private need a read-only token as the Space secret HF_TOKEN"
                     + (" (the one set cannot read them, or has expired)" if self.token else "")) if hub else ""
            log.error("none of the default checkpoints can be used, so there are no examples and visitors get errors: "
                      "%s%s", failures[0], token)
        return usable

    def _ref(self, label: str):
        label = str(label).strip()
        ref = self.refs.get(label) or self.refs.get(self._aliases.get(label, ""))
        if ref is None:
            raise CheckpointNotFoundError(
                f"unknown checkpoint {label!r}; choose one of {', '.join(self.labels)}"
            )
        return ref

    def _label(self, label: Any) -> str:
        """The label of a checkpoint given by its label or its full reference (CheckpointNotFoundError if neither)."""
        label = str(label).strip()
        self._ref(label)
        return label if label in self.refs else self._aliases[label]

    def _selected(self, checkpoints: Sequence[str | None]) -> list[str]:
        chosen = [str(c).strip() for c in checkpoints if c and str(c).strip() and str(c).strip() != NONE_CHOICE]
        chosen = list(dict.fromkeys(self._label(c) for c in chosen))  # the same checkpoint twice answers once
        if not chosen:
            raise ConfigError("no checkpoint selected; pick at least one in the Checkpoint dropdowns")
        if len(chosen) > MAX_SLOTS:
            raise ConfigError(f"{len(chosen)} checkpoints selected; compare at most {MAX_SLOTS} at a time")
        return chosen

    def generation_config(self, strategy: str, max_new_tokens: Any) -> GenerationConfig:
        strategy = STRATEGIES.get(str(strategy), str(strategy or "greedy"))
        name, value = parse_strategy(strategy)
        if name == "beam" and value > MAX_BEAMS:  # what the memory holds depends on the checkpoints: check_beams
            raise ConfigError(f"{strategy!r} asks for {value:g} beams; this Space allows at most beam({MAX_BEAMS})")
        try:  # True/False are ints to Python (True + 0 == 1), but a JSON client sending one made a mistake
            n = math.nan if isinstance(max_new_tokens, bool) else float(max_new_tokens)
        except (TypeError, ValueError, OverflowError):
            n = math.nan
        if not n.is_integer():  # 3.7 is refused, not silently cut to 3
            raise ConfigError(f"max new tokens must be a whole number between 1 and {self.settings.max_new_tokens}, "
                              f"got {max_new_tokens!r}")
        n = int(n)
        if not 1 <= n <= self.settings.max_new_tokens:
            raise ConfigError(f"max new tokens must be between 1 and {self.settings.max_new_tokens}, got {n}")
        return GenerationConfig(strategy=strategy, max_new_tokens=n, batch_size=1, seed=0)

    def check_beams(self, config: GenerationConfig, labels: Sequence[str], question: str | None = None) -> None:
        """Refuse a beam search whose rows, at the request's own max new tokens, do not fit in what the memory plan
        keeps for a Compare with one of ``labels``: a row grows with the tokens generated (KV cache, activations), so
        a short answer holds beams a long one does not, and so does a short ``question`` (counted with each checkpoint's
        tokenizer; without one, as the longest the Space accepts). The plan estimated the checkpoints before the Space
        served: arithmetic on those estimates here (nothing is built).

        Raises:
            ConfigError: says up to how many new tokens those beams fit, and how many beams fit at this length.
        """
        name, beams = parse_strategy(config.strategy)
        if name != "beam":
            return
        n, plan = config.max_new_tokens, self.memory
        for label in labels:
            ref = self.refs[label]
            prompt = plan.question_tokens(ref, question) if question is not None else None
            fits = plan.beam_tokens(ref, int(beams), prompt)
            if n <= fits:
                continue
            held = plan.beams_at(ref, n, prompt)
            fewer = f"beam({held}) or fewer" if held > 1 else "greedy or sampling"
            asked = f" with this question ({prompt} tokens)" if prompt is not None else ""
            shorter = ", a shorter question" if prompt is not None else ""
            said = (f"beam({beams:g}) fits up to {fits} new tokens{asked}; ask for at most {fits} new tokens{shorter}, or "
                    f"for {fewer}") if fits else \
                f"beam({beams:g}) fits at no length{asked}; ask for {fewer}{shorter.replace(',', ', or')}"
            raise ConfigError(f"{config.strategy!r} with {n} new tokens does not fit in the memory of {plan.target} "
                              f"with {label}: {said}")

    def _prompt(self, prompt: Any) -> str:
        text = str(prompt or "").strip()
        if not text:
            raise DataError("no question: type a question about the image, e.g. 'What color is the shape?'")
        if len(text) > self.settings.max_prompt_chars:
            raise DataError(f"the question is {len(text)} characters; this Space takes at most "
                            f"{self.settings.max_prompt_chars}: shorten it")
        return text

    # -- requests ------------------------------------------------------------------------------
    def compare(self, image: Any, prompt: Any, checkpoints: Sequence[str | None], strategy: str = "greedy",
                max_new_tokens: Any = 16) -> list[Answer]:
        """Answer one question about one image with each selected checkpoint, in order.

        A checkpoint that fails (cannot load, out of memory) gets its ``Answer.error``; the others
        still answer.

        Raises:
            DataError, ConfigError, CheckpointNotFoundError: bad input; the message names the fix.
            VlmLabError: every selected checkpoint failed (the first one's error), e.g.
                MemoryBudgetError: out of memory; the cache was emptied and the message says what to lower.
        """
        config = self.generation_config(strategy, max_new_tokens)
        if image_path_of(image) in (None, "") and not str(prompt or "").strip():  # the empty form: both, not one per try
            raise DataError("no image and no question: upload an image (PNG, JPEG or WebP) or pick one of the examples, "
                            "and type a question about it, e.g. 'What color is the shape?'")
        text = self._prompt(prompt)
        chosen = self._selected(checkpoints)
        self.check_beams(config, chosen, text)
        img = read_image(image, max_pixels=self.settings.max_pixels)
        answers, failures = [], []
        with logged_request("compare", f"{len(chosen)} checkpoint(s), {config.strategy}, {config.max_new_tokens} tokens"):
            for label in chosen:
                try:
                    answers += self._generate(label, [img], [text], config)
                except VlmLabError as e:
                    failures.append(e)
                    answers.append(Answer.failed(label, str(e)))
        if len(failures) == len(chosen):
            raise failures[0]
        self.interactions.log(img, text, [a for a in answers if not a.error], config)
        return answers

    def answer_batch(self, images: Sequence[Any], prompts: Sequence[Any], checkpoints: Sequence[Any],
                     max_new_tokens: Sequence[Any] | None = None) -> list[Answer]:
        """Answer requests Gradio batched together (greedy): one generate call per (checkpoint, length).

        A bad request gets its own ``Answer.error``; the others in the batch are still answered.
        """
        lengths = max_new_tokens or [None] * len(images)
        results: list[Answer | None] = [None] * len(images)
        groups: dict[tuple[str, GenerationConfig], list[tuple[int, Any, str]]] = {}
        for i, (image, prompt, label, n) in enumerate(zip(images, prompts, checkpoints, lengths)):
            label = str(label or "").strip()
            try:
                config = self.generation_config("greedy", self.settings.default_max_new_tokens if n in (None, "") else n)
                text = self._prompt(prompt)
                label = self._label(label)
                img = read_image(image, max_pixels=self.settings.max_pixels)
                groups.setdefault((label, config), []).append((i, img, text))
            except (DataError, ConfigError, CheckpointNotFoundError) as e:
                results[i] = Answer.failed(label, str(e))
        # nothing to generate (every request refused): no memory lines around nothing, the refusals are logged
        with logged_request("batch", f"{len(images)} request(s) in {len(groups)} group(s)") if groups else contextlib.nullcontext():
            for (label, config), items in groups.items():
                try:
                    answers = self._generate(label, [img for _, img, _ in items], [t for _, _, t in items], config)
                except DataError:  # one request's input (e.g. the image token in its prompt): each on its own
                    answers = [self._generate_or_fail(label, img, t, config) for _, img, t in items]
                except VlmLabError as e:  # this checkpoint failed (cannot load, out of memory): only its requests
                    answers = [Answer.failed(label, str(e))] * len(items)
                for (i, img, text), answer in zip(items, answers):
                    results[i] = answer
                    if not answer.error:  # logged like the Compare button's answers (noise and failures are not)
                        self.interactions.log(img, text, [answer], config)
        return [r for r in results if r is not None]

    def _generate_or_fail(self, label: str, image: Any, prompt: str, config: GenerationConfig) -> Answer:
        try:
            (answer,) = self._generate(label, [image], [prompt], config)
        except VlmLabError as e:
            answer = Answer.failed(label, str(e))
        return answer

    def _generate(self, label: str, images: list, prompts: list[str], config: GenerationConfig) -> list[Answer]:
        """One checkpoint, one generate call over a batch of (image, prompt): the Space's only way to generate.

        Raises:
            MemoryBudgetError: out of memory (the model cache was emptied: ``out_of_memory_guard``); ``DataError``: an input the
                checkpoint refuses; ``CheckpointFailedError``: anything else it broke with; other
                ``VlmLabError``: the checkpoint cannot load.
        """
        from vlm_lab.compare import MemoryProbe, nonfinite_message
        from vlm_lab.data import Sample
        from vlm_lab.generation import ContextOverflowError, generate_batch

        samples = [Sample(id=f"{label}-{i}", image=img, prompt=p) for i, (img, p) in enumerate(zip(images, prompts))]
        try:
            with self.out_of_memory_guard(label):
                # in use until its answers are out: another visitor's load waits for its room (on a GPU it would
                # be loaded beside this model, which stays in memory while it generates: out of memory). A load's
                # errors name the VLM_LAB_* variables, not the cache's arguments (VLM_LAB_CACHE_BUDGET=, VLM_LAB_DTYPE=)
                with variables_in_errors(), self._answering(label), self.cache.use(
                        self.refs[label], dtype=self.settings.dtype, device=self.settings.device) as loaded:
                    self.memory.count_with(self.refs[label], loaded.processor)  # its next questions, where none was
                    self._say_set_aside(label, loaded.model.generation_config, config)
                    probe = MemoryProbe(loaded)  # peak CUDA memory on a GPU, the weights on CPU
                    # sampled answers draw from a generator of their own (generation.SeededDraw): a visitor sampling
                    # at the same time cannot change them, so requests need no lock to repeat for the same seed
                    outs = generate_batch(loaded, samples, config, name=label)  # never past what the checkpoint reads
                    memory_mb, kind = probe.peak() / 2**20, "peak" if probe.cuda else "weights"
                    dtype = str(loaded.dtype).removeprefix("torch.")
                    del loaded, probe  # nothing here holds the model once the block is left: it can be freed
        except ContextOverflowError as e:  # in the visitor's words: the question is what they can shorten
            raise DataError(f"the image and question take {e.tokens} tokens, and {label} reads at most {e.context} "
                            "(answer included); shorten the question") from None
        except DataError as e:  # the visitor's input: said without the engine's sample id ("sample checkpoint-0-1: ...")
            message = str(e)
            for sample in samples:
                message = message.removeprefix(f"sample {sample.id}: ")
            raise type(e)(message) from None
        except VlmLabError:
            raise
        except Exception as e:  # noqa: BLE001 - one checkpoint's failure must not cost the others their answers
            log.exception("%s failed while answering", label)
            traceback.clear_frames(e.__traceback__)  # the error stays reachable (__context__): free its tensors
            raise CheckpointFailedError(
                f"{label} failed while answering ({type(e).__name__}: {e}); the other checkpoints still answer. "
                "The Space's log has the traceback; check the checkpoint alone with `vlm-lab compare`"
            ) from None
        problem = ""
        if any(o.nonfinite for o in outs):
            # the API has no badge: a client that checks `error` must not take noise for an answer.
            # Each request is its own sample; the advice follows the dtype the model runs in.
            problem = nonfinite_message(label, 1, 1, dtype, dtype_option="VLM_LAB_DTYPE={}")
        return [Answer(label, o.text, o.new_tokens, o.latency_s, memory_mb, kind, error=problem if o.nonfinite else "",
                       nonfinite=o.nonfinite, truncated=o.truncated, at_context=o.at_context)
                for o in outs]

    def _say_set_aside(self, label: str, generation_config: Any, config: GenerationConfig) -> None:
        """Log once per checkpoint what its generation_config.json sets that answers are decoded without: every
        checkpoint answers with the strategy asked alone, so side-by-side answers compare (generation_settings)."""
        from vlm_lab.generation_settings import set_aside, set_aside_message

        with self._lock:
            if label in self._settings_said:
                return
            self._settings_said.add(label)
        fields = set_aside(generation_config, config.generate_kwargs(), checkpoint_generation=config.checkpoint_generation)
        if fields:
            log.info("%s", set_aside_message(label, fields, opt_in=False))

    @contextlib.contextmanager
    def out_of_memory_guard(self, what: str) -> Iterator[None]:
        """Out of memory: empty the model cache (but for the models other requests are answering with: evicted, they
        would stay in memory, held by those requests, and out of the budget), free the memory, and tell the user what
        to lower."""
        import torch

        try:
            yield
        except torch.OutOfMemoryError as e:
            # The traceback keeps the failed frames' locals (activations, the model) alive for as long as
            # anyone holds the error (Gradio does): drop them, or emptying the cache frees nothing.
            traceback.clear_frames(e.__traceback__)
            with self._lock:  # other visitors' models stay: evicted, they would stay in memory but not in the budget
                busy = {label for label, n in self._in_use.items() if n}
            free_memory(self.cache, self.device, only=[ref for label, ref in self.refs.items() if label not in busy]
                        if busy else None)  # fmt: skip
            kept = f" but for {', '.join(sorted(busy))} (other requests are answering with them)" if busy else ""
            log.warning("out of memory with %s; model cache emptied%s: %s", what, kept,
                        format_snapshot(memory_snapshot(self.device)))
            raise MemoryBudgetError(
                f"out of memory while {what} answered; the model cache was emptied. "
                "Compare fewer checkpoints at once or lower 'max new tokens', then try again"
            ) from None
