"""The LM pre-training stream: answers supervised, whole segments only, and length buckets that
keep every example while cutting the padding."""

from __future__ import annotations

import random

import pytest
import torch

from prealign.data.nano.language import QA
from prealign.data.nano.streams import CorpusStream, encode_qa_sequence, in_length_buckets
from prealign.data.nano.tokenizer import nano_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return nano_tokenizer()


def _padded_tokens(examples: list[dict], batch_size: int) -> int:
    runs = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    return sum(len(run) * max(len(e["input_ids"]) for e in run) for run in runs)


def test_only_answers_and_end_tokens_are_supervised(tokenizer):
    qa = QA("what is 2 plus 3?", "5", "text", "arithmetic", "number")
    example = encode_qa_sequence(tokenizer, [qa, qa], max_length=64)
    supervised = example["input_ids"][example["labels"] != -100].tolist()
    assert supervised == [*tokenizer("5", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id] * 2
    one = len(encode_qa_sequence(tokenizer, [qa], max_length=64)["input_ids"])
    assert len(encode_qa_sequence(tokenizer, [qa, qa], max_length=2 * one - 1)["input_ids"]) == one


def test_length_buckets_keep_every_example_and_cut_the_padding(tokenizer):
    batch, total = 8, 8 * 40 + 5  # two full pools of 16 batches and a ragged rest
    plain = list(CorpusStream(tokenizer, seed=3, total=total))
    bucketed = list(CorpusStream(tokenizer, seed=3, total=total, batch_size=batch))
    assert sorted(tuple(e["input_ids"].tolist()) for e in bucketed) == sorted(
        tuple(e["input_ids"].tolist()) for e in plain
    )
    assert _padded_tokens(bucketed, batch) < 0.8 * _padded_tokens(plain, batch)
    again = list(CorpusStream(tokenizer, seed=3, total=total, batch_size=batch))
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(again, bucketed, strict=True))


def test_length_buckets_sort_within_pools_and_shuffle_their_batches():
    examples = [{"input_ids": torch.zeros(n)} for n in random.Random(0).choices(range(1, 50), k=64)]
    out = list(in_length_buckets(iter(examples), batch_size=4, rng=random.Random(1), pool_batches=8))
    pools = [out[:32], out[32:]]
    for pool, source in zip(pools, (examples[:32], examples[32:]), strict=True):
        assert sorted(len(e["input_ids"]) for e in pool) == sorted(len(e["input_ids"]) for e in source)
        firsts = [len(pool[i]["input_ids"]) for i in range(0, 32, 4)]
        assert firsts != sorted(firsts)  # batches shuffled, not longest last
        for start in range(0, 32, 4):
            lengths = [len(e["input_ids"]) for e in pool[start : start + 4]]
            assert lengths == sorted(lengths)
