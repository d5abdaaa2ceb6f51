"""`PrealignCollator`: samples -> a padded batch the model takes as it is."""

from __future__ import annotations

from typing import Literal

import torch

from ..padding import pad_rows, pad_with_mask
from ..processing import PrealignProcessor
from .encoding import IGNORE_INDEX


class PrealignCollator:
    """Pads ids/labels/masks (right for training, left for generation) and stacks the images.

    Images are concatenated in sample -> image order, as the model fills image spans; the
    perceiver's sequences (one per image) come from the processor, left-padded. `None` samples
    (records the dataset skipped) are dropped.
    """

    def __init__(self, processor: PrealignProcessor, padding_side: Literal["right", "left"] = "right"):
        self.processor = processor
        self.padding_side = padding_side
        pad = processor.tokenizer.pad_token_id
        if pad is None:
            raise ValueError("The target tokenizer has no pad token; set tokenizer.pad_token first.")
        self.pad_id = pad

    def __call__(self, samples: list[dict | None]) -> dict[str, torch.Tensor]:
        samples = [s for s in samples if s is not None]
        if not samples:
            raise ValueError("Every sample of this batch was skipped; see the dataset's stats.")
        side = self.padding_side
        input_ids, attention_mask = pad_with_mask([s["input_ids"] for s in samples], self.pad_id, side)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": pad_rows([s["labels"] for s in samples], IGNORE_INDEX, side),
        }
        with_images = [s for s in samples if s.get("num_images")]
        if with_images:
            for key in ("pixel_values", "image_grid_thw"):
                if key in with_images[0]:
                    batch[key] = torch.cat([s[key] for s in with_images])
            if self.processor.uses_perceiver:
                image_tokens = [s["image_tokens"] for s in samples]
                batch.update(
                    self.processor.perceiver_inputs(image_tokens, [s["instruction"] for s in samples])
                )
        return batch
