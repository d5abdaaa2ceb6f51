"""LM pre-training inputs: chat conversations with the replies supervised, whole turns only, and
packed batches that hold every example exactly once and give the padded batch's logits and loss."""

from __future__ import annotations

import itertools

import pytest
import torch
from transformers import Qwen3ForCausalLM

from prealign.nano.language import QA
from prealign.nano.pretraining import LM_SIZES, lm_config, pack_lm_batch, pad_lm_batch
from prealign.nano.streams import CorpusStream, encode_conversation
from prealign.nano.tokenizer import nano_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return nano_tokenizer()


@pytest.fixture(scope="module")
def late_examples(tokenizer):
    """Examples from the end of the curriculum (scenes of up to four objects)."""
    return list(CorpusStream(tokenizer, seed=3, total=400))[-64:]


def test_only_replies_and_their_end_tokens_are_supervised_in_the_chat_format(tokenizer):
    qa = QA("what is 2 plus 3?", "5", "text", "arithmetic", "number")
    example = encode_conversation(tokenizer, [qa, qa], max_length=64)
    supervised = example["input_ids"][example["labels"] != -100].tolist()
    assert supervised == [*tokenizer("5", add_special_tokens=False)["input_ids"], tokenizer.eos_token_id] * 2
    # The tokens are the chat template's rendering, as the VLM recipe and the text benchmark see it.
    messages = [{"role": "user", "content": qa.question}, {"role": "assistant", "content": qa.answer}] * 2
    assert (
        example["input_ids"].tolist() == tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]
    )
    one = len(encode_conversation(tokenizer, [qa], max_length=64)["input_ids"])
    assert len(encode_conversation(tokenizer, [qa, qa], max_length=2 * one - 1)["input_ids"]) == one
    with pytest.raises(ValueError, match="longer than max_length"):
        encode_conversation(tokenizer, [qa], max_length=one - 1)


def _sequences(batch: dict[str, torch.Tensor]) -> list[tuple[int, int, int]]:
    """(row, start, end) of every sequence of a packed batch (where position ids restart)."""
    spans = []
    for row, positions in enumerate(batch["position_ids"]):
        starts = [*(positions == 0).nonzero().flatten().tolist(), len(positions)]
        spans += [(row, start, end) for start, end in itertools.pairwise(starts)]
    return spans


def test_packing_keeps_every_example_once_and_cuts_the_padding(tokenizer, late_examples):
    batch = late_examples[:32]
    packed = pack_lm_batch(batch, tokenizer.pad_token_id, row_length=128)
    padded = pad_lm_batch(batch, tokenizer.pad_token_id)
    assert packed["input_ids"].shape[1] <= 128 and "attention_mask" not in packed
    examples = sorted((tuple(e["input_ids"].tolist()), tuple(e["labels"].tolist())) for e in batch)
    pieces = [
        (tuple(packed["input_ids"][r, a:b].tolist()), tuple(packed["labels"][r, a:b].tolist()))
        for r, a, b in _sequences(packed)
    ]
    assert sorted(p for p in pieces if set(p[0]) != {tokenizer.pad_token_id}) == examples
    assert packed["input_ids"].numel() < 0.75 * padded["input_ids"].numel()
    assert int((packed["labels"] != -100).sum()) == int((padded["labels"] != -100).sum())


def test_rows_stretch_to_the_longest_example_rather_than_cut_one(tokenizer, late_examples):
    batch = late_examples[:8]
    packed = pack_lm_batch(batch, tokenizer.pad_token_id, row_length=8)
    assert packed["input_ids"].shape[1] == max(len(e["input_ids"]) for e in batch)
    assert len(_sequences(packed)) >= len(batch)
    assert int((packed["labels"] != -100).sum()) == sum(int((e["labels"] != -100).sum()) for e in batch)


def test_packed_rows_give_each_example_its_padded_logits_and_the_same_loss(tokenizer, late_examples):
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(lm_config(LM_SIZES["tiny"], tokenizer)).eval()
    # As pre-training runs it: with a cache, transformers drops the packed-sequence mask.
    model.config.use_cache = False
    batch = late_examples[:12]
    packed = pack_lm_batch(batch, tokenizer.pad_token_id, row_length=96)
    padded = pad_lm_batch(batch, tokenizer.pad_token_id)
    assert packed["input_ids"].shape[0] < len(batch)  # several examples share a row
    with torch.no_grad():
        packed_out, padded_out = model(**packed), model(**padded)
    torch.testing.assert_close(packed_out.loss, padded_out.loss, rtol=0, atol=1e-5)
    padded_logits = {
        tuple(e["input_ids"].tolist()): padded_out.logits[i, : len(e["input_ids"])]
        for i, e in enumerate(batch)
    }
    compared = 0
    for row, start, end in _sequences(packed):
        key = tuple(packed["input_ids"][row, start:end].tolist())
        if key in padded_logits:
            torch.testing.assert_close(packed_out.logits[row, start:end], padded_logits[key])
            compared += 1
    assert compared == len(batch)  # every example found in a row
