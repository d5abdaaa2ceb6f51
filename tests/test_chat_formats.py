"""The published chat formats of the LMs our configs name (Qwen3, LLaMA-3.2-Instruct, Qwen2.5-VL,
SmolLM2), on tiny tokenizers with the real special tokens and templates (tests/fixtures): every
reply is supervised exactly once and nothing else is, and inference sends what training showed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_fixtures import write_images

from prealign.data import IGNORE_INDEX, DataSource, LlavaDataset
from prealign.data.encoding import encode_chat
from prealign.processing import PrealignProcessor
from prealign.tiny import tiny_image_processor, tiny_tokenizer

TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"
CHATML = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
FORMATS = {  # the special tokens and end-of-turn token each model's tokenizer_config.json names
    "qwen3": dict(
        special_tokens=CHATML,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        added_tokens=("<think>", "</think>"),
    ),
    "qwen2_5_vl": dict(
        special_tokens=(*CHATML, "<|vision_start|>", "<|image_pad|>", "<|vision_end|>"),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    ),
    "llama3_2_instruct": dict(
        special_tokens=(
            "<|begin_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
            "<|finetune_right_pad_id|>",
        ),
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        bos_token="<|begin_of_text|>",
    ),
    "smollm2_instruct": dict(special_tokens=CHATML, eos_token="<|im_end|>", pad_token="<|endoftext|>"),
}


def published_processor(name: str, **settings) -> PrealignProcessor:
    tokenizer = tiny_tokenizer(chat_template=(TEMPLATES / f"{name}.jinja").read_text(), **FORMATS[name])
    return PrealignProcessor(tiny_image_processor(), tokenizer, num_image_tokens=3, **settings)


SINGLE = [
    {"role": "user", "content": "<image>\nWhat colour is the bus?"},
    {"role": "assistant", "content": "The bus is red."},
]
MULTI = [
    {"role": "user", "content": "<image>\nWhat colour is the bus?"},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "How many wheels can you see?"},
    {"role": "assistant", "content": "Four wheels."},
    {"role": "user", "content": "Answer yes or no: is it parked?"},
    {"role": "assistant", "content": "yes"},
]
SYSTEM = [{"role": "system", "content": "You answer briefly."}, *MULTI[:4]]
LATER_IMAGE = [
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi, how can I help?"},
    {"role": "user", "content": "<image>\nDescribe this picture."},
    {"role": "assistant", "content": "A red bus in a street."},
]
CONVERSATIONS = {"single": SINGLE, "multi": MULTI, "system": SYSTEM, "later_image": LATER_IMAGE}


def supervised_runs(ids: list[int], labels: list[int]) -> list[list[int]]:
    runs, run = [], []
    for token, label in zip(ids, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            run.append(token)
        elif run:
            runs, run = [*runs, run], []
    return [*runs, run] if run else runs


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("name", FORMATS)
def test_every_reply_is_supervised_once_with_its_end_of_turn_and_nothing_else(name, conversation):
    processor = published_processor(name)
    messages = CONVERSATIONS[conversation]
    ids, labels = encode_chat(messages, processor)
    tokenizer = processor.tokenizer
    replies = [m["content"] + tokenizer.eos_token for m in messages if m["role"] == "assistant"]
    assert [tokenizer.decode(run) for run in supervised_runs(ids, labels)] == replies


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("name", FORMATS)
def test_the_inference_prompt_is_the_training_prefix_of_the_reply(name, conversation):
    """What `prealign eval`, chat, serve and the lmms-eval adapter send (`apply_chat_template`) is,
    token for token, what training put before each reply - Qwen3's too, whose template renders
    earlier replies otherwise once later turns follow (`prealign.chat_rendering`)."""
    processor = published_processor(name)
    messages = CONVERSATIONS[conversation]
    ids, labels = encode_chat(messages, processor)
    starts = [
        i for i in range(len(ids)) if labels[i] != IGNORE_INDEX and (i == 0 or labels[i - 1] == IGNORE_INDEX)
    ]
    replies = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for turn in replies:
        prompt = processor.apply_chat_template(messages[:turn])
        prompt_ids = processor.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        assert ids[: starts[replies.index(turn)]] == prompt_ids, (name, conversation, turn)


def test_qwen3_prefills_the_empty_thinking_block_as_prompt_not_label():
    processor = published_processor("qwen3")
    prompt = processor.apply_chat_template(SINGLE[:1])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    ids, labels = encode_chat(SINGLE, processor)
    supervised = processor.tokenizer.decode(
        [t for t, label in zip(ids, labels, strict=True) if label != -100]
    )
    assert "<think>" not in supervised and "</think>" not in supervised


def test_qwen3_thinking_mode_supervises_the_reasoning_the_model_writes():
    processor = published_processor("qwen3", thinking=True)
    reasoned = [
        SINGLE[0],
        {"role": "assistant", "content": "<think>\nIt looks red.\n</think>\n\nThe bus is red."},
    ]
    assert processor.apply_chat_template(SINGLE[:1]).endswith("<|im_start|>assistant\n")
    ids, labels = encode_chat(reasoned, processor)
    [run] = supervised_runs(ids, labels)
    assert processor.tokenizer.decode(run) == "<think>\nIt looks red.\n</think>\n\nThe bus is red.<|im_end|>"


def test_the_system_prompt_setting_opens_training_and_inference_alike():
    processor = published_processor("qwen3", system_prompt="You are a helpful assistant.")
    prompt = processor.apply_chat_template(SINGLE[:1])
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    ids, labels = encode_chat(SINGLE, processor)
    start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    assert processor.tokenizer.decode(ids[:start]) == prompt
    own = [{"role": "system", "content": "Be terse."}, *SINGLE]  # a record's own system turn wins
    assert "helpful" not in processor.apply_chat_template(own[:2])


def test_answers_are_decoded_without_reasoning_scaffolding():
    processor = published_processor("qwen3")
    assert processor.answer_text("<think>\n\n</think>\n\nRed.") == "Red."
    assert processor.answer_text("Red.") == "Red."
    assert (
        published_processor("qwen3", thinking=True)
        .answer_text("<think>\nhm\n</think>\n\nRed.")
        .startswith("<think>")
    )


def test_a_multi_turn_qwen3_record_trains_with_every_reply_and_an_image_span_whole(tmp_path):
    write_images(tmp_path)
    record = {
        "id": "bus",
        "image": "coco/000000033471.jpg",
        "conversations": [
            {"from": {"user": "human", "assistant": "gpt"}[m["role"]], "value": m["content"]} for m in MULTI
        ],
    }
    (tmp_path / "multi.json").write_text(json.dumps([record]))
    processor = published_processor("qwen3")
    [sample] = list(LlavaDataset([DataSource(tmp_path / "multi.json", tmp_path)], processor))
    ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
    decoded = [processor.tokenizer.decode(run) for run in supervised_runs(ids, labels)]
    assert decoded == ["Red.<|im_end|>", "Four wheels.<|im_end|>", "yes<|im_end|>"]
    image = processor.token_ids()["image_token_id"]
    assert ids.count(image) == 3
    last_start = max(
        i for i in range(len(ids)) if labels[i] != IGNORE_INDEX and labels[i - 1] == IGNORE_INDEX
    )
    inference = processor(text=[processor.apply_chat_template(MULTI[:5])], images=[sample_image(tmp_path)])
    assert inference["input_ids"][0].tolist() == ids[:last_start]


def sample_image(root):
    from PIL import Image

    return Image.open(root / "coco/000000033471.jpg")


def test_a_template_that_drops_a_reply_cannot_be_labelled_and_says_so():
    processor = published_processor("smollm2_instruct")
    processor.tokenizer.chat_template = (
        "{% for m in messages %}{% if not (m.role == 'assistant' and not loop.last) %}"
        "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(ValueError, match="does not render reply 1 exactly once"):
        encode_chat(MULTI, processor)


def test_template_variables_pin_what_a_template_reads_from_the_clock():
    """LLaMA-3.2's template writes today's date into every prompt; pinned, training and inference
    render the same system block on any day."""
    today = published_processor("llama3_2_instruct").apply_chat_template(SINGLE[:1])
    pinned = published_processor("llama3_2_instruct", template_variables={"date_string": "26 Jul 2024"})
    prompt = pinned.apply_chat_template(SINGLE[:1])
    assert "Today Date: 26 Jul 2024\n" in prompt and prompt != today
    ids, labels = encode_chat(SINGLE, pinned)
    start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    assert pinned.tokenizer.decode(ids[:start]) == prompt


def test_data_check_over_a_qwen3_multi_turn_file_loses_no_record_and_counts_what_is_supervised(
    tmp_path, capsys
):
    from prealign.cli import main

    write_images(tmp_path)
    to_llava = {"user": "human", "assistant": "gpt", "system": "system"}
    records = [
        {
            "id": name,
            **({"image": "coco/000000033471.jpg"} if name != "later" else {"image": "00223/002239345.jpg"}),
            "conversations": [{"from": to_llava[m["role"]], "value": m["content"]} for m in messages],
        }
        for name, messages in (("multi", MULTI), ("system", SYSTEM), ("later", LATER_IMAGE))
    ]
    (tmp_path / "qwen3.json").write_text(json.dumps(records))
    processor = published_processor("qwen3")
    processor.save_pretrained(tmp_path / "processor")
    data = tmp_path / "qwen3.json"
    args = [
        "data",
        "check",
        str(data),
        "--image-root",
        str(tmp_path),
        "--tokenizer",
        str(tmp_path / "processor"),
    ]
    assert main(args) == 0
    assert "supervised replies 7" in capsys.readouterr().out
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["errors"]["template_mismatch"] == 0 and report["usable"] == 3
    samples = list(LlavaDataset([DataSource(data, tmp_path)], processor))
    tokens = sum(int((sample["labels"] != IGNORE_INDEX).sum()) for sample in samples)
    assert report["files"][str(data)] == {
        "records": 3,
        "usable": 3,
        "replies": 7,
        "supervised_replies": 7,
        "supervised_tokens": tokens,
    }


def test_a_multi_turn_qwen3_record_trains_through_prealign_train_with_every_reply_labelled(tmp_path):
    import yaml

    from prealign import PrealignForConditionalGeneration
    from prealign.cli import main
    from prealign.tiny import tiny_causal_lm, tiny_vision_tower

    write_images(tmp_path)
    to_llava = {"user": "human", "assistant": "gpt"}
    record = {
        "id": "bus",
        "image": "coco/000000033471.jpg",
        "conversations": [{"from": to_llava[m["role"]], "value": m["content"]} for m in MULTI],
    }
    (tmp_path / "multi.json").write_text(json.dumps([record, {**record, "id": "bus2"}]))
    processor = published_processor("qwen3")
    model = PrealignForConditionalGeneration.from_parts(
        tiny_vision_tower(),
        tiny_causal_lm(vocab_size=len(processor.tokenizer), hidden_size=48),
        tiny_causal_lm(vocab_size=len(processor.tokenizer)),
        processor=processor,
    )
    model.save_pretrained(tmp_path / "start")
    processor.save_pretrained(tmp_path / "start")
    config = {
        "stage": "finetune",
        "output_dir": str(tmp_path / "run"),
        "model": {"checkpoint": str(tmp_path / "start")},
        "data": {
            "files": [{"path": str(tmp_path / "multi.json"), "image_root": str(tmp_path)}],
            "prompt_format": "chat",
        },
        "max_steps": 2,
        "per_device_batch_size": 2,
        "global_batch_size": 2,
        "learning_rate": 1e-2,
        "logging_steps": 1,
        "save_steps": 1000,
        "group_by_length": False,
        "warmup_ratio": 0.0,
    }
    (tmp_path / "stage.yaml").write_text(yaml.safe_dump(config))
    assert main(["train", str(tmp_path / "stage.yaml")]) == 0
    state = json.loads((tmp_path / "run" / "checkpoint-2" / "trainer_state.json").read_text())
    history = state["log_history"]
    assert [row["step"] for row in history if "loss" in row] == [1, 2]
    trained = PrealignProcessor.from_pretrained(tmp_path / "run")
    [sample, _] = list(LlavaDataset([DataSource(tmp_path / "multi.json", tmp_path)], trained))
    ids, labels = sample["input_ids"].tolist(), sample["labels"].tolist()
    decoded = [trained.tokenizer.decode(run) for run in supervised_runs(ids, labels)]
    assert decoded == ["Red.<|im_end|>", "Four wheels.<|im_end|>", "yes<|im_end|>"]


@pytest.mark.parametrize("reply", ["<think>\n\n</think>\n\nRed.", "Red.", "<b>Red</b>"])
def test_a_streamed_answer_only_grows_and_never_shows_the_reasoning_block(reply):
    """What `prealign serve` streams: each prefix's answer extends the one before and ends as the
    complete reply's answer."""
    processor = published_processor("qwen3")
    shown = [processor.answer_text(reply[:n], complete=False) for n in range(len(reply) + 1)]
    final = processor.answer_text(reply)
    assert all(final.startswith(part) for part in shown) and shown[-1] == final
    assert "think>" not in "".join(shown)


