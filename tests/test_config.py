"""PrealignConfig: the ablation table is configuration, and bad settings fail loudly."""

from __future__ import annotations

import pytest
import torch
from test_model import mixed_batch

from prealign import PrealignConfig
from prealign.tiny import tiny_causal_lm, tiny_model, tiny_vision_tower
from prealign.variants import VARIANTS


def parts_config(**kwargs) -> PrealignConfig:
    return PrealignConfig(
        vision_config=tiny_vision_tower("clip").config,
        text_config=tiny_causal_lm("qwen3", hidden_size=48).config,
        perceiver_text_config=tiny_causal_lm("qwen3").config,
        **kwargs,
    )


def test_paper_ablation_table_is_complete():
    assert set(VARIANTS) == {
        "baseline",
        "dpa",
        "dpa_early_fusion",
        "dpa_frozen_perceiver",
        "dpa_untrained_perceiver",
        "vit_only",
        "random_lm",
        "large_mlp",
    }


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_variant_builds_and_runs_from_config(name, images):
    variant = VARIANTS[name]
    model, processor = tiny_model("dpa" if variant.uses_perceiver else "baseline", **variant.config)
    assert model.config.uses_perceiver == variant.uses_perceiver
    out = model(**mixed_batch(processor, images))
    assert torch.isfinite(out.logits).all()


def test_image_seq_length_is_measured_from_the_tower():
    # CLIP 32px / patch 8: 16 patches + a class token.
    assert parts_config().image_seq_length == 17
    assert parts_config(vision_feature_select_strategy="drop_cls").image_seq_length == 16


def test_span_length_counts_markers_only_for_dpa_with_markers():
    assert parts_config().image_span_length == 17 + 2
    assert parts_config(include_image_markers=False).image_span_length == 17
    baseline = PrealignConfig(
        vision_config=tiny_vision_tower("clip").config, text_config=tiny_causal_lm("qwen3").config
    )
    assert not baseline.uses_perceiver and baseline.image_span_length == 17


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"vision_feature_layer": 7}, "vision_feature_layer=7 is out of range"),
        ({"perceiver_feature_layer": -4}, "perceiver_feature_layer=-4 is out of range"),
        ({"perceiver_blocks": "mlp", "early_fusion": True}, "early_fusion=True needs perceiver_blocks='lm'"),
        ({"perceiver_blocks": "none", "perceiver_feature_layer": 1}, "only applies to perceiver_blocks='lm'"),
    ],
)
def test_inconsistent_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        parts_config(**kwargs)


def test_early_fusion_without_perceiver_raises():
    with pytest.raises(ValueError, match="needs a perceiver"):
        PrealignConfig(
            vision_config=tiny_vision_tower().config, text_config=tiny_causal_lm().config, early_fusion=True
        )


def test_unknown_projector_type_is_rejected():
    with pytest.raises(Exception, match="projector_type"):
        parts_config(projector_type="transformer")


def test_perceiver_feature_layer_selects_that_hidden_state(images):
    model, processor = tiny_model("dpa", perceiver_feature_layer=1)
    model.eval()
    batch = mixed_batch(processor, images)
    perceiver = model.model.perceiver
    captured = {}
    perceiver.language_model.layers[0].register_forward_hook(lambda m, i, o: captured.setdefault("h", o))
    with torch.no_grad():
        feats = model.get_image_features(
            batch["pixel_values"], batch["perceiver_input_ids"], batch["perceiver_attention_mask"]
        )
        ids = batch["perceiver_input_ids"]
        span = torch.isin(ids, torch.tensor(perceiver.span_token_ids()))
        expected = model.model.aligner(captured["h"][span])
    assert torch.equal(feats, expected)
