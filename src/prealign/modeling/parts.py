"""Loading the pretrained parts `from_parts` assembles: a vision tower and causal LMs."""

from __future__ import annotations

import copy
from os import PathLike

import torch
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    PreTrainedModel,
)
from transformers.models.qwen2_vl import Qwen2VLVisionConfig
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

from ..config import GRID_TOWER_FIELD, merger_width_field

# transformers builds Qwen2.5-VL's tower from its vision config but has no AutoModel entry for
# Qwen2-VL's, whose tower keeps the same contract (patches + grid in, merged features out).
AutoModel.register(Qwen2VLVisionConfig, Qwen2VisionTransformerPretrainedModel, exist_ok=True)


def load_vision_tower(spec: str | PathLike | PreTrainedModel, **load_kwargs) -> PreTrainedModel:
    """A vision tower from a folder, hub id or model.

    A whole model is accepted too - a dual encoder (CLIP, SigLIP) or a VLM (Qwen2.5-VL): its image
    encoder (transformers' `get_encoder(modality="image")`) is the tower.
    """
    model = spec if isinstance(spec, PreTrainedModel) else AutoModel.from_pretrained(spec, **load_kwargs)
    tower = model.get_encoder(modality="image")
    if not isinstance(tower, PreTrainedModel) or (tower is model and not _is_vision_config(model.config)):
        raise TypeError(
            f"{type(model).__name__} does not expose a vision tower model (expected a vision model, a dual "
            "encoder or a VLM with an image encoder)."
        )
    return tower


def _is_vision_config(config) -> bool:
    return not hasattr(config, "vocab_size") or hasattr(config, GRID_TOWER_FIELD)


def with_merger_width(tower: PreTrainedModel, width: int) -> PreTrainedModel:
    """A native-resolution tower whose merger outputs `width` (the LM it feeds): the tower's own
    weights are kept and the merger layers whose shape changes are initialised anew - the
    authors' phi_p, a pretrained VLM's merger re-initialised to the perceiver's width."""
    if not hasattr(tower.config, GRID_TOWER_FIELD):
        raise ValueError(f"{type(tower).__name__} has no merger to serve as the projector.")
    field = merger_width_field(tower.config)
    if getattr(tower.config, field) == width:
        return tower
    config = copy.deepcopy(tower.config)
    setattr(config, field, width)
    reference = next(tower.parameters())
    with torch.device(reference.device):
        resized = type(tower)(config).to(reference.dtype)  # new layers get the tower's own init
    wanted = resized.state_dict()
    kept = {key: value for key, value in tower.state_dict().items() if wanted[key].shape == value.shape}
    resized.load_state_dict(kept, strict=False)
    return resized


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
