"""`prealign export --part target-lm`: the trained target LM, standalone, answers as the VLM does."""

from __future__ import annotations

import pytest
import torch
from conftest import user_prompt
from transformers import AutoModelForCausalLM, AutoTokenizer

from prealign.cli import main
from prealign.modeling import PrealignForConditionalGeneration
from prealign.processing import PrealignProcessor
from prealign.tiny import tiny_causal_lm, tiny_image_processor, tiny_model, tiny_tokenizer, tiny_vision_tower


def test_the_exported_target_lm_gives_the_vlms_text_only_logits(tmp_path, capsys):
    model, processor = tiny_model("dpa")
    model.save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    assert main(["export", str(tmp_path / "vlm"), str(tmp_path / "lm"), "--part", "target-lm"]) == 0
    assert "written to" in capsys.readouterr().out
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "lm")
    assert tokenizer.get_vocab() == processor.tokenizer.get_vocab()  # image tokens included
    prompt = user_prompt(processor, "How many shapes are there? Count them.")
    ids = tokenizer([prompt], add_special_tokens=False, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        assert torch.equal(lm(**ids).logits, model(**ids).logits)


def test_the_exported_perceiver_is_a_small_vlm_whose_span_states_are_the_perceivers(tmp_path, images):
    # The perceiver LM ties its head to its embeddings, as Qwen3-0.6B does: DPA keeps no other head.
    processor = PrealignProcessor(tiny_image_processor(), tiny_tokenizer())
    vocab = len(processor.tokenizer)
    model = PrealignForConditionalGeneration.from_parts(
        vision_model=tiny_vision_tower(),
        text_model=tiny_causal_lm(vocab_size=vocab, hidden_size=48),
        perceiver_text_model=tiny_causal_lm(vocab_size=vocab, tie_word_embeddings=True),
        processor=processor,
    )
    model.save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    assert main(["export", str(tmp_path / "vlm"), str(tmp_path / "perceiver"), "--part", "perceiver"]) == 0
    small = PrealignForConditionalGeneration.from_pretrained(tmp_path / "perceiver").eval()
    small_processor = PrealignProcessor.from_pretrained(tmp_path / "perceiver")
    assert (
        not small.config.uses_perceiver
        and small.config.text_config.hidden_size == model.config.perceiver_text_config.hidden_size
    )
    model.eval()
    with torch.no_grad():
        batch = processor(text=[user_prompt(processor, "<image>\nwhat is it?")], images=[images[0]])
        features = model.model.get_vision_features(batch["pixel_values"])
        perceiver_states = model.model.perceiver(
            batch["perceiver_input_ids"], batch["perceiver_attention_mask"], features
        )
        # The perceiver reads `<image_start> <image>*N <image_end>`; so does the small VLM, given "<image>".
        small_batch = small_processor(text=["<image>"], images=[images[0]])
        small_states = small.model(**small_batch).last_hidden_state[0]
    assert torch.equal(small_batch["input_ids"][0], batch["perceiver_input_ids"][0][-small_states.shape[0] :])
    assert torch.allclose(small_states, perceiver_states, atol=1e-6)
    # It answers in words with the perceiver LM's tied head, through the usual generate().
    out = small.generate(
        **small_processor(text=[user_prompt(small_processor, "<image>\nhi")], images=[images[0]]),
        max_new_tokens=3,
        do_sample=False,
    )
    assert out.shape[1] > small_batch["input_ids"].shape[1]


def test_a_baseline_or_a_perceiver_without_an_lm_or_a_head_has_nothing_to_export():
    from prealign.export import perceiver_vlm

    for variant, options, message in (
        ("baseline", {}, "Only a DPA model"),
        ("dpa", {"perceiver_blocks": "none"}, "has no LM"),
        ("dpa", {}, "does not tie its output head"),
    ):
        model, processor = tiny_model(variant, **options)
        with pytest.raises(ValueError, match=message):
            perceiver_vlm(model, processor)
