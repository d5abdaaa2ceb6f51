"""Latent mistakes a structural review found (issue 44), each pinned by a test that failed before."""

from __future__ import annotations

import json

import pytest
from data_fixtures import INSTRUCT, write_llava_set
from test_training import save_tiny, settings_for

from prealign.assembly import ModelSettings, check_parts, dpa_from_perceiver_vlm
from prealign.cli import build_parser
from prealign.data import DataError, LlavaDataset
from prealign.tiny import tiny_causal_lm, tiny_model
from prealign.training import build_trainer
from prealign.training.recipes import RECIPES
from prealign.training.run import training_arguments
from prealign.training.settings import TrainSettings, from_dict, with_stage_defaults
from prealign.variants import VARIANTS


def test_a_dpa_made_from_a_perceiver_vlm_reads_its_tower_as_the_vlm_did():
    vlm, processor = tiny_model(
        "baseline", vision="clip", vision_feature_layer=-2, vision_feature_select_strategy="drop_cls"
    )
    text = tiny_causal_lm(vocab_size=len(processor.tokenizer), hidden_size=48)
    dpa = dpa_from_perceiver_vlm(vlm, text, processor)
    assert dpa.config.vision_feature_layer == -2
    assert dpa.config.vision_feature_select_strategy == "drop_cls"
    assert dpa.config.image_seq_length == vlm.config.image_seq_length


def test_a_global_batch_that_does_not_divide_is_refused(tmp_path):
    data = write_llava_set(tmp_path / "data")
    settings = settings_for(
        tmp_path, data, save_tiny(tmp_path / "ckpt"), global_batch_size=5, per_device_batch_size=2
    )
    with pytest.raises(ValueError, match=r"global_batch_size 5 is not a multiple of .* \(2 x 1 = 2\)"):
        training_arguments(with_stage_defaults(settings))


def test_a_warmup_ratio_of_one_or_more_is_refused_not_read_as_steps(tmp_path):
    data = write_llava_set(tmp_path / "data")
    settings = settings_for(tmp_path, data, save_tiny(tmp_path / "ckpt"), warmup_ratio=3)
    with pytest.raises(ValueError, match=r"warmup_ratio must be in \[0, 1\), got 3"):
        training_arguments(with_stage_defaults(settings))


def test_a_value_given_is_used_even_when_it_is_zero(tmp_path):
    """Unset values take the stage's defaults once; a 0 given (here: a vision tower that must not
    move) is not replaced by the recipe's default, as `x or recipe.x` did."""
    data = write_llava_set(tmp_path / "data")
    settings = settings_for(tmp_path, data, save_tiny(tmp_path / "ckpt"), vision_learning_rate=0.0)
    trainer = build_trainer(settings)
    vision = {id(p) for p in trainer.model.model.vision_tower.parameters()}
    groups = trainer.create_optimizer().param_groups
    rates = {group["lr"] for group in groups if id(group["params"][0]) in vision}
    assert rates == {0.0}
    unset = with_stage_defaults(TrainSettings(stage="finetune", output_dir="out"))
    recipe = RECIPES["finetune"]
    assert (unset.vision_learning_rate, unset.learning_rate, unset.epochs) == (
        recipe.vision_learning_rate,
        recipe.learning_rate,
        recipe.epochs,
    )
    assert (unset.data.max_length, unset.global_batch_size) == (recipe.max_length, recipe.global_batch_size)
    explicit = dict(epochs=0, warmup_ratio=0.0, global_batch_size=4)
    filled = with_stage_defaults(TrainSettings(stage="finetune", output_dir="out", **explicit))
    assert (filled.epochs, filled.warmup_ratio, filled.global_batch_size) == (0, 0.0, 4)
    assert with_stage_defaults(filled) == filled


