"""The authors' DPA architecture: a native-resolution Qwen2.5-VL tower, its merger as phi_p, an
M-RoPE perceiver, Qwen's own vision tokens - tiny configs of the real architectures, Qwen's real
tokenizer - and the baseline on the same tower. The model invariants hold for both."""

from __future__ import annotations

import pytest
import torch
from conftest import random_image
from data_fixtures import INSTRUCT, write_llava_set
from qwen_fixtures import (
    PERCEIVER_MROPE_SECTION,
    QWEN_VISION_IDS,
    QWEN_VISION_TOKENS,
    QWEN_VOCAB_ROWS,
    TARGET_MROPE_SECTION,
    qwen_dpa,
    save_qwen_parts,
    tiny_qwen2_5_vl_config,
)
from test_model import bare_target_lm
from test_training import changed_parts, stage_config
from transformers import (
    AutoModelForImageTextToText,
    Qwen2_5_VLConfig,
    Qwen2_5_VLModel,
)
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding

from prealign import PrealignForConditionalGeneration, PrealignProcessor
from prealign.assembly import ModelSettings, build_model_and_processor
from prealign.data import DataSource, LlavaDataset, PrealignCollator
from prealign.data.check import check_data
from prealign.modeling.feature_cache import ImageFeatureCache
from prealign.modeling.rotary import MultimodalRotaryEmbedding, multimodal_positions
from prealign.tiny import tiny_causal_lm, tiny_vision_tower
from prealign.training import build_trainer
from prealign.training.settings import TrainSettings, from_dict

