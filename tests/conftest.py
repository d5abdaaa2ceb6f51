"""Shared fixtures: tiny random-init real HF architectures, images drawn on the fly, no downloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_image(seed: int, size: tuple[int, int] = (40, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


@pytest.fixture
def images() -> list[Image.Image]:
    return [random_image(seed) for seed in range(4)]


def user_prompt(processor, content: str) -> str:
    return processor.apply_chat_template([{"role": "user", "content": content}])
