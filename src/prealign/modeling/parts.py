"""Loading the pretrained parts `from_parts` assembles: a vision tower and causal LMs."""

from __future__ import annotations

from os import PathLike

from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel


def load_vision_tower(spec: str | PathLike | PreTrainedModel, **load_kwargs) -> PreTrainedModel:
    """A vision tower from a folder, hub id or model.

    Dual encoders (CLIP, SigLIP) are accepted too: their `.vision_model` is the tower.
    """
    model = spec if isinstance(spec, PreTrainedModel) else AutoModel.from_pretrained(spec, **load_kwargs)
    tower = getattr(model, "vision_model", model)
    if not isinstance(tower, PreTrainedModel):
        raise TypeError(
            f"{type(model).__name__} does not expose a vision tower model (expected a vision model or a dual "
            "encoder whose `.vision_model` is one)."
        )
    return tower


def load_causal_lm(spec: str | PathLike | PreTrainedModel, **load_kwargs) -> PreTrainedModel:
    """A causal LM (with its head) from a folder, hub id or model."""
    model = (
        spec
        if isinstance(spec, PreTrainedModel)
        else AutoModelForCausalLM.from_pretrained(spec, **load_kwargs)
    )
    if model.get_output_embeddings() is None or model.base_model is model:
        raise TypeError(
            f"{type(model).__name__} is not a causal LM with a head; pass an AutoModelForCausalLM checkpoint."
        )
    return model
