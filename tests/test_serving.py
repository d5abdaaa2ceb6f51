"""Talking to a model: replies that reuse the previous turn's KV cache equal replies computed from
scratch; `prealign chat` over stdin; `prealign serve` driven by the official `openai` client."""

from __future__ import annotations

import base64
import io

import openai
import pytest
import torch
from conftest import random_image

from prealign.cli import main
from prealign.serving.conversation import ConversationError, Conversations, normalize_messages
from prealign.serving.openai_server import create_app, running
from prealign.tiny import tiny_model

NEW_TOKENS = 6


def _user(text: str, *images) -> dict:
    return {
        "role": "user",
        "content": [*({"type": "image", "image": i} for i in images), {"type": "text", "text": text}],
    }


def _vision_calls(model) -> list[int]:
    calls: list[int] = []
    model.model.vision_tower.register_forward_hook(
        lambda _, args, kwargs, __: calls.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
    )
    return calls


@pytest.mark.parametrize(
    ("variant", "options"), [("baseline", {}), ("dpa", {}), ("dpa", {"early_fusion": True})]
)
def test_a_later_turn_reads_only_its_new_tokens_and_replies_as_from_scratch(variant, options, images):
    model, processor = tiny_model(variant, **options)
    chat = Conversations(model, processor, feature_cache_images=0)  # only the KV cache is reused
    calls = _vision_calls(model)
    messages = [_user("What colour is it?", images[0])]
    first = chat.reply(messages, max_new_tokens=NEW_TOKENS)
    messages += [{"role": "assistant", "content": first.text}, _user("And this one?", images[1])]
    second = chat.reply(messages, max_new_tokens=NEW_TOKENS)
    assert first.reused_tokens == 0 and second.reused_tokens > first.prompt_tokens // 2
    assert calls == [1, 1]  # the second turn ran the vision path for its new image only
    fresh = Conversations(model, processor, feature_cache_images=0).reply(messages, max_new_tokens=NEW_TOKENS)
    assert (second.text, second.completion_tokens) == (fresh.text, fresh.completion_tokens)
    assert second.completion_tokens == NEW_TOKENS or second.finish_reason == "stop"


@pytest.mark.parametrize(
    ("options", "edit"),
    [
        # The same words about another image: the tokens agree, the image does not.
        ({}, lambda images: [_user("What colour is it?", images[1])]),
        # Early fusion: the same image, but the perceiver read another instruction with it.
        ({"early_fusion": True}, lambda images: [_user("What shape is it?", images[0])]),
    ],
)
def test_a_changed_history_is_read_again_from_the_first_image_it_changes(images, options, edit):
    model, processor = tiny_model("dpa", **options)
    chat = Conversations(model, processor, feature_cache_images=0)
    calls = _vision_calls(model)
    chat.reply([_user("What colour is it?", images[0])], max_new_tokens=NEW_TOKENS)
    edited = edit(images)
    reply = chat.reply(edited, max_new_tokens=NEW_TOKENS)
    fresh = Conversations(model, processor, feature_cache_images=0).reply(edited, max_new_tokens=NEW_TOKENS)
    assert calls == [1, 1, 1] and reply.text == fresh.text
    ids = processor.apply_chat_template(edited, tokenize=True)["input_ids"][0].tolist()
    assert 0 < reply.reused_tokens <= ids.index(model.config.image_start_token_id)


def test_bad_conversations_are_refused_naming_the_message_and_part(tmp_path):
    with pytest.raises(ConversationError, match=r"messages\[0\].role is 'robot'"):
        normalize_messages([{"role": "robot", "content": "hi"}])
    with pytest.raises(ConversationError, match=r"messages\[0\].content\[1\].*no such image file"):
        normalize_messages([_user("hi", random_image(0), tmp_path / "missing.png")])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ConversationError, match=r"cannot read .*broken.png.* as an image"):
        normalize_messages([_user("hi", tmp_path / "broken.png")])
    with pytest.raises(ConversationError, match="nothing to reply to"):
        normalize_messages([_user("hi"), {"role": "assistant", "content": "hello"}])
    with pytest.raises(ConversationError, match=r"messages\[0\].content\[0\] is not a text part"):
        normalize_messages([{"role": "user", "content": [{"type": "video"}]}])


