"""Property-based tests over random conversations: what holds for every record, not just fixtures."""

from __future__ import annotations

import json
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prealign.data import IGNORE_INDEX, LlavaDataset, RecordSkipped
from prealign.tiny import tiny_model

TEXT = st.text(alphabet=string.ascii_letters + string.digits + " .,?!:\n'", min_size=1, max_size=30).filter(
    str.strip
)


@st.composite
def conversations(draw):
    """A LLaVA record with 1-3 exchanges, an optional system turn and 0-3 images anywhere in user turns,
    and each image's N (they differ under a native-resolution tower)."""
    turns = []
    if draw(st.booleans()):
        turns.append({"from": "system", "value": draw(TEXT)})
    n_images = 0
    for _ in range(draw(st.integers(1, 3))):
        words = draw(TEXT).split(" ")
        for _ in range(draw(st.integers(0, 3 - n_images))):
            words.insert(draw(st.integers(0, len(words))), "<image>")
            n_images += 1
        turns.append({"from": "human", "value": " ".join(words)})
        turns.append({"from": "gpt", "value": draw(TEXT)})
    record = {"id": "generated", "conversations": turns}
    if n_images:
        record["image"] = [f"{i}.png" for i in range(n_images)]
    return record, draw(st.lists(st.integers(1, 12), min_size=n_images, max_size=n_images))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prop")
    # The dataset only lends its encoder to generated records; its own file holds one text record.
    record = {"id": "r", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    (folder / "one.json").write_text(json.dumps([record]))
    _, processor = tiny_model("dpa")
    return LlavaDataset([folder / "one.json"], processor)


def image_spans(ids: list[int], processor, image_tokens: list[int]) -> list[int]:
    """Start positions of spans; asserts every span is whole, with its own image's N."""
    t = processor.token_ids()
    starts = [i for i, tok in enumerate(ids) if tok == t["image_start_token_id"]]
    for s, n in zip(starts, image_tokens, strict=False):
        assert ids[s + 1 : s + 1 + n] == [t["image_token_id"]] * n
        assert ids[s + 1 + n] == t["image_end_token_id"]
    assert ids.count(t["image_token_id"]) == sum(image_tokens[: len(starts)])
    return starts


@settings(max_examples=80, deadline=None)
@given(conversations())
def test_labels_cover_exactly_the_assistant_turns(dataset, generated):
    record, image_tokens = generated
    processor = dataset.processor
    dataset.max_length = None
    sample = dataset.encode_record(record, "generated.json", "generated", image_tokens)
    supervised = [
        t for t, label in zip(sample.input_ids, sample.labels, strict=True) if label != IGNORE_INDEX
    ]
    for token, label in zip(sample.input_ids, sample.labels, strict=True):
        assert label in (IGNORE_INDEX, token)
    eos = processor.tokenizer.eos_token
    expected = "".join(t["value"] + eos for t in record["conversations"] if t["from"] == "gpt")
    assert processor.tokenizer.decode(supervised) == expected


@settings(max_examples=80, deadline=None)
@given(conversations())
def test_every_placeholder_expands_to_exactly_the_feature_count(dataset, generated):
    record, image_tokens = generated
    dataset.max_length = None
    sample = dataset.encode_record(record, "generated.json", "generated", image_tokens)
    assert len(image_spans(sample.input_ids, dataset.processor, image_tokens)) == len(image_tokens)
    assert sample.image_tokens == image_tokens


@settings(max_examples=120, deadline=None)
@given(conversations(), st.integers(1, 200))
def test_truncation_never_splits_an_image_span(dataset, generated, max_length):
    record, image_tokens = generated
    dataset.max_length = max_length
    try:
        sample = dataset.encode_record(record, "generated.json", "generated", image_tokens)
    except RecordSkipped as skipped:
        assert skipped.kind in ("image_span_cut", "no_supervised_tokens")
        return
    finally:
        dataset.max_length = None
    assert len(sample.input_ids) <= max_length
    spans = image_spans(sample.input_ids, dataset.processor, image_tokens)
    assert len(spans) == len(image_tokens)  # whole spans, none dropped
    assert any(label != IGNORE_INDEX for label in sample.labels)
