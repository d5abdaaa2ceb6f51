"""Models and their processors: saved folders loaded, or pretrained parts assembled as a variant."""

from .build import build_model_and_processor, check_parts, load_saved
from .initialization import dpa_from_perceiver_vlm, reinitialize_perceiver_lm
from .settings import ModelSettings

__all__ = [
    "ModelSettings",
    "build_model_and_processor",
    "check_parts",
    "dpa_from_perceiver_vlm",
    "load_saved",
    "reinitialize_perceiver_lm",
]
