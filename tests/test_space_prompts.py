"""vlm_lab.space_prompts: the most text tokens a question of the Space's longest length takes with each checkpoint.

A byte-level BPE (GPT-2's, Llama 3's, Qwen's kind), trained here on a few sentences and emoji, stands for a real
checkpoint's tokenizer: a character outside its merges is one token per UTF-8 byte, up to 4.
"""

from __future__ import annotations

import concurrent.futures
import shutil
import threading

import pytest

from vlm_lab.space_prompts import UNKNOWN_TEMPLATE_TOKENS, UNKNOWN_TOKENS_PER_CHAR, PromptCounter, longest_question

from test_hub_online import hub, online  # noqa: F401 - hub is a fixture
from test_checkpoint_refs import hf_cache  # noqa: F401 - a fixture
from test_tokenizer_threads import Reconfigured

CHARS = 100


@pytest.fixture(scope="module")
def byte_level(tiny_dir, tmp_path_factory):
    """A checkpoint folder (the tiny one's config and chat template) whose tokenizer is a byte-level BPE that merged
    emoji, accented and CJK letters it saw in training, as large vocabularies have: not every 4-byte character."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tiny = tiny_dir / "checkpoint-1000"
    out = tmp_path_factory.mktemp("bpe") / "byte-level"
    out.mkdir()
    shutil.copy(tiny / "config.json", out / "config.json")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "<unk>", "<|end|>", "<image>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["What color is the shape? A red circle, a blue square.", "😀 😀😀 é 的的 𝔸𝔸"] * 50, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|end|>", pad_token="<pad>", unk_token="<unk>",
                                   extra_special_tokens=special[3:])
    fast.chat_template = (tiny / "chat_template.jinja").read_text()
    fast.save_pretrained(out)
    return out


def test_the_longest_question_is_counted_at_a_character_the_tokenizer_never_merged(byte_level):
    """The worst questions tried had a 4-byte character only beside punctuation ('𝔸.': 5 tokens in 2 characters) or
    as an emoji: this tokenizer merged both, so the plan counted 3 tokens a character ('的' unmerged), and a visitor
    typing 100 of a 4-byte character it never merged (an Egyptian hieroglyph) sent 4 a character, past the plan."""
    tokens, counter, how = longest_question(byte_level, CHARS)
    template = counter("")
    assert counter("𓀀" * CHARS) == CHARS * 4 + template  # one token per byte
    assert tokens == CHARS * 4 + template, how


def test_a_checkpoint_without_a_tokenizer_is_counted_as_a_byte_level_tokenizer_counts(tiny_dir, byte_level, tmp_path):
    """Config only (a hub model not downloaded yet): 4 tokens a character is no pessimism, it is what a byte-level or
    byte-fallback tokenizer (Llama 2's) counts for the longest question of characters outside its vocabulary."""
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(tiny_dir / "checkpoint-1000" / "config.json", config_only / "config.json")
    tokens, counter, how = longest_question(config_only, CHARS)
    assert (tokens, counter) == (CHARS * UNKNOWN_TOKENS_PER_CHAR + UNKNOWN_TEMPLATE_TOKENS, None)
    assert how == "no tokenizer to count with: 4 per character assumed"
    counted, real, _ = longest_question(byte_level, CHARS)
    assert counted - real("") == CHARS * UNKNOWN_TOKENS_PER_CHAR <= tokens - UNKNOWN_TEMPLATE_TOKENS


def test_visitors_count_their_questions_at_once_and_the_tokenizer_is_never_reconfigured(byte_level):
    """Requests count their questions from Gradio's worker threads at once, with no lock: each call encodes one text,
    unpadded and untruncated, so nothing reconfigures the Rust tokenizer (the only state two calls could race on;
    tokenizers >= 0.23.1 also keeps it behind a lock) and every thread gets the count it gets alone."""
    from transformers import AutoTokenizer

    counter = PromptCounter(AutoTokenizer.from_pretrained(str(byte_level), local_files_only=True))
    spy = Reconfigured(counter.tokenizer)
    questions = ["What color is the shape?", "的" * 50, "𓀀😀 é." * 20, "a." * 50]
    alone = [counter(q) for q in questions]
    assert spy.calls == []
    wrong, errors, start = [], [], threading.Barrier(4)

    def counting(k: int) -> None:
        start.wait()
        for i in range(300):
            q = (k + i) % len(questions)
            try:
                if counter(questions[q]) != alone[q]:
                    wrong.append((k, i))
            except Exception as e:  # noqa: BLE001 - counted, and the first named by the assertion
                errors.append(repr(e))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(counting, range(4)))
    assert (errors[:2], wrong[:2], spy.calls) == ([], [], [])


