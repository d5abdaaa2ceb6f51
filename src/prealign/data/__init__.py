"""LLaVA-format data: records, conversations -> tokens + labels, datasets, collation, checks."""

from .collate import PrealignCollator
from .encoding import IGNORE_INDEX, EncodedSample, RecordSkipped
from .llava import DataSource, LlavaDataset
from .records import DataError, RecordFile

__all__ = [
    "IGNORE_INDEX",
    "DataError",
    "DataSource",
    "EncodedSample",
    "LlavaDataset",
    "PrealignCollator",
    "RecordFile",
    "RecordSkipped",
]
