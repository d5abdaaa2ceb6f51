"""The model's contract: every part learns, text-only equals the target LM, counts are checked."""

from __future__ import annotations

import pytest
import torch
from conftest import user_prompt
from transformers import AutoModelForCausalLM

from prealign.tiny import tiny_model

BACKBONES = [("qwen3", "siglip"), ("llama", "clip"), ("qwen3", "clip"), ("llama", "siglip")]
VARIANTS = ["baseline", "dpa"]


def mixed_batch(processor, images, padding_side="right"):
    """One sample with an image, one with two images, one text-only."""
    prompts = [
        user_prompt(processor, "<image>\nWhat colour is the circle?"),
        user_prompt(processor, "Compare <image> and <image>."),
        user_prompt(processor, "How many shapes are there?"),
    ]
    instructions = ["What colour is the circle?", "Compare them.", "How many shapes are there?"]
    return processor(text=prompts, images=images[:3], instructions=instructions, padding_side=padding_side)


def bare_target_lm(model):
    """The target LM alone, as a standalone causal LM holding the model's weights."""
    lm = AutoModelForCausalLM.from_config(model.config.text_config)
    state = {f"model.{k}": v for k, v in model.model.language_model.state_dict().items()}
    state["lm_head.weight"] = model.lm_head.weight
    lm.load_state_dict(state)
    return lm.eval()