PLAN_HUB_MODEL = """
import sys
from vlm_lab.space_prompts import longest_question
tokens, counter, how = longest_question(sys.argv[1], int(sys.argv[2]))  # as the Space's memory plan counts at start
print(tokens, counter is not None)
print(how)
"""


def test_a_hub_checkpoint_not_downloaded_is_counted_with_its_tokenizer_fetched_at_start(hub, hf_cache, tiny_checkpoints):
    """A hub model on a Space's first start: the plan fetches its tokenizer's files (small, as it fetches config.json)
    and counts the longest question with them, where it assumed 4 tokens a character until the model was loaded. No
    weight file is asked for."""
    r = online(hub, hf_cache, PLAN_HUB_MODEL, "org/run:checkpoint-1000", str(CHARS))
    assert r.returncode == 0, r.stderr
    tokens, how = r.stdout.splitlines()[-2:]
    expected, _, expected_how = longest_question(tiny_checkpoints[-1], CHARS)  # the same tokenizer, as a local folder
    assert (tokens, how) == (f"{expected} True", expected_how)
    assert expected < CHARS * UNKNOWN_TOKENS_PER_CHAR
    assert not [q["path"] for q in hub.requests if q["path"].endswith((".safetensors", ".bin"))]


def test_offline_a_hub_checkpoint_whose_tokenizer_is_not_cached_is_counted_at_4_tokens_a_character(hub, hf_cache):
    fetch = "from huggingface_hub import hf_hub_download; hf_hub_download('org/run', 'checkpoint-1000/config.json')"
    assert online(hub, hf_cache, fetch).returncode == 0
    asked = len(hub.requests)
    r = online(hub, hf_cache, "import os; os.environ['HF_HUB_OFFLINE'] = '1'\n" + PLAN_HUB_MODEL, "org/run:checkpoint-1000", str(CHARS))
    assert r.returncode == 0, r.stderr
    tokens, how = r.stdout.splitlines()[-2:]
    assert tokens == f"{CHARS * UNKNOWN_TOKENS_PER_CHAR + UNKNOWN_TEMPLATE_TOKENS} False"
    assert how == f"no tokenizer to count with: {UNKNOWN_TOKENS_PER_CHAR} per character assumed"
    assert len(hub.requests) == asked  # offline: the hub is not asked


def test_a_hub_failing_at_start_is_asked_once_not_for_each_tokenizer_file(hub, hf_cache):
    """The hub fails (5xx) when the Space starts, the config cached: one request says so, and the plan counts at 4 tokens
    a character, without transformers asking for each tokenizer file with retries."""
    fetch = "from huggingface_hub import hf_hub_download; hf_hub_download('org/run', 'checkpoint-1000/config.json')"
    assert online(hub, hf_cache, fetch).returncode == 0
    asked = len(hub.requests)
    hub.force_status[""] = 503  # every route
    r = online(hub, hf_cache, PLAN_HUB_MODEL, "org/run:checkpoint-1000", str(CHARS))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-2] == f"{CHARS * UNKNOWN_TOKENS_PER_CHAR + UNKNOWN_TEMPLATE_TOKENS} False"
    tokenizer_files = [q["path"] for q in hub.requests[asked:] if "/tokenizer" in q["path"] or q["path"].endswith(".jinja")]
    assert not tokenizer_files
