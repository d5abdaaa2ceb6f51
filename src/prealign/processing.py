"""`PrealignProcessor`: image processor + target tokenizer (+ the perceiver's tokenizer).

A transformers `ProcessorMixin`: saved and loaded in transformers' layout (`processor_config.json`
with the image processor inside, the tokenizer beside it), found by `AutoProcessor`, accepted by
the Trainer as `processing_class`. It adds the image placeholder and marker tokens by string,
expands every `<image>` placeholder to `<image_start> <image>*N <image_end>`, and builds one
perceiver sequence per image (`[instruction] <image_start> <image>*N <image_end>`, left-padded so
every span ends at the same position). The model then checks that counts match; the processor
never guesses.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    BatchFeature,
    PreTrainedTokenizerBase,
    ProcessorMixin,
)

from .chat_rendering import RenderedChat, render_turn_by_turn
from .config import PrealignConfig
from .image_span import IMAGE_PLACEHOLDER, ImageSpan, grid_token_counts
from .padding import pad_with_mask

# transformers' processor file name, so that `AutoProcessor.from_pretrained` finds the class in it.
PROCESSOR_FILE = "processor_config.json"
LEGACY_PROCESSOR_FILE = "prealign_processor.json"  # what prealign 0.1 wrote
MODEL_CONFIG_FILE = "config.json"
# Settings that describe the model, not the processor: a saved model's config is their source.
MODEL_SETTINGS = {
    "num_image_tokens": "image_seq_length",
    "uses_perceiver": "uses_perceiver",
    "early_fusion": "early_fusion",
}
# Settings that files written by earlier versions name otherwise: read under their names of today.
RENAMED_SETTINGS = {"use_perceiver": "uses_perceiver"}
PERCEIVER_TOKENIZER_DIR = "perceiver_tokenizer"
SPAN_TOKEN_ARGUMENTS = ("image_token", "image_start_token", "image_end_token")  # special_tokens()' order
PERCEIVER_PROMPTS = ("span", "chat")
# How reasoning templates (Qwen3, DeepSeek-R1) delimit the reasoning before an answer.
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class PrealignProcessor(ProcessorMixin):
    """Turns chat prompts with `<image>` placeholders and images into model inputs.

    `image_processor` may be None for a processor that only reads text (`prealign data check`
    with a plain tokenizer); it cannot process or save images then.

    The prompt convention, one for training and inference (`render_chat`): `system_prompt` opens
    every conversation that has no system turn of its own; `thinking=False` renders templates with
    a thinking mode (Qwen3) in their non-thinking mode - the empty `<think>` block is prefilled in
    the prompt, never a label - and `thinking=True` leaves the model to write (and training to
    supervise) its reasoning; `template_variables` are fixed values for what a template would
    otherwise read from the moment it runs (LLaMA-3's `date_string`, today's date by default, so
    a prompt rendered on another day than training's would differ).

    `perceiver_prompt` is what the perceiver reads before each image: `"span"` nothing (under
    early fusion the instruction), `"chat"` the perceiver tokenizer's chat template around a user
    turn that opens with the image (under early fusion: the instruction, then the image), with
    the system prompt - the authors' perceiver reads its image so. What follows the image cannot
    change its states (attention is causal), so a perceiver row ends with the span.

    `image_processor_backend` ("pil", "torchvision") rebuilds the image processor on that backend:
    a loaded processor processes images as it did when it was saved, whatever else is installed."""

    def __init__(
        self,
        image_processor,
        tokenizer: PreTrainedTokenizerBase,
        perceiver_tokenizer: PreTrainedTokenizerBase | None = None,
        num_image_tokens: int | None = None,
        uses_perceiver: bool = False,
        early_fusion: bool = False,
        image_token: str = "<image>",
        image_start_token: str = "<image_start>",
        image_end_token: str = "<image_end>",
        chat_template: str | None = None,
        system_prompt: str | None = None,
        thinking: bool = False,
        template_variables: dict | None = None,
        image_processor_backend: str | None = None,
        perceiver_prompt: str = "span",
    ):
        if early_fusion and not uses_perceiver:
            raise ValueError("early_fusion=True needs uses_perceiver=True.")
        if perceiver_prompt not in PERCEIVER_PROMPTS:
            raise ValueError(
                f"perceiver_prompt={perceiver_prompt!r} is not one of {', '.join(PERCEIVER_PROMPTS)}."
            )
        if image_processor is not None and image_processor_backend is not None:
            image_processor = with_backend(image_processor, image_processor_backend)
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        # Saved with the processor: transformers' own image-processor file does not record it, and
        # picks torchvision where it can be imported, PIL elsewhere (pixel values differ slightly).
        self.image_processor_backend = getattr(image_processor, "backend", None)
        self.num_image_tokens = num_image_tokens
        self.uses_perceiver = uses_perceiver
        self.early_fusion = early_fusion
        self.image_token = image_token
        self.image_start_token = image_start_token
        self.image_end_token = image_end_token
        self.system_prompt = system_prompt
        self.thinking = thinking
        self.template_variables = dict(template_variables or {})
        self.perceiver_prompt = perceiver_prompt
        self.tokenizer.add_tokens(self.special_tokens(), special_tokens=True)
        self.set_perceiver_tokenizer(perceiver_tokenizer)

    def set_perceiver_tokenizer(self, perceiver_tokenizer: PreTrainedTokenizerBase | None) -> None:
        """The perceiver reads with its own tokenizer (given the image tokens too), or with the
        target's when None."""
        self.perceiver_tokenizer = perceiver_tokenizer if perceiver_tokenizer is not None else self.tokenizer
        if self.has_separate_perceiver_tokenizer:
            self.perceiver_tokenizer.add_tokens(self.special_tokens(), special_tokens=True)

    @classmethod
    def get_attributes(cls) -> list[str]:
        """The sub-processors the mixin saves, loads and type-checks. The perceiver's tokenizer is
        not one of them: it is optional (None means the target's, saved once), which the mixin's
        attributes cannot be (upstream reads a missing one from the target's files, with a warning),
        so this class's `save_pretrained` / `from_pretrained` handle it."""
        return ["image_processor", "tokenizer"]

    def check_argument_for_proper_class(self, argument_name: str, argument):
        if argument_name == "image_processor" and argument is None:
            return None  # a text-only processor (see the class docstring)
        return super().check_argument_for_proper_class(argument_name, argument)

    def configure_for(self, config) -> None:
        """Match a `PrealignConfig`: span length N, whether to build perceiver inputs, early fusion."""
        self.num_image_tokens = config.image_seq_length
        self.uses_perceiver = config.uses_perceiver
        self.early_fusion = config.early_fusion

    @property
    def has_separate_perceiver_tokenizer(self) -> bool:
        return self.perceiver_tokenizer is not self.tokenizer

    def _ids(self, tokenizer: PreTrainedTokenizerBase) -> tuple[int, int, int]:
        return tuple(tokenizer.convert_tokens_to_ids(self.special_tokens()))

    def special_tokens(self) -> list[str]:
        return [self.image_token, self.image_start_token, self.image_end_token]

    def token_ids(self) -> dict[str, int]:
        """The placeholder and marker ids, keyed as `PrealignConfig` fields."""
        image, start, end = self._ids(self.tokenizer)
        p_image, p_start, p_end = self._ids(self.perceiver_tokenizer)
        return {
            "image_token_id": image,
            "image_start_token_id": start,
            "image_end_token_id": end,
            "perceiver_image_token_id": p_image,
            "perceiver_image_start_token_id": p_start,
            "perceiver_image_end_token_id": p_end,
        }

    def image_span_tokens(self) -> dict[str, str]:
        """The span's tokens as this class's arguments (image_token, image_start_token, image_end_token)."""
        return dict(zip(SPAN_TOKEN_ARGUMENTS, self.special_tokens(), strict=True))

    def image_span(self, tokenizer: PreTrainedTokenizerBase | None = None) -> ImageSpan:
        """The span's tokens as ids of `tokenizer` (the target's or the perceiver's), or as strings."""
        if tokenizer is None:
            return ImageSpan(self.image_start_token, self.image_token, self.image_end_token)
        image, start, end = self._ids(tokenizer)
        return ImageSpan(start, image, end)

    @property
    def native_resolution(self) -> bool:
        """The image processor sizes each image on its own and says its patch grid (Qwen2-VL's and
        Qwen2.5-VL's, `image_grid_thw`), so N differs per image."""
        return self.image_processor is not None and hasattr(self.image_processor, "merge_size")

    def image_token_counts(self, image_inputs: dict, num_images: int) -> list[int]:
        """N of each processed image: from its patch grid, or the model's fixed count."""
        if "image_grid_thw" in image_inputs:
            return grid_token_counts(image_inputs["image_grid_thw"], self.image_processor.merge_size)
        self.check_configured()
        return [self.num_image_tokens] * num_images

    def image_token_count(self, width: int, height: int) -> int:
        """N of an image of this size, without processing it (length estimates, data checks)."""
        if self.native_resolution:
            patches = self.image_processor.get_number_of_image_patches(height, width, {})
            return patches // self.image_processor.merge_size**2
        self.check_configured()
        return self.num_image_tokens

    def check_configured(self) -> None:
        """A fixed-size tower's N comes from the model config; without it no span can be built."""
        if self.num_image_tokens is None and not self.native_resolution:
            raise ValueError(
                "The processor does not know the image span length yet: build the model with "
                "`from_parts(..., processor=processor)` or call `processor.configure_for(model.config)`."
            )

    def process_images(self, images: Sequence) -> tuple[dict[str, torch.Tensor], list[int]]:
        """The image processor's tensors for the model (pixel values, and a native-resolution
        tower's grids) and each image's N."""
        out = self.image_processor(list(images), return_tensors="pt")
        inputs = {key: out[key] for key in ("pixel_values", "image_grid_thw") if key in out}
        return inputs, self.image_token_counts(inputs, len(images))

    def with_image_tokens(self, text: str) -> str:
        """Prompt text with each `<image>` placeholder written as this processor's image token (the
        same string unless the span uses a tokenizer's own, such as Qwen's `<|image_pad|>`)."""
        return text.replace(IMAGE_PLACEHOLDER, self.image_token)

    def expand_image_placeholders(self, text: str, image_tokens: Sequence[int]) -> str:
        """Replace each image token (or `<image>`) with its image's full span: N image positions
        between the markers."""
        pieces = self.with_image_tokens(text).split(self.image_token)
        if len(pieces) - 1 != len(image_tokens):
            raise ValueError(
                f"{len(pieces) - 1} {self.image_token} placeholders for {len(image_tokens)} images."
            )
        span = self.image_span()
        out = [pieces[0]]
        for n, piece in zip(image_tokens, pieces[1:], strict=True):
            out += [span.text(n), piece]
        return "".join(out)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool, **kwargs) -> str:
        """The prompt or training text of messages with text content (`render_conversation`)."""
        return self.render_conversation(messages, add_generation_prompt, **kwargs).text

    def render_conversation(
        self, messages: list[dict], add_generation_prompt: bool, **kwargs
    ) -> RenderedChat:
        """The chat template over messages with text content, under this processor's prompt
        convention (the class docstring), turn by turn (`chat_rendering`): the one rendering that
        training labels and inference prompts both come from, so each reply's training prefix is
        what inference sends at its turn. Also says where each reply lies in the text."""
        if self.system_prompt is not None and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        messages = [{**m, "content": self.with_image_tokens(m["content"])} for m in messages]
        if isinstance(self.chat_template, str):  # a processor's own template wins, as in transformers
            kwargs.setdefault("chat_template", self.chat_template)
        variables = {"enable_thinking": self.thinking, **self.template_variables, **kwargs}

        def render(turns: list[dict], generation_prompt: bool) -> str:
            return self.tokenizer.apply_chat_template(
                turns, tokenize=False, add_generation_prompt=generation_prompt, **variables
            )

        return render_turn_by_turn(render, messages, add_generation_prompt)

    def answer_text(self, generated: str, complete: bool = True) -> str:
        """A generated reply as the answer: without the reasoning block a model may still open in
        non-thinking mode (the template's scaffolding is not part of an answer). While streaming
        (`complete=False`), nothing is shown while the reply is, or may still become, an open block,
        so what is shown only ever grows."""
        if self.thinking:
            return generated
        stripped = generated.lstrip()
        if stripped.startswith(THINK_OPEN) and THINK_CLOSE in stripped:
            return stripped.split(THINK_CLOSE, 1)[1].lstrip()
        if not complete and (stripped.startswith(THINK_OPEN) or THINK_OPEN.startswith(stripped)):
            return ""
        return generated

    def apply_chat_template(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        tokenize: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> str | BatchFeature:
        """The prompt (`render_chat`) of messages whose image parts become `<image>` placeholders.
        With `tokenize=True`, as transformers' processors do, the model inputs instead: the images
        come from the image parts (`{"type": "image", "image": PIL image}`) and the perceiver's
        instruction from the messages."""
        flat = [{**m, "content": self._content_text(m["content"])} for m in messages]
        text = self.render_chat(flat, add_generation_prompt, **kwargs)
        if not tokenize:
            return text
        if not return_dict:
            raise ValueError("apply_chat_template(tokenize=True) returns the model inputs as a dict.")
        images = [
            part["image"]
            for m in messages
            if not isinstance(m["content"], str)
            for part in m["content"]
            if part.get("type") == "image"
        ]
        if any(image is None for image in images):
            raise ValueError("An image part needs its image to tokenize: {'type': 'image', 'image': ...}.")
        return self(images=images or None, text=text, instructions=[self.perceiver_instruction(messages)])

    def perceiver_instruction(self, messages: list[dict]) -> str:
        """What an early-fusion perceiver reads before each image of a conversation: its first user
        turn without the placeholders (training, evaluation and chat all derive it here)."""
        first = next((m["content"] for m in messages if m["role"] == "user"), "")
        return self.with_image_tokens(self._content_text(first)).replace(self.image_token, "").strip()

    def user_turn(self, question: str, images: Sequence = ()) -> dict:
        """The user message asking `question` about `images`, in the layout of LLaVA-format training
        data: the images first, unless the question already places its placeholders (one per image).
        The one place evaluation, analysis and tools build a user turn."""
        placed = self.with_image_tokens(question).count(self.image_token)
        if placed == 0:
            parts = [{"type": "image", "image": image} for image in images]
            return {"role": "user", "content": [*parts, {"type": "text", "text": question}]}
        if placed != len(images):
            raise ValueError(
                f"the question places {placed} {self.image_token} placeholders for {len(images)} image(s)"
            )
        return {"role": "user", "content": question}

    def _content_text(self, content) -> str:
        """Content parts as the prompt text: an image part is `<image>` and a line break, as an
        image opens a LLaVA-format training record (`<image>\\nquestion`)."""
        if isinstance(content, str):
            return content
        parts = []
        for part in content:
            if part.get("type") == "image":
                parts.append(f"{IMAGE_PLACEHOLDER}\n")
            elif part.get("type") == "text":
                parts.append(part["text"])
            else:
                raise ValueError(f"Unknown message content part type {part.get('type')!r}.")
        return "".join(parts)

    def __call__(
        self,
        images: Sequence | Image.Image | None = None,
        text: str | Sequence[str] | None = None,
        instructions: Sequence[str] | str | None = None,
        padding_side: str = "left",
        add_special_tokens: bool = False,
        return_tensors: str = "pt",
    ) -> BatchFeature:
        """Tokenize prompts, expand placeholders, process images and build perceiver sequences.

        `images` is a flat list in prompt order (sample by sample, left to right) or one list per
        sample. `instructions` (one per sample) is what the perceiver reads before each image of
        that sample when early fusion is on. Prompts are left-padded by default, as generation
        needs (it continues each row from its last position). Prompts usually come from the chat
        template, which writes its own special tokens; hence `add_special_tokens=False` by default.
        The arguments come in transformers' order (`images`, then `text`).
        """
        if text is None:
            raise ValueError("Give the prompts as text=...: each image is read at an <image> placeholder.")
        self.check_configured()
        texts = [self.with_image_tokens(t) for t in ([text] if isinstance(text, str) else text)]
        flat_images = _flatten_images(images)
        counts = [t.count(self.image_token) for t in texts]
        if sum(counts) != len(flat_images):
            raise ValueError(
                f"The prompts hold {sum(counts)} {self.image_token} placeholders (per sample: {counts}) but "
                f"{len(flat_images)} images were given."
            )
        image_inputs, image_tokens = self.process_images(flat_images) if flat_images else ({}, [])
        per_sample = _split_counts(image_tokens, counts)
        expanded = [self.expand_image_placeholders(t, n) for t, n in zip(texts, per_sample, strict=True)]
        batch = self.tokenizer(
            expanded,
            padding=True,
            padding_side=padding_side,
            add_special_tokens=add_special_tokens,
            return_tensors=return_tensors,
        )
        data = dict(batch)
        self._check_expanded_counts(data["input_ids"], per_sample)
        data.update(image_inputs)
        if flat_images and self.uses_perceiver:
            data.update(self.perceiver_inputs(per_sample, instructions))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _check_expanded_counts(self, input_ids: torch.Tensor, per_sample: list[list[int]]) -> None:
        image_id, start_id, end_id = self._ids(self.tokenizer)
        got = (input_ids == image_id).sum(-1).tolist()
        want = [sum(n) for n in per_sample]
        if got != want:
            raise ValueError(
                f"After tokenization the samples hold {got} {self.image_token} tokens, expected {want}: the "
                f"tokenizer splits or merges {self.image_token!r}."
            )
        images = [len(n) for n in per_sample]
        for marker, marker_id in ((self.image_start_token, start_id), (self.image_end_token, end_id)):
            if (found := (input_ids == marker_id).sum(-1).tolist()) != images:
                raise ValueError(
                    f"the prompts hold {found} {marker} markers for {images} images: the image markers "
                    "are written by the processor, not typed as text."
                )

    def perceiver_inputs(
        self, image_tokens: Sequence[Sequence[int]], instructions: Sequence[str] | str | None = None
    ) -> dict[str, torch.Tensor]:
        """One left-padded perceiver sequence per image, in sample -> image order; `image_tokens`
        holds each sample's images' N."""
        if isinstance(instructions, str):
            instructions = [instructions]
        if self.early_fusion and (instructions is None or len(instructions) != len(image_tokens)):
            raise ValueError(
                "Early fusion needs one instruction per sample (the text the perceiver reads before the "
                f"image); got {None if instructions is None else len(instructions)} for "
                f"{len(image_tokens)} samples."
            )
        span = self.image_span(self.perceiver_tokenizer)
        sequences = []
        for sample, counts in enumerate(image_tokens):
            instruction = instructions[sample] if self.early_fusion else ""
            prefix = self.perceiver_tokenizer(self.perceiver_prefix(instruction), add_special_tokens=False)
            sequences += [prefix["input_ids"] + span.ids(n) for n in counts]
        ids, mask = pad_with_mask(sequences, self.perceiver_pad_id(), "left")
        return {"perceiver_input_ids": ids, "perceiver_attention_mask": mask}

    def batch_prompts(self, prompts: Sequence[Mapping[str, torch.Tensor]]) -> BatchFeature:
        """Prompts this processor made one at a time, as the one batch it makes of them together:
        rows left-padded again, images in sample -> image order. A server prepares each request as
        it arrives and batches the prepared ones, so no image is processed twice."""
        rows = [p["input_ids"][0][p["attention_mask"][0].bool()] for p in prompts]
        input_ids, attention_mask = pad_with_mask(rows, self.tokenizer.pad_token_id, "left")
        data = {"input_ids": input_ids, "attention_mask": attention_mask}
        with_images = [p for p in prompts if "pixel_values" in p]
        for key in ("pixel_values", "image_grid_thw"):
            if with_images and key in with_images[0]:
                data[key] = torch.cat([p[key] for p in with_images])
        if with_images and "perceiver_input_ids" in with_images[0]:
            sequences = [
                ids[mask.bool()]
                for p in with_images
                for ids, mask in zip(p["perceiver_input_ids"], p["perceiver_attention_mask"], strict=True)
            ]
            ids, mask = pad_with_mask(sequences, self.perceiver_pad_id(), "left")
            data.update(perceiver_input_ids=ids, perceiver_attention_mask=mask)
        return BatchFeature(data=data, tensor_type="pt")

    def perceiver_prefix(self, instruction: str = "") -> str:
        """The text the perceiver reads before an image (see `perceiver_prompt`)."""
        if self.perceiver_prompt == "span":
            return instruction
        turns = [{"role": "user", "content": instruction + self.image_token}]
        if self.system_prompt is not None:
            turns.insert(0, {"role": "system", "content": self.system_prompt})
        rendered = self.perceiver_tokenizer.apply_chat_template(
            turns, tokenize=False, add_generation_prompt=False
        )
        return rendered[: rendered.index(self.image_token)]

    def perceiver_pad_id(self) -> int:
        # Padded positions are masked out; any valid id works, the pad token is the natural one.
        tok = self.perceiver_tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id or 0

    def to_dict(self) -> dict:
        """The mixin's `processor_config.json` content, without the perceiver's tokenizer (saved
        as tokenizer files of its own, like the target's)."""
        view = copy.copy(self)
        del view.perceiver_tokenizer
        return ProcessorMixin.to_dict(view)

    def save_pretrained(self, save_directory: str | Path, push_to_hub: bool = False, **kwargs) -> list[str]:
        directory = Path(save_directory)
        if directory.is_file():
            raise FileExistsError(f"Cannot save the processor to {directory}: it is a file, not a folder.")
        if self.image_processor is None:
            raise ValueError("This processor has no image processor (it reads text only): nothing to save.")
        if push_to_hub:
            raise ValueError(
                "save_pretrained(push_to_hub=True) would upload before the perceiver's tokenizer is "
                "written: use processor.push_to_hub(repo_id), which saves everything, then uploads."
            )
        files = super().save_pretrained(str(directory), **kwargs)
        if self.has_separate_perceiver_tokenizer:
            self.perceiver_tokenizer.save_pretrained(directory / PERCEIVER_TOKENIZER_DIR)
        return files

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> PrealignProcessor:
        """Load a processor saved by `save_pretrained` (a local folder, or a hub id on a machine
        that can reach the hub). Beside a saved model, the model's config is the source of its
        span length, perceiver and early fusion, and its token ids must be the tokenizers' own:
        a processor file or tokenizer that disagrees is an error."""
        directory = Path(pretrained_model_name_or_path)
        if not directory.is_dir():
            from huggingface_hub import snapshot_download

            hub = {k: v for k, v in kwargs.items() if k in ("revision", "token", "cache_dir")}
            directory = Path(snapshot_download(str(directory), **hub))
        processor = super().from_pretrained(str(directory), **kwargs)
        processor.set_perceiver_tokenizer(_saved_perceiver_tokenizer(directory))
        _check_token_ids(directory, processor.token_ids())
        return processor

    @classmethod
    def get_processor_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict, dict]:
        """The mixin's `processor_config.json` (or prealign 0.1's file), checked to be ours, with the
        model-dependent settings taken from the model config beside it."""
        processor_dict, rest = super().get_processor_dict(pretrained_model_name_or_path, **kwargs)
        directory = Path(pretrained_model_name_or_path)
        settings_file = directory / PROCESSOR_FILE
        if not settings_file.is_file() and (directory / LEGACY_PROCESSOR_FILE).is_file():
            settings_file = directory / LEGACY_PROCESSOR_FILE
            processor_dict = {**json.loads(settings_file.read_text()), **processor_dict}
        if not settings_file.is_file():
            raise FileNotFoundError(
                f"{directory / PROCESSOR_FILE} not found: not a folder saved by PrealignProcessor."
            )
        if processor_dict.get("processor_class", cls.__name__) != cls.__name__:
            raise ValueError(f"{settings_file} is not a {cls.__name__} file (processor_class).")
        for old_name, name in RENAMED_SETTINGS.items():
            if old_name in processor_dict:
                processor_dict[name] = processor_dict.pop(old_name)
        processor_dict.update(_model_settings(directory, processor_dict, settings_file))
        return processor_dict, rest


