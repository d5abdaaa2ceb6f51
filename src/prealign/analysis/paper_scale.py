"""The paper's cost ratios at its own scale, from published architectures, without weights.

Each part is built on the `meta` device from its published hyper-parameters (so parameter counts
are exact for the HF architecture), and FLOPs are counted analytically per the tokens each part
processes: the vision tower over the image's patches, the perceiver over its image span, the
target over the whole sequence. A forward costs 2 FLOPs per weight per token plus attention
(2 x 2 x context x heads x head_dim per token and layer, causal context averaged); training
costs forward + backward (2x forward) for what trains, + backward through activations only (1x)
for frozen parts that gradients cross, and nothing more for frozen parts before every trained one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    LlamaConfig,
    PretrainedConfig,
    Qwen3Config,
    SiglipVisionConfig,
)
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig

from ..image_span import span_length

# Published hyper-parameters (the models' config.json on the hub).
LANGUAGE_MODELS: dict[str, PretrainedConfig] = {
    "Qwen3-0.6B": Qwen3Config(
        hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
        num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True,
    ),
    "Qwen3-4B": Qwen3Config(
        hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True,
    ),
    "Qwen3-32B": Qwen3Config(
        hidden_size=5120, intermediate_size=25600, num_hidden_layers=64, num_attention_heads=64,
        num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=False,
    ),
    "LLaMA-3.2-3B": LlamaConfig(
        hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, tie_word_embeddings=True,
    ),
}  # fmt: skip
VISION_TOWERS: dict[str, PretrainedConfig] = {
    # LLaVA-NeXT's tower: 384 px, 14 px patches -> 27 x 27 = 729 tokens per crop.
    "SigLIP-so400m": SiglipVisionConfig(
        hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
        image_size=384, patch_size=14,
    ),
    # Qwen2.5-VL-3B's tower: 14 px patches, 2 x 2 patches merged into one token for the LM.
    "Qwen2.5-VL-3B ViT": Qwen2_5_VLVisionConfig(
        depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14,
        spatial_merge_size=2, out_hidden_size=2048,
    ),
}  # fmt: skip
PERCEIVER_LM = "Qwen3-0.6B"
TARGETS = ("Qwen3-4B", "Qwen3-32B", "LLaMA-3.2-3B")
# The paper's figures (4B unless named): parameters, training FLOPs, inference throughput.
PAPER = {"parameters": 1.17, "training_flops": 1.14, "throughput_4b": 0.94, "throughput_32b": 0.98}


@dataclass(frozen=True)
class Workload:
    """What one training sample / one request holds (LLaVA-NeXT-like defaults)."""

    patches: int = 2880  # vision-tower tokens: 5 anyres crops x 576 (Qwen2.5-VL: before merging)
    image_tokens: int = 2880  # N, the image positions of a span in the LMs (without its markers)
    text_tokens: int = 300  # instruction + answer
    new_tokens: int = 128  # tokens generated per request (throughput)


@dataclass
class PartCost:
    parameters: int
    matmul_parameters: int  # weights that multiply every token (no embedding table, no norms)
    layers: int
    attention_width: int  # heads x head_dim


def _attention_width(config) -> int:
    heads = getattr(config, "num_attention_heads", None) or config.num_heads
    return heads * (getattr(config, "head_dim", None) or config.hidden_size // heads)


def part_cost(config: PretrainedConfig, causal_lm: bool) -> PartCost:
    """Exact parameter counts of the HF architecture, built on the meta device."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config) if causal_lm else AutoModel.from_config(config)
    parameters = sum(p.numel() for p in model.parameters())
    # Weights that multiply every token: linear layers (a tied head included) and patch convolutions.
    matmul = sum(
        m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d | nn.Conv3d)
    )
    layers = getattr(config, "num_hidden_layers", None) or config.depth
    return PartCost(parameters, matmul, layers, _attention_width(config))


def forward_flops(part: PartCost, tokens: int, context: int | None = None) -> float:
    """Forward FLOPs over `tokens` tokens, each attending to `context` earlier ones on average."""
    context = tokens / 2 if context is None else context
    return 2 * part.matmul_parameters * tokens + 4 * part.layers * part.attention_width * context * tokens


@dataclass
class ScaleRatios:
    target: str
    tower: str
    parameters: float
    training_flops: float  # stage 2 (everything trains), the cost that dominates
    throughput: float  # requests' tokens per FLOP, DPA / baseline (compute-bound estimate)


def scale_ratios(target: str, tower: str, workload: Workload | None = None) -> ScaleRatios:
    w = workload or Workload()
    vit = part_cost(VISION_TOWERS[tower], causal_lm=False)
    lm = part_cost(LANGUAGE_MODELS[target], causal_lm=True)
    perceiver = part_cost(LANGUAGE_MODELS[PERCEIVER_LM], causal_lm=True)
    d_vit, d_p = VISION_TOWERS[tower].hidden_size, LANGUAGE_MODELS[PERCEIVER_LM].hidden_size
    d_t = LANGUAGE_MODELS[target].hidden_size
    merge = getattr(VISION_TOWERS[tower], "spatial_merge_size", 1) ** 2
    # Projectors: Linear(in, out) -> act -> Linear(out, out); the aligner Linear(in, in) -> Linear(in, out).
    projector_base = d_vit * merge * d_t + d_t * d_t
    projector_dpa = d_vit * merge * d_p + d_p * d_p
    aligner = d_p * d_p + d_p * d_t
    span = span_length(w.image_tokens)
    sequence = span + w.text_tokens
    vit_f = forward_flops(vit, w.patches, context=w.patches)  # bidirectional: every patch sees all
    lm_f = forward_flops(lm, sequence)
    base_forward = vit_f + 2 * projector_base * w.image_tokens + lm_f
    dpa_forward = (
        vit_f
        + 2 * projector_dpa * w.image_tokens
        + forward_flops(perceiver, span)
        + 2 * aligner * span
        + lm_f
    )
    base_params = vit.parameters + projector_base + lm.parameters
    dpa_params = vit.parameters + projector_dpa + perceiver.parameters + aligner + lm.parameters
    # Generation: prefill once, then each new token through the target over a growing context.
    decode = sum(forward_flops(lm, 1, context=sequence + i) for i in range(w.new_tokens))
    return ScaleRatios(
        target=target,
        tower=tower,
        parameters=dpa_params / base_params,
        training_flops=dpa_forward / base_forward,  # x3 on both sides when everything trains
        throughput=(base_forward + decode) / (dpa_forward + decode),
    )


def format_scale_table(workload: Workload | None = None) -> str:
    w = workload or Workload()
    lines = [
        f"paper-scale cost ratios, DPA ({PERCEIVER_LM} perceiver) / baseline; workload: {w.patches} patches, "
        f"{w.image_tokens} image tokens, {w.text_tokens} text tokens, {w.new_tokens} generated",
        f"{'target':<14}{'vision tower':<20}{'parameters':>12}{'train FLOPs':>13}{'throughput':>12}",
    ]
    for target in TARGETS:
        for tower in VISION_TOWERS:
            r = scale_ratios(target, tower, w)
            lines.append(
                f"{target:<14}{tower:<20}{r.parameters:>11.3f}x{r.training_flops:>12.3f}x{r.throughput:>12.1%}"
            )
    lines.append(
        f"{'paper':<34}{PAPER['parameters']:>11.2f}x{PAPER['training_flops']:>12.2f}x"
        f"{PAPER['throughput_4b']:>8.0%} (4B), {PAPER['throughput_32b']:.0%} (32B)"
    )
    return "\n".join(lines)
