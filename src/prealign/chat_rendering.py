"""A conversation rendered turn by turn, each reply as its chat template renders it when newest.

Some templates render a reply otherwise once later turns follow it (Qwen3 drops the reasoning
block, empty or not, of every reply before the last user turn). Rendered whole, a conversation
would then show its earlier replies in a form the model never meets at the turn it writes them,
and no single training sequence could hold, before each reply, what inference sent at that turn.
Rendered turn by turn, every reply keeps the form it had when it was written (Qwen3: the empty
block stays, as in the authors' ms-swift training), and the text is one sequence in which the
prefix of each reply is exactly the prompt of its turn. For templates that render history as it
was (ChatML, LLaMA-3, SmolLM2, Qwen2.5-VL) this is the whole rendering, character for character.

A reply is located by rendering with it swapped for a stand-in character: what differs is the
reply. Nothing here knows any model's tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Stands in for one reply while locating it: a private-use character, which no template trims and
# no conversation holds (checked).
REPLY_STAND_IN = "\ue000"

Render = Callable[[list[dict], bool], str]  # (messages, add_generation_prompt) -> template text


@dataclass
class RenderedChat:
    """The conversation's text and, per assistant reply, the characters the model writes: from
    the end of its turn's prompt to the end of its content (the end-of-turn token follows)."""

    text: str
    replies: list[tuple[int, int]]


def render_turn_by_turn(render: Render, messages: list[dict], add_generation_prompt: bool) -> RenderedChat:
    if any(REPLY_STAND_IN in str(m.get("content", "")) for m in messages):
        raise ValueError(f"a turn holds the character U+{ord(REPLY_STAND_IN):04X}, which prealign reserves")
    text, replies, previous = "", [], None  # previous: (index, text after its content) of the last reply
    for j in (i for i, m in enumerate(messages) if m["role"] == "assistant"):
        turns = messages[: j + 1]
        full = render(turns, False)
        start, end = _locate(render, turns, False, j, full)
        prompt = render(messages[:j], True)
        if full.startswith(prompt) and len(prompt) <= start:
            start = len(prompt)  # a reasoning block the model writes itself is part of its reply
        offset = _continuation(render, turns, False, full, previous)
        replies.append((len(text) + start - offset, len(text) + end - offset))
        text += full[offset:]
        previous = (j, full[end:])
    if add_generation_prompt or previous is None or previous[0] < len(messages) - 1:
        full = render(messages, add_generation_prompt)
        text += full[_continuation(render, messages, add_generation_prompt, full, previous) :]
    return RenderedChat(text, replies)


def _locate(render: Render, turns: list[dict], prompt: bool, j: int, full: str) -> tuple[int, int]:
    """Where reply j's content lies in `full`, the rendering of `turns` (`prompt`: with the
    generation prompt)."""
    swapped = [*turns[:j], {**turns[j], "content": REPLY_STAND_IN}, *turns[j + 1 :]]
    marked = render(swapped, prompt)
    if marked.count(REPLY_STAND_IN) != 1:
        raise ValueError(
            f"The chat template does not render reply {j} exactly once, so it cannot be located (the "
            "template drops or repeats assistant turns)."
        )
    where = marked.index(REPLY_STAND_IN)
    start = _common_prefix_length(full, marked, where)
    suffix = _common_suffix_length(full, marked, min(len(marked) - where - 1, len(full) - start))
    return start, len(full) - suffix


def _continuation(
    render: Render, turns: list[dict], prompt: bool, full: str, previous: tuple[int, str] | None
) -> int:
    """Where `full` goes on past what the text already holds: after the previous reply's content
    and what its own rendering put after it."""
    if previous is None:
        return 0
    index, after = previous
    _, end = _locate(render, turns, prompt, index, full)
    if not full.startswith(after, end):
        raise ValueError(
            f"The chat template ends reply {index} otherwise once later turns follow it "
            f"({after!r} when newest), so the turns cannot be joined."
        )
    return end + len(after)


def _common_prefix_length(a: str, b: str, limit: int) -> int:
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def _common_suffix_length(a: str, b: str, limit: int) -> int:
    n = 0
    while n < limit and a[-1 - n] == b[-1 - n]:
        n += 1
    return n
