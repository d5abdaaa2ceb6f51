"""`prealign export`: parts of a trained model as standalone Hugging Face folders.

The target LM (with the tokenizer the VLM was trained with, image tokens included) loads with
`AutoModelForCausalLM` / `AutoTokenizer`, so text-only harnesses can measure what VLM training
did to its language skills.
"""

from __future__ import annotations

from pathlib import Path

from .modeling import PrealignForConditionalGeneration
from .processing import PrealignProcessor

PARTS = ("target-lm",)


def export_part(model_dir: str | Path, part: str, out: str | Path) -> Path:
    """Write `part` of the saved prealign model in `model_dir` to `out`; returns `out`."""
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; known: {', '.join(PARTS)}")
    out = Path(out)
    if out.is_file():
        raise FileExistsError(f"Cannot export to {out}: it is a file, not a folder.")
    model = PrealignForConditionalGeneration.from_pretrained(model_dir)
    processor = PrealignProcessor.from_pretrained(model_dir)
    model.target_lm().save_pretrained(out)
    processor.tokenizer.save_pretrained(out)
    return out