def test_prealign_chat_prints_answers_without_the_reasoning_block():
    import io

    from prealign.serving.terminal import _StreamTo

    out = io.StringIO()
    streamer = _StreamTo(published_processor("qwen3"), out)
    for piece in ["<think>\n", "\n</think>\n\n", "Red", "."]:
        streamer.on_finalized_text(piece)
    streamer.on_finalized_text("", stream_end=True)
    for piece in ["Blue", "."]:  # the next reply starts afresh
        streamer.on_finalized_text(piece)
    streamer.on_finalized_text("", stream_end=True)
    assert out.getvalue() == "Red.\nBlue.\n"


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("name", FORMATS)
def test_turn_by_turn_rendering_is_the_templates_own_where_it_keeps_history_as_it_was(name, conversation):
    """ChatML-like and LLaMA templates render history as it was: there the turn-by-turn text is the
    template's whole rendering. Qwen3's keeps each reply's empty reasoning block (the authors' training
    format), which the template's whole rendering drops from every reply before the last user turn."""
    processor = published_processor(name, template_variables={"date_string": "26 Jul 2024"})
    messages = CONVERSATIONS[conversation]
    whole = processor.tokenizer.apply_chat_template(
        messages, tokenize=False, enable_thinking=False, date_string="26 Jul 2024"
    )
    ours = processor.render_chat(messages, add_generation_prompt=False)
    replies = sum(m["role"] == "assistant" for m in messages)
    if name == "qwen3":
        assert ours.count("<think>\n\n</think>\n\n") == replies
        assert whole.count("<think>\n\n</think>\n\n") == 1
        assert ours.replace("<think>\n\n</think>\n\n", "") == whole.replace("<think>\n\n</think>\n\n", "")
    else:
        assert ours == whole
