"""The image span: how one image appears in a token sequence, and how long it is.

Every image is written as `<image_start> <image>*N <image_end>` - in the target's text and in the
perceiver's input alike - where N is the number of feature positions the vision tower gives that
image. Fixed-size towers (SigLIP, CLIP) give every image the same N; native-resolution towers
(Qwen2-VL, Qwen2.5-VL) give N = t*h*w / merge**2 from the image's patch grid, so it differs per
image. This module is the one place that builds a span and knows its length. Prompts and data
mark an image with LLaVA's `<image>` placeholder; the processor turns it into the span.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

MARKERS = 2  # `<image_start>` and `<image_end>` around the N image positions
# Where an image goes in prompts and LLaVA-format data, whatever tokens the span is made of (a
# Qwen model's span is `<|vision_start|> <|image_pad|>*N <|vision_end|>`).
IMAGE_PLACEHOLDER = "<image>"


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


# The model inputs that hold one entry per image (a native-resolution tower's pixel_values: one
# row per patch, grouped by image as image_grid_thw says).
PER_IMAGE_INPUTS = ("pixel_values", "image_grid_thw", "perceiver_input_ids", "perceiver_attention_mask")


def per_image_pixels(pixel_values: torch.Tensor, image_grid_thw: torch.Tensor | None) -> list[torch.Tensor]:
    """Each image's pixels: a fixed-size tower's (channels, height, width), or a native-resolution
    tower's patch rows."""
    if image_grid_thw is None:
        return list(pixel_values)
    return list(split_per_image(pixel_values, image_grid_thw.prod(-1).tolist()))


def select_images(inputs: dict, keep: Sequence[int]) -> dict[str, torch.Tensor]:
    """The per-image inputs of the images `keep` (indices in image order), as the model takes them."""
    grid = inputs.get("image_grid_thw")
    picked = torch.tensor(list(keep), dtype=torch.long)
    out = {}
    for key in PER_IMAGE_INPUTS:
        if key not in inputs or inputs[key] is None:
            continue
        if key == "pixel_values" and grid is not None:
            pixels = per_image_pixels(inputs[key], grid)
            out[key] = torch.cat([pixels[i] for i in keep]) if keep else inputs[key][:0]
        else:
            out[key] = inputs[key][picked.to(inputs[key].device)]
    return out
