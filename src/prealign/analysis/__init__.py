"""The paper's analyses of trained models: what each part costs (parameters, FLOPs), and where
image tokens sit relative to text inside the target LM (modality gap per layer, MIR, layer similarity)."""

from .alignment import (
    AlignmentReport,
    collect_layer_states,
    format_alignment,
    frechet_distance,
    layer_similarity,
    linear_cka,
    modality_gap,
    plot_layer_similarity,
    plot_modality_gaps,
    replace_norm_outliers,
    sample_batches,
)
from .cost import COMPONENTS, format_cost, forward_flops, one_image_sample, parameter_counts

__all__ = [
    "COMPONENTS",
    "AlignmentReport",
    "collect_layer_states",
    "format_alignment",
    "format_cost",
    "forward_flops",
    "frechet_distance",
    "layer_similarity",
    "linear_cka",
    "modality_gap",
    "one_image_sample",
    "parameter_counts",
    "plot_layer_similarity",
    "plot_modality_gaps",
    "replace_norm_outliers",
    "sample_batches",
]
