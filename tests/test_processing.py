"""PrealignProcessor: placeholders expanded by string-looked-up tokens, perceiver inputs, round trips."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from conftest import user_prompt
from transformers import SiglipImageProcessorPil

from prealign import PrealignProcessor
from prealign.tiny import tiny_causal_lm, tiny_image_processor, tiny_model, tiny_tokenizer


def test_placeholder_and_markers_are_single_added_tokens():
    processor = PrealignProcessor(tiny_image_processor(), tiny_tokenizer())
    for token in processor.special_tokens():
        ids = processor.tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and processor.tokenizer.convert_ids_to_tokens(ids) == [token]


def test_each_placeholder_expands_to_the_feature_count_between_markers(images):
    model, processor = tiny_model("dpa")
    n = model.config.image_seq_length
    batch = processor(text=[user_prompt(processor, "Compare <image> and <image>.")], images=images[:2])
    ids = batch["input_ids"][0].tolist()
    image, start, end = (
        processor.token_ids()[k] for k in ("image_token_id", "image_start_token_id", "image_end_token_id")
    )
    starts = [i for i, t in enumerate(ids) if t == start]
    assert len(starts) == 2
    for s in starts:
        assert ids[s + 1 : s + 1 + n] == [image] * n and ids[s + 1 + n] == end
    assert batch["pixel_values"].shape == (2, 3, 32, 32)


def test_perceiver_sequences_are_left_padded_spans_with_the_instruction_first(images):
    model, processor = tiny_model("dpa", early_fusion=True)
    n = model.config.image_seq_length
    prompts = [user_prompt(processor, "<image> a"), user_prompt(processor, "<image> b <image>")]
    batch = processor(
        text=prompts, images=images[:3], instructions=["Colour?", "How many shapes are in view?"]
    )
    ids, mask = batch["perceiver_input_ids"], batch["perceiver_attention_mask"]
    assert ids.shape[0] == 3  # one sequence per image
    pid = processor.token_ids()
    span = [pid["perceiver_image_start_token_id"]] + [pid["perceiver_image_token_id"]] * n
    span += [pid["perceiver_image_end_token_id"]]
    instructions = ["Colour?", "How many shapes are in view?", "How many shapes are in view?"]
    for row, instruction in enumerate(instructions):
        real = ids[row][mask[row].bool()].tolist()
        prefix = processor.perceiver_tokenizer(instruction, add_special_tokens=False)["input_ids"]
        assert real == prefix + span
        assert mask[row, -1] == 1  # every span ends at the last position
    assert mask[0, 0] == 0  # the shorter instruction is padded on the left


def test_without_early_fusion_the_perceiver_sees_only_the_image(images):
    model, processor = tiny_model("dpa")
    batch = processor(
        text=[user_prompt(processor, "<image> what?")], images=images[:1], instructions=["what?"]
    )
    assert batch["perceiver_input_ids"].shape == (1, model.config.image_span_length)
    assert batch["perceiver_attention_mask"].all()


def test_early_fusion_without_instructions_is_an_error(images):
    _, processor = tiny_model("dpa", early_fusion=True)
    with pytest.raises(ValueError, match="one instruction per sample"):
        processor(text=[user_prompt(processor, "<image>")], images=images[:1])


def test_image_count_must_match_placeholders(images):
    _, processor = tiny_model("dpa")
    with pytest.raises(ValueError, match=r"2 <image> placeholders \(per sample: \[1, 1\]\) but 3 images"):
        processor(
            text=[user_prompt(processor, "<image>"), user_prompt(processor, "<image>")], images=images[:3]
        )


def test_hf_style_content_parts_become_placeholders(images):
    _, processor = tiny_model("baseline")
    parts = [{"type": "image"}, {"type": "text", "text": "What is it?"}]
    assert processor.apply_chat_template([{"role": "user", "content": parts}]) == user_prompt(
        processor, "<image>\nWhat is it?"
    )


def test_unconfigured_processor_explains_itself():
    processor = PrealignProcessor(tiny_image_processor(), tiny_tokenizer())
    with pytest.raises(ValueError, match="configure_for"):
        processor(text=["hi"])


def test_separate_perceiver_tokenizer_round_trips(tmp_path, images):
    model, processor = _save_separate_perceiver_dpa(tmp_path)
    ids = processor.token_ids()
    assert ids["image_token_id"] != ids["perceiver_image_token_id"]
    assert model.config.perceiver_text_config.vocab_size == len(processor.perceiver_tokenizer)
    batch = processor(text=[user_prompt(processor, "<image> hi")], images=images[:1])
    assert torch.isfinite(model(**batch).logits).all()
    again = PrealignProcessor.from_pretrained(tmp_path)
    assert again.has_separate_perceiver_tokenizer
    assert again.token_ids() == ids
    batch_again = again(text=[user_prompt(again, "<image> hi")], images=images[:1])
    for key in batch:
        assert torch.equal(batch[key], batch_again[key]), key


def _save_separate_perceiver_dpa(folder):
    from prealign import PrealignForConditionalGeneration
    from prealign.tiny import tiny_vision_tower

    target_tok, perceiver_tok = tiny_tokenizer(), tiny_tokenizer(vocab_size=320)
    processor = PrealignProcessor(tiny_image_processor(), target_tok, perceiver_tok)
    model = PrealignForConditionalGeneration.from_parts(
        tiny_vision_tower(),
        tiny_causal_lm(vocab_size=len(target_tok), hidden_size=48),
        tiny_causal_lm("llama", vocab_size=len(perceiver_tok)),
        processor=processor,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def test_an_unreadable_perceiver_tokenizer_is_an_error_not_the_targets(tmp_path):
    from prealign.processing import PERCEIVER_TOKENIZER_DIR

    _save_separate_perceiver_dpa(tmp_path)
    for file in (tmp_path / PERCEIVER_TOKENIZER_DIR).iterdir():
        file.unlink()
    with pytest.raises(
        ValueError, match=r"perceiver_tokenizer holds the perceiver's own tokenizer but cannot"
    ):
        PrealignProcessor.from_pretrained(tmp_path)


def test_tokenizers_that_give_other_ids_than_the_saved_model_are_an_error(tmp_path):
    """The guard for the next upstream change in how tokenizers are saved or read: the model config
    records the image ids; a processor whose tokenizers give other ids refuses to load."""
    import json

    model, _ = _save_separate_perceiver_dpa(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    moved = model.config.perceiver_image_start_token_id + 1
    (tmp_path / "config.json").write_text(json.dumps({**config, "perceiver_image_start_token_id": moved}))
    with pytest.raises(
        ValueError,
        match=rf"disagree on the image token ids \(perceiver_image_start_token_id: config {moved}, tokenizer",
    ):
        PrealignProcessor.from_pretrained(tmp_path)


def test_loading_a_folder_without_processor_settings_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"processor_config\.json"):
        PrealignProcessor.from_pretrained(tmp_path)


@pytest.mark.parametrize("early_fusion", [False, True])
def test_auto_processor_loads_a_saved_models_processor_configured_by_its_config(
    tmp_path, images, early_fusion
):
    from transformers import AutoProcessor

    model, processor = tiny_model("dpa", early_fusion=early_fusion)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, PrealignProcessor)
    assert (loaded.num_image_tokens, loaded.uses_perceiver, loaded.early_fusion) == (
        model.config.image_seq_length,
        True,
        early_fusion,
    )
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}]
    text = loaded.apply_chat_template(messages)
    instructions = [loaded.perceiver_instruction(messages)]
    assert instructions == ["what is it?"]
    batch = loaded(images=images[:1], text=[text], instructions=instructions)
    expected = processor(text=[text], images=images[:1], instructions=instructions)
    assert batch.keys() == expected.keys()
    for key in batch:
        assert torch.equal(batch[key], expected[key]), key


def test_a_processor_file_that_disagrees_with_the_models_config_is_an_error(tmp_path):
    import json

    from prealign.processing import PROCESSOR_FILE

    model, processor = tiny_model("dpa")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    settings = json.loads((tmp_path / PROCESSOR_FILE).read_text())
    (tmp_path / PROCESSOR_FILE).write_text(json.dumps({**settings, "early_fusion": True}))
    with pytest.raises(
        ValueError, match=r"processor_config\.json says early_fusion=True but the model config"
    ):
        PrealignProcessor.from_pretrained(tmp_path)


def test_the_processor_is_a_transformers_processor_saved_in_its_layout(tmp_path, images):
    import json

    from transformers import ProcessorMixin

    from prealign.processing import PERCEIVER_TOKENIZER_DIR, PROCESSOR_FILE

    model, processor = tiny_model("dpa")
    assert isinstance(processor, ProcessorMixin)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / PROCESSOR_FILE).read_text())
    assert saved["processor_class"] == "PrealignProcessor"
    assert saved["image_processor"]["size"] == processor.image_processor.size
    assert saved["num_image_tokens"] == model.config.image_seq_length
    assert not (tmp_path / PERCEIVER_TOKENIZER_DIR).exists()  # one tokenizer, saved once
    prompt = [user_prompt(processor, "<image>\nwhat?")]
    # transformers' argument order: images, then text
    positional = processor(images[:1], prompt)
    keywords = processor(text=prompt, images=images[:1])
    for key in keywords:
        assert torch.equal(positional[key], keywords[key]), key


@pytest.mark.parametrize("settings_file", ["processor_config.json", "prealign_processor.json"])
def test_processors_saved_by_earlier_prealign_versions_still_load(tmp_path, images, settings_file):
    """Earlier versions saved the image processor as its own `preprocessor_config.json` beside a
    settings file (named `prealign_processor.json` in 0.1), and named `uses_perceiver` `use_perceiver`."""
    import json

    _, processor = tiny_model("dpa", early_fusion=True)
    processor.image_processor.save_pretrained(tmp_path)
    processor.tokenizer.save_pretrained(tmp_path)
    settings = {
        "num_image_tokens": processor.num_image_tokens,
        "use_perceiver": True,  # the name earlier versions wrote
        "early_fusion": True,
        "image_token": "<image>",
        "image_start_token": "<image_start>",
        "image_end_token": "<image_end>",
    }
    (tmp_path / settings_file).write_text(json.dumps(settings))
    loaded = PrealignProcessor.from_pretrained(tmp_path)
    assert (loaded.num_image_tokens, loaded.uses_perceiver, loaded.early_fusion) == (
        processor.num_image_tokens,
        True,
        True,
    )
    prompt = [user_prompt(processor, "<image>\nwhat?")]
    expected = processor(text=prompt, images=images[:1], instructions=["what?"])
    batch = loaded(text=prompt, images=images[:1], instructions=["what?"])
    for key in expected:
        assert torch.equal(batch[key], expected[key]), key


def test_a_text_only_processor_reads_prompts_but_cannot_be_saved(tmp_path):
    processor = PrealignProcessor(None, tiny_tokenizer(), num_image_tokens=4)
    batch = processor(text=["hi"])
    assert batch["input_ids"].shape[0] == 1
    with pytest.raises(ValueError, match="no image processor"):
        processor.save_pretrained(tmp_path)


def test_prompts_must_be_given():
    _, processor = tiny_model("baseline")
    with pytest.raises(ValueError, match="text="):
        processor(images=None)


class _TorchvisionLike(SiglipImageProcessorPil):
    """Stands in for transformers' torchvision image processor where torchvision is not installed:
    another backend whose pixel values differ by one 8-bit level, as measured on SigLIP's."""

    @property
    def backend(self) -> str:
        return "torchvision"

    def to_dict(self) -> dict:
        return {**super().to_dict(), "image_processor_type": "SiglipImageProcessor"}  # as the real one saves

    def __call__(self, images, **kwargs):
        out = super().__call__(images, **kwargs)
        out["pixel_values"] = out["pixel_values"] + 1 / 255 / self.image_std[0]
        return out


