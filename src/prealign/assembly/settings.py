"""What a model is assembled from: a saved checkpoint, or pretrained parts and a variant."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

DType = Literal["float32", "bfloat16", "float16"]
DTYPES = get_args(DType)  # the dtypes a model is loaded in, by torch's names


@dataclass
class ModelSettings:
    """Either a saved prealign `checkpoint` (e.g. stage 1's output) or parts to assemble.

    `variant` names a row of the paper's ablation table (prealign.variants.VARIANTS): it supplies
    config values, how the perceiver starts and whether stage 2 freezes it.
    """

    variant: str = "dpa"
    checkpoint: str | None = None
    vision: str | None = None
    text: str | None = None
    perceiver: str | None = None  # a pretrained small causal LM (dpa_untrained_perceiver)
    perceiver_vlm: str | None = None  # a small VLM trained with the baseline recipe (the usual perceiver)
    perceiver_tokenizer: str | None = None  # when the perceiver's vocabulary differs from the target's
    config: dict[str, Any] = field(default_factory=dict)  # PrealignConfig fields
    # The prompt convention of training and of every later use (PrealignProcessor: system_prompt,
    # thinking, template_variables); saved with the processor, so a checkpoint carries its own.
    prompt: dict[str, Any] = field(default_factory=dict)
    # The image span's tokens (PrealignProcessor's image_token, image_start_token, image_end_token):
    # a tokenizer's own vision tokens, such as Qwen's <|image_pad|> <|vision_start|> <|vision_end|>,
    # are used as they are. Unset: prealign's own (added to the tokenizers), or a perceiver VLM's.
    image_tokens: dict[str, str] = field(default_factory=dict)
    # Settings of the vision checkpoint's image processor (AutoImageProcessor.from_pretrained
    # arguments), e.g. {max_pixels: 262144}: a native-resolution tower's pixel budget per image.
    image_processor: dict[str, Any] = field(default_factory=dict)
    dtype: DType | None = None
    attn_implementation: str | None = None
