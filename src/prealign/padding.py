"""Id rows padded into one batch tensor: the single implementation behind training batches (right
padding, so labels line up), prompts and perceiver sequences (left padding, so generation and every
image span end at the same column) and the nano LM corpus."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch


def pad_rows(
    rows: Sequence[Sequence[int] | torch.Tensor], value: int, side: Literal["left", "right"]
) -> torch.Tensor:
    """(rows, longest row) long tensor: each row at the given side, `value` elsewhere."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be 'left' or 'right', got {side!r}")
    length = max(len(row) for row in rows)
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if n := len(row):
            target = out[i, :n] if side == "right" else out[i, length - n :]
            target.copy_(torch.as_tensor(row, dtype=torch.long))
    return out


def pad_with_mask(
    rows: Sequence[Sequence[int] | torch.Tensor], value: int, side: Literal["left", "right"]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The padded ids and their attention mask (1 on the rows' own positions)."""
    return pad_rows(rows, value, side), pad_rows([[1] * len(row) for row in rows], 0, side)
