"""The nano tokenizer: a word-level vocabulary of the nano world's closed language."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from ...chat_template import CHATML_TEMPLATE

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


def train_nano_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """Every word of `texts` (and the chat roles) becomes one token; nothing is ever split."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="<|unk|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1, show_progress=False)
    tokenizer.train_from_iterator([*CHAT_ROLES, *texts], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<|pad|>",
        unk_token="<|unk|>",
        eos_token="<|im_end|>",
        chat_template=CHATML_TEMPLATE,
    )


def nano_texts(paths: dict[str, Path]) -> list[str]:
    """All text the builder wrote: corpus lines, conversation turns, benchmark questions and answers."""
    texts = paths["corpus"].read_text().splitlines()
    for key in ("pretrain", "instruct"):
        for record in json.loads(paths[key].read_text()):
            texts += [turn["value"] for turn in record["conversations"]]
    for key in (k for k in paths if k.startswith("bench_")):
        for item in json.loads(paths[key].read_text()):
            texts += [item["question"], item["answer"]]
    return texts
