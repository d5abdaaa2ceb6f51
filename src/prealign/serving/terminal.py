"""`prealign chat MODEL`: a multi-turn conversation in the terminal, images attached by path.

Each line is a user turn; `/image PATH` attaches an image to the next turn, `/reset` starts a new
conversation, `/quit` (or end of input) leaves. Replies stream as they are generated; later turns
reuse the KV cache of the earlier ones (`Conversations`).
"""

from __future__ import annotations

from typing import TextIO

from transformers import TextStreamer

from .conversation import DEFAULT_MAX_NEW_TOKENS, ConversationError, Conversations, load_message_image

HELP = "Type a message. /image PATH attaches an image to your next message; /reset starts over; /quit leaves."


class _StreamTo(TextStreamer):
    """A TextStreamer that writes the answer (`PrealignProcessor.answer_text`) to a given stream
    instead of printing the raw reply."""

    def __init__(self, processor, stream: TextIO):
        super().__init__(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.processor, self.stream = processor, stream
        self.reply, self.shown = "", 0

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.reply += text
        answer = self.processor.answer_text(self.reply, complete=stream_end)
        self.stream.write(answer[self.shown :] + ("\n" if stream_end else ""))
        self.stream.flush()
        self.reply, self.shown = ("", 0) if stream_end else (self.reply, len(answer))


def run_chat(
    conversations: Conversations,
    lines: TextIO,
    out: TextIO,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    system: str | None = None,
) -> list[dict]:
    """Talk until `/quit` or the end of `lines`; returns the conversation's messages."""
    out.write(HELP + "\n")
    start = [{"role": "system", "content": system}] if system else []
    messages, pending = list(start), []
    streamer = _StreamTo(conversations.processor, out)
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line == "/quit":
            break
        if line == "/reset":
            messages, pending = list(start), []
            out.write("(new conversation)\n")
            continue
        if line.startswith("/image"):
            path = line.removeprefix("/image").strip()
            try:
                pending.append(load_message_image(path, "/image"))
                out.write(f"(image {path} attached to your next message)\n")
            except ConversationError as error:
                out.write(f"error: {error}\n")
            continue
        content = [{"type": "image", "image": image} for image in pending] + [{"type": "text", "text": line}]
        messages.append({"role": "user", "content": content})
        out.write("assistant: ")
        reply = conversations.reply(
            messages, max_new_tokens=max_new_tokens, temperature=temperature, streamer=streamer
        )
        messages.append({"role": "assistant", "content": reply.text})
        pending = []
    return messages