def test_a_saved_processor_keeps_its_image_backend_where_torchvision_is_importable(
    tmp_path, images, monkeypatch
):
    """transformers picks the torchvision backend whenever torchvision imports; the processor records
    the backend it was built with and asks for it on load, so pixel values do not change."""
    import json

    from transformers import AutoImageProcessor

    _, processor = tiny_model("baseline")
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["image_processor_backend"] == "pil"
    real = AutoImageProcessor.from_pretrained.__func__

    def as_with_torchvision(cls, folder, *args, **kwargs):  # no backend asked: torchvision's
        loaded = real(cls, folder, *args, **kwargs)
        if kwargs.get("backend"):
            return loaded
        if isinstance(loaded, tuple):  # asked with return_unused_kwargs, as ProcessorMixin asks
            return (_TorchvisionLike(**loaded[0].to_dict()), *loaded[1:])
        return _TorchvisionLike(**loaded.to_dict())

    monkeypatch.setattr(AutoImageProcessor, "from_pretrained", classmethod(as_with_torchvision))
    prompt = [user_prompt(processor, "<image>\nwhat?")]
    expected = processor(text=prompt, images=images[:1])["pixel_values"]
    other = _TorchvisionLike(**processor.image_processor.to_dict())(images[:1], return_tensors="pt")
    assert not torch.equal(other["pixel_values"], expected)  # the difference the record prevents
    loaded = PrealignProcessor.from_pretrained(tmp_path)
    assert loaded.image_processor_backend == "pil"
    assert torch.equal(loaded(text=prompt, images=images[:1])["pixel_values"], expected)


def test_a_backend_this_environment_cannot_give_is_an_error_not_another_backend():
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: the torchvision backend is available here")
    _, processor = tiny_model("baseline")
    with pytest.raises(
        ValueError, match=r"asks for the 'torchvision' image-processor backend .* cannot give"
    ):
        PrealignProcessor(
            processor.image_processor, processor.tokenizer, image_processor_backend="torchvision"
        )
