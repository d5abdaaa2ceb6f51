"""What harnesses ask of a model: free answers to stop strings and continuation log-likelihoods,
the same batched as one by one, and the lmms-eval adapter answering through them."""

from __future__ import annotations

import pytest
import torch
from conftest import random_image

from prealign.evaluation.answering import continuation_loglikelihoods, generate_answers
from prealign.tiny import tiny_model

QUESTIONS = ["What is in the picture?", "Describe it.", "Count the objects, then name them."]
CONTINUATIONS = [" a cat", "Two dogs and a ball", " no"]


@pytest.fixture(scope="module")
def dpa():
    torch.manual_seed(0)
    return tiny_model("dpa", early_fusion=True)


def _images(with_images: list[bool]) -> list[list]:
    return [[random_image(i)] if has else [] for i, has in enumerate(with_images)]


def test_loglikelihoods_batched_equal_one_by_one(dpa):
    model, processor = dpa
    images = _images([True, False, True])
    batched = continuation_loglikelihoods(model, processor, QUESTIONS, CONTINUATIONS, images)
    for i, result in enumerate(batched):
        alone = continuation_loglikelihoods(model, processor, [QUESTIONS[i]], [CONTINUATIONS[i]], [images[i]])
        assert result[0] == pytest.approx(alone[0][0], abs=1e-4) and result[1] == alone[0][1]
    assert all(logprob < 0 for logprob, _ in batched)


def test_a_text_only_loglikelihood_is_the_target_lms(dpa):
    model, processor = dpa
    tokenizer = processor.tokenizer
    prompt = processor.apply_chat_template([processor.user_turn(QUESTIONS[0])])
    ids = tokenizer(prompt + CONTINUATIONS[1], return_tensors="pt", add_special_tokens=False)["input_ids"]
    n = ids.shape[1] - len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    language_model = model.model.language_model
    with torch.no_grad():
        logits = model.lm_head(language_model(input_ids=ids).last_hidden_state)[0, -n - 1 : -1]
    expected = logits.log_softmax(-1).gather(-1, ids[0, -n:, None]).sum().item()
    greedy = bool((logits.argmax(-1) == ids[0, -n:]).all())
    [(logprob, is_greedy)] = continuation_loglikelihoods(
        model, processor, [QUESTIONS[0]], [CONTINUATIONS[1]], [[]]
    )
    assert logprob == pytest.approx(expected, abs=1e-4) and is_greedy == greedy


def test_answers_stop_at_the_first_stop_string(dpa):
    model, processor = dpa
    images = _images([True, True, False])
    full = generate_answers(model, processor, QUESTIONS, images, max_new_tokens=12)
    assert any(len(a) > 2 for a in full)
    stop = [a[1:3] for a in full if len(a) > 2][:1]
    cut = generate_answers(model, processor, QUESTIONS, images, max_new_tokens=12, stop=stop)
    for whole, short in zip(full, cut, strict=True):
        assert short == (whole[: whole.find(stop[0])] if stop[0] in whole else whole)


def test_a_user_turn_puts_the_images_first_unless_the_question_places_them(dpa):
    _, processor = dpa
    images = [random_image(0), random_image(1)]

    def rendered(message):
        return processor.apply_chat_template([message])

    llava_layout = {"role": "user", "content": "<image>\n<image>\nsame?"}  # as a training record has it
    assert rendered(processor.user_turn("same?", images)) == rendered(llava_layout)
    placed = "<image> and <image>: same?"
    assert processor.user_turn(placed, images) == {"role": "user", "content": placed}
    with pytest.raises(ValueError, match="1 <image> placeholders for 2 image"):
        processor.user_turn("<image> same?", images)


@pytest.fixture(scope="module")
def lmms_model(dpa, tmp_path_factory):
    pytest.importorskip("lmms_eval")
    from prealign.evaluation.lmms_adapter import PrealignLmms

    model, processor = dpa
    folder = tmp_path_factory.mktemp("dpa")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    adapter = PrealignLmms(
        pretrained=str(folder), device="cpu", dtype="float32", batch_size=2, max_new_tokens=8
    )
    docs = [
        {"question": q, "image": random_image(i), "target": c}
        for i, (q, c) in enumerate(zip(QUESTIONS, CONTINUATIONS, strict=True))
    ]
    adapter.task_dict = {"nano": {"test": docs}}
    return adapter, docs


def _instance(kind: str, arguments: tuple, index: int):
    from lmms_eval.api.instance import Instance

    return Instance(kind, arguments, index, metadata={"task": "nano", "doc_id": index, "repeats": 1})


def test_lmms_eval_finds_the_adapter_through_the_entry_point():
    pytest.importorskip("lmms_eval")
    from lmms_eval.models import get_model

    from prealign.evaluation.lmms_adapter import PrealignLmms, PrealignLmmsChat

    assert get_model("prealign") is PrealignLmmsChat  # lmms-eval prefers the chat interface
    assert get_model("prealign", force_simple=True) is PrealignLmms


def test_the_lmms_eval_adapter_answers_as_prealign_does(lmms_model, dpa):
    adapter, docs = lmms_model
    model, processor = dpa

    def visual(doc):
        return [doc["image"]]

    settings = {"until": ["\n\n"], "max_new_tokens": 8}
    requests = [
        _instance("generate_until", (doc["question"], dict(settings), visual, i, "nano", "test"), i)
        for i, doc in enumerate(docs)
    ]
    images = [[doc["image"]] for doc in docs]
    expected = generate_answers(model, processor, QUESTIONS, images, max_new_tokens=8, stop=["\n\n"])
    assert adapter.generate_until(requests) == expected

    requests = [
        _instance("loglikelihood", (doc["question"], lambda d: d["target"], visual, i, "nano", "test"), i)
        for i, doc in enumerate(docs)
    ]
    expected = continuation_loglikelihoods(model, processor, QUESTIONS, CONTINUATIONS, images)
    for got, want in zip(adapter.loglikelihood(requests), expected, strict=True):
        assert got[0] == pytest.approx(want[0], abs=1e-4) and got[1] == want[1]


def test_the_lmms_eval_adapter_refuses_video(lmms_model):
    adapter, _ = lmms_model
    request = _instance("generate_until", ("q", {}, lambda doc: ["clip.mp4"], 0, "nano", "test"), 0)
    with pytest.raises(ValueError, match="images only"):
        adapter.generate_until([request])