def with_backend(image_processor, backend: str):
    """`image_processor` on `backend`: itself, or rebuilt from its settings through transformers'
    `AutoImageProcessor`. A backend this environment cannot give is an error, not another one."""
    if getattr(image_processor, "backend", None) == backend:
        return image_processor
    with tempfile.TemporaryDirectory() as folder:
        image_processor.save_pretrained(folder)
        try:
            rebuilt = AutoImageProcessor.from_pretrained(folder, backend=backend)
        except (ImportError, ValueError) as error:
            rebuilt, reason = None, str(error)
    if rebuilt is not None and rebuilt.backend == backend:
        return rebuilt
    found = f"got the {rebuilt.backend} backend" if rebuilt is not None else reason
    needs = " (torchvision)" if backend == "torchvision" else ""
    raise ValueError(
        f"The processor asks for the {backend!r} image-processor backend (recorded when it was saved), "
        f"which this environment cannot give ({found}); its pixel values would differ from those the "
        f"model was trained on. Install what that backend needs{needs}, or pass "
        "image_processor_backend= to accept another."
    )


def _saved_perceiver_tokenizer(directory: Path) -> PreTrainedTokenizerBase | None:
    """The perceiver's own tokenizer saved in `directory`, or None where none was (the perceiver
    reads with the target's). A folder that cannot be read is an error, never the target's."""
    folder = directory / PERCEIVER_TOKENIZER_DIR
    if not folder.exists():
        return None
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{folder} holds the perceiver's own tokenizer but cannot be read ({error}); the target's "
            "tokenizer would give the perceiver other ids. Save the processor again, or restore the folder."
        ) from error


