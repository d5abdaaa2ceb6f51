"""Parameters and forward FLOPs per component: what DPA's perceiver adds to a LLaVA-style model.

FLOPs are counted by torch's `FlopCounterMode` on a real forward pass (matrix multiplies and
attention, as torch counts them), so any vision tower and LM is measured the same way.
"""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# In forward order; `perceiver` and `aligner` exist only in DPA models.
COMPONENTS = ("vision_tower", "projector", "perceiver", "aligner", "language_model", "lm_head")


def _components(model) -> dict[str, tuple[str, nn.Module]]:
    """name -> (module path inside `model`, module), for the components this model has."""
    found = {}
    for name in COMPONENTS:
        path = name if name == "lm_head" else f"model.{name}"
        try:
            found[name] = (path, model.get_submodule(path))
        except AttributeError:  # a baseline has no perceiver and no aligner
            continue
    return found


def parameter_counts(model) -> dict[str, int]:
    """Parameters per component; a tensor shared by two (tied embeddings) counts for the first."""
    seen: set[int] = set()
    counts = {}
    for name, (_, module) in _components(model).items():
        fresh = [p for p in module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in fresh)
        counts[name] = sum(p.numel() for p in fresh)
    return counts


@torch.no_grad()
def forward_flops(model, inputs: dict) -> dict[str, int]:
    """FLOPs of one forward pass over `inputs`, per component (and `total`)."""
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(**inputs)
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    flops = {
        name: sum(per_module.get(f"{root}.{path}", {}).values())
        for name, (path, _) in _components(model).items()
    }
    flops["total"] = counter.get_total_flops()
    return flops


def one_image_sample(processor, question: str = "Describe the image in detail.") -> dict:
    """Model inputs for one prompt with one blank image (the processor resizes it): one unit in
    which variants compare."""
    messages = [processor.user_turn(question, [Image.new("RGB", (448, 448))])]
    return dict(processor.apply_chat_template(messages, tokenize=True))


def format_cost(parameters: dict[str, int], flops: dict[str, int], tokens: int) -> str:
    """Parameters and forward GFLOPs per component, with each component's share of the FLOPs."""
    lines = [f"{'component':<16}{'parameters':>14}{'GFLOPs':>12}{'share':>8}   (one sample, {tokens} tokens)"]
    for name, count in parameters.items():
        lines.append(f"{name:<16}{count:>14,}{flops[name] / 1e9:>12.4f}{flops[name] / flops['total']:>8.1%}")
    lines.append(f"{'total':<16}{sum(parameters.values()):>14,}{flops['total'] / 1e9:>12.4f}{1:>8.0%}")
    return "\n".join(lines)
