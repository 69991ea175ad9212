"""Processor loads of a comparison, with and without sharing them (``vlm_lab.processor_memo``).

Counts the ``AutoProcessor.from_pretrained`` calls, and the seconds spent in them, of:
- ``compare``: a comparison of 3 checkpoints into a fresh model cache (the context check, then each model's load);
- ``again``: the same comparison into the cache that now holds the models (a notebook's shared cache, re-run);
- ``space``: the 3 checkpoints loaded one by one into a model cache (what the Space and the explorer do).
``unshared`` loads every processor it is asked for (as before ``processor_memo``); ``shared`` is the code as it is.

Sets (``--model``): ``shapes``, the embedded checkpoints 250/500/1000 (one run: one processor); ``wide``, the
three ~6M-parameter random LLaVAs of ``compare_throughput.py`` (the shapes processor files, one config), whose
34-token tokenizer loads faster than a real VLM's; ``vocab32k``, three random LLaVAs as wide, with a byte-level
BPE tokenizer of 32,000 tokens (Llama 2's and LLaVA-1.5's size), built here: a load closer to a real VLM's.

Usage: python bench/processor_loads.py [--model shapes wide vocab32k] [--samples 16]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_throughput import ROOT, ensure_checkpoints, wide_size  # noqa: E402


@contextlib.contextmanager
def counted_loads(shared: bool):
    """``AutoProcessor.from_pretrained`` calls in the block, as a list of seconds; ``shared=False``: no memo."""
    import transformers

    from vlm_lab import processor_memo

    seconds: list[float] = []
    real = transformers.AutoProcessor.from_pretrained.__func__
    memo = processor_memo.shared_processor

    def timed(cls, *args, **kwargs):
        start = time.perf_counter()
        try:
            return real(cls, *args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    transformers.AutoProcessor.from_pretrained = classmethod(timed)
    if not shared:
        processor_memo.shared_processor = lambda ref, load: load()
    try:
        yield seconds
    finally:
        transformers.AutoProcessor.from_pretrained = classmethod(real)
        processor_memo.shared_processor = memo


def ensure_vocab32k() -> list[Path]:
    """Three random LLaVAs (seeds 0-2, the ``wide`` size) sharing a 32k-token byte-level BPE tokenizer (built once)."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import CLIPImageProcessorPil, GenerationConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers import PreTrainedTokenizerFast

    from vlm_lab import memory_synthetic, shapes, tiny_model

    outs = [ROOT / ".cache" / "bench" / f"llava-vocab32k-{seed}" for seed in range(3)]
    if all((out / "config.json").is_file() for out in outs):
        return outs
    specials = [tiny_model.PAD_TOKEN, tiny_model.UNK_TOKEN, tiny_model.END_TOKEN, tiny_model.IMAGE_TOKEN, *tiny_model.ROLE_TOKENS]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate([*specials, *alphabet])}
    merges, tokens, draw = [], list(alphabet), random.Random(0)
    while len(vocab) < 32000:  # random merges of tokens already there: a valid BPE of a real tokenizer's size
        a, b = draw.choice(tokens), draw.choice(tokens)
        if len(a + b) <= 10 and a + b not in vocab:
            vocab[a + b] = len(vocab)
            merges.append((a, b))
            tokens.append(a + b)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token=tiny_model.PAD_TOKEN, unk_token=tiny_model.UNK_TOKEN,
                                        eos_token=tiny_model.END_TOKEN, bos_token=None, padding_side="left",
                                        additional_special_tokens=[tiny_model.IMAGE_TOKEN, *tiny_model.ROLE_TOKENS])
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": shapes.IMAGE_SIZE},
                                            crop_size={"height": shapes.IMAGE_SIZE, "width": shapes.IMAGE_SIZE})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=tiny_model.PATCH_SIZE,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=tiny_model.CHAT_TEMPLATE, image_token=tiny_model.IMAGE_TOKEN)
    config = memory_synthetic.llava_config(wide_size(), vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                           image_token_id=tokenizer.convert_tokens_to_ids(tiny_model.IMAGE_TOKEN))
    config.text_config.eos_token_id = tokenizer.eos_token_id
    for seed, out in enumerate(outs):
        with memory_synthetic._seeded(seed):
            model = LlavaForConditionalGeneration(config)
        model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                                   bos_token_id=None)
        memory_synthetic._save(out, model, processor)
    return outs


def run(paths: list[Path], shared: bool, samples: int) -> dict[str, tuple[int, float]]:
    """Per scenario: (loads, seconds in them)."""
    from vlm_lab.compare import compare
    from vlm_lab.config import CompareConfig
    from vlm_lab.model_cache import ModelCache

    out: dict[str, tuple[int, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = CompareConfig(checkpoints=tuple(map(str, paths)), data=f"shapes:val:{samples}", batch_size=samples,
                               max_new_tokens=4, device="cpu", output_dir=tmp, use_cache=False)
        cache = ModelCache(budget_bytes="4GB")
        for scenario in ("compare", "again"):
            with counted_loads(shared) as seconds, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # answers cut off at max_new_tokens: only the loads count here
                compare(config, progress=False, cache=cache)
            out[scenario] = (len(seconds), sum(seconds))
        del cache
        gc.collect()  # nothing from the comparisons is alive: the space scenario starts cold
        space = ModelCache(budget_bytes="4GB")
        with counted_loads(shared) as seconds:
            for path in paths:
                space.get(path, device="cpu")
        out["space"] = (len(seconds), sum(seconds))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", choices=("shapes", "wide", "vocab32k"), default=["shapes", "wide", "vocab32k"])
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    from vlm_lab.cpu_kernels import pin_cpu_kernels

    pin_cpu_kernels()
    for model in args.model:
        paths = ensure_vocab32k() if model == "vocab32k" else ensure_checkpoints(model)
        run(paths, True, args.samples)  # warm-up: imports, first generate, file-digest memo
        results = {shared: run(paths, shared, args.samples) for shared in (False, True)}
        print(f"\n{model}: {len(paths)} checkpoints, {args.samples} samples")
        print(f"{'scenario':<9} {'unshared loads':>14} {'s':>7}   {'shared loads':>12} {'s':>7}   saved s")
        for scenario in ("compare", "again", "space"):
            (n0, s0), (n1, s1) = results[False][scenario], results[True][scenario]
            print(f"{scenario:<9} {n0:>14} {s0:>7.3f}   {n1:>12} {s1:>7.3f}   {s0 - s1:>7.3f}")
        loads = [s0 / n0 for n0, s0 in results[False].values() if n0]
        print(f"one load: {1000 * sum(loads) / len(loads):.1f} ms (mean over the unshared scenarios)")


if __name__ == "__main__":
    main()