def _check_token_ids(directory: Path, token_ids: dict[str, int]) -> None:
    """A saved model's image and marker ids must be the ones its processor's tokenizers give: with
    other ids the model would read its image features at the wrong positions, or none."""
    config = _prealign_config(directory)
    if config is None:
        return
    saved = {key: getattr(config, key) for key in token_ids}
    wrong = {
        key: (want, token_ids[key])
        for key, want in saved.items()
        if want is not None and want != token_ids[key]
    }
    if wrong:
        listed = ", ".join(f"{key}: config {want}, tokenizer {got}" for key, (want, got) in wrong.items())
        raise ValueError(
            f"The model config {directory / MODEL_CONFIG_FILE} and the tokenizers saved beside it disagree "
            f"on the image token ids ({listed}): the tokenizer files were changed, or were read differently "
            "by this transformers version. Save the processor with the model again."
        )


def _prealign_config(directory: Path):
    """The prealign model config saved in `directory`, or None where there is none."""
    config_file = directory / MODEL_CONFIG_FILE
    if not config_file.is_file():
        return None
    if json.loads(config_file.read_text()).get("model_type") != PrealignConfig.model_type:
        return None
    return PrealignConfig.from_pretrained(directory)


def _model_settings(directory: Path, settings: dict, settings_file: Path) -> dict:
    """The model-dependent settings from a prealign model config saved in `directory` (none when
    there is no such config), checked against the processor file's copies."""
    config = _prealign_config(directory)
    if config is None:
        return {}
    config_file = directory / MODEL_CONFIG_FILE
    from_config = {key: getattr(config, field) for key, field in MODEL_SETTINGS.items()}
    for key, value in from_config.items():
        if key in settings and settings[key] is not None and settings[key] != value:
            raise ValueError(
                f"{settings_file} says {key}={settings[key]!r} but the model config {config_file} says "
                f"{MODEL_SETTINGS[key]}={value!r}: the processor would build inputs for another model. "
                "Save the processor again with the model, or fix the file."
            )
    return from_config


def _split_counts(image_tokens: list[int], images_per_sample: list[int]) -> list[list[int]]:
    """Flat per-image counts -> one list per sample."""
    out, start = [], 0
    for n in images_per_sample:
        out.append(image_tokens[start : start + n])
        start += n
    return out


def _flatten_images(images) -> list:
    if images is None:
        return []
    if isinstance(images, Image.Image):
        return [images]
    flat = []
    for item in images:
        flat.extend(item if isinstance(item, list | tuple) else [item])
    return flat
