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


class PerceiverLM(nn.Module):
    """Small-LM blocks (or their ablation stand-in) that pre-align the image span."""

    def __init__(self, config: PrealignConfig):
        super().__init__()
        lm_config = config.perceiver_text_config
        self.config = config
        self.blocks = config.perceiver_blocks
        if self.blocks == "lm":
            self.language_model = AutoModel.from_config(lm_config)
        else:
            # Ablations keep the LM's token embeddings (markers, instruction) but not its blocks.
            self.embed_tokens = nn.Embedding(lm_config.vocab_size, lm_config.hidden_size)
            if self.blocks == "mlp":
                self.mlp = EqualParameterMLP(lm_config.hidden_size, config.perceiver_mlp_hidden_size)

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
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor, image_features: torch.Tensor
    ) -> torch.Tensor:
        """Span states of every image, flattened in image -> position order: (images * span, d_p).

        `input_ids` holds one left-padded perceiver sequence per image; `image_features`
        (images, N, d_p) fills its `<image>` positions.
        """
        span_ids = self.span_token_ids()
        embeds = self.get_input_embeddings()(input_ids)
        image_mask = input_ids == span_ids[0]
        n_features = image_features.shape[0] * image_features.shape[1]
        if eager_checks() and (n_positions := int(image_mask.sum())) != n_features:
            raise ValueError(
                f"Perceiver input has {n_positions} <image> positions but the vision tower gave {n_features} "
                f"features ({image_features.shape[0]} images x {image_features.shape[1]})."
            )
        embeds = embeds.masked_scatter(image_mask.unsqueeze(-1), image_features.to(embeds.dtype))
        hidden = self._run_blocks(embeds, attention_mask)
        span_mask = torch.isin(input_ids, torch.tensor(span_ids, device=input_ids.device))
        expected = input_ids.shape[0] * self.config.image_span_length
        if eager_checks() and int(span_mask.sum()) != expected:
            raise ValueError(
                f"Perceiver input has {int(span_mask.sum())} image-span positions; expected {expected} "
                f"({input_ids.shape[0]} images x {self.config.image_span_length}). Each perceiver sequence "
                "must hold exactly one image span."
            )
        return hidden[span_mask]

    def _run_blocks(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.blocks == "none":
            return embeds
        if self.blocks == "mlp":
            return self.mlp(embeds)
        # Left padding: positions count from each sequence's first real token.
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
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
