"""Ablation initialisations: a trained small VLM becomes the perceiver; random LM blocks really are new."""

from __future__ import annotations

import pytest
import torch
from test_model import mixed_batch

from prealign import PrealignProcessor
from prealign.assembly import dpa_from_perceiver_vlm, reinitialize_perceiver_lm
from prealign.tiny import tiny_causal_lm, tiny_image_processor, tiny_model, tiny_tokenizer


@pytest.fixture
def small_vlm():
    """The perceiver VLM: the baseline class with the small LM as its target."""
    vlm, processor = tiny_model("baseline")
    return vlm, processor


def dpa_from(small_vlm, **config):
    vlm, vlm_processor = small_vlm
    processor = PrealignProcessor(tiny_image_processor(), tiny_tokenizer(), vlm_processor.tokenizer)
    target = tiny_causal_lm("llama", vocab_size=len(processor.tokenizer), hidden_size=48)
    return dpa_from_perceiver_vlm(vlm, target, processor, **config), processor


def equal_states(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_trained_small_vlm_becomes_the_perceiver_key_for_key(small_vlm, images):
    vlm = small_vlm[0]
    model, processor = dpa_from(small_vlm)
    assert equal_states(model.model.vision_tower, vlm.model.vision_tower)
    assert equal_states(model.model.projector, vlm.model.projector)
    assert equal_states(model.model.perceiver.language_model, vlm.model.language_model)
    assert model.config.perceiver_text_config.hidden_size == vlm.config.text_config.hidden_size
    assert torch.isfinite(model(**mixed_batch(processor, images)).logits).all()


def test_vit_only_keeps_the_trained_vit_and_projector(small_vlm, images):
    vlm = small_vlm[0]
    model, processor = dpa_from(small_vlm, perceiver_blocks="none")
    assert equal_states(model.model.projector, vlm.model.projector)
    assert torch.equal(
        model.model.perceiver.embed_tokens.weight, vlm.model.language_model.embed_tokens.weight
    )
    assert torch.isfinite(model(**mixed_batch(processor, images)).logits).all()


def test_random_lm_reinitialises_only_the_perceiver_lm(small_vlm):
    vlm = small_vlm[0]
    model, _ = dpa_from(small_vlm)
    before = {k: v.clone() for k, v in model.model.perceiver.language_model.state_dict().items()}
    vision = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
    reinitialize_perceiver_lm(model)
    after = model.model.perceiver.language_model.state_dict()
    weights = [k for k in before if k.endswith("weight") and "norm" not in k]
    assert weights and all(not torch.equal(before[k], after[k]) for k in weights)
    assert all(torch.equal(v, model.model.vision_tower.state_dict()[k]) for k, v in vision.items())
    assert equal_states(model.model.projector, vlm.model.projector)


def test_perceiver_vlm_must_be_a_baseline():
    dpa, _ = tiny_model("dpa")
    with pytest.raises(ValueError, match="baseline-class small VLM"):
        dpa_from_perceiver_vlm(dpa, None, None)
