"""The paper's analyses of trained models: what each part costs (parameters, FLOPs)."""

from .cost import COMPONENTS, format_cost, forward_flops, one_image_sample, parameter_counts

__all__ = ["COMPONENTS", "format_cost", "forward_flops", "one_image_sample", "parameter_counts"]
