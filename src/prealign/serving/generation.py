"""Replies generated a slice at a time, so that one worker can take turns among requests.

A `Generation` holds what a `generate` call would hold between its steps - the rows' tokens so far,
their KV cache and, for an M-RoPE target, the prompt's rope deltas - so it can stop after a slice
of new tokens and continue later with no step read twice: greedy replies equal those of one
uninterrupted call (tested). Between slices the model may answer other requests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..modeling.cache_naming import CACHE_NAME


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop string) or "length" (out of tokens or time)
    reused_tokens: int  # prompt tokens whose KV came from the previous call


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    ends = [text.find(s) for s in stop if s and s in text]
    return text[: min(ends)] if ends else text


class _SliceStreamer:
    """Shows a transformers streamer the slices as one `generate` call: the prompt (the first
    call's first put), then every new token; each later call's first put (its whole input) and
    each call's end are held back - `Generation` ends the streamer when the reply ends."""

    def __init__(self, streamer):
        self.streamer = streamer
        self._calls_started = 0
        self._call_started = False

    def put(self, value: torch.Tensor) -> None:
        if not self._call_started:
            self._call_started = True
            self._calls_started += 1
            if self._calls_started > 1:
                return
        self.streamer.put(value)

    def end(self) -> None:
        self._call_started = False


@dataclass
class Generation:
    """Replies to one or more prompts (left-padded rows) being generated; `advance` runs the next
    slice. `first_inputs` (images, perceiver rows) are read by the first slice only."""

    model: torch.nn.Module
    processor: object
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    cache: object
    max_new_tokens: Sequence[int]
    sampling: dict = field(default_factory=lambda: {"do_sample": False})
    stop: Sequence[str] = ()
    streamer: object | None = None
    first_inputs: dict = field(default_factory=dict)
    reused_tokens: int = 0
    on_finish: Callable[[Generation], None] | None = None
    finished: bool = field(default=False, init=False)

    def __post_init__(self):
        self.rows = list(range(self.input_ids.shape[0]))  # each row's place among the prompts given
        self.prompt_width = self.input_ids.shape[1]
        self._rope_deltas = None
        self._slice_streamer = _SliceStreamer(self.streamer) if self.streamer is not None else None
        self._ended_rows: list[int] = []  # rows whose reply ended, as the last slice left them

    @property
    def generated(self) -> int:
        return self.input_ids.shape[1] - self.prompt_width

    @torch.no_grad()
    def advance(self, tokens: int | None = None, max_time: float | None = None) -> bool:
        """Generate up to `tokens` more new tokens per row (all that remain when None) or for at
        most `max_time` seconds; True once every reply has ended."""
        if self.finished:
            return True
        remaining = max(self.max_new_tokens) - self.generated
        step = remaining if tokens is None else min(tokens, remaining)
        tokenizer = self.processor.tokenizer
        eos = tokenizer.eos_token_id
        inner = self.model.model
        if self._rope_deltas is not None:  # another request's prefill replaced them in between
            inner.rope_deltas = self._rope_deltas
        out = self.model.generate(
            input_ids=self.input_ids,
            attention_mask=self.attention_mask,
            **self.first_inputs,
            **{CACHE_NAME: self.cache},
            max_new_tokens=step,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
            streamer=self._slice_streamer,
            max_time=max_time,
            **({"stop_strings": list(self.stop), "tokenizer": tokenizer} if self.stop else {}),
            **self.sampling,
        )
        self._rope_deltas = getattr(inner, "rope_deltas", None)
        self.first_inputs = {}
        made = out.shape[1] - self.input_ids.shape[1]
        self.attention_mask = torch.cat(
            [self.attention_mask, self.attention_mask.new_ones(out.shape[0], made)], dim=1
        )
        self.input_ids = out
        self._ended_rows = [row for row, limit in enumerate(self.max_new_tokens) if self._ended(row, limit)]
        # Fewer tokens than asked: every row met the end of its turn, a stop string or max_time.
        self.finished = made < step or len(self._ended_rows) == len(self.rows)
        if self.finished:
            if self.streamer is not None:
                self.streamer.end()
            if self.on_finish is not None:
                self.on_finish(self)
        return self.finished

    def take_ended(self, every: bool = False) -> list[tuple[int, Reply]]:
        """The replies that have ended (`every`: all, as they stand), each with its place among the
        prompts given, taken out of the batch: the rows still generating go on without them."""
        ended = list(range(len(self.rows))) if every or self.finished else self._ended_rows
        if not ended:
            return []
        taken = list(zip([self.rows[row] for row in ended], self.replies(ended), strict=True))
        keep = [row for row in range(len(self.rows)) if row not in ended]
        self._ended_rows = []
        self.rows, self.finished = [self.rows[row] for row in keep], not keep
        if not keep:  # nothing left to run: the cache stays whole (a finished reply's is reused)
            return taken
        index = torch.tensor(keep, dtype=torch.long, device=self.input_ids.device)
        self.input_ids, self.attention_mask = self.input_ids[index], self.attention_mask[index]
        self.cache.batch_select_indices(index)
        if self._rope_deltas is not None:
            self._rope_deltas = self._rope_deltas[index]
        self.max_new_tokens = [self.max_new_tokens[row] for row in keep]
        return taken

    def _new_tokens(self, row: int) -> list[int]:
        new = self.input_ids[row, self.prompt_width :].tolist()[: self.max_new_tokens[row]]
        eos = self.processor.tokenizer.eos_token_id
        return new[: new.index(eos) + 1] if eos in new else new

    def _ended(self, row: int, limit: int) -> bool:
        new = self._new_tokens(row)
        if len(new) >= limit or (new and new[-1] == self.processor.tokenizer.eos_token_id):
            return True
        if not self.stop:
            return False
        text = self.processor.tokenizer.decode(new, skip_special_tokens=True)
        return len(cut_at_stop(text, self.stop)) < len(text)

    def replies(self, rows: Sequence[int] | None = None) -> list[Reply]:
        """Each row's reply (of `rows`; all when None) as it stands, decoded: its finish reason
        "length" when it has not ended."""
        processor, eos = self.processor, self.processor.tokenizer.eos_token_id
        replies = []
        for row in range(self.input_ids.shape[0]) if rows is None else rows:
            new = self._new_tokens(row)
            text = processor.answer_text(processor.tokenizer.decode(new, skip_special_tokens=True))
            cut = cut_at_stop(text, self.stop)
            ended = (bool(new) and new[-1] == eos) or len(cut) < len(text)
            replies.append(
                Reply(
                    text=cut,
                    prompt_tokens=int(self.attention_mask[row, : self.prompt_width].sum()),
                    completion_tokens=len(new),
                    finish_reason="stop" if ended else "length",
                    reused_tokens=self.reused_tokens,
                )
            )
        return replies
