"""Generation with a KV cache, save/load round trips, Auto classes, assembling from saved parts."""

from __future__ import annotations

import pytest
import torch
from conftest import user_prompt
from safetensors.torch import load_file
from test_model import mixed_batch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    SiglipConfig,
    SiglipModel,
)

import prealign
from prealign import PrealignForConditionalGeneration, PrealignProcessor
from prealign.tiny import tiny_causal_lm, tiny_image_processor, tiny_model, tiny_tokenizer, tiny_vision_tower


@pytest.mark.parametrize("variant", ["baseline", "dpa"])
def test_generate_with_cache_equals_without(variant, images):
    model, processor = tiny_model(variant)
    model.eval()
    batch = mixed_batch(processor, images, padding_side="left")
    kwargs = dict(max_new_tokens=8, do_sample=False, min_new_tokens=8)
    cached = model.generate(**batch, use_cache=True, **kwargs)
    uncached = model.generate(**batch, use_cache=False, **kwargs)
    assert cached.shape[1] == batch["input_ids"].shape[1] + 8
    assert torch.equal(cached, uncached)


def test_vision_path_runs_only_at_prefill(images):
    model, processor = tiny_model("dpa")
    model.eval()
    calls = []
    model.model.perceiver.register_forward_hook(lambda *_: calls.append("perceiver"))
    model.model.vision_tower.register_forward_hook(lambda *_: calls.append("vision"))
    batch = mixed_batch(processor, images, padding_side="left")
    model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert calls == ["vision", "perceiver"]


def test_generation_never_emits_image_tokens(images):
    model, processor = tiny_model("dpa")
    ids = processor.token_ids()
    assert set(model.generation_config.suppress_tokens) == {
        ids["image_token_id"],
        ids["image_start_token_id"],
        ids["image_end_token_id"],
    }


@pytest.mark.parametrize("variant", ["baseline", "dpa"])
def test_save_load_round_trips_bit_exactly(variant, images, tmp_path):
    model, processor = tiny_model(variant, early_fusion=variant == "dpa")
    model.eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()

    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, PrealignForConditionalGeneration)
    reloaded_processor = PrealignProcessor.from_pretrained(tmp_path)
    batch = mixed_batch(processor, images)
    batch_again = mixed_batch(reloaded_processor, images)
    for key in batch:
        assert torch.equal(batch[key], batch_again[key]), key
    original = {k: v for k, v in model.state_dict().items()}
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch_again).logits)
    assert architecture(loaded.config.to_dict()) == architecture(model.config.to_dict())


def architecture(config: dict) -> dict:
    """A config dict without what loading records (dtype, source path)."""
    skip = {"dtype", "_name_or_path"}
    return {k: architecture(v) if isinstance(v, dict) else v for k, v in config.items() if k not in skip}


def test_config_survives_auto_config(tmp_path):
    model, _ = tiny_model("dpa", perceiver_blocks="mlp", include_image_markers=False)
    model.config.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, prealign.PrealignConfig)
    assert config.perceiver_blocks == "mlp" and not config.include_image_markers
    assert config.perceiver_mlp_hidden_size == model.config.perceiver_mlp_hidden_size
    assert config.image_span_length == config.image_seq_length


