"""The embedded tiny VLM itself: its tokenizer, chat template, processor and model, and how a training batch is encoded.

A real LLaVA (CLIP vision tower + projector + Llama), about 0.17M parameters, with its own
word-level tokenizer, chat template, image processor and generation config; ``vlm_lab.tiny``
trains it and ``vlm_lab.tiny_checkpoints`` saves it.
"""

from __future__ import annotations

import torch

from vlm_lab import shapes
from vlm_lab.data import Sample
from vlm_lab.generation import chat_messages
from vlm_lab.model_construction import building_models

IMAGE_TOKEN = "<image>"
END_TOKEN = "<|end|>"  # ends every turn; eos for generation
PAD_TOKEN = "<pad>"  # separate from eos so padding is never mistaken for a stop
UNK_TOKEN = "<unk>"
ROLE_TOKENS = ("<|user|>", "<|assistant|>", "<|system|>")
PATCH_SIZE = 8  # 64 / 8 = 8 x 8 = 64 image tokens: fine enough to tell a square from a diamond

# A chat template in the shape real VLM processors use: content is a string or a
# list of {"type": "image"} / {"type": "text", "text": ...} parts. The assistant's answer and its
# end token sit in {% generation %} markers (they render nothing), so return_assistant_tokens_mask
# and assistant-only-loss trainers (TRL) find the tokens to learn.
CHAT_TEMPLATE = (
    "{% macro content(message) %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ content(message) }}<|end|>{% endgeneration %}"
    "{% else %}{{ content(message) }}<|end|>{% endif %}{{ '\\n' }}"  # an expression: trim_blocks eats a newline after a tag
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _vocabulary() -> list[str]:
    words: set[str] = set()
    for color in shapes.COLORS:
        for shape in shapes.SHAPES:
            for text in [*shapes.QUESTIONS.values(), *shapes.answers(color, shape).values()]:
                words.update(_pretokenize(text))
    # a few common words so free-form prompts in the Space are not all <unk>
    words.update("the a an is it what which of in this picture image color shape describe".split())
    return sorted(words)


def _pretokenize(text: str) -> list[str]:
    from tokenizers.pre_tokenizers import Whitespace

    return [w.lower() for w, _ in Whitespace().pre_tokenize_str(text)]


def build_processor():
    """A ``LlavaProcessor`` with a word-level tokenizer built by the ``tokenizers`` library."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import CLIPImageProcessorPil, LlavaProcessor, PreTrainedTokenizerFast

    specials = [PAD_TOKEN, UNK_TOKEN, END_TOKEN, IMAGE_TOKEN, *ROLE_TOKENS]
    vocab = {tok: i for i, tok in enumerate([*specials, *_vocabulary()])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD_TOKEN,
        unk_token=UNK_TOKEN,
        eos_token=END_TOKEN,
        bos_token=None,
        additional_special_tokens=[IMAGE_TOKEN, *ROLE_TOKENS],
        padding_side="left",  # batched generation needs left padding
        model_max_length=128,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": shapes.IMAGE_SIZE},
        crop_size={"height": shapes.IMAGE_SIZE, "width": shapes.IMAGE_SIZE},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS position, dropped by the "default" strategy
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


def build_model(processor, *, seed: int = 0):
    """A freshly initialised tiny ``LlavaForConditionalGeneration`` matching ``processor``."""
    from transformers import CLIPVisionConfig, GenerationConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = processor.tokenizer
    vision = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=shapes.IMAGE_SIZE,  # must equal the processor's crop size
        patch_size=PATCH_SIZE,
        projection_dim=64,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    with building_models("a tiny shapes model"):  # post_init ties weights: not while another thread's load has tie_weights swapped out
        model = LlavaForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        max_new_tokens=8,
        do_sample=False,
    )
    return model


def _training_messages(sample: Sample) -> list[dict]:
    """The user turn (image + question) followed by the assistant's reference answer."""
    return [*chat_messages(sample.prompt), {"role": "assistant", "content": [{"type": "text", "text": sample.reference}]}]


def encode_training_batch(processor, samples: list[Sample]) -> dict[str, torch.Tensor]:
    """Tokenize prompt+answer pairs; labels are masked (-100) everywhere but the answer."""
    full = [processor.apply_chat_template(_training_messages(s), tokenize=False) for s in samples]
    prompts = [processor.apply_chat_template(chat_messages(s.prompt), tokenize=False, add_generation_prompt=True) for s in samples]
    enc = processor(images=[s.image for s in samples], text=full, return_tensors="pt", padding=True)
    # the prompt's length after image-token expansion, to mask everything before the answer
    prompt_enc = processor(images=[s.image for s in samples], text=prompts, padding=False)
    labels = enc["input_ids"].clone()
    labels[enc["attention_mask"] == 0] = -100
    for i, ids in enumerate(prompt_enc["input_ids"]):
        pad = int((enc["attention_mask"][i] == 0).sum())  # left padding
        labels[i, : pad + len(ids)] = -100
    enc["labels"] = labels
    return dict(enc)
