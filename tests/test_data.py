"""LLaVA-format data: labels are exactly the assistant turns, image spans stay whole, bad input is named."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from data_fixtures import INSTRUCT, PRETRAIN, assistant_text, write_llava_set
from transformers.trainer_pt_utils import LengthGroupedSampler

from prealign.data import IGNORE_INDEX, DataError, DataSource, LlavaDataset, PrealignCollator, RecordFile
from prealign.tiny import CHATML_TEMPLATE, tiny_model


@pytest.fixture
def dpa():
    return tiny_model("dpa", early_fusion=True)


@pytest.fixture
def llava(tmp_path):
    return write_llava_set(tmp_path)


def supervised_text(sample, processor) -> str:
    ids = [
        t
        for t, label in zip(sample["input_ids"].tolist(), sample["labels"].tolist(), strict=True)
        if label != IGNORE_INDEX
    ]
    return processor.tokenizer.decode(ids)


def image_spans_are_whole(ids: list[int], processor) -> int:
    """Number of spans; asserts each is <image_start> <image>*N <image_end> and nothing else has them."""
    t = processor.token_ids()
    n = processor.num_image_tokens
    starts = [i for i, tok in enumerate(ids) if tok == t["image_start_token_id"]]
    for s in starts:
        assert (
            ids[s + 1 : s + 1 + n] == [t["image_token_id"]] * n and ids[s + 1 + n] == t["image_end_token_id"]
        )
    assert ids.count(t["image_token_id"]) == n * len(starts)
    assert ids.count(t["image_end_token_id"]) == len(starts)
    return len(starts)


def test_labels_decode_to_exactly_the_assistant_turns(llava, dpa):
    _, processor = dpa
    eos = processor.tokenizer.eos_token
    for key, records in (("pretrain", PRETRAIN), ("instruct", INSTRUCT)):
        dataset = LlavaDataset([DataSource(llava[key], llava["images"])], processor)
        assert len(dataset) == len(records)
        for sample, record in zip(dataset, records, strict=True):
            assert supervised_text(sample, processor) == assistant_text(record, eos)
            n_images = (
                len(record["image"]) if isinstance(record.get("image"), list) else int("image" in record)
            )
            assert image_spans_are_whole(sample["input_ids"].tolist(), processor) == n_images
            assert sample["num_images"] == n_images
            if n_images:
                assert sample["pixel_values"].shape == (n_images, 3, 32, 32)


def test_labels_agree_with_the_templates_own_assistant_mask(dpa):
    """Where a template marks assistant turns ({% generation %}), our labels are exactly that mask."""
    _, processor = dpa
    tok = processor.tokenizer
    for record in INSTRUCT:
        messages = [
            {"role": {"human": "user", "gpt": "assistant"}.get(t["from"], t["from"]), "content": t["value"]}
            for t in record["conversations"]
        ]
        from prealign.data.encoding import encode_chat

        ids, labels = encode_chat(messages, processor)
        out = tok.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        assert ids == out["input_ids"]
        assert [label != IGNORE_INDEX for label in labels] == [bool(m) for m in out["assistant_masks"]]


def test_labels_do_not_need_generation_markers_in_the_template(llava, dpa):
    """Real templates (Qwen3, LLaMA-3) have no {% generation %}; labels must come out the same."""
    _, processor = dpa
    source = DataSource(llava["instruct"], llava["images"])
    with_markers = [s["labels"] for s in LlavaDataset([source], processor)]
    processor.tokenizer.chat_template = CHATML_TEMPLATE.replace("{% generation %}", "").replace(
        "{% endgeneration %}", ""
    )
    without = [s["labels"] for s in LlavaDataset([source], processor)]
    assert all(torch.equal(a, b) for a, b in zip(with_markers, without, strict=True))


def test_a_user_turn_containing_the_reply_is_not_mistaken_for_it(tmp_path, dpa):
    _, processor = dpa
    record = {
        "id": "r",
        "conversations": [
            {"from": "human", "value": "Answer yes or no: is it red?"},
            {"from": "gpt", "value": "yes"},
        ],
    }
    (tmp_path / "d.json").write_text(json.dumps([record]))
    sample = LlavaDataset([tmp_path / "d.json"], processor)[0]
    labelled = [i for i, label in enumerate(sample["labels"].tolist()) if label != IGNORE_INDEX]
    user_end = processor.tokenizer.decode(sample["input_ids"][: labelled[0]].tolist())
    assert "Answer yes or no: is it red?" in user_end  # every supervised token comes after the user turn
    assert supervised_text(sample, processor) == "yes" + processor.tokenizer.eos_token


def test_a_template_that_renders_history_otherwise_still_labels_every_reply(llava, dpa):
    """Once rejected as "not prefix-consistent" (every multi-turn Qwen3 record was lost): a template
    whose rendering of the first turns is not a prefix of the whole still labels each reply."""
    _, processor = dpa
    processor.tokenizer.chat_template = "{{ messages|length }} turns:" + CHATML_TEMPLATE
    dataset = LlavaDataset([DataSource(llava["instruct"], llava["images"])], processor)
    eos = processor.tokenizer.eos_token
    for sample, record in zip(dataset, INSTRUCT, strict=True):
        assert supervised_text(sample, processor) == assistant_text(record, eos)


def test_stage1_plain_format_supervises_only_the_caption(llava, dpa):
    _, processor = dpa
    dataset = LlavaDataset([DataSource(llava["pretrain"], llava["images"])], processor, prompt_format="plain")
    collate = PrealignCollator(processor)
    for sample, record in zip(dataset, PRETRAIN, strict=True):
        caption = record["conversations"][1]["value"]
        assert supervised_text(sample, processor) == caption + processor.tokenizer.eos_token
        text = processor.tokenizer.decode(sample["input_ids"].tolist(), skip_special_tokens=True)
        assert "summary" not in text  # the plain format drops the prompt
        perceiver = processor.tokenizer.decode(collate([sample])["perceiver_input_ids"][0].tolist())
        assert caption not in perceiver  # the perceiver never sees the caption


def test_early_fusion_perceiver_reads_the_first_instruction_before_the_image(llava, dpa):
    _, processor = dpa
    dataset = LlavaDataset([DataSource(llava["instruct"], llava["images"])], processor)
    batch = PrealignCollator(processor)([dataset[0]])
    ids = batch["perceiver_input_ids"][0][batch["perceiver_attention_mask"][0].bool()].tolist()
    start = processor.token_ids()["perceiver_image_start_token_id"]
    before_image = processor.tokenizer.decode(ids[: ids.index(start)])
    assert before_image == "What are the colors of the bus in the image?"


def test_collated_batch_trains_the_model(llava, dpa):
    model, processor = dpa
    sources = [DataSource(llava["pretrain"], llava["images"]), DataSource(llava["instruct"], llava["images"])]
    dataset = LlavaDataset(sources, processor)
    batch = PrealignCollator(processor)([dataset[i] for i in range(len(dataset))])
    assert batch["pixel_values"].shape[0] == 2 + 1 + 0 + 2
    assert batch["perceiver_input_ids"].shape[0] == 5
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    loss = model(**batch).loss
    loss.backward()
    assert torch.isfinite(loss) and model.model.aligner[0].weight.grad.abs().sum() > 0


def test_left_padding_for_generation(llava, dpa):
    _, processor = dpa
    dataset = LlavaDataset([DataSource(llava["instruct"], llava["images"])], processor)
    batch = PrealignCollator(processor, padding_side="left")([dataset[0], dataset[1]])
    assert batch["attention_mask"][:, -1].all() and not batch["attention_mask"][1, 0]


def test_mixing_weights_repeat_and_subsample(llava, dpa):
    _, processor = dpa
    dataset = LlavaDataset(
        [
            DataSource(llava["pretrain"], llava["images"], weight=2),
            DataSource(llava["instruct"], weight=1 / 3),
        ],
        processor,
    )
    assert len(dataset) == 2 * len(PRETRAIN) + 1


def test_jsonl_is_read_lazily(tmp_path):
    lines = [json.dumps(r) for r in INSTRUCT] + ["{not json"]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    records = RecordFile(tmp_path / "d.jsonl")
    assert len(records) == 4 and records[2]["id"] == "multi_image_1"
    with pytest.raises(DataError, match=r"d.jsonl: record #3: field '-': invalid JSON line"):
        records[3]


def test_approximate_lengths_drive_length_grouped_batches(llava, dpa):
    _, processor = dpa
    dataset = LlavaDataset([DataSource(llava["instruct"], llava["images"])], processor)
    estimated = dataset.approximate_lengths()
    real = [len(dataset[i]["input_ids"]) for i in range(len(dataset))]
    assert sorted(range(3), key=estimated.__getitem__) == sorted(range(3), key=real.__getitem__)
    sampler = LengthGroupedSampler(batch_size=2, lengths=estimated)
    assert sorted(sampler) == list(range(len(dataset)))


def test_kept_samples_equal_fresh_ones_and_later_epochs_read_no_file(llava, dpa):
    _, processor = dpa
    source = DataSource(llava["pretrain"], llava["images"])
    fresh = LlavaDataset([source], processor)
    expected = [fresh[i] for i in range(len(fresh))]
    kept = LlavaDataset([source], processor, keep_in_memory=True)
    [kept[i] for i in range(len(kept))]
    shutil.rmtree(llava["images"])
    llava["pretrain"].unlink()
    for i, sample in enumerate(expected):
        again = kept[i]
        assert again.keys() == sample.keys()
        for key, value in sample.items():
            assert torch.equal(again[key], value) if torch.is_tensor(value) else again[key] == value
    assert kept.stats["ok"] == 2 * len(PRETRAIN)
