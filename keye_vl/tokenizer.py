"""Tokenizers: a byte-level BPE trained offline for the tiny presets, or the public Keye/Qwen3 files.

The tiny tokenizer has every Keye special token at fixed ids 0-19 (so the `keye-tiny` preset can name them
without reading the tokenizer), the reasoning tags as ordinary added tokens (DESIGN.md: decoders that skip
special tokens must keep them), and digits split one per token, as Qwen's pre-tokenizer does, so that
arithmetic is learnable at tiny scale. Training is deterministic: the corpus is generated from a fixed seed.
"""

from __future__ import annotations

import random

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from keye_protocol.chat import REASONING_TAGS

# Order fixes the ids of the tiny tokenizer (0-19); names and roles as in Qwen3 + Keye (KEYE.md).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>",
    "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
    "<|point_start|>", "<|point_end|>", "<|ocr_text_start|>", "<|ocr_text_end|>",
    "<|clip_time_start|>", "<|clip_time_end|>",
]
TINY_IDS = {token: i for i, token in enumerate(SPECIAL_TOKENS)}

# Ids of the public Keye-VL-8B tokenizer (Qwen3 vocabulary plus Keye's additions).
KEYE_8B_IDS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<think>": 151667, "</think>": 151668,
    "<|point_start|>": 151669, "<|point_end|>": 151670, "<|ocr_text_start|>": 151671,
    "<|ocr_text_end|>": 151672, "<|clip_time_start|>": 151673, "<|clip_time_end|>": 151674,
}

TINY_VOCAB_SIZE = 1024  # BPE vocabulary incl. the 20 special tokens; the 8 reasoning tags come on top

_WORDS = (
    "the a an of to in is it that and or not what how many which where who when why find compute count solve "
    "image picture photo video frame object shape circle square triangle red green blue yellow black white "
    "left right top bottom above below inside outside first second third last next number numbers total sum "
    "difference product quotient answer question step steps so then therefore because we have get add subtract "
    "multiply divide equals plus minus times each every box point crop zoom rotate contrast region small large "
    "text read reads shown shows order shuffled frames moving moves apple apples boy girl buys sells has had "
    "more less than there are were after before this these those simple complex needs reasoning directly "
    "carry digit digits result check verify correct wrong look closer detail think answer user assistant system "
    "you can please give final value let us one two three four five six seven eight nine ten hundred"
).split()


def tiny_corpus(n_lines: int = 6000, seed: int = 0) -> list[str]:
    """A deterministic training corpus shaped like what tiny recipes feed the model: chat markup, arithmetic,
    word problems, reasoning tags, LaTeX boxes, grounding coordinates and short Python."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14)))
        kind = rng.randrange(6)
        if kind == 0:
            lines.append(f"What is {a} + {b}? {words}. The answer is \\boxed{{{a + b}}}.")
        elif kind == 1:
            lines.append(f"<think>{a} * {b} = {a * b}. {words}.</think><answer>\\boxed{{{a * b}}}</answer>")
        elif kind == 2:
            x1, y1 = rng.randint(0, 500), rng.randint(0, 500)
            lines.append(f"{words} <|box_start|>[[{x1},{y1},{x1 + a // 2},{y1 + b // 2}]]<|box_end|>")
        elif kind == 3:
            lines.append(f"```python\nimg = image.crop(({a}, {b}, {a + 64}, {b + 64}))\nprint(img.size)\n```\n"
                         f"<sandbox_output>({a}, {b})</sandbox_output>")
        elif kind == 4:
            lines.append(f"<analysis>{words}.</analysis><answer>{a - b}</answer>")
        else:
            lines.append(f"<|im_start|>user\n{words.capitalize()}? /think<|im_end|>\n<|im_start|>assistant\n")
    return lines


def build_tiny_tokenizer(vocab_size: int = TINY_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train the tiny byte-level BPE offline (about a second) and wrap it for transformers."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(tiny_corpus(), trainer=trainer)
    bpe.add_tokens([AddedToken(t, special=False, normalized=False) for t in REASONING_TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer directory (the tiny one we wrote, or the public Keye-VL-8B files), checking that it
    has the vision tokens the model needs."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    missing = [t for t in ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_end|>")
               if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        raise ValueError(f"tokenizer at {path} lacks the Keye tokens {missing}; use the Keye-VL tokenizer files "
                         f"or build one with `posttrain model init --preset keye-tiny`")
    return tokenizer
