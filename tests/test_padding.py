"""The one padding implementation: rows at their side, the pad value and a zero mask elsewhere."""

from __future__ import annotations

import pytest
import torch

from prealign.padding import pad_rows, pad_with_mask


def test_rows_sit_at_their_side_with_a_mask_over_their_own_positions():
    rows = [[5, 6, 7], [8], []]
    ids, mask = pad_with_mask(rows, value=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    ids, mask = pad_with_mask([torch.tensor(r, dtype=torch.long) for r in rows], value=-1, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, -1, -1], [-1, -1, -1]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long


def test_an_unknown_side_is_an_error():
    with pytest.raises(ValueError, match="'left' or 'right', got 'top'"):
        pad_rows([[1]], 0, "top")
