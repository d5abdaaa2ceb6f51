"""Replies to whole conversations, reusing the KV cache of what the previous call already read.

A chat re-sends its history every turn (the terminal chat appends to it, an OpenAI-style client
sends it whole). Re-reading it costs a prefill over every earlier turn and image. `Conversations`
keeps the KV cache of its previous call and the tokens it holds; a new conversation whose tokens
start with the same ones continues from there, so a later turn reads only its new tokens and runs
the vision path only for its new images. The reused prefix never ends inside an image span (that
image is then read again, whole), and a reply equals the one computed from scratch (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from transformers import DynamicCache

from ..image_span import per_image_pixels, select_images
from ..images import to_rgb
from ..modeling.cache_naming import CACHE_NAME
from ..modeling.checks import check_context
from ..modeling.feature_cache import ImageFeatureCache

ROLES = ("system", "user", "assistant")
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_FEATURE_CACHE_IMAGES = 16  # images whose features a chat or server keeps


class ConversationError(ValueError):
    """A conversation that cannot be answered as given (unknown role, bad content part, an image
    that cannot be read); the message says which message and part."""


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length" (max_new_tokens reached)
    reused_tokens: int  # prompt tokens whose KV came from the previous call


def load_image(source: str | Path | Image.Image, where: str) -> Image.Image:
    """An RGB image from a path or an image; `where` names it in the error."""
    try:
        if isinstance(source, Image.Image):
            return to_rgb(source, where)
        with Image.open(source) as image:
            return to_rgb(image, f"{where} ({source})")
    except FileNotFoundError as error:
        raise ConversationError(f"{where}: no such image file {str(source)!r}") from error
    except (UnidentifiedImageError, OSError) as error:
        raise ConversationError(f"{where}: cannot read {str(source)!r} as an image ({error})") from error
    except ValueError as error:  # to_rgb: a mode with no RGB reading
        raise ConversationError(str(error)) from error


def normalize_messages(messages: Sequence[dict]) -> tuple[list[dict], list[Image.Image]]:
    """Messages in the processor's format (text parts, and image parts holding an RGB image) and
    their images in order. An image part's `image` is a PIL image or a path."""
    if not messages:
        raise ConversationError("the conversation has no messages")
    flat, images = [], []
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ROLES:
            raise ConversationError(f"messages[{i}].role is {role!r}; expected one of {', '.join(ROLES)}")
        content = message.get("content")
        if isinstance(content, str):
            flat.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise ConversationError(f"messages[{i}].content must be a string or a list of parts")
        parts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image" and part.get("image") is not None:
                if role == "assistant":
                    raise ConversationError(f"messages[{i}].content[{j}]: an assistant turn holds no image")
                images.append(load_image(part["image"], f"messages[{i}].content[{j}]"))
                parts.append({"type": "image", "image": images[-1]})
            else:
                raise ConversationError(
                    f"messages[{i}].content[{j}] is not a text part ({{'type': 'text', 'text': ...}}) or an "
                    "image part ({'type': 'image', 'image': ...})"
                )
        flat.append({"role": role, "content": parts})
    if flat[-1]["role"] == "assistant":
        raise ConversationError("the last message is the assistant's: there is nothing to reply to")
    return flat, images


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the first occurrence of any stop string."""
    ends = [text.find(s) for s in stop if s and s in text]
    return text[: min(ends)] if ends else text


class Conversations:
    """Greedy or sampled replies to conversations with one model, one at a time."""

    def __init__(self, model, processor, feature_cache_images: int = DEFAULT_FEATURE_CACHE_IMAGES):
        self.model = model.eval()
        self.processor = processor
        if feature_cache_images:
            model.enable_image_feature_cache(feature_cache_images)
        self._cache = None
        self._cached_ids: list[int] = []
        self._cached_images: list[str] = []  # what each image span in the cache was computed from

    def reset(self) -> None:
        """Forget the cached prefix (the next call reads its conversation from the start)."""
        self._cache, self._cached_ids, self._cached_images = None, [], []

    @torch.no_grad()
    def reply(
        self,
        messages: Sequence[dict],
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        streamer=None,
        max_time: float | None = None,
    ) -> Reply:
        """The assistant's next turn. `temperature` 0 decodes greedily; generation ends at the end
        of the turn, at a `stop` string (which the reply then leaves out) or after `max_time`
        seconds (finish reason "length"); `streamer` (a transformers streamer) receives the
        reply's tokens as they are generated."""
        flat, images = normalize_messages(messages)
        processor, tokenizer = self.processor, self.processor.tokenizer
        inputs = self.model_inputs(flat, max_new_tokens)
        ids = inputs["input_ids"][0].tolist()
        image_keys = self._image_keys(inputs, instructions=processor.perceiver_instruction(flat))
        keep, reused_images = self._reusable_prefix(ids, image_keys)
        cache = self._cache_for(keep)
        # Until generate returns, the cache matches no recorded tokens: a failed call reuses nothing.
        self._cache, self._cached_ids, self._cached_images = None, [], []
        generate_inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        if len(images) > reused_images:
            generate_inputs.update(select_images(inputs, range(reused_images, len(images))))
        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p}
            if temperature > 0
            else {"do_sample": False}
        )
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        out = self.model.generate(
            **generate_inputs,
            **{CACHE_NAME: cache},
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=pad,
            streamer=streamer,
            max_time=max_time,
            **({"stop_strings": list(stop), "tokenizer": tokenizer} if stop else {}),
            **sampling,
        )
        self._cache, self._cached_ids = cache, out[0, : cache.get_seq_length()].tolist()
        self._cached_images = image_keys
        new = out[0, len(ids) :].tolist()
        text = processor.answer_text(tokenizer.decode(new, skip_special_tokens=True))
        cut = cut_at_stop(text, stop)
        ended = (bool(new) and new[-1] == tokenizer.eos_token_id) or len(cut) < len(text)
        return Reply(
            text=cut,
            prompt_tokens=len(ids),
            completion_tokens=len(new),
            finish_reason="stop" if ended else "length",
            reused_tokens=keep,
        )

    @torch.no_grad()
    def reply_batch(
        self, conversations: Sequence[Sequence[dict]], max_new_tokens: Sequence[int]
    ) -> list[Reply]:
        """Greedy replies to several conversations in one left-padded `generate` call, each what
        `reply` gives it from scratch (the cached prefix is neither used nor changed). Each reply
        ends at its first end of turn or at its own `max_new_tokens`."""
        processor, tokenizer = self.processor, self.processor.tokenizer
        flats = [normalize_messages(messages)[0] for messages in conversations]
        images = [
            [
                part["image"]
                for m in flat
                if not isinstance(m["content"], str)
                for part in m["content"]
                if part["type"] == "image"
            ]
            for flat in flats
        ]
        try:
            inputs = processor(
                text=[processor.apply_chat_template(flat) for flat in flats],
                images=images if any(images) else None,
                instructions=[processor.perceiver_instruction(flat) for flat in flats],
            )
            longest = max(max_new_tokens)
            check_context(
                inputs["input_ids"].shape[-1], longest, self.model.config.text_config.max_position_embeddings
            )
        except ValueError as error:
            raise ConversationError(str(error)) from error
        inputs = inputs.to(self.model.device)
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        out = self.model.generate(
            **inputs, max_new_tokens=longest, do_sample=False, eos_token_id=eos, pad_token_id=pad
        )
        prompt_length = inputs["input_ids"].shape[1]
        replies = []
        for row, limit in enumerate(max_new_tokens):
            new = out[row, prompt_length:].tolist()[:limit]
            if eos in new:
                new = new[: new.index(eos) + 1]
            replies.append(
                Reply(
                    text=processor.answer_text(tokenizer.decode(new, skip_special_tokens=True)),
                    prompt_tokens=int(inputs["attention_mask"][row].sum()),
                    completion_tokens=len(new),
                    finish_reason="stop" if new and new[-1] == eos else "length",
                    reused_tokens=0,
                )
            )
        return replies

    def model_inputs(self, flat: list[dict], max_new_tokens: int):
        """The model inputs of normalized messages, checked to fit the model's context with
        `max_new_tokens` more; what cannot be answered as sent is a `ConversationError`."""
        try:
            inputs = self.processor.apply_chat_template(flat, tokenize=True)
            prompt_tokens = inputs["input_ids"].shape[-1]
            check_context(
                prompt_tokens, max_new_tokens, self.model.config.text_config.max_position_embeddings
            )
        except ValueError as error:  # the processor's and the context check's refusals
            raise ConversationError(str(error)) from error
        return inputs.to(self.model.device)

    def check(self, messages: Sequence[dict], max_new_tokens: int) -> None:
        """Raise the `ConversationError` that `reply` would, without generating (a streamed reply
        can no longer turn into an error response once it has begun)."""
        self.model_inputs(normalize_messages(messages)[0], max_new_tokens)

    def _image_keys(self, inputs, instructions: str) -> list[str]:
        """One key per image: its pixels, and under early fusion the instruction the perceiver
        read with it - the same tokens with another image must not reuse the old one's states."""
        if "pixel_values" not in inputs:
            return []
        suffix = f"|{instructions}" if self.model.config.early_fusion else ""
        grid = inputs.get("image_grid_thw")
        pixels = per_image_pixels(inputs["pixel_values"], grid)
        grids = [None] * len(pixels) if grid is None else list(grid)
        return [ImageFeatureCache.key(p, g) + suffix for p, g in zip(pixels, grids, strict=True)]

    def _reusable_prefix(self, ids: list[int], image_keys: list[str]) -> tuple[int, int]:
        """How many leading tokens of `ids` the cache already holds - cut back to before the first
        image span it would split or whose image differs from the cached one - and how many
        images lie wholly inside that prefix. A target with M-RoPE reuses nothing: its positions
        after the prefix depend on every image of the whole prompt, which only a full prefill sees."""
        if self.model.config.text_mrope_section is not None:
            return 0, 0
        common = 0
        for cached, new in zip(self._cached_ids, ids, strict=False):
            if cached != new:
                break
            common += 1
        common = min(common, len(ids) - 1)  # at least one token to run: its logits start the reply
        config = self.model.config
        starts = [i for i, t in enumerate(ids) if t == config.image_start_token_id]
        ends = [i for i, t in enumerate(ids) if t == config.image_end_token_id]
        for image, (start, end) in enumerate(zip(starts, ends, strict=True)):
            same_image = image < len(self._cached_images) and self._cached_images[image] == image_keys[image]
            if end >= common or not same_image:
                return min(common, start), image
        return common, len(starts)

    def _cache_for(self, keep: int):
        if self._cache is None or keep == 0:
            return DynamicCache(config=self.model.config.get_text_config(decoder=True))
        _crop(self._cache, keep)
        return self._cache


def _crop(cache, keep: int) -> None:
    """Cut the cache back to its first `keep` tokens. A negative argument removes that many tokens
    in every transformers 5.x (a positive one is an error since 5.24, an absolute length before)."""
    remove = cache.get_seq_length() - keep
    if remove > 0:
        cache.crop(-remove)
