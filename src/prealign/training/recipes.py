"""The paper's training stages: what trains, at which learning rate, in one place.

Stage 1 (align) trains only the new connector - the aligner for DPA, the projector for the
baseline - on caption data. Stage 2 (finetune) trains everything (optionally with the perceiver
frozen), the vision tower at a lower learning rate. Training the perceiver itself as a small VLM
is the baseline recipe applied with the small LM as target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

Stage = Literal["align", "finetune"]
MODEL_PARTS = ("vision_tower", "projector", "perceiver", "aligner", "language_model", "lm_head")
PERCEIVER_PARTS = ("vision_tower", "projector", "perceiver")  # the perceiver VLM: ViT + phi_p + LM blocks
TOWER_MERGER = "merger"  # what Qwen2-VL and Qwen2.5-VL towers call their merger


@dataclass(frozen=True)
class StageRecipe:
    """Defaults from the paper and the authors' scripts (global batch = per-device x accumulation x GPUs)."""

    learning_rate: float
    epochs: float
    global_batch_size: int
    vision_learning_rate: float | None = None
    gradient_checkpointing: bool = False
    max_length: int | None = None
    prompt_format: Literal["chat", "plain"] = "chat"
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"


RECIPES: dict[Stage, StageRecipe] = {
    "align": StageRecipe(learning_rate=1e-3, epochs=2, global_batch_size=512, prompt_format="plain"),
    "finetune": StageRecipe(
        learning_rate=1e-5,
        vision_learning_rate=2e-6,
        epochs=2,
        global_batch_size=256,
        gradient_checkpointing=True,
        max_length=8192,
    ),
}
LORA_LEARNING_RATE = 2e-4  # the paper's LoRA setting (rank and alpha 32 are LoraSettings defaults)


def connector_part(model: nn.Module) -> str:
    """The new module between the pre-trained parts, which stage 1 aligns: DPA's aligner, the
    baseline's projector (DPA's own projector phi_p belongs to its perceiver VLM)."""
    return "aligner" if model.config.uses_perceiver else "projector"


def connector_path(model: nn.Module) -> str:
    """The connector's module path: a native-resolution tower's merger when it is the projector."""
    part = connector_part(model)
    if part == "projector" and model.config.projector_type == "merger":
        return f"model.vision_tower.{TOWER_MERGER}"
    return f"model.{part}"


def trainable_parts(model: nn.Module, stage: Stage, freeze_perceiver: bool = False) -> list[str]:
    """Names of the parts (see MODEL_PARTS) a stage trains, for this model's variant."""
    uses_perceiver = model.config.uses_perceiver
    if stage == "align":
        return [connector_part(model)]
    if stage != "finetune":
        raise ValueError(f"Unknown stage {stage!r}; expected 'align' or 'finetune'.")
    parts = [p for p in MODEL_PARTS if uses_perceiver or p not in ("perceiver", "aligner")]
    if freeze_perceiver:
        if not uses_perceiver:
            raise ValueError("freeze_perceiver needs a DPA model; the baseline has no perceiver.")
        parts = [p for p in parts if p not in PERCEIVER_PARTS]
    return parts


def apply_stage(model: nn.Module, stage: Stage, freeze_perceiver: bool = False) -> list[str]:
    """Freeze everything, then unfreeze the stage's parts. Returns those parts."""
    parts = trainable_parts(model, stage, freeze_perceiver)
    for name, param in model.named_parameters():
        param.requires_grad = part_of(name) in parts
    return parts


def part_of(parameter_name: str) -> str:
    """The part a parameter belongs to ('model.perceiver.language_model...' -> 'perceiver'). A
    native-resolution tower's own merger is the projector (`projector_type="merger"`), though it
    lives inside the tower (and so trains at the tower's learning rate, as the authors train it)."""
    if f"vision_tower.{TOWER_MERGER}." in parameter_name:
        return "projector"
    for segment in parameter_name.split("."):
        if segment in MODEL_PARTS:
            return segment
    raise ValueError(f"Parameter {parameter_name!r} belongs to no known part ({', '.join(MODEL_PARTS)}).")
