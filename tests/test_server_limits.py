"""`prealign serve` under hostile and concurrent requests: every one answered, with a 4xx naming the
limit when it asks too much, and the server still answering normally after each."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import random_image
from PIL import Image

from prealign.modeling import ContextLengthError
from prealign.serving.conversation import Conversations
from prealign.serving.limits import RequestLimits
from prealign.serving.openai_server import create_app, running
from prealign.tiny import tiny_model

LIMITS = RequestLimits(max_body_bytes=400_000, max_image_pixels=1_000_000, max_images=3, max_tokens=64)


@pytest.fixture(scope="module")
def url():
    torch.manual_seed(0)
    model, processor = tiny_model("dpa")
    with running(
        create_app(Conversations(model, processor), "tiny", default_max_tokens=4, limits=LIMITS)
    ) as url:
        yield url


def post(url: str, body: bytes | dict) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def png_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def image_turn(text: str, *images: Image.Image) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": png_url(image)}} for image in images]
    return {"role": "user", "content": [*parts, {"type": "text", "text": text}]}


NORMAL = {"messages": [image_turn("what is this?", random_image(0))], "max_tokens": 3}
# 4000 x 4000 pixels in a few kilobytes of PNG: the header says so before anything is decoded.
BOMB = Image.new("1", (4000, 4000))
HOSTILE = {
    "a prompt past the context": (
        {"messages": [{"role": "user", "content": "one two three " * 200}]},
        400,
        "context of 512 tokens",
    ),
    "a decompression bomb": ({"messages": [image_turn("and this?", BOMB)]}, 400, "at most 1000000"),
    "too many images": (
        {"messages": [image_turn("all of them?", *[random_image(i, (8, 8)) for i in range(4)])]},
        400,
        "more than 3 images",
    ),
    "too many tokens": (
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 65},
        400,
        "at most 64",
    ),
    "a placeholder typed as text": (
        {"messages": [{"role": "user", "content": "what is <image> here?"}]},
        400,
        "placeholders",
    ),
    "markers typed as text": (
        {"messages": [image_turn("see <image_start><image_end>", random_image(1))]},
        400,
        "markers",
    ),
    "a body too large": (b'{"messages": "' + b"x" * 500_000 + b'"}', 413, "at most 400000"),
    "malformed JSON": (b"{not json", 400, "not JSON"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_request_gets_a_4xx_naming_the_limit_and_the_server_goes_on(url, name):
    body, status, message = HOSTILE[name]
    got, answer = post(url, body)
    assert got == status, answer
    assert message in answer["error"]["message"]
    assert post(url, NORMAL)[0] == 200


def test_concurrent_clients_are_all_answered(url):
    """A bounded load: 4 clients x 3 requests at once, each answered in full."""
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: post(url, NORMAL), range(12)))
    assert [status for status, _ in results] == [200] * 12
    assert all(answer["choices"][0]["message"]["content"] is not None for _, answer in results)


def test_health_and_models(url):
    with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
        assert json.loads(response.read()) == {"status": "ok", "model": "tiny"}
    with urllib.request.urlopen(f"{url}/v1/models", timeout=10) as response:
        assert [m["id"] for m in json.loads(response.read())["data"]] == ["tiny"]


def test_the_library_refuses_a_prompt_past_the_context_in_generate():
    model, processor = tiny_model("baseline")
    batch = processor(text=["one two three " * 200])
    with pytest.raises(ContextLengthError, match=r"\d+ tokens and 4 new tokens were asked for"):
        model.generate(**batch, max_new_tokens=4)


def test_a_full_queue_answers_503_and_a_request_not_answered_in_time_gives_up(monkeypatch):
    """One request holds the model (its reply waits on an event). With one admission the next is
    turned away at once and the first answered; with two, the next waits, and when their time is up
    both give up with a 503 - and the server answers again once the model is free."""
    model, processor = tiny_model("dpa")
    conversations = Conversations(model, processor)
    release = threading.Event()
    for name in ("start", "start_batch"):
        answer = getattr(conversations, name)
        monkeypatch.setattr(
            conversations, name, lambda *a, _answer=answer, **k: (release.wait(30), _answer(*a, **k))[1]
        )
    for max_queue, holder_status, message in (
        (1, 200, "the server is full"),
        (2, 503, "was not answered within"),
    ):
        release.clear()
        limits = RequestLimits(max_queue=max_queue, timeout_s=1.0)
        app = create_app(conversations, "tiny", default_max_tokens=2, limits=limits)
        with running(app) as url, ThreadPoolExecutor(1) as pool:
            holder = pool.submit(post, url, NORMAL)
            time.sleep(0.3)  # the first request now holds the model
            got, answer = post(url, NORMAL)
            assert got == 503 and message in answer["error"]["message"], answer
            if max_queue == 2:
                assert holder.result()[0] == holder_status
            release.set()
            assert holder.result()[0] == holder_status
            assert post(url, NORMAL)[0] == 200


def test_a_batch_of_replies_equals_each_reply_from_scratch(images):
    model, processor = tiny_model("dpa")
    conversations = [
        [{"role": "user", "content": "how many shapes are there?"}],
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": images[0]}, {"type": "text", "text": "colour?"}],
            }
        ],
        [
            {
                "role": "user",
                "content": [{"type": "image", "image": images[1]}, {"type": "text", "text": "and?"}],
            },
            {"role": "assistant", "content": "a circle"},
            {
                "role": "user",
                "content": [{"type": "image", "image": images[2]}, {"type": "text", "text": "now?"}],
            },
        ],
    ]
    limits = [3, 8, 5]
    batched = Conversations(model, processor, 0).reply_batch(conversations, limits)
    alone = [
        Conversations(model, processor, 0).reply(c, max_new_tokens=n)
        for c, n in zip(conversations, limits, strict=True)
    ]
    assert batched == alone


def test_requests_that_arrive_together_share_a_generate_call(monkeypatch):
    model, processor = tiny_model("dpa")
    conversations = Conversations(model, processor)
    batch_sizes = []
    start_batch = conversations.start_batch
    monkeypatch.setattr(
        conversations, "start_batch", lambda p: (batch_sizes.append(len(p)), start_batch(p))[1]
    )
    with (
        running(create_app(conversations, "tiny", default_max_tokens=4)) as url,
        ThreadPoolExecutor(8) as pool,
    ):
        results = list(pool.map(lambda _: post(url, NORMAL), range(16)))
    assert [status for status, _ in results] == [200] * 16
    assert sum(batch_sizes) == 16 and max(batch_sizes) > 1, batch_sizes
    assert len({answer["choices"][0]["message"]["content"] for _, answer in results}) == 1  # same request
