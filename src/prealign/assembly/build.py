"""A model and its processor from `ModelSettings`: a saved folder, or pretrained parts assembled
as a variant of the paper's ablation table (with the variant's starting weights)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoTokenizer

from ..modeling import PrealignForConditionalGeneration
from ..modeling.parts import load_causal_lm
from ..processing import SPAN_TOKEN_ARGUMENTS, PrealignProcessor
from ..variants import VARIANTS, Variant
from .initialization import dpa_from_perceiver_vlm, reinitialize_perceiver_lm
from .settings import ModelSettings


def load_saved(
    folder: str | Path, dtype: str | torch.dtype | None = None, attn_implementation: str | None = None
) -> tuple[PrealignForConditionalGeneration, PrealignProcessor]:
    """A saved prealign model and its processor (as training, `convert` and `export` write them),
    in eval mode; `dtype` (torch.bfloat16, "bfloat16", "auto") and `attn_implementation` as
    transformers takes them, unset: transformers' defaults."""
    load = _given({"dtype": dtype, "attn_implementation": attn_implementation})
    model = PrealignForConditionalGeneration.from_pretrained(str(folder), **load)
    return model, PrealignProcessor.from_pretrained(str(folder))


def _given(load: dict) -> dict:
    """The loading arguments that were set: an unset one leaves transformers' default."""
    return {key: value for key, value in load.items() if value}


def build_model_and_processor(settings: ModelSettings):
    """A saved prealign checkpoint, or a model of `settings.variant` assembled from pretrained parts."""
    _check_local_paths(settings)
    dtype = getattr(torch, settings.dtype) if settings.dtype else None  # a DType: checked by the settings
    load = _given({"dtype": dtype, "attn_implementation": settings.attn_implementation})
    if settings.checkpoint:
        if settings.config:
            raise ValueError(
                f"model.config {settings.config} cannot apply to model.checkpoint {settings.checkpoint}: "
                "a saved model's architecture is fixed; config values apply when assembling from parts."
            )
        if settings.image_processor:
            raise ValueError(
                f"model.image_processor cannot apply to model.checkpoint {settings.checkpoint}: its "
                "processor carries the settings it was trained with; they apply when assembling from parts."
            )
        model, processor = load_saved(settings.checkpoint, **load)
        _check_checkpoint_processor(settings, processor)
        return model, processor
    variant = VARIANTS[settings.variant]
    check_parts(settings, variant)
    config = {**variant.config, **settings.config}
    if settings.perceiver_vlm:
        vlm, vlm_processor = load_saved(settings.perceiver_vlm, **load)
        processor = PrealignProcessor(
            vlm_processor.image_processor,
            AutoTokenizer.from_pretrained(settings.text),
            vlm_processor.tokenizer,
            **_prompt_convention(settings),
            **{**vlm_processor.image_span_tokens(), **_image_tokens(settings)},
        )
        text = load_causal_lm(settings.text, **load)
        model = dpa_from_perceiver_vlm(vlm, text, processor, **config)
    else:
        perceiver_tokenizer = (
            AutoTokenizer.from_pretrained(settings.perceiver_tokenizer)
            if settings.perceiver_tokenizer
            else None
        )
        processor = PrealignProcessor(
            AutoImageProcessor.from_pretrained(settings.vision, **settings.image_processor),
            AutoTokenizer.from_pretrained(settings.text),
            perceiver_tokenizer,
            **_prompt_convention(settings),
            **_image_tokens(settings),
        )
        model = PrealignForConditionalGeneration.from_parts(
            settings.vision, settings.text, settings.perceiver, processor=processor, **load, **config
        )
    if variant.perceiver_init == "random_lm_blocks":
        reinitialize_perceiver_lm(model)
    return model, processor


PROMPT_SETTINGS = ("system_prompt", "thinking", "template_variables", "perceiver_prompt")


def _prompt_convention(settings: ModelSettings) -> dict:
    unknown = sorted(set(settings.prompt) - set(PROMPT_SETTINGS))
    if unknown:
        raise ValueError(f"model.prompt: unknown setting(s) {unknown} (known: {', '.join(PROMPT_SETTINGS)}).")
    return settings.prompt


def _check_checkpoint_processor(settings: ModelSettings, processor: PrealignProcessor) -> None:
    """A checkpoint's processor carries the prompt convention and image tokens it was trained with:
    settings may repeat them (a recipe's shared file does), never change them."""
    wanted = {**_prompt_convention(settings), **_image_tokens(settings)}
    differ = {
        key: (value, getattr(processor, key))
        for key, value in wanted.items()
        if getattr(processor, key) != value
    }
    if differ:
        listed = ", ".join(
            f"{key}: settings {want!r}, checkpoint {got!r}" for key, (want, got) in differ.items()
        )
        raise ValueError(
            f"model.prompt / model.image_tokens differ from what model.checkpoint {settings.checkpoint} was "
            f"trained with ({listed}); a checkpoint keeps its own."
        )


def _image_tokens(settings: ModelSettings) -> dict:
    unknown = sorted(set(settings.image_tokens) - set(SPAN_TOKEN_ARGUMENTS))
    if unknown:
        raise ValueError(
            f"model.image_tokens: unknown key(s) {unknown} (known: {', '.join(SPAN_TOKEN_ARGUMENTS)})."
        )
    return settings.image_tokens


def _check_local_paths(settings: ModelSettings) -> None:
    """A missing local folder would reach the hub client and be reported as a bad repo id."""
    for key in ("checkpoint", "vision", "text", "perceiver", "perceiver_vlm", "perceiver_tokenizer"):
        value = getattr(settings, key)
        if value and not Path(value).exists() and _looks_local(value):
            raise FileNotFoundError(f"model.{key}: {value} does not exist (no such folder).")


def _looks_local(name: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else can only be a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def check_parts(settings: ModelSettings, variant: Variant) -> None:
    """The parts a variant is assembled from are given, and nothing that it would ignore."""
    where = f"model (variant {variant.name})"
    if not settings.text:
        raise ValueError(f"{where}: give `checkpoint`, or `text` (the target LM) and the perceiver's parts.")
    if not variant.uses_perceiver:
        if settings.perceiver or settings.perceiver_vlm or not settings.vision:
            raise ValueError(f"{where}: the baseline takes `vision` and `text` only.")
    elif variant.perceiver_init == "untrained":
        if not (settings.vision and settings.perceiver):
            raise ValueError(
                f"{where}: needs `vision` and `perceiver` (a pretrained small LM); phi_p is new."
            )
    elif not settings.perceiver_vlm:
        raise ValueError(
            f"{where}: needs `perceiver_vlm`, a small VLM trained with the baseline recipe (stage "
            "'align' then 'finetune' with the small LM as `text`); or use variant dpa_untrained_perceiver."
        )
    else:
        # The perceiver VLM brings its own tower, image processor, perceiver LM and tokenizer: any of
        # these given as well would be ignored, and the user would train another model than the one named.
        ignored = [
            key
            for key in ("vision", "perceiver", "perceiver_tokenizer", "image_processor")
            if getattr(settings, key)
        ]
        if ignored:
            raise ValueError(
                f"{where}: {', '.join(f'`{k}`' for k in ignored)} cannot apply with `perceiver_vlm` "
                f"({settings.perceiver_vlm}), which brings its own vision tower and image processor, "
                "perceiver LM and tokenizer."
            )
