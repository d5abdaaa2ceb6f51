"""`prealign export`: parts of a trained model as standalone Hugging Face models.

The target LM (with the tokenizer the VLM was trained with, image tokens included) loads with
`AutoModelForCausalLM` / `AutoTokenizer`, so text-only harnesses can measure what VLM training
did to its language skills. A baseline is also transformers' own `LlavaForConditionalGeneration`
with the same weights (`as_transformers_llava`): the peer our baseline is checked and timed against.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration

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


# Our feature selection -> Llava's name for it ("default" drops the CLS position).
_LLAVA_SELECT_STRATEGY = {"full": "full", "drop_cls": "default"}


def as_transformers_llava(model: PrealignForConditionalGeneration) -> LlavaForConditionalGeneration:
    """transformers' `LlavaForConditionalGeneration` holding a copy of a baseline's weights.

    Only an LLaVA-1.5 projector (`mlp2x_gelu`) has a Llava counterpart; DPA has none.
    """
    config = model.config
    if config.is_dpa or config.projector_type != "mlp2x_gelu":
        what = "a DPA model" if config.is_dpa else f"a baseline with projector_type={config.projector_type!r}"
        raise ValueError(f"Only a baseline with the mlp2x_gelu projector is a Llava model; this is {what}.")
    ours = model.model
    reference = next(ours.language_model.parameters())
    # Built for real, not on the meta device: the parts' non-persistent buffers (rotary
    # frequencies, position ids) are not in the state dicts copied below.
    with torch.device(reference.device):
        llava = LlavaForConditionalGeneration(
            LlavaConfig(
                vision_config=config.vision_config,
                text_config=config.text_config,
                image_token_id=config.image_token_id,
                image_seq_length=config.image_seq_length,
                projector_hidden_act="gelu",
                multimodal_projector_bias=True,
                vision_feature_layer=config.vision_feature_layer,
                vision_feature_select_strategy=_LLAVA_SELECT_STRATEGY[config.vision_feature_select_strategy],
            )
        )
    llava.model.vision_tower.load_state_dict(ours.vision_tower.state_dict())
    llava.model.multi_modal_projector.linear_1.load_state_dict(ours.projector[0].state_dict())
    llava.model.multi_modal_projector.linear_2.load_state_dict(ours.projector[2].state_dict())
    llava.model.language_model.load_state_dict(ours.language_model.state_dict())
    llava.lm_head.load_state_dict(model.lm_head.state_dict())
    llava.to(reference.dtype)
    llava.generation_config.suppress_tokens = model.generation_config.suppress_tokens
    return llava.eval()
