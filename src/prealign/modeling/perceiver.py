"""The perceiver's language part: turns projected image features into pre-aligned span states.

The perceiver of the paper is a whole small VLM. Its vision tower and internal projector phi_p are
the model's `vision_tower` and `projector` (so a trained small VLM - the baseline class with the
small LM as target - maps onto a perceiver key for key); this module is what follows them: the
small LM's blocks (or an ablation's stand-in) over `[instruction] <image_start> <image>*N <image_end>`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel

from ..config import PrealignConfig
from .checks import eager_checks
from .projectors import EqualParameterMLP
from .rotary import multimodal_positions, use_multimodal_rotary


class PerceiverBlocks(nn.Module):
    """Small-LM blocks (or their ablation stand-in) that pre-align the image span."""

    def __init__(self, config: PrealignConfig):
        super().__init__()
        lm_config = config.perceiver_text_config
        self.config = config
        self.blocks = config.perceiver_blocks
        if self.blocks == "lm":
            self.set_language_model(AutoModel.from_config(lm_config))
        else:
            # Ablations keep the LM's token embeddings (markers, instruction) but not its blocks.
            self.embed_tokens = nn.Embedding(lm_config.vocab_size, lm_config.hidden_size)
            if self.blocks == "mlp":
                self.mlp = EqualParameterMLP(lm_config.hidden_size, config.perceiver_mlp_hidden_size)

    def set_language_model(self, language_model: nn.Module) -> None:
        """The small LM's body (no head), given M-RoPE when the config asks for it."""
        if self.config.perceiver_mrope_section is not None:
            use_multimodal_rotary(language_model, self.config.perceiver_mrope_section)
        self.language_model = language_model

    def get_input_embeddings(self) -> nn.Embedding:
        return self.language_model.get_input_embeddings() if self.blocks == "lm" else self.embed_tokens

    def resize_token_embeddings(self, num_tokens: int) -> None:
        """Grow the token table for added tokens; new rows start at the mean of the old ones."""
        if self.blocks == "lm":
            self.language_model.resize_token_embeddings(num_tokens)
            return
        old = self.embed_tokens.weight
        if num_tokens == old.shape[0]:
            return
        new = nn.Embedding(num_tokens, old.shape[1], device=old.device, dtype=old.dtype)
        with torch.no_grad():
            keep = min(num_tokens, old.shape[0])
            new.weight[:keep] = old[:keep]
            new.weight[keep:] = old.mean(0)
        self.embed_tokens = new

    def span_token_ids(self) -> list[int]:
        config = self.config
        ids = [config.perceiver_image_token_id]
        if config.include_image_markers:
            ids += [config.perceiver_image_start_token_id, config.perceiver_image_end_token_id]
        if None in ids:
            raise ValueError(
                "The perceiver's image token ids are not set in the config (perceiver_image_token_id, "
                "perceiver_image_start_token_id, perceiver_image_end_token_id); build the model with "
                "`from_parts(..., processor=...)` or set them from the processor."
            )
        return ids

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor,
        image_features: torch.Tensor,
        image_grid_thw: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Span states of every image, flattened in image -> position order: (span positions, d_p).

        `input_ids` holds one left-padded perceiver sequence per image; `image_features`
        (all images' N positions in order, d_p) fills its `<image>` positions. A native-resolution
        tower's `image_grid_thw` gives the M-RoPE positions when the config asks for them.
        """
        span_ids = self.span_token_ids()
        embeds = self.get_input_embeddings()(input_ids)
        image_mask = input_ids == span_ids[0]
        image_features = image_features.flatten(0, -2)
        if eager_checks() and (n_positions := int(image_mask.sum())) != image_features.shape[0]:
            raise ValueError(
                f"Perceiver input has {n_positions} <image> positions but the vision tower gave "
                f"{image_features.shape[0]} features for its {input_ids.shape[0]} images."
            )
        embeds = embeds.masked_scatter(image_mask.unsqueeze(-1), image_features.to(embeds.dtype))
        hidden = self._run_blocks(input_ids, embeds, attention_mask, image_grid_thw)
        span_mask = torch.isin(input_ids, torch.tensor(span_ids, device=input_ids.device))
        if eager_checks():
            self._check_one_span_per_row(image_mask, span_mask)
        return hidden[span_mask]

    def _check_one_span_per_row(self, image_mask: torch.Tensor, span_mask: torch.Tensor) -> None:
        expected = [self.config.features_per_image(n) for n in image_mask.sum(-1).tolist()]
        got = span_mask.sum(-1).tolist()
        if got != expected:
            raise ValueError(
                f"Perceiver rows hold {got} image-span positions; expected {expected} (each row's <image> "
                "positions and its markers). Each perceiver sequence must hold exactly one image span."
            )

    def _run_blocks(
        self,
        input_ids: torch.LongTensor,
        embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        image_grid_thw: torch.Tensor | None,
    ) -> torch.Tensor:
        if self.blocks == "none":
            return embeds
        if self.blocks == "mlp":
            return self.mlp(embeds)
        position_ids = self.position_ids(input_ids, attention_mask, image_grid_thw)
        feature_layer = self.config.perceiver_feature_layer
        want_layer = feature_layer != -1
        out = self.language_model(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            output_hidden_states=want_layer,
        )
        return out.hidden_states[feature_layer] if want_layer else out.last_hidden_state

    def position_ids(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor, image_grid_thw: torch.Tensor | None
    ) -> torch.LongTensor:
        """1-D positions counted from each left-padded row's first real token, or M-RoPE's 3-D ones."""
        if self.config.perceiver_mrope_section is None:
            return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if image_grid_thw is None:
            raise ValueError(
                "An M-RoPE perceiver needs each image's image_grid_thw (the processor gives it)."
            )
        merge_size = self.config.vision_config.spatial_merge_size
        return multimodal_positions(
            input_ids, attention_mask, self.config.perceiver_image_token_id, image_grid_thw, merge_size
        )
