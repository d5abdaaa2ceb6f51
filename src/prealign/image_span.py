"""The image span: how one image appears in a token sequence, and how long it is.

Every image is written as `<image_start> <image>*N <image_end>` - in the target's text and in the
perceiver's input alike - where N is the number of feature positions the vision tower gives that
image. Fixed-size towers (SigLIP, CLIP) give every image the same N; native-resolution towers
(Qwen2-VL, Qwen2.5-VL) give N = t*h*w / merge**2 from the image's patch grid, so it differs per
image. This module is the one place that builds a span and knows its length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

MARKERS = 2  # `<image_start>` and `<image_end>` around the N image positions


def span_length(image_tokens: int) -> int:
    """Positions of one whole span: the N image positions and the two markers."""
    return image_tokens + MARKERS


@dataclass(frozen=True)
class ImageSpan:
    """A span's three tokens, as strings or ids of one tokenizer."""

    start: str | int
    image: str | int
    end: str | int

    def ids(self, image_tokens: int) -> list[int]:
        return [self.start, *[self.image] * image_tokens, self.end]

    def text(self, image_tokens: int) -> str:
        return self.start + self.image * image_tokens + self.end


def grid_token_counts(image_grid_thw: torch.Tensor, merge_size: int) -> list[int]:
    """N per image of a native-resolution tower: its (t, h, w) patch grid, merged merge x merge."""
    return [int(n) // merge_size**2 for n in image_grid_thw.prod(-1).tolist()]


def split_per_image(rows: torch.Tensor, counts: Sequence[int]) -> tuple[torch.Tensor, ...]:
    """Rows flattened in image order (features, patches) -> one tensor per image."""
    if rows.shape[0] != sum(counts):
        raise ValueError(f"{rows.shape[0]} rows do not split into images of {list(counts)} rows.")
    return torch.split(rows, list(counts))
