"""Endless seeded streams of nano-world training examples for backbone pre-training.

Scenes are drawn on the fly, so pre-training never repeats an example; a curriculum raises the
number of objects per scene as training goes (few objects first).
"""

from __future__ import annotations

import random

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .language import QA, as_messages, caption, corpus_conversation
from .scenes import IMAGE_SIZE, render, sample_scene


class _SeededStream(IterableDataset):
    def __init__(self, seed: int, total: int, max_objects: int = 4):
        self.seed, self.total, self.max_objects = seed, total, max_objects

    def _examples(self):
        worker = get_worker_info()
        wid, workers = (worker.id, worker.num_workers) if worker else (0, 1)
        rng = random.Random(f"{self.seed}/{wid}")
        for index in range(wid, self.total, workers):
            # Curriculum: the cap on objects grows from 1 to max_objects over the first 60% of the stream.
            progress = min(1.0, index / max(1, 0.6 * self.total))
            cap = 1 + round(progress * (self.max_objects - 1))
            yield rng, cap

    def __len__(self) -> int:
        return self.total


class CorpusStream(_SeededStream):
    """Chat conversations (`corpus_conversation`) in the tokenizer's chat template; the LM loss is
    on the assistant turns (answers and descriptions, with their end-of-turn token).

    The user turns hold random scenes, which no model can predict: a loss there would spend the
    small model's capacity on noise. One conversation turn per scene is the default: asking six
    per sequence supervises more answers per step, but at equal compute a 1M-parameter LM learned
    far less (fewer scenes seen).
    """

    def __init__(
        self,
        tokenizer,
        seed: int,
        total: int,
        max_objects: int = 4,
        max_length: int = 192,
        questions_per_sequence: int = 1,
    ):
        super().__init__(seed, total, max_objects)
        self.tokenizer, self.max_length = tokenizer, max_length
        self.questions_per_sequence = questions_per_sequence

    def __iter__(self):
        for rng, cap in self._examples():
            turns = corpus_conversation(rng, cap, self.questions_per_sequence)
            yield encode_conversation(self.tokenizer, turns, self.max_length)


def encode_conversation(tokenizer, turns: list[QA], max_length: int) -> dict[str, torch.Tensor]:
    """Ids of the conversation in the chat template, labels on the assistant turns; whole turns
    up to max_length."""
    for n in range(len(turns), 0, -1):
        encoded = tokenizer.apply_chat_template(
            as_messages(turns[:n]), tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        if len(encoded["input_ids"]) <= max_length:
            break
    else:
        raise ValueError(f"one turn is longer than max_length={max_length}: {turns[0].question!r}")
    ids = torch.tensor(encoded["input_ids"])
    mask = torch.tensor(encoded["assistant_masks"], dtype=torch.bool)
    return {"input_ids": ids, "labels": torch.where(mask, ids, -100)}


def encode_qa(tokenizer, qa: QA, max_length: int = 512) -> dict[str, torch.Tensor]:
    """One question and its answer, as evaluation asks it."""
    return encode_conversation(tokenizer, [qa], max_length)


class CaptionStream(_SeededStream):
    """(image, caption) pairs for contrastive pre-training of the vision tower."""

    def __init__(
        self,
        image_processor,
        tokenizer,
        seed: int,
        total: int,
        image_size: int = IMAGE_SIZE,
        max_objects: int = 4,
        text_length: int = 48,
    ):
        super().__init__(seed, total, max_objects)
        self.image_processor, self.tokenizer = image_processor, tokenizer
        self.image_size, self.text_length = image_size, text_length

    def __iter__(self):
        for rng, cap in self._examples():
            scene = sample_scene(rng, max_objects=cap)
            yield self.encode(render(scene, self.image_size), caption(scene))

    def encode(self, image, text: str) -> dict[str, torch.Tensor]:
        # SigLIP's text tower pools the last position, so texts are padded to one fixed length.
        ids = self.tokenizer(
            text, add_special_tokens=False, padding="max_length", truncation=True, max_length=self.text_length
        )["input_ids"]
        pixels = self.image_processor(image, return_tensors="pt")["pixel_values"][0]
        return {"input_ids": torch.tensor(ids), "pixel_values": pixels}
