"""The image feature cache: a second question about an image skips the vision tower and the
perceiver and answers exactly as without the cache; early fusion and training never use it."""

from __future__ import annotations

import pytest
import torch
from conftest import user_prompt

from prealign.modeling.feature_cache import ImageFeatureCache
from prealign.tiny import tiny_model

QUESTIONS = ("<image>\nWhat colour is it?", "<image>\nHow many shapes?")


def _calls(model) -> list[str]:
    calls: list[str] = []
    model.model.vision_tower.register_forward_hook(lambda *_: calls.append("vision"))
    if model.model.perceiver is not None:
        model.model.perceiver.register_forward_hook(lambda *_: calls.append("perceiver"))
    return calls


def _ask(model, processor, image, question: str, new_tokens: int = 6) -> torch.Tensor:
    text = user_prompt(processor, question)
    batch = processor(text=[text], images=[image], instructions=[question.split("\n")[-1]])
    return model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)


@pytest.mark.parametrize("variant", ["baseline", "dpa"])
def test_second_question_on_the_same_image_skips_the_vision_path_and_answers_the_same(variant, images):
    model, processor = tiny_model(variant)
    model.eval()
    expected = [_ask(model, processor, images[0], q) for q in QUESTIONS]
    cache = model.enable_image_feature_cache(max_images=4)
    calls = _calls(model)
    first = _ask(model, processor, images[0], QUESTIONS[0])
    after_first = list(calls)
    second = _ask(model, processor, images[0], QUESTIONS[1])
    assert after_first == ["vision"] + (["perceiver"] if variant == "dpa" else [])
    assert calls == after_first  # the second turn ran neither the vision tower nor the perceiver
    assert (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(first, expected[0]) and torch.equal(second, expected[1])
    _ask(model, processor, images[1], QUESTIONS[0])  # another image is computed
    assert calls[len(after_first) :] == after_first


def test_a_batch_mixing_cached_and_new_images_computes_only_the_new_ones(images):
    model, processor = tiny_model("dpa")
    model.eval()
    texts = [user_prompt(processor, q) for q in QUESTIONS]
    batch = processor(text=texts, images=images[:2], instructions=["a", "b"])
    with torch.no_grad():
        expected = model(**batch).logits
    model.enable_image_feature_cache()
    with torch.no_grad():
        model(**processor(text=[texts[1]], images=[images[1]], instructions=["b"]))
        seen = []
        model.model.vision_tower.register_forward_hook(
            lambda _, args, kwargs, __: seen.append(kwargs["pixel_values"].shape[0]), with_kwargs=True
        )
        mixed = model(**batch).logits
    assert seen == [1]  # only images[0] went through the tower
    assert torch.allclose(mixed, expected, atol=1e-5)


def test_early_fusion_never_uses_the_cache(images):
    model, processor = tiny_model("dpa", early_fusion=True)
    model.eval()
    cache = model.enable_image_feature_cache()
    calls = _calls(model)
    for question in QUESTIONS:
        _ask(model, processor, images[0], question)
    assert calls == ["vision", "perceiver"] * 2  # its features depend on the instruction
    assert len(cache) == 0


def test_training_bypasses_and_clears_the_cache(images):
    model, processor = tiny_model("baseline")
    model.eval()
    cache = model.enable_image_feature_cache()
    _ask(model, processor, images[0], QUESTIONS[0])
    assert len(cache) == 1
    model.train()  # the weights are about to change: what was cached describes the old ones
    assert len(cache) == 0
    calls = _calls(model)
    text = user_prompt(processor, QUESTIONS[0])
    batch = processor(text=[text], images=[images[0]])
    model(**batch, labels=batch["input_ids"]).loss.backward()
    assert calls == ["vision"] and len(cache) == 0


def test_the_cache_is_bounded_and_keyed_by_content():
    cache = ImageFeatureCache(max_images=2)
    a, b, c = torch.zeros(3, 4, 4), torch.ones(3, 4, 4), torch.full((3, 4, 4), 2.0)
    assert cache.key(a) == cache.key(a.clone()) != cache.key(b)
    assert cache.key(a) != cache.key(a.to(torch.float64))
    for pixels in (a, b, c):
        cache.put(cache.key(pixels), pixels[0])
    assert len(cache) == 2 and cache.get(cache.key(a)) is None  # the least recently used went
    assert torch.equal(cache.get(cache.key(c)), c[0])
    with pytest.raises(ValueError, match="at least 1"):
        ImageFeatureCache(0)
