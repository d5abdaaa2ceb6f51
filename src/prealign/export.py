"""`prealign export`: parts of a trained model as standalone Hugging Face models.

The target LM (with the tokenizer the VLM was trained with, image tokens included) loads with
`AutoModelForCausalLM` / `AutoTokenizer`, so text-only harnesses can measure what VLM training
did to its language skills. A DPA model's perceiver (vision tower, phi_p, small LM) is a small VLM
of its own: it exports as a baseline-class prealign model with its processor, whose hidden states
over an image span are the perceiver's. A baseline is also transformers' own `LlavaForConditionalGeneration`
with the same weights (`as_transformers_llava`): the peer our baseline is checked and timed against.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlavaConfig, LlavaForConditionalGeneration

from .assembly import load_saved
from .modeling import PrealignForConditionalGeneration
from .processing import PrealignProcessor

EXPORTS = ("target-lm", "perceiver")


def export_part(model_dir: str | Path, part: str, out: str | Path) -> Path:
    """Write `part` of the saved prealign model in `model_dir` to `out`; returns `out`."""
    if part not in EXPORTS:
        raise ValueError(f"unknown part {part!r}; known: {', '.join(EXPORTS)}")
    out = Path(out)
    if out.is_file():
        raise FileExistsError(f"Cannot export to {out}: it is a file, not a folder.")
    model, processor = load_saved(model_dir)
    if part == "perceiver":
        vlm, vlm_processor = perceiver_vlm(model, processor)
        vlm.save_pretrained(out)
        vlm_processor.save_pretrained(out)
        return out
    model.target_lm().save_pretrained(out)
    processor.tokenizer.save_pretrained(out)
    return out


def perceiver_vlm(
    model: PrealignForConditionalGeneration, processor: PrealignProcessor
) -> tuple[PrealignForConditionalGeneration, PrealignProcessor]:
    """A DPA model's perceiver as a standalone small VLM (the baseline class, the small LM as its
    target) and its processor; the VLM adopts the DPA model's modules rather than copying them.

    The small LM's output head is its input embedding when its config ties them (Qwen3-0.6B and the
    nano perceiver do); DPA does not keep an untied head, so such a perceiver has none to export.
    """
    config = model.config
    if not config.uses_perceiver:
        raise ValueError("Only a DPA model has a perceiver to export; this is a baseline.")
    perceiver = model.model.perceiver
    if perceiver.blocks != "lm":
        raise ValueError(
            f"This DPA model's perceiver has no LM (perceiver_blocks={perceiver.blocks!r}): "
            "nothing to export."
        )
    lm_config = config.perceiver_text_config
    if not lm_config.tie_word_embeddings:
        raise ValueError(
            "The perceiver LM does not tie its output head to its embeddings, and a DPA model keeps no "
            "untied head: its perceiver cannot answer in words on its own."
        )
    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(lm_config)
    setattr(lm, lm.base_model_prefix, perceiver.language_model)
    lm.get_output_embeddings().weight = perceiver.language_model.get_input_embeddings().weight
    vlm_processor = PrealignProcessor(processor.image_processor, processor.perceiver_tokenizer)
    vlm = PrealignForConditionalGeneration.from_parts(
        vision_model=model.model.vision_tower,
        text_model=lm,
        processor=vlm_processor,
        projector_type=config.projector_type,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
    )
    vlm.model.projector = model.model.projector
    return vlm.eval(), vlm_processor


# Our feature selection -> Llava's name for it ("default" drops the CLS position).
_LLAVA_SELECT_STRATEGY = {"full": "full", "drop_cls": "default"}


def as_transformers_llava(model: PrealignForConditionalGeneration) -> LlavaForConditionalGeneration:
    """transformers' `LlavaForConditionalGeneration` holding a copy of a baseline's weights.

    Only an LLaVA-1.5 projector (`mlp2x_gelu`) has a Llava counterpart; DPA has none.
    """
    config = model.config
    if config.uses_perceiver or config.projector_type != "mlp2x_gelu":
        what = (
            "a DPA model"
            if config.uses_perceiver
            else f"a baseline with projector_type={config.projector_type!r}"
        )
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
