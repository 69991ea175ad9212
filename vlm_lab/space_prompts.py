"""The text tokens of the Space's visitors' questions: the longest question it accepts, counted with each checkpoint's
own tokenizer and chat template when the memory plan is made, and each request's own count, looked up against it.

A row's KV cache and activations grow with its prompt as with its answer (``memory.estimate``'s ``per_sample_bytes``).
The memory plan counted every row at estimate's default of 32 prompt tokens, but a visitor may type
``max_prompt_chars`` characters (500, ``VLM_LAB_MAX_PROMPT_CHARS``): 500 tokens and more with a word-level tokenizer
that splits every punctuation mark, up to four per character with a byte-level one (a character outside its
vocabulary, one token per UTF-8 byte). Counting a tokenizer's worst for the longest question keeps the plan true for
any question. A hub model's tokenizer not in the local cache at start is fetched (its files only, not its weights),
except offline or where the hub cannot be reached; a checkpoint whose tokenizer cannot be read is counted at 4 tokens
per character (why: see ``UNKNOWN_TOKENS_PER_CHAR``).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("vlm_lab.space")

# What the longest question is made of when the plan counts it: characters tokenizers split hardest. Punctuation
# between letters (a word-level or BPE pre-tokenizer makes each a token of its own), accented, CJK and mathematical
# letters and emoji (a byte-level BPE's or a byte fallback's 2 to 4 tokens each), combining marks, and 4-byte
# characters no vocabulary merges (an Egyptian hieroglyph, a private-use character: one token per UTF-8 byte; a large
# vocabulary merges common emoji and CJK, so those alone may leave a tokenizer's worst uncounted). Each is repeated
# to the longest question the Space accepts; the plan takes the one with the most tokens.
WORST_QUESTIONS = ("a.", "a ", "1,", "é.", "的", "😀", "a😀", "\u0301a", "𝔸.", "\U00013000", "\U000F0000")
# Without a tokenizer to count with (config only: a hub model whose tokenizer is not cached, offline), the most any
# byte-level BPE (GPT-2's, Llama 3's, Qwen's) or byte-fallback tokenizer (Llama 2's, Mistral's) counts: one token per
# UTF-8 byte, at most 4 a character, which each counts for the last two WORST_QUESTIONS. Not pessimism: with
# such a tokenizer a 7B on a T4 plans the same rows (and as few beams). Anything lower, a vocabulary guessed from another
# checkpoint's or the config's vocab_size, could undercount the question a visitor sends; an owner who wants more
# room sets VLM_LAB_MAX_PROMPT_CHARS lower. Plus room for the chat template's turn around the question.
UNKNOWN_TOKENS_PER_CHAR = 4
UNKNOWN_TEMPLATE_TOKENS = 32


class PromptCounter:
    """A question's text tokens for one checkpoint, as generation sends it: the chat template's user turn (the image's
    placeholder counted too), through the checkpoint's own tokenizer. ``template``: what holds the chat template (the
    tokenizer by default; a processor where it holds it)."""

    def __init__(self, tokenizer: Any, template: Any = None) -> None:
        # No lock: requests count from Gradio's worker threads at once. Every call encodes one text, unpadded and
        # untruncated, so none reconfigures the Rust tokenizer (what two calls could race on: before tokenizers 0.23.1
        # 'Already borrowed'); this tokenizer is the counter's own, never the model's processor (tests/test_space_prompts.py).
        self.tokenizer = tokenizer
        self.template = tokenizer if template is None else template

    @classmethod
    def of_processor(cls, processor: Any) -> "PromptCounter":
        """A counter of a loaded model's processor: a copy of it (a few ms), since generation pads the shared one's
        tokenizer and an unpadded call on it would reconfigure it under another visitor's batch."""
        import copy

        own = copy.deepcopy(processor)
        return cls(getattr(own, "tokenizer", own), template=own)

    def __call__(self, question: str) -> int:
        from vlm_lab.generation import render_prompt

        text = render_prompt(self.template, question)
        # verbose=False: a question past model_max_length is generation's to refuse, not a warning here
        return len(self.tokenizer(text, verbose=False)["input_ids"])


def longest_question(ref: Any, max_chars: int) -> tuple[int, PromptCounter | None, str]:
    """The most text tokens a question of up to ``max_chars`` characters takes with ``ref``: its tokenizer's count of
    the worst of ``WORST_QUESTIONS``, or 4 tokens per character and 32 for the template when it has no tokenizer here.

    Returns:
        (tokens, the counter for requests or None, how the tokens were counted, for the plan's notes).
    """
    from vlm_lab.checkpoints import CheckpointRef, resolve

    try:
        cref = ref if isinstance(ref, CheckpointRef) else resolve(str(ref), expand=False)[0]
        counter = PromptCounter(_tokenizer(cref))
        counts = {pattern: counter((pattern * max_chars)[:max_chars]) for pattern in WORST_QUESTIONS}
        worst = max(counts, key=counts.get)  # the first of those that tie
        tokens = counts[worst]
    except Exception as e:  # noqa: BLE001 - no tokenizer to read (config only, not downloaded yet): count the worst
        log.info("%s: no tokenizer to count questions with (%s: %s)", getattr(ref, "name", ref), type(e).__name__, e)
        return (max_chars * UNKNOWN_TOKENS_PER_CHAR + UNKNOWN_TEMPLATE_TOKENS, None,
                f"no tokenizer to count with: {UNKNOWN_TOKENS_PER_CHAR} per character assumed")
    return tokens, counter, f"its tokenizer's worst, {worst.strip()!r} repeated"


def _tokenizer(ref: Any) -> Any:  # ref: a CheckpointRef
    """``ref``'s tokenizer: from its folder or the local Hugging Face cache; for a hub model not downloaded yet (a
    Space's first start), its tokenizer's files fetched from the hub, as the plan fetched its config.json.

    Those files are small (a few MB at most: tokenizer.json, its config, the chat template) and its load would
    download them anyway, into the same cache; its weights are left to its load. Not offline (``HF_HUB_OFFLINE``), nor
    where the hub cannot be reached: one request says so (``check_hub_config``) before transformers asks for a dozen
    files with retries, minutes of a Space's start. A private model is read with ``HF_TOKEN``, as its config was.
    """
    from huggingface_hub import is_offline_mode
    from transformers import AutoTokenizer

    from vlm_lab.hub_refs import check_hub_config
    from vlm_lab.memory_checkpoint import local_folder

    try:
        return AutoTokenizer.from_pretrained(str(local_folder(ref)), local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached; raised again where it cannot be fetched
        if ref.path is not None or is_offline_mode() or check_hub_config(ref):
            raise
    return AutoTokenizer.from_pretrained(**ref.pretrained_kwargs(), trust_remote_code=False)
