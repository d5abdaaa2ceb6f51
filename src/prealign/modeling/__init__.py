from .model import PrealignForConditionalGeneration, PrealignModel, PrealignOutput, PrealignPreTrainedModel

__all__ = ["PrealignForConditionalGeneration", "PrealignModel", "PrealignOutput", "PrealignPreTrainedModel"]
