"""Against the peer: our baseline is transformers' own LLaVA when built from the same weights.

The baseline row of every table is only a fair baseline if it is LLaVA; so with the same vision
tower, projector and LM weights, `LlavaForConditionalGeneration` must give the same logits and
the same greedy tokens as `PrealignForConditionalGeneration` without a perceiver.
"""

from __future__ import annotations

import torch
from conftest import user_prompt

from prealign.export import as_transformers_llava
from prealign.tiny import tiny_model


def test_the_baseline_gives_transformers_llavas_logits_and_tokens(images):
    model, processor = tiny_model("baseline")
    model.eval()
    llava = as_transformers_llava(model)
    prompts = [user_prompt(processor, "<image>\nWhat colour is it?"), user_prompt(processor, "<image> and?")]
    batch = processor(text=prompts, images=images[:2])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    with torch.no_grad():
        ours, theirs = model(**inputs).logits, llava(**inputs).logits
    assert (ours - theirs).abs().max() <= 1e-5
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert torch.equal(model.generate(**inputs, **kwargs), llava.generate(**inputs, **kwargs))