SIZES = [(40, 48), (100, 60), (150, 150)]  # (height, width): 2, 8 and 9 image tokens


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """The tiny DPA and baseline of the authors' layout, and a DPA on Qwen2-VL's tower, built once
    (Qwen's tokenizer loads slowly)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("qwen")
    models = {variant: qwen_dpa(folder / variant, variant) for variant in ("dpa", "baseline")}
    models["dpa_qwen2_vl"] = qwen_dpa(folder / "qwen2_vl", "dpa", tower="qwen2_vl")
    return models


@pytest.fixture
def three_sizes():
    return [random_image(seed, size) for seed, size in enumerate(SIZES)]


def ask(processor, images, question="What is in the picture?"):
    """One user turn per image set, as chat and evaluation build it; left-padded for generation."""
    conversations = [[processor.user_turn(question, group)] for group in images]
    texts = [processor.apply_chat_template(c) for c in conversations]
    flat = [image for group in images for image in group]
    instructions = [processor.perceiver_instruction(c) for c in conversations]
    return processor(text=texts, images=flat or None, instructions=instructions)


def test_qwen_vision_tokens_are_used_as_they_are_and_tables_keep_their_rows(qwen):
    for variant, (model, processor) in qwen.items():
        ids = processor.token_ids()
        assert ids["image_token_id"] == QWEN_VISION_IDS["<|image_pad|>"]
        assert ids["image_start_token_id"] == QWEN_VISION_IDS["<|vision_start|>"]
        assert ids["image_end_token_id"] == QWEN_VISION_IDS["<|vision_end|>"]
        assert len(processor.tokenizer) == 151_669  # nothing added
        assert model.get_input_embeddings().weight.shape[0] == QWEN_VOCAB_ROWS
        assert model.lm_head.weight.shape[0] == QWEN_VOCAB_ROWS
        if variant == "dpa":
            assert model.model.perceiver.get_input_embeddings().weight.shape[0] == QWEN_VOCAB_ROWS
            assert model.config.perceiver_image_token_id == QWEN_VISION_IDS["<|image_pad|>"]


def test_each_image_gets_the_span_its_size_asks_for(qwen, three_sizes):
    model, processor = qwen["dpa"]
    batch = ask(processor, [three_sizes[:2], three_sizes[2:]])
    grid = batch["image_grid_thw"]
    counts = (grid.prod(-1) // 4).tolist()
    assert counts == [2, 8, 9]  # N = t*h*w / merge**2 differs per image
    assert batch["pixel_values"].shape[0] == int(grid.prod(-1).sum())
    image_id, start_id = QWEN_VISION_IDS["<|image_pad|>"], QWEN_VISION_IDS["<|vision_start|>"]
    assert (batch["input_ids"] == image_id).sum(-1).tolist() == [2 + 8, 9]
    rows = batch["perceiver_input_ids"]
    assert (rows == image_id).sum(-1).tolist() == counts  # one perceiver row per image
    assert (rows == start_id).sum(-1).tolist() == [1, 1, 1]
    with torch.no_grad():
        features = model.get_image_features(
            batch["pixel_values"], batch["perceiver_input_ids"], batch["perceiver_attention_mask"], grid
        )
    assert features.shape == (sum(n + 2 for n in counts), model.config.text_config.hidden_size)


def test_text_only_prompt_matches_the_target_lm(qwen):
    for model, processor in qwen.values():
        model.eval()
        batch = ask(processor, [[], []], "How many shapes are there?")
        assert "pixel_values" not in batch
        with torch.no_grad():
            assert torch.equal(model(**batch).logits, bare_target_lm(model)(**batch).logits)


@pytest.mark.parametrize("variant", ["dpa", "baseline", "dpa_qwen2_vl"])
def test_cached_generation_equals_uncached(qwen, three_sizes, variant):
    model, processor = qwen[variant]
    model.eval()
    batch = ask(processor, [three_sizes[:1], three_sizes[1:]])
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    cached = model.generate(**batch, use_cache=True, **kwargs)
    uncached = model.generate(**batch, use_cache=False, **kwargs)
    assert cached.shape[1] == batch["input_ids"].shape[1] + 6
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("variant", ["dpa", "baseline", "dpa_qwen2_vl"])
def test_save_load_round_trips_bit_exactly(qwen, three_sizes, variant, tmp_path):
    model, processor = qwen[variant]
    model.eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    reloaded = PrealignProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, PrealignForConditionalGeneration) and loaded.config.native_resolution
    batch, batch_again = ask(processor, [three_sizes]), ask(reloaded, [three_sizes])
    for key in batch:
        assert torch.equal(batch[key], batch_again[key]), key
    original = model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, original[key]), key
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, loaded(**batch_again).logits)


@pytest.mark.parametrize("variant", ["dpa", "baseline"])
def test_feature_cache_hit_equals_miss(qwen, three_sizes, variant):
    model, processor = qwen[variant]
    model.eval()
    batch = ask(processor, [three_sizes[:2], three_sizes[1:]])  # four images of three sizes
    with torch.no_grad():
        fresh = model(**batch).logits
        cache = model.enable_image_feature_cache()
        try:
            first = model(**batch).logits
            again = model(**batch).logits
        finally:
            model.disable_image_feature_cache()
    assert (cache.misses, cache.hits) == (4, 4)
    assert torch.equal(first, fresh) and torch.equal(again, fresh)


def test_the_same_patches_on_another_grid_are_another_image(qwen):
    _, processor = qwen["baseline"]
    inputs, _ = processor.process_images([random_image(7, (28, 56))])
    grid = inputs["image_grid_thw"][0]
    transposed = grid[[0, 2, 1]]  # the same patch rows read as 4x2 instead of 2x4
    pixels = inputs["pixel_values"]
    assert ImageFeatureCache.key(pixels, grid) != ImageFeatureCache.key(pixels, transposed)


def test_mrope_positions_equal_transformers_qwen2_5_vl(qwen, three_sizes):
    """Our 3-D positions against Qwen2.5-VL's own get_rope_index, on left-padded rows holding text,
    one or two images of different sizes, and text between and after them."""
    _, processor = qwen["baseline"]
    batch = ask(processor, [three_sizes[:2], three_sizes[2:]])
    image_id = QWEN_VISION_IDS["<|image_pad|>"]
    reference = Qwen2_5_VLModel(tiny_qwen2_5_vl_config(image_token_id=image_id))
    token_types = (batch["input_ids"] == image_id).int()
    theirs, _ = reference.get_rope_index(
        batch["input_ids"],
        token_types,
        image_grid_thw=batch["image_grid_thw"],
        attention_mask=batch["attention_mask"],
    )
    ours = multimodal_positions(
        batch["input_ids"], batch["attention_mask"], image_id, batch["image_grid_thw"], merge_size=2
    )
    real = batch["attention_mask"].bool()
    assert torch.equal(ours[:, real], theirs[:, real])


def test_multimodal_rotary_equals_qwen2_5_vl_rotary():
    """The LM's own rotary, band-picked, gives Qwen2.5-VL's M-RoPE angles exactly."""
    lm = tiny_causal_lm("qwen3", hidden_size=64)
    ours = MultimodalRotaryEmbedding(lm.model.rotary_emb, PERCEIVER_MROPE_SECTION)
    config = Qwen2_5_VLConfig(
        text_config=dict(
            hidden_size=64,
            num_attention_heads=4,
            head_dim=16,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": lm.config.rope_parameters["rope_theta"],
                "mrope_section": PERCEIVER_MROPE_SECTION,
            },
        ),
    ).text_config
    theirs = Qwen2_5_VLRotaryEmbedding(config)
    positions = torch.stack([torch.arange(12), torch.arange(12) // 3 + 5, torch.arange(12) % 4 + 5])[:, None]
    x = torch.zeros(1, 12, 64)
    for mine, reference in zip(ours(x, positions), theirs(x, positions), strict=True):
        torch.testing.assert_close(mine, reference, rtol=0, atol=1e-6)
    one_d = torch.arange(12)[None]
    for mine, plain in zip(ours(x, one_d.expand(3, 1, 12)), lm.model.rotary_emb(x, one_d), strict=True):
        assert torch.equal(mine, plain)  # text: M-RoPE is RoPE


def test_mrope_is_what_the_perceiver_runs(qwen, three_sizes):
    model, processor = qwen["dpa"]
    model.eval()
    batch = ask(processor, [three_sizes[1:2]])
    args = (
        batch["pixel_values"],
        batch["perceiver_input_ids"],
        batch["perceiver_attention_mask"],
        batch["image_grid_thw"],
    )
    with torch.no_grad():
        with_mrope = model.get_image_features(*args)
        model.config.perceiver_mrope_section = None  # the same weights with 1-D positions
        try:
            one_d = model.get_image_features(*args)
        finally:
            model.config.perceiver_mrope_section = PERCEIVER_MROPE_SECTION
    assert not torch.allclose(with_mrope, one_d)


def test_the_merger_is_phi_p_reinitialised_to_the_perceivers_width(qwen):
    tower = tiny_vision_tower("qwen2_5_vl", out_hidden_size=48)
    model, processor = qwen["dpa"]
    resized = (
        type(model)
        .from_parts(
            tower,
            tiny_causal_lm("qwen3", vocab_size=QWEN_VOCAB_ROWS, hidden_size=48),
            tiny_causal_lm("qwen3", vocab_size=QWEN_VOCAB_ROWS, hidden_size=64),
            processor=processor,
            projector_type="merger",
        )
        .model.vision_tower
    )
    assert resized.config.out_hidden_size == 64 and resized.merger.mlp[-1].out_features == 64
    before = tower.state_dict()
    for key, value in resized.state_dict().items():
        if not key.startswith("merger.mlp.2."):
            assert torch.equal(value, before[key]), key  # the pretrained tower is kept
    assert len(list(model.model.projector.parameters())) == 0  # nothing outside the tower projects


def test_config_refuses_what_a_native_resolution_tower_cannot_do(qwen):
    config = qwen["dpa"][0].config
    with pytest.raises(ValueError, match="sum"):
        type(config)(**{**config.to_dict(), "perceiver_mrope_section": [4, 4, 4]})
    with pytest.raises(ValueError, match="vision_feature_layer"):
        type(config)(**{**config.to_dict(), "vision_feature_layer": -2})
    with pytest.raises(ValueError, match="merger gives width"):
        type(config)(
            **{
                **config.to_dict(),
                "perceiver_text_config": {
                    **config.perceiver_text_config.to_dict(),
                    "hidden_size": 32,
                    "head_dim": 8,
                },
            }
        )


@pytest.mark.parametrize(
    "variant,align_trains",
    [("dpa", {"aligner"}), ("baseline", {"projector"})],  # the baseline's connector is the tower's merger
)
def test_both_stages_train_on_three_image_sizes_then_generate(qwen, variant, align_trains, tmp_path):
    model, processor = qwen[variant]
    model.save_pretrained(tmp_path / "init")
    processor.save_pretrained(tmp_path / "init")
    data = write_llava_set(tmp_path / "data", sizes=SIZES)
    checkpoint = tmp_path / "init"
    trained = {}
    for stage, prompt_format in (("align", "plain"), ("finetune", "chat")):
        config = stage_config(tmp_path, data, checkpoint, stage)
        source = data["pretrain" if stage == "align" else "instruct"]
        config["data"] = {
            "files": [{"path": str(source), "image_root": str(data["images"])}],
            "prompt_format": prompt_format,
        }
        settings = from_dict(TrainSettings, config, "test")
        trainer = build_trainer(settings)
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.train()
        trainer.save_model(settings.output_dir)
        trained[stage] = changed_parts(before, trainer.model)
        checkpoint = settings.output_dir
    assert trained["align"] == align_trains
    everything = {"vision_tower", "projector", "language_model", "lm_head"} | (
        {"perceiver", "aligner"} if variant == "dpa" else set()
    )
    assert trained["finetune"] == everything
    final = PrealignForConditionalGeneration.from_pretrained(checkpoint).eval()
    final_processor = PrealignProcessor.from_pretrained(checkpoint)
    batch = ask(final_processor, [[random_image(9, size)] for size in SIZES])
    out = final.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape == (3, batch["input_ids"].shape[1] + 4)


def test_a_target_with_mrope_decodes_at_the_positions_a_full_forward_gives(qwen, three_sizes):
    """Decode steps read the KV cache at 1-D positions shifted by the prompt's rope deltas; the same
    tokens run in one uncached forward (3-D positions computed over everything) give the same logits."""
    model, processor = qwen["baseline"]
    model.eval()
    batch = ask(processor, [three_sizes[1:2], three_sizes[2:]])
    assert model.config.text_mrope_section == TARGET_MROPE_SECTION
    out = model.generate(
        **batch,
        max_new_tokens=3,
        min_new_tokens=3,
        do_sample=False,
        return_dict_in_generate=True,
        output_logits=True,
    )
    assert (model.model.rope_deltas != 0).all()  # the grids moved the text after them
    mask = torch.cat([batch["attention_mask"], torch.ones_like(out.sequences[:, -3:])], dim=1)
    inputs = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        full = model(input_ids=out.sequences, attention_mask=mask, **inputs).logits
    for step, logits in enumerate(out.logits):
        position = batch["input_ids"].shape[1] - 1 + step
        torch.testing.assert_close(logits, full[:, position], rtol=1e-4, atol=1e-4)


def test_a_training_config_assembles_the_authors_layout_from_hub_style_folders(tmp_path):
    vlm = save_qwen_parts(tmp_path)
    settings = from_dict(
        ModelSettings,
        {
            "variant": "dpa_untrained_perceiver",
            "vision": str(tmp_path / "qwen2_5_vl"),
            "text": str(tmp_path / "qwen3_4b"),
            "perceiver": str(tmp_path / "qwen3_0_6b"),
            "perceiver_tokenizer": str(tmp_path / "qwen3_0_6b"),
            "config": {"projector_type": "merger", "perceiver_mrope_section": PERCEIVER_MROPE_SECTION},
            "image_tokens": QWEN_VISION_TOKENS,
        },
        "test",
    )
    model, processor = build_model_and_processor(settings)
    assert processor.token_ids()["image_token_id"] == QWEN_VISION_IDS["<|image_pad|>"]
    assert model.get_input_embeddings().weight.shape[0] == QWEN_VOCAB_ROWS
    tower = model.model.vision_tower.state_dict()
    for key, value in vlm.model.visual.state_dict().items():
        if not key.startswith("merger.mlp.2."):  # re-initialised to the perceiver's width (64)
            assert torch.equal(tower[key], value), key
    assert tower["merger.mlp.2.weight"].shape == (64, 4 * 32)
    batch = ask(processor, [[random_image(0, size) for size in SIZES]])
    with torch.no_grad():
        assert model(**batch).logits.shape[:2] == batch["input_ids"].shape


def test_a_dpa_from_a_qwen_perceiver_vlm_keeps_its_merger_positions_and_tokens(qwen, tmp_path):
    vlm, vlm_processor = qwen["baseline"]  # a Qwen-tower VLM with an M-RoPE LM, as a perceiver VLM
    vlm.save_pretrained(tmp_path / "vlm")
    vlm_processor.save_pretrained(tmp_path / "vlm")
    save_qwen_parts(tmp_path)
    settings = from_dict(
        ModelSettings,
        {"variant": "dpa", "perceiver_vlm": str(tmp_path / "vlm"), "text": str(tmp_path / "qwen3_4b")},
        "test",
    )
    model, processor = build_model_and_processor(settings)
    assert model.config.projector_type == "merger"
    assert (
        model.config.perceiver_mrope_section == TARGET_MROPE_SECTION
        and model.config.text_mrope_section is None
    )
    assert processor.image_span_tokens() == QWEN_VISION_TOKENS
    for key, value in vlm.model.vision_tower.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[key], value), key
    batch = ask(processor, [[random_image(0, size) for size in SIZES]])
    vision = model.model.get_vision_features(batch["pixel_values"], batch["image_grid_thw"])
    perceiver_ids, perceiver_mask = batch["perceiver_input_ids"], batch["perceiver_attention_mask"]
    with torch.no_grad():  # the perceiver's states over each image are the VLM's own LM states there
        states = model.model.perceiver(perceiver_ids, perceiver_mask, vision, batch["image_grid_thw"])
        hidden = vlm.model(
            input_ids=perceiver_ids,
            attention_mask=perceiver_mask,
            pixel_values=batch["pixel_values"],
            image_grid_thw=batch["image_grid_thw"],
        ).last_hidden_state
    span = torch.isin(perceiver_ids, torch.tensor(list(QWEN_VISION_IDS.values())))
    torch.testing.assert_close(states, hidden[span])


def test_the_dataset_and_data_check_see_each_images_own_span(qwen, tmp_path):
    _, processor = qwen["dpa"]
    data = write_llava_set(tmp_path, sizes=SIZES)
    source = DataSource(data["instruct"], data["images"])
    dataset = LlavaDataset([source], processor)
    # instruct.jsonl: coco (150x150: 9), text-only, coco + 00223 (9 + 8); each span is N + 2 long
    samples = [dataset[i] for i in range(len(dataset))]
    assert [s["image_tokens"] for s in samples] == [[9], [], [9, 8]]
    for sample in samples:
        image_id = QWEN_VISION_IDS["<|image_pad|>"]
        assert int((sample["input_ids"] == image_id).sum()) == sum(sample["image_tokens"])
    words = [sum(len(t["value"].split()) for t in r["conversations"]) for r in INSTRUCT]
    assert dataset.approximate_lengths() == [words[0] + 11, words[1], words[2] + 11 + 10]
    report = check_data([data["instruct"]], processor, image_root=data["images"], show=3, progress=False)
    assert report.files[str(data["instruct"])]["usable"] == 3
    assert "<image x9>" in report.shown[2] and "<image x8>" in report.shown[2]
    batch = PrealignCollator(processor)(samples)
    assert batch["image_grid_thw"].shape == (3, 3) and batch["perceiver_input_ids"].shape[0] == 3