def test_from_parts_keeps_the_parts_weights_exactly(tmp_path):
    """Parts saved as ordinary HF folders (a SigLIP dual encoder, two causal LMs) load unchanged."""
    dual = SiglipModel(
        SiglipConfig(
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=32,
                patch_size=8,
            ),
            text_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=4,
                vocab_size=64,
            ),
        )
    )
    dual.save_pretrained(tmp_path / "siglip")
    tokenizer = tiny_tokenizer()
    tiny_causal_lm("qwen3", vocab_size=len(tokenizer), hidden_size=48).save_pretrained(tmp_path / "target")
    tiny_causal_lm("llama", vocab_size=len(tokenizer)).save_pretrained(tmp_path / "small")

    processor = PrealignProcessor(tiny_image_processor("siglip"), tokenizer)
    model = PrealignForConditionalGeneration.from_parts(
        tmp_path / "siglip",
        tmp_path / "target",
        tmp_path / "small",
        processor=processor,
        attn_implementation="eager",
    )
    for sub in ("vision_config", "text_config", "perceiver_text_config"):
        assert getattr(model.config, sub)._attn_implementation == "eager", sub
    n_old = len(tokenizer) - 3  # the processor added <image>, <image_start>, <image_end>

    def check(part_state, ours_prefix):
        ours = model.state_dict()
        for key, value in part_state.items():
            mine = ours[ours_prefix + key]
            if "embed_tokens" in key or key == "lm_head.weight":
                assert mine.shape[0] == n_old + 3
                mine, value = mine[:n_old], value[:n_old]
            assert torch.equal(mine, value), key

    tower = {
        k[len("vision_model.") :]: v
        for k, v in load_file(tmp_path / "siglip/model.safetensors").items()
        if k.startswith("vision_model.")
    }
    check(tower, "model.vision_tower.")
    target = load_file(tmp_path / "target/model.safetensors")
    check(
        {k[len("model.") :]: v for k, v in target.items() if k.startswith("model.")}, "model.language_model."
    )
    check({"lm_head.weight": target["lm_head.weight"]}, "")
    small = load_file(tmp_path / "small/model.safetensors")
    check(
        {k[len("model.") :]: v for k, v in small.items() if k.startswith("model.")},
        "model.perceiver.language_model.",
    )
    assert model.config.perceiver_text_config.model_type == "llama"
    assert processor.num_image_tokens == model.config.image_seq_length == 16
    assert not any(p.is_meta for p in model.parameters())


def test_from_parts_baseline_has_no_perceiver():
    model, processor = tiny_model("baseline")
    assert model.model.perceiver is None and model.model.aligner is None
    assert not model.config.uses_perceiver and not processor.uses_perceiver


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_attention_implementation_reaches_every_backbone(impl, tmp_path, images):
    model, processor = tiny_model("dpa")
    model.save_pretrained(tmp_path)
    loaded = PrealignForConditionalGeneration.from_pretrained(tmp_path, attn_implementation=impl).eval()
    for sub in ("text_config", "perceiver_text_config", "vision_config"):
        assert getattr(loaded.config, sub)._attn_implementation == impl, sub
    batch = mixed_batch(processor, images)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model.eval()(**batch).logits, rtol=1e-4, atol=1e-4)


def test_parts_given_as_objects_keep_their_attention_unless_told(images):
    """DPA stage 1 assembles a model from a loaded perceiver VLM and target: the attention they were
    loaded with (e.g. eager, 7% faster at nano size) must survive, not reset to the default."""
    parts = [tiny_vision_tower(), tiny_causal_lm(), tiny_causal_lm()]
    for part, impl in zip(parts, ("eager", "sdpa", "eager"), strict=True):
        part.set_attn_implementation(impl)
    model = PrealignForConditionalGeneration.from_parts(*parts)
    modules = (model.model.vision_tower, model.model.language_model, model.model.perceiver.language_model)
    assert [m.config._attn_implementation for m in modules] == ["eager", "sdpa", "eager"]
    assert model.config._attn_implementation == "sdpa"  # the target's
    model = PrealignForConditionalGeneration.from_parts(*parts, attn_implementation="eager")
    modules = (model.model.vision_tower, model.model.language_model, model.model.perceiver.language_model)
    assert [m.config._attn_implementation for m in modules] == ["eager"] * 3


def test_bare_target_lm_is_still_a_standalone_causal_lm(tmp_path):
    """The target inside a trained model can be exported back to an ordinary causal LM folder."""
    model, processor = tiny_model("dpa")
    lm = AutoModelForCausalLM.from_config(model.config.text_config)
    lm.model.load_state_dict(model.model.language_model.state_dict())
    lm.lm_head.load_state_dict(model.lm_head.state_dict())
    prompt = processor(text=[user_prompt(processor, "2+2?")])
    with torch.no_grad():
        assert torch.equal(lm(**prompt).logits, model(**prompt).logits)


def test_new_modules_follow_the_parts_dtype(images):
    processor = PrealignProcessor(tiny_image_processor(), tiny_tokenizer())
    vocab = len(processor.tokenizer)
    parts = [
        tiny_vision_tower(),
        tiny_causal_lm(vocab_size=vocab, hidden_size=48),
        tiny_causal_lm(vocab_size=vocab),
    ]
    model = PrealignForConditionalGeneration.from_parts(
        *[p.to(torch.bfloat16) for p in parts], processor=processor
    )
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    batch = mixed_batch(processor, images)
    assert torch.isfinite(model(**batch).logits.float()).all()
