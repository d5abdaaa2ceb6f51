"""prealign: Deep Pre-Alignment (DPA) for vision-language models, with the LLaVA baseline."""

from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .config import PrealignConfig
from .modeling import PrealignForConditionalGeneration, PrealignModel
from .processing import PrealignProcessor
from .upstream_warnings import drop_known_upstream_warnings

__version__ = "0.1.0"

AutoConfig.register(PrealignConfig.model_type, PrealignConfig, exist_ok=True)
AutoModel.register(PrealignConfig, PrealignModel, exist_ok=True)
AutoModelForImageTextToText.register(PrealignConfig, PrealignForConditionalGeneration, exist_ok=True)
AutoProcessor.register(PrealignConfig, PrealignProcessor, exist_ok=True)

drop_known_upstream_warnings()

__all__ = ["PrealignConfig", "PrealignForConditionalGeneration", "PrealignModel", "PrealignProcessor"]
