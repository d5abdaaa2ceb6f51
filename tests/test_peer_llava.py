"""Against the peer: our baseline is transformers' own LLaVA when built from the same weights.

The baseline row of every table is only a fair baseline if it is LLaVA; so with the same vision
tower, projector and LM weights, `LlavaForConditionalGeneration` must give the same logits and
the same greedy tokens as `PrealignForConditionalGeneration` without a perceiver.
"""

from __future__ import annotations

import torch
from conftest import user_prompt
from transformers import LlavaConfig, LlavaForConditionalGeneration

from prealign.tiny import tiny_model


def llava_with_the_weights_of(model) -> LlavaForConditionalGeneration:
    config = model.config
    assert config.projector_type == "mlp2x_gelu" and config.vision_feature_select_strategy == "full"
    llava = LlavaForConditionalGeneration(
        LlavaConfig(
            vision_config=config.vision_config,
            text_config=config.text_config,
            image_token_id=config.image_token_id,
            image_seq_length=config.image_seq_length,
            projector_hidden_act="gelu",
            multimodal_projector_bias=True,
            vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy="full",
        )
    )
    ours = model.model
    llava.model.vision_tower.load_state_dict(ours.vision_tower.state_dict())
    llava.model.multi_modal_projector.linear_1.load_state_dict(ours.projector[0].state_dict())
    llava.model.multi_modal_projector.linear_2.load_state_dict(ours.projector[2].state_dict())
    llava.model.language_model.load_state_dict(ours.language_model.state_dict())
    llava.lm_head.load_state_dict(model.lm_head.state_dict())
    return llava.eval()


def test_the_baseline_gives_transformers_llavas_logits_and_tokens(images):
    model, processor = tiny_model("baseline")
    model.eval()
    llava = llava_with_the_weights_of(model)
    prompts = [user_prompt(processor, "<image>\nWhat colour is it?"), user_prompt(processor, "<image> and?")]
    batch = processor(prompts, images=images[:2])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        ours, theirs = model(**inputs).logits, llava(**inputs).logits
    assert (ours - theirs).abs().max() <= 1e-5
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    llava.generation_config.suppress_tokens = model.generation_config.suppress_tokens
    assert torch.equal(model.generate(**inputs, **kwargs), llava.generate(**inputs, **kwargs))
