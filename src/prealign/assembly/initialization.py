"""Where a DPA model's weights come from, for the paper's variants.

- `dpa` and most rows: the perceiver is a small VLM trained with the baseline recipe (vision
  tower + projector phi_p + small LM as target); `dpa_from_perceiver_vlm` moves it in key for key.
- `dpa_untrained_perceiver`: `from_parts` with a pretrained ViT and small LM; phi_p is new.
- `vit_only`: `perceiver_blocks="none"` + `dpa_from_perceiver_vlm` (ViT and phi_p trained).
- `random_lm`: any of the above + `reinitialize_perceiver_lm`.
- `large_mlp`: `perceiver_blocks="mlp"`; the MLP stand-in is new.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from ..modeling import PrealignForConditionalGeneration
from ..processing import PrealignProcessor


def dpa_from_perceiver_vlm(
    perceiver_vlm: PrealignForConditionalGeneration,
    text_model,
    processor: PrealignProcessor,
    **config_kwargs,
) -> PrealignForConditionalGeneration:
    """A DPA model whose perceiver (ViT, phi_p, LM) is a trained small VLM, and whose target is `text_model`.

    `perceiver_vlm` is a baseline-class model trained with the small LM as its target; the
    processor's perceiver tokenizer must be that VLM's tokenizer (its image tokens included).
    Like `from_parts`, the new model adopts the VLM's modules rather than copying them.
    """
    if perceiver_vlm.config.uses_perceiver:
        raise ValueError("perceiver_vlm must be a baseline-class small VLM (ViT -> projector -> small LM).")
    # The perceiver reads images as the small VLM learnt to: its projector, and its LM's positions.
    vlm = perceiver_vlm.config
    inherited = {
        "projector_type": vlm.projector_type,
        "vision_feature_layer": vlm.vision_feature_layer,
        "vision_feature_select_strategy": vlm.vision_feature_select_strategy,
    }
    if config_kwargs.get("perceiver_blocks", "lm") == "lm":
        inherited["perceiver_mrope_section"] = vlm.text_mrope_section
    config_kwargs = {**inherited, **config_kwargs}
    model = PrealignForConditionalGeneration.from_parts(
        vision_model=perceiver_vlm.model.vision_tower,
        text_model=text_model,
        perceiver_text_model=perceiver_vlm.target_lm(),
        processor=processor,
        **config_kwargs,
    )
    model.model.projector.load_state_dict(perceiver_vlm.model.projector.state_dict())
    return model


def reinitialize(module: nn.Module, owner: PreTrainedModel) -> None:
    """Fresh random weights for every parameter of `module`, by `owner`'s own init scheme."""
    for param in module.parameters():
        param._is_hf_initialized = False  # transformers' init functions skip tensors flagged as loaded
    module.apply(owner._init_weights)


def reinitialize_perceiver_lm(model: PrealignForConditionalGeneration) -> None:
    """The `random_lm` ablation: the perceiver's LM blocks lose their language pre-training."""
    perceiver = model.model.perceiver
    if perceiver is None or perceiver.blocks != "lm":
        raise ValueError("reinitialize_perceiver_lm needs a DPA model with perceiver_blocks='lm'.")
    reinitialize(perceiver.language_model, perceiver.language_model)
