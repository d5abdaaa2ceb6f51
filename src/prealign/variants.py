"""The paper's ablation table as data: each variant is config values plus how its perceiver starts.

Architecture lives in `PrealignConfig`; what differs between ablations beyond it is where the
perceiver's weights come from and whether it trains in stage 2, which the training recipes read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

PerceiverInit = Literal["trained_vlm", "untrained", "random_lm_blocks"]


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    uses_perceiver: bool = True
    config: dict[str, Any] = field(default_factory=dict)
    # trained_vlm: ViT + phi_p + LM blocks from a small VLM trained with the baseline recipe;
    # untrained: pretrained ViT + pretrained small LM + a new phi_p, never trained as a VLM;
    # random_lm_blocks: the LM blocks re-initialised (no language pre-training).
    perceiver_init: PerceiverInit = "trained_vlm"
    freeze_perceiver_in_stage2: bool = False


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("baseline", "ViT -> MLP projector -> target LM (LLaVA-NeXT recipe)", uses_perceiver=False),
        Variant("dpa", "full perceiver, instruction-agnostic, trainable in stage 2"),
        Variant(
            "dpa_early_fusion",
            "the perceiver also reads the instruction, placed before the image",
            config={"early_fusion": True},
        ),
        Variant("dpa_frozen_perceiver", "perceiver frozen in stage 2", freeze_perceiver_in_stage2=True),
        Variant(
            "dpa_untrained_perceiver",
            "pretrained ViT + pretrained small LM + new phi_p, never trained as a VLM",
            perceiver_init="untrained",
        ),
        Variant(
            "vit_only",
            "perceiver LM blocks removed: the perceiver's ViT + phi_p feed the aligner",
            config={"perceiver_blocks": "none"},
        ),
        Variant(
            "random_lm",
            "perceiver LM blocks randomly initialised (no language pre-training)",
            perceiver_init="random_lm_blocks",
        ),
        Variant(
            "large_mlp",
            "perceiver LM blocks replaced by an MLP with the same parameter count",
            config={"perceiver_blocks": "mlp"},
        ),
    ]
}
