"""A bounded cache of image features keyed by image content, for multi-turn inference.

In the instruction-agnostic modes (the baseline, DPA without early fusion) what the target LM
receives for an image depends on the image alone, so a second question about the same image
can reuse it and skip the vision tower and the perceiver. Early fusion's features depend on the
instruction too, so the model never consults the cache for it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch


class ImageFeatureCache:
    """Least-recently-used map from one image's pixels to its features (span length, width)."""

    def __init__(self, max_images: int = 64):
        if max_images < 1:
            raise ValueError(f"max_images must be at least 1, got {max_images}")
        self.max_images = max_images
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(pixels: torch.Tensor, grid_thw: torch.Tensor | None = None) -> str:
        """A digest of one image's pixel tensor (its values, shape and dtype) and, for a
        native-resolution tower, its patch grid (the same patches on another grid are another image)."""
        data = pixels.detach().contiguous().cpu()
        grid = None if grid_thw is None else tuple(grid_thw.tolist())
        digest = hashlib.blake2b(f"{tuple(data.shape)}{data.dtype}{grid}".encode(), digest_size=16)
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
        return digest.hexdigest()

    def get(self, key: str) -> torch.Tensor | None:
        features = self._entries.get(key)
        if features is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return features

    def put(self, key: str, features: torch.Tensor) -> None:
        self._entries[key] = features.detach()
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_images:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
