"""`PrealignConfig`: one composite config for the LLaVA baseline and every DPA variant.

The sub-configs are ordinary configs of the parts (any HF vision tower, any HF causal LM), so the
model builds each part with `AutoModel.from_config` and no backbone needs a branch of its own.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, get_args

import torch
from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, AutoModel, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .image_span import span_length

ProjectorType = Literal["mlp2x_gelu", "linear_relu_linear", "linear", "merger"]
# Native-resolution towers (Qwen2-VL, Qwen2.5-VL) take flattened patches and a (t, h, w) grid per
# image and merge merge x merge patches into one feature; their configs say so with this field.
GRID_TOWER_FIELD = "spatial_merge_size"


def merger_width_field(vision_config: PreTrainedConfig) -> str:
    """The config field of a native-resolution tower's output width (its merger's): Qwen2.5-VL
    names it `out_hidden_size`; Qwen2-VL's `hidden_size` is it (its ViT width is `embed_dim`)."""
    return "out_hidden_size" if hasattr(vision_config, "out_hidden_size") else "hidden_size"


PerceiverBlockKind = Literal["lm", "mlp", "none"]


@strict
class PrealignConfig(PreTrainedConfig):
    r"""Configuration of `PrealignForConditionalGeneration`.

    Args:
        vision_config: config of the vision tower (SigLIP, CLIP, ... vision model).
        text_config: config of the target causal LM (the big LM that answers).
        perceiver_text_config: config of the perceiver's small causal LM. `None` builds the LLaVA
            baseline (vision tower -> projector -> target LM).
        vision_feature_layer: index into the vision tower's `hidden_states`.
        vision_feature_select_strategy: `"full"` keeps every position; `"drop_cls"` drops the first
            one (the class token of CLIP-like towers).
        image_seq_length: feature positions per image (N) of a fixed-size tower. Computed from
            `vision_config` when unset; None for native-resolution towers, whose N differs per
            image (`prealign.image_span`).
        projector_type: the projector from the vision tower into the first LM (the baseline's phi,
            or the perceiver's phi_p). LLaVA's is `"mlp2x_gelu"`; `"merger"` is a native-resolution
            tower's own merger (its output width must be the first LM's), as the authors' DPA uses.
        aligner_type: DPA's aligner phi from the perceiver to the target. The authors use
            `"linear_relu_linear"` (Linear d_p->d_p, ReLU, Linear d_p->d_t).
        perceiver_blocks: what processes the image span inside the perceiver: `"lm"` (the small
            LM's decoder blocks), `"mlp"` (an MLP with the same parameter count as those blocks,
            the paper's large-MLP ablation) or `"none"` (the ViT-only ablation: phi_p's output goes
            straight to the aligner).
        perceiver_feature_layer: index into the perceiver LM's `hidden_states`; -1 is after the
            final norm, as the authors take it.
        perceiver_mlp_hidden_size: hidden width of the MLP stand-in; computed so its parameter
            count equals the LM blocks' when unset.
        include_image_markers: whether the image start/end markers belong to the DPA image span
            (N+2 features per image, as the authors do) or only the N image positions do.
        early_fusion: the perceiver also reads the user's instruction, placed before the image.
        perceiver_mrope_section: multimodal rotary embedding (Qwen2.5-VL's M-RoPE) in the perceiver
            LM: how many of each attention head's rotary frequencies follow an image token's
            temporal, height and width position (summing to half the head dimension; the authors'
            [16, 24, 24]). Text keeps 1-D positions; the rotary base (theta) is the perceiver LM
            config's own. None keeps 1-D positions everywhere. Needs a native-resolution tower.
        text_mrope_section: the same for the target LM (the authors' baseline gives its target
            M-RoPE; their DPA target keeps 1-D positions), decoding included.
        image_token_id / image_start_token_id / image_end_token_id: the target tokenizer's ids of
            the placeholder and markers, set from the processor (looked up by string, never fixed).
        perceiver_image_token_id / ...: the same ids in the perceiver's tokenizer.
    """

    model_type = "prealign"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="siglip_vision_model"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen3"),
        "perceiver_text_config": SubConfigSpec(config_class=AutoConfig, model_type="qwen3", optional=True),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    perceiver_text_config: dict | PreTrainedConfig | None = None
    vision_feature_layer: int = -1
    vision_feature_select_strategy: Literal["full", "drop_cls"] = "full"
    image_seq_length: int | None = None
    projector_type: ProjectorType = "mlp2x_gelu"
    aligner_type: ProjectorType = "linear_relu_linear"
    perceiver_blocks: PerceiverBlockKind = "lm"
    perceiver_feature_layer: int = -1
    perceiver_mlp_hidden_size: int | None = None
    include_image_markers: bool = True
    early_fusion: bool = False
    perceiver_mrope_section: list[int] | None = None
    text_mrope_section: list[int] | None = None
    image_token_id: int | None = None
    image_start_token_id: int | None = None
    image_end_token_id: int | None = None
    perceiver_image_token_id: int | None = None
    perceiver_image_start_token_id: int | None = None
    perceiver_image_end_token_id: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._reject_unknown_keys(kwargs)
        if self.text_config.tie_word_embeddings:
            self.tie_word_embeddings = True
        self.check_consistency()
        if self.image_seq_length is None and not self.native_resolution:
            self.image_seq_length = count_image_features(
                self.vision_config, self.vision_feature_layer, self.vision_feature_select_strategy
            )
        if self.uses_perceiver and self.perceiver_blocks == "mlp" and self.perceiver_mlp_hidden_size is None:
            self.perceiver_mlp_hidden_size = equal_parameter_mlp_width(self.perceiver_text_config)

    def _reject_unknown_keys(self, kwargs: dict) -> None:
        """A misspelt field (`projector_typ`) would otherwise be stored as a stray attribute while
        the default is trained. What transformers itself consumes (saved names, the attention
        implementation, legacy keys) never becomes a plain attribute, so it passes."""
        own = {f.name for f in dataclasses.fields(self)}
        stray = sorted(
            key
            for key in kwargs
            if key not in own and key != "model_type" and not key.startswith("_") and key in self.__dict__
        )
        if stray:
            ours = sorted(own - {f.name for f in dataclasses.fields(PreTrainedConfig)})
            raise ValueError(f"PrealignConfig got unknown key(s) {stray}; its fields are {ours}.")

    @property
    def uses_perceiver(self) -> bool:
        """True for Deep Pre-Alignment, False for the LLaVA baseline."""
        return self.perceiver_text_config is not None

    @property
    def native_resolution(self) -> bool:
        """The vision tower reads each image at its own size (N differs per image)."""
        return hasattr(self.vision_config, GRID_TOWER_FIELD)

    @property
    def vision_feature_size(self) -> int:
        """Width of the features the vision tower hands the projector."""
        if self.native_resolution:
            return getattr(self.vision_config, merger_width_field(self.vision_config))
        return self.vision_config.hidden_size

    @property
    def first_lm_config(self) -> PreTrainedConfig:
        """The LM the vision features go into: the perceiver's for DPA, the target for the baseline."""
        return self.perceiver_text_config if self.uses_perceiver else self.text_config

    @property
    def image_span_length(self) -> int:
        """Target positions one image fills, for a fixed-size tower (all images alike)."""
        if self.image_seq_length is None:
            raise ValueError(
                "A native-resolution tower's images differ in length: use features_per_image(N)."
            )
        return self.features_per_image(self.image_seq_length)

    def features_per_image(self, image_tokens: int) -> int:
        """Target positions one image of N image tokens fills: N, plus its markers under DPA."""
        return (
            span_length(image_tokens) if self.uses_perceiver and self.include_image_markers else image_tokens
        )

    def check_consistency(self) -> None:
        """Reject combinations that would silently train something other than what was asked."""
        choices = {
            "projector_type": get_args(ProjectorType),
            "aligner_type": get_args(ProjectorType),
            "perceiver_blocks": get_args(PerceiverBlockKind),
            "vision_feature_select_strategy": ("full", "drop_cls"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}.")
        n_vision = self.vision_config.num_hidden_layers
        if not -(n_vision + 1) <= self.vision_feature_layer <= n_vision:
            raise ValueError(
                f"vision_feature_layer={self.vision_feature_layer} is out of range for a vision tower "
                f"with {n_vision} layers (valid: {-(n_vision + 1)}..{n_vision})."
            )
        self._check_vision_path()
        if not self.uses_perceiver:
            if self.early_fusion:
                raise ValueError("early_fusion=True needs a perceiver (perceiver_text_config is None).")
            return
        if self.perceiver_blocks == "lm":
            n_lm = self.perceiver_text_config.num_hidden_layers
            if not -(n_lm + 1) <= self.perceiver_feature_layer <= n_lm:
                raise ValueError(
                    f"perceiver_feature_layer={self.perceiver_feature_layer} is out of range for a perceiver "
                    f"LM with {n_lm} layers (valid: {-(n_lm + 1)}..{n_lm})."
                )
        else:
            if self.early_fusion:
                raise ValueError(
                    f"early_fusion=True needs perceiver_blocks='lm': with perceiver_blocks="
                    f"'{self.perceiver_blocks}' nothing mixes the instruction into the image positions."
                )
            if self.perceiver_feature_layer != -1:
                raise ValueError(
                    f"perceiver_feature_layer={self.perceiver_feature_layer} only applies to "
                    f"perceiver_blocks='lm' (got '{self.perceiver_blocks}')."
                )

    def _check_vision_path(self) -> None:
        """Native-resolution towers: features come from their merger, M-RoPE needs their grid."""
        if self.native_resolution:
            if self.vision_feature_layer != -1 or self.vision_feature_select_strategy != "full":
                raise ValueError(
                    "A native-resolution vision tower gives its merged last-layer features: "
                    "vision_feature_layer must be -1 and vision_feature_select_strategy 'full'."
                )
            if self.image_seq_length is not None:
                raise ValueError(
                    "image_seq_length does not apply to a native-resolution vision tower: each image's N "
                    "comes from its size."
                )
        if self.projector_type == "merger":
            if not self.native_resolution:
                raise ValueError(
                    "projector_type='merger' needs a vision tower with a merger (Qwen2-VL, Qwen2.5-VL)."
                )
            width = self.vision_feature_size
            if width != self.first_lm_config.hidden_size:
                raise ValueError(
                    f"projector_type='merger': the tower's merger gives width {width} "
                    f"but the LM it feeds has hidden_size {self.first_lm_config.hidden_size}; from_parts "
                    "re-initialises the merger's output layer to that width."
                )
        if self.perceiver_mrope_section is not None and not (
            self.uses_perceiver and self.perceiver_blocks == "lm"
        ):
            raise ValueError("perceiver_mrope_section needs a perceiver LM (perceiver_blocks='lm').")
        for field, lm in (
            ("perceiver_mrope_section", self.perceiver_text_config),
            ("text_mrope_section", self.text_config),
        ):
            section = getattr(self, field)
            if section is None:
                continue
            if not self.native_resolution:
                raise ValueError(
                    f"{field} needs a native-resolution vision tower: M-RoPE positions come from each "
                    "image's grid."
                )
            head_dim = getattr(lm, "head_dim", None) or lm.hidden_size // lm.num_attention_heads
            if len(section) != 3 or sum(section) != head_dim // 2:
                raise ValueError(
                    f"{field}={list(section)} must have 3 entries (temporal, height, width) summing to "
                    f"half the LM's head dimension, {head_dim // 2}."
                )


def count_image_features(vision_config: PreTrainedConfig, feature_layer: int, strategy: str) -> int:
    """Feature positions per image, measured by running the tower on the meta device.

    Measuring instead of computing from `image_size`/`patch_size` means towers with a class token,
    registers or pooling need no special case.
    """
    size = vision_config.image_size
    with torch.device("meta"):
        tower = AutoModel.from_config(vision_config)
        pixels = torch.empty(1, vision_config.num_channels, size, size)
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[feature_layer]
    return hidden.shape[1] - (1 if strategy == "drop_cls" else 0)


def equal_parameter_mlp_width(lm_config: PreTrainedConfig) -> int:
    """Hidden width h of a d->h->d MLP whose parameter count equals the LM's decoder blocks."""
    with torch.device("meta"):
        lm = AutoModel.from_config(lm_config)
    # everything but the token embeddings: the decoder blocks (and the final norm, d parameters)
    block_params = sum(p.numel() for p in lm.parameters()) - lm.get_input_embeddings().weight.numel()
    d = lm_config.hidden_size
    # params(h) = d*h + h (first Linear) + h*d + d (second Linear)
    return max(1, round((block_params - d) / (2 * d + 1)))
