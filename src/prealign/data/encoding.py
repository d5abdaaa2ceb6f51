"""LLaVA conversations -> token ids and labels, from the tokenizer's own chat template.

Labels are the assistant replies (and the token that ends each of them), every other token -100.
They come from the processor's rendering (`PrealignProcessor.render_conversation`, turn by turn:
`prealign.chat_rendering`), which says where each reply lies; the tokenizer's offsets map that to
tokens, so no per-model preprocessing and no token ids are written here. Image placeholders are
expanded at the id level afterwards, so a span is always whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..image_span import IMAGE_PLACEHOLDER
from ..processing import PrealignProcessor
from .records import DataError

IGNORE_INDEX = -100
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
PromptFormat = Literal["chat", "plain"]


@dataclass
class EncodedSample:
    """One record, tokenised: target ids and labels (image spans expanded) plus perceiver inputs."""

    input_ids: list[int]
    labels: list[int]
    image_tokens: list[int]  # N of each image, in order
    instruction: str
    trimmed: bool = False


class RecordSkipped(Exception):
    """A well-formed record that cannot be trained on (e.g. truncation would cut an image span)."""

    def __init__(self, kind: str, message: str):
        self.kind = kind
        super().__init__(message)


def to_messages(record: dict, file, name: str) -> list[dict]:
    """Validate a record's conversation and map LLaVA roles to chat-template roles."""
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise DataError("malformed_record", file, name, "conversations", "missing or empty conversation list")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise DataError(
                "malformed_record", file, name, f"conversations[{i}]", "each turn needs a string 'value'"
            )
        role = ROLES.get(turn.get("from"))
        if role is None:
            raise DataError(
                "unknown_role",
                file,
                name,
                f"conversations[{i}].from",
                f"unknown role {turn.get('from')!r} (expected one of {', '.join(ROLES)})",
            )
        if role == "assistant" and IMAGE_PLACEHOLDER in turn["value"]:
            raise DataError(
                "placeholder_mismatch",
                file,
                name,
                f"conversations[{i}].value",
                f"{IMAGE_PLACEHOLDER} in an assistant turn",
            )
        messages.append({"role": role, "content": turn["value"]})
    first = next((i for i, m in enumerate(messages) if m["role"] != "system"), None)
    if first is not None and messages[first]["role"] == "assistant":
        raise DataError(
            "malformed_record",
            file,
            name,
            f"conversations[{first}].from",
            "the conversation starts with an assistant ('gpt') turn; it must start with a human turn "
            "(after an optional system turn)",
        )
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(
            "malformed_record", file, name, "conversations", "no assistant ('gpt') turn to learn from"
        )
    return messages


def encode_chat(messages: list[dict], processor: PrealignProcessor) -> tuple[list[int], list[int]]:
    """Token ids and labels of a conversation as `processor.render_conversation` renders it: each
    reply is supervised from the end of its turn's prompt through the end-of-turn (EOS) token that
    closes it."""
    rendered = processor.render_conversation(messages, add_generation_prompt=False)
    eos = processor.tokenizer.eos_token
    spans = [
        (start, _end_of_turn(rendered.text, end, eos, i)) for i, (start, end) in enumerate(rendered.replies)
    ]
    return _label_spans(processor.tokenizer, rendered.text, spans)


def _end_of_turn(text: str, end: int, eos_token: str | None, reply: int) -> int:
    """Supervise through the end-of-turn token (the tokenizer's EOS) that closes the reply, and the
    template's whitespace before it: the model has to write both to end its turn."""
    if not eos_token:
        return end
    position = text.find(eos_token, end)
    if position < 0 or text[end:position].strip():
        raise ValueError(
            f"The chat template does not close reply {reply + 1} with the tokenizer's end-of-turn token "
            f"{eos_token!r}: set the tokenizer's eos_token to the token that ends an assistant turn."
        )
    return position + len(eos_token)


def encode_plain(
    messages: list[dict], processor: PrealignProcessor, num_images: int
) -> tuple[list[int], list[int]]:
    """LLaVA's stage-1 "plain" format: the images, then the caption (the first reply) and EOS.

    The prompt is dropped, so the caption is the only text and the only supervised text.
    """
    caption = next(m["content"] for m in messages if m["role"] == "assistant")
    prefix = processor.image_token * num_images + "\n"
    text = prefix + caption + (processor.tokenizer.eos_token or "")
    return _label_spans(processor.tokenizer, text, [(len(prefix), len(text))])


def _label_spans(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = enc["input_ids"]
    labels = [
        token if any(s < end and e > start for start, end in spans) else IGNORE_INDEX
        for token, (s, e) in zip(ids, enc["offset_mapping"], strict=True)
    ]
    return ids, labels


def expand_images(
    ids: list[int], labels: list[int], processor: PrealignProcessor, image_tokens: list[int]
) -> tuple[list[int], list[int]]:
    """Replace the i-th `<image>` id with its image's span (`image_tokens[i]` image positions
    between the markers); never supervised."""
    span = processor.image_span(processor.tokenizer)
    if (found := ids.count(span.image)) != len(image_tokens):
        raise ValueError(f"{found} image placeholders for {len(image_tokens)} images")
    counts = iter(image_tokens)
    out_ids, out_labels = [], []
    for token, label in zip(ids, labels, strict=True):
        if token == span.image:
            expanded = span.ids(next(counts))
            out_ids += expanded
            out_labels += [IGNORE_INDEX] * len(expanded)
        else:
            out_ids.append(token)
            out_labels.append(label)
    return out_ids, out_labels


def check_markers(ids: list[int], processor: PrealignProcessor, images: int) -> None:
    """One `<image_start>` and one `<image_end>` per image: a marker typed in the text would
    otherwise read as part of a span."""
    span = processor.image_span(processor.tokenizer)
    for marker, marker_id in (
        (processor.image_start_token, span.start),
        (processor.image_end_token, span.end),
    ):
        if (found := ids.count(marker_id)) != images:
            raise ValueError(f"{found} {marker} markers for {images} images: image markers typed as text")


def truncate(ids: list[int], labels: list[int], max_length: int, image_end_id: int):
    """Cut to `max_length` unless that would split or drop an image span (then the record is skipped).

    Returns (ids, labels, trimmed).
    """
    if len(ids) <= max_length:
        return ids, labels, False
    ends = [i for i, token in enumerate(ids) if token == image_end_id]
    if ends and ends[-1] >= max_length:
        raise RecordSkipped(
            "image_span_cut",
            f"{len(ids)} tokens > max_length {max_length}, and the cut would fall inside or before an "
            "image span",
        )
    return ids[:max_length], labels[:max_length], True
