"""Latent mistakes a structural review found (issue 44), each pinned by a test that failed before."""

from __future__ import annotations

import json

import pytest
from data_fixtures import INSTRUCT, write_llava_set
from test_training import save_tiny, settings_for

from prealign.cli import build_parser
from prealign.data import DataError, LlavaDataset
from prealign.tiny import tiny_causal_lm, tiny_model
from prealign.training.initialization import dpa_from_perceiver_vlm
from prealign.training.recipes import RECIPES
from prealign.training.run import training_arguments
from prealign.training.settings import TrainSettings, from_dict


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
        training_arguments(settings, RECIPES["finetune"])


def test_a_warmup_ratio_of_one_or_more_is_refused_not_read_as_steps(tmp_path):
    data = write_llava_set(tmp_path / "data")
    settings = settings_for(tmp_path, data, save_tiny(tmp_path / "ckpt"), warmup_ratio=3)
    with pytest.raises(ValueError, match=r"warmup_ratio must be in \[0, 1\), got 3"):
        training_arguments(settings, RECIPES["finetune"])


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
