"""prealign models in VLMEvalKit (the paper's harness): `prealign vlmeval MODEL --data MMStar ...`.

VLMEvalKit has no plug-in entry point: `run_vlmeval` registers the model in-process (in
`vlmeval.config.supported_VLM` for `--model`, and in `vlmeval.vlm` for `--config` files) and runs
VLMEvalKit's own command line, so its datasets, prompts, judges and output files are its own.
This module is imported only when VLMEvalKit is wanted; it needs `pip install 'prealign[vlmeval]'`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import partial

import torch
from PIL import Image

from ..assembly import load_saved
from ..image_span import IMAGE_PLACEHOLDER
from ..images import to_rgb
from .answering import VLMEVAL_MAX_NEW_TOKENS, generate_answers

MODEL_NAME = "prealign"
INSTALL_HINT = (
    "VLMEvalKit is not installed: pip install 'prealign[vlmeval]' (VLMEvalKit from the package index, "
    "ms-vlmeval). Its import needs torchvision, which changes transformers' image preprocessing: install "
    "it in an environment of its own."
)

try:
    from vlmeval.vlm.base import BaseModel
except ImportError as error:  # the CLI reports this with INSTALL_HINT
    raise ImportError(INSTALL_HINT) from error


def interleaved_question(message: Sequence[dict]) -> tuple[str, list[Image.Image]]:
    """VLMEvalKit's interleaved message (`{"type": "image"|"text", "value": ...}` items) as a prealign
    question with an `<image>` placeholder where each image stands, and the images in order. An
    image is written as `<image>` and a line break, as in training data and `prealign eval`."""
    parts, images = [], []
    for item in message:
        if item["type"] == "image":
            with Image.open(item["value"]) as image:
                images.append(to_rgb(image, item["value"]))
            parts.append(f"{IMAGE_PLACEHOLDER}\n")
        elif item["type"] == "text":
            parts.append(item["value"])
        else:
            raise ValueError(f"prealign models read images and text, not {item['type']!r}.")
    return "".join(parts), images


class PrealignVLMEval(BaseModel):
    """A saved prealign model (folder or hub id, with its processor) as a VLMEvalKit model: greedy
    answers through the chat template and prompt convention of training and `prealign eval`
    (`evaluation.answering`), one item at a time as VLMEvalKit's local inference asks."""

    INTERLEAVE = True
    allowed_types = ["text", "image"]

    def __init__(
        self,
        model_path: str,
        max_new_tokens: int = VLMEVAL_MAX_NEW_TOKENS,
        device: str | None = None,
        dtype: str = "auto",
    ):
        super().__init__()
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, self.processor = load_saved(model_path, dtype=dtype)
        self.model = model.to(device)
        self.max_new_tokens = max_new_tokens

    def generate_inner(self, message, dataset=None) -> str:
        question, images = interleaved_question(message)
        return generate_answers(self.model, self.processor, [question], [images], self.max_new_tokens)[0]


def run_vlmeval(
    model_path: str, vlmeval_args: Sequence[str], max_new_tokens: int = VLMEVAL_MAX_NEW_TOKENS
) -> None:
    """VLMEvalKit's own `run.main()` with `--model prealign` bound to `model_path`."""
    import vlmeval.config
    import vlmeval.run
    import vlmeval.vlm

    vlmeval.config.supported_VLM[MODEL_NAME] = partial(
        PrealignVLMEval, model_path=model_path, max_new_tokens=max_new_tokens
    )
    vlmeval.vlm.PrealignVLMEval = PrealignVLMEval
    argv = sys.argv
    sys.argv = ["vlmeval", "--model", MODEL_NAME, *vlmeval_args]
    try:
        vlmeval.run.main()
    finally:
        sys.argv = argv
