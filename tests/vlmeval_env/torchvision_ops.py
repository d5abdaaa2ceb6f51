"""Test-environment shim: lets the VLMEvalKit environment's torchvision import beside the CPU torch.

torchvision 0.28.0 (the release paired with torch 2.13) is a CUDA build here: its C extension does
not load, and `import torchvision` then fails registering fake kernels for operators that were never
defined ("operator torchvision::nms does not exist"). VLMEvalKit imports torchvision at start-up.
Defining the two operator schemas first - `nms` with a pure-torch CPU kernel - lets it import;
prealign's code never imports this, and the main environment has no torchvision.
"""

from __future__ import annotations

import torch


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept, highest score first (torchvision.ops.nms's contract)."""
    order = scores.argsort(descending=True)
    keep = []
    while order.numel():
        best, rest = order[0], order[1:]
        keep.append(best)
        top_left = torch.maximum(boxes[best, :2], boxes[rest, :2])
        bottom_right = torch.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = (bottom_right - top_left).clamp(min=0).prod(-1)
        iou = inter / (_box_area(boxes[best]) + _box_area(boxes[rest]) - inter)
        order = rest[iou <= iou_threshold]
    return torch.stack(keep) if keep else torch.empty(0, dtype=torch.long)


_LIBRARY = torch.library.Library("torchvision", "DEF")
_LIBRARY.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_LIBRARY.impl("nms", _nms, "CPU")
_LIBRARY.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
