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

from PIL import Image, UnidentifiedImageError
from transformers import BatchFeature, DynamicCache

from ..image_span import per_image_pixels, select_images
from ..images import to_rgb
from ..modeling.checks import check_context
from ..modeling.feature_cache import ImageFeatureCache
from .generation import Generation, Reply

ROLES = ("system", "user", "assistant")
DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_FEATURE_CACHE_IMAGES = 16  # images whose features a chat or server keeps


class ConversationError(ValueError):
    """A conversation that cannot be answered as given (unknown role, bad content part, an image
    that cannot be read); the message says which message and part."""


def load_message_image(source: str | Path | Image.Image, where: str) -> Image.Image:
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
                images.append(load_message_image(part["image"], f"messages[{i}].content[{j}]"))
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


@dataclass(frozen=True)
class Prompt:
    """A conversation ready for the model: its messages in the processor's format, its model
    inputs (checked to fit the context with `max_new_tokens` more) and how many images it holds."""

    messages: list[dict]
    inputs: BatchFeature
    images: int
    max_new_tokens: int

    @property
    def tokens(self) -> int:
        return self.inputs["input_ids"].shape[-1]


class Conversations:
    """Greedy or sampled replies to conversations with one model, one at a time or batched."""

    def __init__(self, model, processor, feature_cache_images: int = DEFAULT_FEATURE_CACHE_IMAGES):
        self.model = model.eval()
        self.processor = processor
        if feature_cache_images:
            model.enable_image_feature_cache(feature_cache_images)
        self._cache = None
        self._cached_ids: list[int] = []
        self._cached_images: list[str] = []  # what each image span in the cache was computed from

    @property
    def context(self) -> int:
        return self.model.config.text_config.max_position_embeddings

    def reset(self) -> None:
        """Forget the cached prefix (the next call reads its conversation from the start)."""
        self._cache, self._cached_ids, self._cached_images = None, [], []

    def prepare(self, messages: Sequence[dict], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> Prompt:
        """The conversation as model inputs; what cannot be answered as sent (a bad part, an
        unreadable image, forged image markers, too long for the context) is a `ConversationError`."""
        flat, images = normalize_messages(messages)
        try:
            inputs = self.processor.apply_chat_template(flat, tokenize=True)
            check_context(inputs["input_ids"].shape[-1], max_new_tokens, self.context)
        except ValueError as error:  # the processor's and the context check's refusals
            raise ConversationError(str(error)) from error
        return Prompt(flat, inputs, len(images), max_new_tokens)

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
        generation = self.start(self.prepare(messages, max_new_tokens), temperature, top_p, stop, streamer)
        generation.advance(max_time=max_time)
        return generation.replies()[0]

    def reply_batch(
        self, conversations: Sequence[Sequence[dict]], max_new_tokens: Sequence[int]
    ) -> list[Reply]:
        """Greedy replies to several conversations in one left-padded `generate` call, each what
        `reply` gives it from scratch. Each reply ends at its first end of turn or at its own
        `max_new_tokens`."""
        prompts = [self.prepare(c, n) for c, n in zip(conversations, max_new_tokens, strict=True)]
        generation = self.start_batch(prompts)
        generation.advance()
        return generation.replies()

    def start(
        self,
        prompt: Prompt,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        streamer=None,
    ) -> Generation:
        """The reply to `prompt`, to be generated (`Generation.advance`), continuing from the KV
        cache of the previous reply where the conversations agree; when it ends, its own cache
        becomes the one the next call may continue from."""
        inputs = prompt.inputs.to(self.model.device)
        ids = inputs["input_ids"][0].tolist()
        instruction = self.processor.perceiver_instruction(prompt.messages)
        image_keys = self._image_keys(inputs, instruction)
        keep, reused_images = self._reusable_prefix(ids, image_keys)
        cache = self._cache_for(keep)
        # Until the reply ends, the cache matches no recorded tokens: a failed call reuses nothing.
        self._cache, self._cached_ids, self._cached_images = None, [], []

        def remember(generation: Generation) -> None:
            length = cache.get_seq_length()
            self._cache, self._cached_ids = cache, generation.input_ids[0, :length].tolist()
            self._cached_images = image_keys

        sampling = (
            {"do_sample": True, "temperature": temperature, "top_p": top_p}
            if temperature > 0
            else {"do_sample": False}
        )
        new_images = range(reused_images, prompt.images)
        first = select_images(inputs, new_images) if new_images else {}
        return Generation(
            self.model,
            self.processor,
            inputs["input_ids"],
            inputs["attention_mask"],
            cache,
            [prompt.max_new_tokens],
            sampling=sampling,
            stop=tuple(stop),
            streamer=streamer,
            first_inputs=first,
            reused_tokens=keep,
            on_finish=remember,
        )

    def start_batch(self, prompts: Sequence[Prompt]) -> Generation:
        """Greedy replies to several prompts in one left-padded batch, to be generated; the cached
        prefix is neither used nor changed."""
        if not self.fit_together(prompts):
            raise ConversationError(
                f"these prompts do not fit the context of {self.context} positions together; answer them "
                "one at a time"
            )
        inputs = self.processor.batch_prompts([p.inputs for p in prompts]).to(self.model.device)
        ids, mask = inputs.pop("input_ids"), inputs.pop("attention_mask")
        cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
        return Generation(
            self.model,
            self.processor,
            ids,
            mask,
            cache,
            [p.max_new_tokens for p in prompts],
            first_inputs=dict(inputs),
        )

    def fit_together(self, prompts: Sequence[Prompt]) -> bool:
        """Whether one batch holds these prompts: left-padded to the longest, each row runs to the
        batch's most new tokens."""
        return max(p.tokens for p in prompts) + max(p.max_new_tokens for p in prompts) <= self.context

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
