"""The nano tokenizer: a word-level vocabulary of the nano world's closed language."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ..chat_template import CHATML_TEMPLATE
from .language import (
    ARITHMETIC_MAX,
    CAPTION_PROMPTS,
    CELL_WORDS,
    FACTS,
    LETTERS,
    NUMBER_WORDS,
    SCENE_END,
    SCENE_START,
    caption,
    scene_question,
    text_scene_question,
)
from .scenes import sample_scene

SPECIAL_TOKENS = [
    "<|pad|>",
    "<|unk|>",
    "<|im_start|>",
    "<|im_end|>",
    "<image>",
    "<image_start>",
    "<image_end>",
]
CHAT_ROLES = ["system", "user", "assistant"]


def nano_tokenizer() -> PreTrainedTokenizerFast:
    """The nano world's tokenizer: the same ids for every seed and data size, so the shipped
    backbones read any generated data set. Every word of the closed language is one token."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="<|unk|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1, show_progress=False)
    tokenizer.train_from_iterator(sorted(_vocabulary()), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        eos_token="<|im_end|>",
        chat_template=CHATML_TEMPLATE,
    )


def _vocabulary() -> set[str]:
    """Every word the language generators can write: the closed sets, plus a fixed sample of
    every sentence template (checked against the written data by `check_vocabulary`)."""
    rng = random.Random("vocabulary")
    texts = [*CHAT_ROLES, *CAPTION_PROMPTS, *(q + " " + a for q, a in FACTS), *NUMBER_WORDS, *LETTERS]
    texts += [SCENE_START, SCENE_END, *CELL_WORDS]
    texts += [
        f"what is {a} plus {b}? {a + b}" for a in range(ARITHMETIC_MAX + 1) for b in range(ARITHMETIC_MAX + 1)
    ]
    for _ in range(2000):
        scene, distractors = sample_scene(rng), [sample_scene(rng) for _ in range(3)]
        texts.append(caption(scene))
        for qa in (text_scene_question(scene, rng), scene_question(scene, rng, distractors)):
            texts += [qa.question, qa.answer]
    words: set[str] = set()
    for text in texts:
        words.update(word for word, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text))
    return words


def check_vocabulary(tokenizer, texts: Iterable[str]) -> None:
    """Fail loudly if a generator wrote a word the tokenizer would turn into <|unk|>."""
    for text in texts:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        for token, (begin, end) in zip(encoded["input_ids"], encoded["offset_mapping"], strict=True):
            if token == tokenizer.unk_token_id:
                raise ValueError(
                    f"the nano tokenizer has no token for {text[begin:end]!r} (in {text[:80]!r})"
                )


def nano_texts(paths: dict[str, Path]) -> list[str]:
    """All text the builder wrote: corpus lines, conversation turns, benchmark questions and answers."""
    texts = [
        message["content"]
        for line in paths["corpus"].read_text().splitlines()
        for message in json.loads(line)["messages"]
    ]
    for key in ("pretrain", "instruct"):
        for record in json.loads(paths[key].read_text()):
            texts += [turn["value"] for turn in record["conversations"]]
    for key in (k for k in paths if k.startswith("bench_")):
        for item in json.loads(paths[key].read_text()):
            texts += [item["question"], item["answer"]]
    return texts