@pytest.mark.parametrize(
    "ignored,value",
    [
        ("vision", "other"),
        ("perceiver", "other"),
        ("perceiver_tokenizer", "other"),
        ("image_processor", {"size": 1}),
    ],
)
def test_parts_a_perceiver_vlm_brings_are_refused_beside_it(ignored, value):
    """A perceiver VLM brings its tower, image processor, perceiver LM and tokenizer: one given as
    well would be ignored (the first three silently, before), and another model trained than the
    settings name."""
    settings = ModelSettings("dpa", text="target", perceiver_vlm="vlm", **{ignored: value})
    with pytest.raises(ValueError, match=rf"`{ignored}` cannot apply with `perceiver_vlm` \(vlm\)"):
        check_parts(settings, VARIANTS["dpa"])
    check_parts(ModelSettings("dpa", text="target", perceiver_vlm="vlm"), VARIANTS["dpa"])


def test_a_misspelt_dtype_is_a_settings_error():
    raw = {"stage": "align", "output_dir": "out", "model": {"checkpoint": "x", "dtype": "bfloat61"}}
    with pytest.raises(ValueError, match=r"model\.dtype.*bfloat16"):
        from_dict(TrainSettings, raw, "test.yaml")


@pytest.mark.parametrize("typed", ["<image_start>", "<image_end>"])
def test_image_markers_typed_in_a_record_are_a_data_error_naming_it(tmp_path, typed):
    record = {
        **INSTRUCT[0],
        "id": "typed",
        "conversations": [
            {"from": "human", "value": f"<image>\nwhat is {typed} here?"},
            {"from": "gpt", "value": "x"},
        ],
    }
    (tmp_path / "typed.json").write_text(json.dumps([record]))
    _, processor = tiny_model("dpa")
    dataset = LlavaDataset([tmp_path / "typed.json"], processor)
    with pytest.raises(DataError, match=rf"record typed.*2 {typed} markers for 1 images"):
        dataset.encode(0, 0, load_images=False)


def test_bench_offers_every_attention_the_model_supports():
    bench = build_parser()._subparsers._group_actions[0].choices["bench"]
    (attention,) = [a for a in bench._actions if a.dest == "attn_implementation"]
    assert "flex_attention" in attention.choices


def _beam_cases(tmp_path):
    from qwen_fixtures import qwen_dpa

    return {"siglip": tiny_model("dpa"), "native_resolution": qwen_dpa(tmp_path / "qwen", "dpa")}


@pytest.mark.parametrize("layout", ["siglip", "native_resolution"])
@pytest.mark.parametrize("how", [{"num_beams": 2}, {"num_beams": 3, "num_return_sequences": 2}])
def test_beam_search_and_several_sequences_keep_each_samples_images(tmp_path, layout, how):
    """A batch of a two-image sample and a one-image sample, generated with beams / several
    sequences per prompt: every copy of a sample reads that sample's images - its logits at every
    step equal those of the sample generated alone (transformers' row-by-row repeat would give the
    first copy of sample 0 its first image twice, and a native-resolution tower's patch rows each
    twice)."""
    import torch
    from conftest import random_image

    torch.manual_seed(0)
    model, processor = _beam_cases(tmp_path)[layout]
    images = [random_image(1, (56, 40)), random_image(2, (32, 48)), random_image(3, (40, 40))]
    questions = [(images[:2], "compare them"), (images[2:], "what is it?")]

    def inputs(samples):
        return processor(
            text=[processor.apply_chat_template([processor.user_turn(q, p)]) for p, q in samples],
            images=[p for p, _ in samples],
            instructions=[q for _, q in samples],
        )

    def first_logits(samples, **options):
        options.update(max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True)
        return model.generate(**inputs(samples), **options).logits[0]

    together = first_logits(questions, **how)
    beams = how["num_beams"]
    for sample in range(len(questions)):
        # Every beam's first step reads the prompt alone: greedy's first logits, with no copies.
        alone = first_logits(questions[sample : sample + 1])
        got = together[sample * beams : (sample + 1) * beams]
        assert torch.allclose(got, alone.expand_as(got), atol=1e-4), (sample, (got - alone).abs().max())
    # The images matter: sample 0 with its images in the other order reads otherwise.
    swapped = first_logits([(images[1::-1], "compare them")])
    assert not torch.allclose(swapped, first_logits(questions[:1]), atol=1e-3)
