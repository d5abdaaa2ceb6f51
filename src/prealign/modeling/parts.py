"""Loading the pretrained parts `from_parts` assembles: a vision tower and causal LMs."""

from __future__ import annotations

from os import PathLike

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, PreTrainedModel


def load_vision_tower(
    spec: str | PathLike | PreTrainedModel, dtype: torch.dtype | None = None
) -> PreTrainedModel:
    """A vision tower from a folder, hub id or model.

    Dual encoders (CLIP, SigLIP) are accepted too: their `.vision_model` is the tower.
    """
    if isinstance(spec, PreTrainedModel):
        model = spec
    else:
        config = AutoConfig.from_pretrained(spec)
        model = AutoModel.from_pretrained(spec, dtype=dtype) if dtype else AutoModel.from_pretrained(spec)
        if getattr(config, "vision_config", None) is None and not hasattr(model, "vision_model"):
            return model
    tower = getattr(model, "vision_model", model)
    if not isinstance(tower, PreTrainedModel):
        raise TypeError(
            f"{type(model).__name__} does not expose a vision tower model (expected a vision model or a dual "
            "encoder whose `.vision_model` is one)."
        )
    return tower


def load_causal_lm(
    spec: str | PathLike | PreTrainedModel, dtype: torch.dtype | None = None
) -> PreTrainedModel:
    """A causal LM (with its head) from a folder, hub id or model."""
    model = (
        spec
        if isinstance(spec, PreTrainedModel)
        else AutoModelForCausalLM.from_pretrained(spec, **({"dtype": dtype} if dtype else {}))
    )
    if model.get_output_embeddings() is None or model.base_model is model:
        raise TypeError(
            f"{type(model).__name__} is not a causal LM with a head; pass an AutoModelForCausalLM checkpoint."
        )
    return model