@pytest.mark.parametrize("target,vision", BACKBONES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_loss_backward_reach_every_trainable_part(variant, target, vision, images):
    model, processor = tiny_model(variant, vision=vision, target=target, perceiver=target)
    batch = mixed_batch(processor, images)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = model(**batch, labels=labels)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    # The features are read from hidden_states, before the tower's final layer norm.
    without_grad = [
        name
        for name, p in model.named_parameters()
        if (p.grad is None or not p.grad.abs().sum()) and "post_layernorm" not in name
    ]
    assert without_grad == []
    parts = ["vision_tower", "projector", "language_model", "lm_head"]
    parts += ["perceiver", "aligner"] if variant == "dpa" else []
    for part in parts:
        assert any(part in name for name, p in model.named_parameters() if p.grad is not None), part


@pytest.mark.parametrize("perceiver_blocks", ["mlp", "none"])
def test_perceiver_ablations_run_and_train(perceiver_blocks, images):
    model, processor = tiny_model("dpa", perceiver_blocks=perceiver_blocks)
    assert not hasattr(model.model.perceiver, "language_model")
    batch = mixed_batch(processor, images)
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    assert model.model.perceiver.embed_tokens.weight.grad.abs().sum() > 0
    if perceiver_blocks == "mlp":
        assert model.model.perceiver.mlp.up.weight.grad.abs().sum() > 0


def test_large_mlp_has_the_parameter_count_of_the_lm_blocks():
    model, _ = tiny_model("dpa")
    lm = model.model.perceiver.language_model
    blocks = sum(p.numel() for p in lm.parameters()) - lm.get_input_embeddings().weight.numel()
    mlp_model, _ = tiny_model("dpa", perceiver_blocks="mlp")
    mlp = sum(p.numel() for p in mlp_model.model.perceiver.mlp.parameters())
    assert abs(mlp - blocks) <= 2 * lm.config.hidden_size + 1  # one unit of hidden width


@pytest.mark.parametrize("target", ["qwen3", "llama"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_text_only_prompt_matches_target_lm(variant, target):
    model, processor = tiny_model(variant, target=target, perceiver=target)
    model.eval()
    prompts = [user_prompt(processor, "How many shapes are there?"), user_prompt(processor, "2+2?")]
    batch = processor(text=prompts, padding_side="left")
    assert "pixel_values" not in batch
    with torch.no_grad():
        ours = model(**batch).logits
        theirs = bare_target_lm(model)(**batch).logits
    assert torch.equal(ours, theirs)


def features_for_two_instructions(early_fusion: bool, images) -> tuple[torch.Tensor, torch.Tensor]:
    """The same image's features when the user asks two different questions."""
    model, processor = tiny_model("dpa", early_fusion=early_fusion)
    model.eval()
    prompt = user_prompt(processor, "<image>\nQuestion?")
    features = []
    for instruction in ("What colour is the circle?", "How many squares are there?"):
        inputs = processor(text=[prompt], images=images[:1], instructions=[instruction])
        with torch.no_grad():
            features.append(
                model.get_image_features(
                    inputs["pixel_values"], inputs["perceiver_input_ids"], inputs["perceiver_attention_mask"]
                )
            )
    assert features[0].shape == (model.config.image_span_length, model.config.text_config.hidden_size)
    return features[0], features[1]


def test_early_fusion_changes_image_features(images):
    first, second = features_for_two_instructions(True, images)
    assert not torch.allclose(first, second)


def test_without_early_fusion_the_instruction_leaves_image_features_bit_identical(images):
    first, second = features_for_two_instructions(False, images)
    assert torch.equal(first, second)


def test_left_padding_of_perceiver_sequences_leaves_features_unchanged(images):
    """Early-fusion sequences differ in length; padding must not move positions or leak attention."""
    model, processor = tiny_model("dpa", early_fusion=True)
    model.eval()
    prompt = user_prompt(processor, "<image>\nQ?")
    short = "Colour?"
    alone = processor(text=[prompt], images=images[:1], instructions=[short])
    batch = processor(
        text=[prompt, prompt], images=images[:2], instructions=[short, "A much longer instruction " * 4]
    )
    assert batch["perceiver_attention_mask"][0, 0] == 0  # the short one is padded on the left
    with torch.no_grad():
        f_alone = model.get_image_features(
            **{k: v for k, v in alone.items() if "perceiver" in k or k == "pixel_values"}
        )
        f_batch = model.get_image_features(
            **{k: v for k, v in batch.items() if "perceiver" in k or k == "pixel_values"}
        )
    span = model.config.image_span_length
    torch.testing.assert_close(f_batch[:span], f_alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_sample_of_a_mixed_batch_equals_the_sample_alone(variant, images):
    """Features land in sample -> image -> position order, whatever the batch mixes."""
    model, processor = tiny_model(variant)
    model.eval()
    batch = mixed_batch(processor, images)
    with torch.no_grad():
        batched = model(**batch).logits
        singles = [
            processor(
                text=[user_prompt(processor, "<image>\nWhat colour is the circle?")],
                images=images[:1],
                instructions=["What colour is the circle?"],
            ),
            processor(
                text=[user_prompt(processor, "Compare <image> and <image>.")],
                images=images[1:3],
                instructions=["Compare them."],
            ),
            processor(text=[user_prompt(processor, "How many shapes are there?")]),
        ]
        for row, single in enumerate(singles):
            alone = model(**single).logits[0]
            torch.testing.assert_close(batched[row, : alone.shape[0]], alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_placeholder_feature_count_mismatch_raises(variant, images):
    model, processor = tiny_model(variant)
    batch = mixed_batch(processor, images)
    ids = batch["input_ids"].clone()
    first = (ids == model.config.image_token_id).nonzero()[0]
    ids[tuple(first)] = processor.tokenizer.pad_token_id
    n_positions = int(model.model.image_span_mask(ids).sum())
    n_features = 3 * model.config.image_span_length
    with pytest.raises(ValueError, match=rf"{n_positions} image-span positions.*{n_features} features"):
        model(**{**batch, "input_ids": ids})


def test_placeholders_without_pixel_values_raise(images):
    model, processor = tiny_model("dpa")
    batch = mixed_batch(processor, images)
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])


def test_perceiver_sequence_count_must_match_images(images):
    model, processor = tiny_model("dpa")
    batch = mixed_batch(processor, images)
    with pytest.raises(ValueError, match="3 images but 2 perceiver sequences"):
        model(**{**batch, "perceiver_input_ids": batch["perceiver_input_ids"][:2]})


def test_gradient_checkpointing_reaches_every_backbone(images):
    model, processor = tiny_model("dpa")
    batch = mixed_batch(processor, images)
    model.train()
    reference = model(**batch, labels=batch["input_ids"]).loss
    reference.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    flagged = {
        name.split(".")[1] for name, m in model.named_modules() if getattr(m, "gradient_checkpointing", False)
    }
    assert {"vision_tower", "perceiver", "language_model"} <= flagged
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    assert torch.equal(loss, reference)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad)