@pytest.fixture(scope="module")
def saved_dpa(tmp_path_factory):
    model, processor = tiny_model("dpa")
    folder = tmp_path_factory.mktemp("dpa")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_prealign_chat_talks_over_stdin_with_images_by_path(saved_dpa, tmp_path, monkeypatch, capsys):
    random_image(0).save(tmp_path / "scene.png")
    script = (
        f"/image {tmp_path / 'scene.png'}\nwhat is this?\n/image {tmp_path / 'nope.png'}\nand now?\n/quit\n"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    assert main(["chat", str(saved_dpa), "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "scene.png attached to your next message" in out
    assert "error: /image: no such image file" in out and "nope.png" in out
    assert out.count("assistant: ") == 2


def _data_url(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def server():
    """`prealign serve`'s app on a free loopback port, with the model it serves."""
    torch.manual_seed(0)
    model, processor = tiny_model("dpa")
    app = create_app(Conversations(model, processor), "tiny-dpa", default_max_tokens=NEW_TOKENS)
    with running(app) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0), model, processor


def test_the_openai_client_holds_a_two_turn_conversation_with_an_image(server):
    client, model, processor = server
    image = random_image(3)
    first_turn = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _data_url(image)}},
                {"type": "text", "text": "what is in the picture?"},
            ],
        }
    ]
    first = client.chat.completions.create(model="tiny-dpa", messages=first_turn, max_tokens=NEW_TOKENS)
    messages = [*first_turn, {"role": "assistant", "content": first.choices[0].message.content}]
    messages.append({"role": "user", "content": "and its colour?"})
    second = client.chat.completions.create(model="tiny-dpa", messages=messages)
    # What the library answers to the same conversation, from scratch.
    ours = [_user("what is in the picture?", image)]
    expected_first = Conversations(model, processor, 0).reply(ours, max_new_tokens=NEW_TOKENS)
    ours += [
        {"role": "assistant", "content": expected_first.text},
        {"role": "user", "content": "and its colour?"},
    ]
    expected_second = Conversations(model, processor, 0).reply(ours, max_new_tokens=NEW_TOKENS)
    assert first.choices[0].message.content == expected_first.text
    assert second.choices[0].message.content == expected_second.text
    assert second.usage.prompt_tokens == expected_second.prompt_tokens
    assert second.usage.completion_tokens == expected_second.completion_tokens
    assert second.choices[0].finish_reason == expected_second.finish_reason
    assert [m.id for m in client.models.list().data] == ["tiny-dpa"]


def test_streaming_sends_the_same_reply_in_pieces(server):
    client, _, _ = server
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": _data_url(random_image(4))}},
                {"type": "text", "text": "describe it."},
            ],
        }
    ]
    whole = client.chat.completions.create(model="tiny-dpa", messages=messages, max_tokens=8)
    chunks = list(
        client.chat.completions.create(model="tiny-dpa", messages=messages, max_tokens=8, stream=True)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert len(chunks) > 3  # the reply came in pieces, not at once


def test_a_stop_string_ends_the_reply_and_is_left_out(server):
    client, _, _ = server
    messages = [{"role": "user", "content": "say something."}]
    whole = client.chat.completions.create(model="tiny-dpa", messages=messages, max_tokens=8).choices[0]
    text = whole.message.content
    stop = text[len(text) // 2 :][:2]
    assert stop, "the tiny model's reply is too short to cut"
    cut = client.chat.completions.create(model="tiny-dpa", messages=messages, max_tokens=8, stop=[stop])
    streamed = client.chat.completions.create(
        model="tiny-dpa", messages=messages, max_tokens=8, stop=stop, stream=True
    )
    expected = text[: text.find(stop)]
    assert cut.choices[0].message.content == expected and cut.choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == expected


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}], "only data URLs"),
        (
            [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!"}}],
            "base64 payload is malformed",
        ),
        (
            [
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"x").decode()},
                }
            ],
            "does not hold a readable image",
        ),
        ([{"type": "input_audio", "input_audio": {}}], "unsupported content part 'input_audio'"),
    ],
)
def test_a_bad_request_gets_a_400_that_says_what_is_wrong(server, content, message):
    client, _, _ = server
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="tiny-dpa", messages=[{"role": "user", "content": content}])
    assert error.value.status_code == 400
    assert message in error.value.body["message"] and "messages[0].content[0]" in error.value.body["message"]


def test_a_reply_that_fails_midway_leaves_no_cache_to_reuse(images, monkeypatch):
    model, processor = tiny_model("dpa")
    chat = Conversations(model, processor, feature_cache_images=0)
    messages = [_user("What colour is it?", images[0])]
    chat.reply(messages, max_new_tokens=NEW_TOKENS)
    real_generate = model.generate

    def interrupted(*args, **kwargs):  # fills part of the cache, then fails
        real_generate(*args, **{**kwargs, "max_new_tokens": 2})
        raise KeyboardInterrupt

    monkeypatch.setattr(model, "generate", interrupted)
    longer = [*messages, {"role": "assistant", "content": "red"}, _user("And now?")]
    with pytest.raises(KeyboardInterrupt):
        chat.reply(longer, max_new_tokens=NEW_TOKENS)
    monkeypatch.setattr(model, "generate", real_generate)
    again = chat.reply(longer, max_new_tokens=NEW_TOKENS)
    fresh = Conversations(model, processor, feature_cache_images=0).reply(longer, max_new_tokens=NEW_TOKENS)
    assert again.reused_tokens == 0 and again.text == fresh.text
