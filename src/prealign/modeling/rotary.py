"""Multimodal rotary position embedding (Qwen2.5-VL's M-RoPE) for any rotary causal LM.

M-RoPE gives each image token a (temporal, height, width) position and lets each band of an
attention head's rotary frequencies follow one of the three axes; text tokens have equal
positions on all three, which makes M-RoPE on text exactly ordinary RoPE. The rotation itself is
the LM's own: `MultimodalRotaryEmbedding` wraps the LM's rotary module (its theta, scaling and
dtype handling) and only picks, band by band, which axis's angles each frequency uses - so the
same Qwen3 (or LLaMA) blocks run with 1-D or 3-D positions, as in the authors' perceiver.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

AXES = 3  # temporal, height, width


class MultimodalRotaryEmbedding(nn.Module):
    """An LM's rotary module that also takes (3, batch, length) position ids."""

    def __init__(self, rotary: nn.Module, section: Sequence[int]):
        super().__init__()
        self.rotary = rotary
        self.section = list(section)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if position_ids.ndim == 2:
            return self.rotary(x, position_ids)
        per_axis = [self.rotary(x, position_ids[axis]) for axis in range(AXES)]
        cos = self._recompose([cos for cos, _ in per_axis])
        sin = self._recompose([sin for _, sin in per_axis])
        return cos, sin

    def _recompose(self, per_axis: list[torch.Tensor]) -> torch.Tensor:
        # HF rotary modules return cat(angles, angles) over the head dimension; band i of the
        # angles comes from axis i, as Qwen2.5-VL's `mrope_section` splits them.
        half = per_axis[0].shape[-1] // 2
        bands = [angles[..., :half].split(self.section, dim=-1) for angles in per_axis]
        angles = torch.cat([bands[axis][axis] for axis in range(AXES)], dim=-1)
        return torch.cat((angles, angles), dim=-1)


def use_multimodal_rotary(language_model: nn.Module, section: Sequence[int]) -> None:
    """Give a rotary causal LM (its base model, which owns `rotary_emb`) M-RoPE; idempotent."""
    rotary = getattr(language_model, "rotary_emb", None)
    if rotary is None:
        raise TypeError(
            f"{type(language_model).__name__} has no rotary embedding (rotary_emb) to make multimodal."
        )
    if isinstance(rotary, MultimodalRotaryEmbedding):
        rotary.section = list(section)
        return
    language_model.rotary_emb = MultimodalRotaryEmbedding(rotary, section)


def multimodal_positions(
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor,
    image_token_id: int,
    image_grid_thw: torch.Tensor,
    merge_size: int,
) -> torch.LongTensor:
    """(3, batch, length) M-RoPE positions, as Qwen2.5-VL computes them.

    Text tokens count 0, 1, 2, ... from each row's first real token (padding gets 0). Each run of
    image tokens - the images in row order, one grid each - is laid out on its merged (t, h, w)
    grid starting at the running position, and text after it resumes past the grid's largest
    extent. Padding and images are read from `attention_mask` and `image_token_id`.
    """
    positions = torch.zeros(AXES, *input_ids.shape, dtype=torch.long, device=input_ids.device)
    grids = iter(image_grid_thw.tolist())
    for row, (ids, mask) in enumerate(zip(input_ids.tolist(), attention_mask.bool().tolist(), strict=True)):
        real = [i for i, keep in enumerate(mask) if keep]
        row_positions, next_position, i = [], 0, 0
        while i < len(real):
            if ids[real[i]] != image_token_id:
                row_positions.append(torch.full((AXES, 1), next_position))
                next_position += 1
                i += 1
                continue
            t, h, w = next(grids)
            h, w = h // merge_size, w // merge_size
            grid = torch.stack(
                torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
            )
            row_positions.append(grid.reshape(AXES, -1) + next_position)
            next_position += max(t, h, w)
            i += t * h * w
        if row_positions:
            positions[:, row, real] = torch.cat(row_positions, dim=1).to(positions.device)
    return positions
