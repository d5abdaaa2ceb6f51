"""Replies that take turns: generated a slice at a time (between slices the model answers others),
each equal to the reply of one uninterrupted call - and a long request no longer holds back a short
one that arrives after it."""

from __future__ import annotations

import json
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import random_image
from qwen_fixtures import qwen_dpa

from prealign.serving.conversation import Conversations
from prealign.serving.limits import RequestLimits
from prealign.serving.openai_server import create_app, running
from prealign.tiny import tiny_model


def _ask(text: str, *images) -> list[dict]:
    content = [{"type": "image", "image": image} for image in images] + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


CONVERSATIONS = [
    _ask("what is there?", random_image(0)),
    _ask("how many shapes are there?"),
    _ask("and these two?", random_image(1, (56, 32)), random_image(2, (32, 32))),
]
LIMITS = [40, 25, 33]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("qwen")
    return {
        "dpa": tiny_model("dpa"),
        "baseline": tiny_model("baseline"),
        "dpa_qwen": qwen_dpa(folder / "dpa", "dpa"),
        "baseline_mrope_target": qwen_dpa(folder / "baseline", "baseline"),
    }


@pytest.mark.parametrize("name", ["dpa", "baseline", "dpa_qwen", "baseline_mrope_target"])
def test_replies_in_slices_with_others_between_equal_uninterrupted_replies(models, name):
    """Each conversation alone and the three as a batch, advanced 3 tokens at a time while the
    other replies advance between their slices (another prefill replaces an M-RoPE target's rope
    deltas), give what one uninterrupted call gives."""
    model, processor = models[name]
    alone = [
        Conversations(model, processor, 0).reply(c, max_new_tokens=n)
        for c, n in zip(CONVERSATIONS, LIMITS, strict=True)
    ]
    batched = Conversations(model, processor, 0).reply_batch(CONVERSATIONS, LIMITS)
    assert [reply.text for reply in batched] == [reply.text for reply in alone]

    conversations = Conversations(model, processor, 0)
    prompts = [conversations.prepare(c, n) for c, n in zip(CONVERSATIONS, LIMITS, strict=True)]
    turns = [conversations.start(prompt) for prompt in prompts] + [conversations.start_batch(prompts)]
    taken = {}  # the batch's replies as each leaves it, and the turn it left in
    for turn_number in range(1000):
        for turn in turns[:3]:
            turn.advance(3)
        turns[3].advance(3)
        taken.update({row: (reply, turn_number) for row, reply in turns[3].take_ended()})
        if all(turn.finished for turn in turns):
            break
    assert [turn.replies()[0] for turn in turns[:3]] == alone
    assert [taken[row][0] for row in range(3)] == batched
    assert len({when for _, when in taken.values()}) > 1  # rows left the batch while others went on
    assert max(reply.completion_tokens for reply in alone) > 3  # more than one slice each


def test_a_streamed_reply_in_slices_streams_the_whole_reply_once():
    torch.manual_seed(0)
    model, processor = tiny_model("dpa")
    pieces, ends = [], []

    class Collect:
        def __init__(self):
            self.prompt = True

        def put(self, value):
            if self.prompt:  # as transformers streamers skip_prompt: the first put is the prompt
                self.prompt = False
                return
            pieces.extend(value.reshape(-1).tolist())

        def end(self):
            ends.append(True)

    conversations = Conversations(model, processor, 0)
    generation = conversations.start(conversations.prepare(CONVERSATIONS[0], 30), streamer=Collect())
    while not generation.advance(4):
        pass
    reply = generation.replies()[0]
    assert reply.completion_tokens > 4 and ends == [True]
    assert processor.tokenizer.decode(pieces, skip_special_tokens=True) == processor.answer_text(
        processor.tokenizer.decode(
            generation.input_ids[0, generation.prompt_width :], skip_special_tokens=True
        )
    )


def test_processor_batches_prepared_prompts_as_it_batches_them_itself(images):
    """What the server does instead of processing each image twice: the batch of prompts prepared
    one by one equals the processor's own batch of them."""
    _, processor = tiny_model("dpa")
    flats = [_ask("a?", images[0]), _ask("no image here"), _ask("two?", images[1], images[2])]
    one_by_one = [processor.apply_chat_template(flat, tokenize=True) for flat in flats]
    together = processor(
        text=[processor.apply_chat_template(flat) for flat in flats],
        images=[[images[0]], [], [images[1], images[2]]],
        instructions=[processor.perceiver_instruction(flat) for flat in flats],
    )
    batched = processor.batch_prompts(one_by_one)
    assert batched.keys() == together.keys()
    for key in together:
        assert torch.equal(batched[key], together[key]), key


def _post(url: str, max_tokens: int) -> dict:
    body = {"messages": [{"role": "user", "content": "tell me everything"}], "max_tokens": max_tokens}
    request = urllib.request.Request(
        f"{url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@pytest.mark.parametrize("slice_tokens", [8, 0])
def test_a_short_request_is_not_held_back_by_a_long_one(slice_tokens):
    """A long reply has begun when a short request arrives: in turns of 8 tokens the short one is
    answered first; with turns off (0) it waits for the whole long reply - the control that shows
    the test can fail."""
    torch.manual_seed(0)
    model, processor = tiny_model("dpa")
    conversations = Conversations(model, processor, 0)
    started, finished = threading.Event(), []
    start_batch = conversations.start_batch
    conversations.start_batch = lambda prompts: (started.set(), start_batch(prompts))[1]
    limits = RequestLimits(max_batch=1, slice_tokens=slice_tokens)
    with running(create_app(conversations, "tiny", limits=limits)) as url, ThreadPoolExecutor(2) as pool:

        def ask(name: str, max_tokens: int) -> dict:
            answer = _post(url, max_tokens)
            finished.append(name)
            return answer

        long = pool.submit(ask, "long", 400)
        assert started.wait(30)
        short = pool.submit(ask, "short", 2)
        assert long.result()["usage"]["completion_tokens"] > 100 and short.result()
    assert finished == (["short", "long"] if slice_tokens else ["long", "short"])


def test_a_reply_answered_by_the_worker_leaves_a_cache_the_next_turn_continues_from():
    """The worker takes a finished reply out of its turns; the reply's KV cache stays whole, and
    the conversation's next turn continues from it and answers as a fresh reply would."""
    from prealign.serving.batching import Batcher, Job

    torch.manual_seed(0)
    model, processor = tiny_model("dpa")
    conversations = Conversations(model, processor, 0)
    batcher = Batcher(conversations, max_batch=4, slice_tokens=4)
    options = {"max_new_tokens": 10, "temperature": 0.0, "top_p": 1.0, "stop": ["zzz"]}  # answered alone
    first = CONVERSATIONS[0]
    reply = batcher.submit(Job(conversations.prepare(first, 10), options, deadline=float("inf"))).result(60)
    second = [*first, {"role": "assistant", "content": reply.text}, *_ask("and now?")]
    again = batcher.submit(Job(conversations.prepare(second, 10), options, deadline=float("inf"))).result(60)
    assert again.reused_tokens > 0
    fresh = Conversations(model, processor, 0).reply(second, max_new_tokens=10, stop=["zzz"])
    assert again.text == fresh.text and again.completion_tokens == fresh.completion_tokens
