from .checks import ContextLengthError
from .model import PrealignForConditionalGeneration, PrealignModel, PrealignOutput, PrealignPreTrainedModel

__all__ = [
    "ContextLengthError",
    "PrealignForConditionalGeneration",
    "PrealignModel",
    "PrealignOutput",
    "PrealignPreTrainedModel",
]
