"""Modality gap / MIR and layer similarity: the maths against closed forms, the token selection
against what the model writes into its input, and the command end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch
from data_fixtures import write_llava_set

from prealign.analysis import (
    AlignmentReport,
    collect_layer_states,
    frechet_distance,
    linear_cka,
    modality_gap,
    replace_norm_outliers,
    sample_batches,
)
from prealign.cli import main
from prealign.data import DataSource
from prealign.tiny import tiny_model


def _cloud(n: int = 400, d: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=g, dtype=torch.float64)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mixing + 3.0


def test_frechet_distance_matches_its_closed_forms():
    a = _cloud()
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 0.0, 3.0], dtype=torch.float64)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift.square().sum()), rel=1e-9)
    # b = 2a: mean gap mu_a, covariance 4 S_a, (S_a 4 S_a)^(1/2) = 2 S_a, so the distance is
    # |mu_a|^2 + tr(S_a + 4 S_a - 4 S_a).
    expected = float(a.mean(0).square().sum() + torch.cov(a.T).trace())
    assert frechet_distance(a, 2 * a) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, 2 * a) == pytest.approx(frechet_distance(2 * a, a), rel=1e-9)


def test_norm_outliers_are_replaced_by_the_median_token_and_the_input_is_kept():
    x = _cloud(seed=1)
    x[7] *= 100
    original = x.clone()
    out = replace_norm_outliers(x)
    assert torch.equal(x, original)
    assert torch.equal(out[7], original.median(dim=0).values)
    assert torch.equal(torch.cat([out[:7], out[8:]]), torch.cat([original[:7], original[8:]]))


def test_the_gap_is_measured_in_units_of_the_text_tokens_norm():
    image, text = _cloud(seed=2), _cloud(seed=3) * 0.5
    gap = modality_gap(image, text)
    assert modality_gap(10 * image, 10 * text) == pytest.approx(gap, rel=1e-9)
    assert modality_gap(10 * image, text) > 10 * gap
    assert modality_gap(text.clone(), text) == pytest.approx(0.0, abs=1e-8)


def test_linear_cka_sees_geometry_not_rotation_or_scale():
    x = _cloud(n=2000, d=8, seed=4)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))
    assert linear_cka(x, 3 * x @ rotation + 1) == pytest.approx(1.0, rel=1e-9)
    assert linear_cka(x, _cloud(n=2000, d=8, seed=5)) < 0.1


@pytest.fixture(scope="module")
def llava_set(tmp_path_factory):
    return write_llava_set(tmp_path_factory.mktemp("llava"))


@pytest.mark.parametrize("variant", ["baseline", "dpa"])
def test_image_tokens_are_the_positions_the_model_writes_visual_features_into(llava_set, variant):
    torch.manual_seed(0)
    model, processor = tiny_model(variant)
    source = DataSource(llava_set["pretrain"], llava_set["images"])
    batches = sample_batches(processor, source, samples=4, batch_size=3)
    states = collect_layer_states(model, batches)
    assert len(states.image) == len(states.text) == model.config.text_config.num_hidden_layers + 1
    with torch.no_grad():
        features = torch.cat(
            [
                model.get_image_features(
                    b["pixel_values"], b.get("perceiver_input_ids"), b.get("perceiver_attention_mask")
                )
                for b in batches
            ]
        )
        embeddings = model.get_input_embeddings()
        config = model.config
        markers = [config.image_token_id, config.image_start_token_id, config.image_end_token_id]
        text_ids = torch.cat([b["input_ids"][b["attention_mask"].bool()] for b in batches])
        text_ids = text_ids[~torch.isin(text_ids, torch.tensor(markers))]
        expected_text = embeddings(text_ids)
    # Layer 0 is the LM's input: visual features at image positions, token embeddings elsewhere.
    assert torch.equal(states.image[0], features.float())
    assert torch.equal(states.text[0], expected_text.float())
    for image, text in zip(states.image, states.text, strict=True):
        assert image.shape[0] == features.shape[0] and text.shape[0] == text_ids.shape[0]


def test_a_report_has_a_gap_per_layer_and_similarity_matrices_with_a_unit_diagonal(llava_set):
    model, processor = tiny_model("dpa")
    batches = sample_batches(processor, DataSource(llava_set["pretrain"], llava_set["images"]), 4, 2)
    report = AlignmentReport.of(collect_layer_states(model, batches))
    layers = model.config.text_config.num_hidden_layers
    assert len(report.gaps) == layers and all(g > 0 for g in report.gaps)
    assert report.mir == pytest.approx(math.log10(sum(report.gaps)))
    for matrix in (report.image_similarity, report.text_similarity):
        assert matrix.shape == (layers + 1, layers + 1)
        assert torch.allclose(matrix.diagonal(), torch.ones(layers + 1, dtype=torch.float64))
        assert torch.equal(matrix, matrix.T) and bool(((matrix > 0) & (matrix <= 1 + 1e-9)).all())


@pytest.mark.e2e
def test_analyze_alignment_command_compares_models_and_writes_plots(llava_set, tmp_path, capsys):
    folders = []
    for variant in ("baseline", "dpa"):
        model, processor = tiny_model(variant)
        model.save_pretrained(tmp_path / variant)
        processor.save_pretrained(tmp_path / variant)
        folders.append(str(tmp_path / variant))
    out = tmp_path / "out"
    args = ["analyze", "alignment", *folders, "--data", str(llava_set["pretrain"])]
    assert main([*args, "--image-root", str(llava_set["images"]), "--samples", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "MIR" in printed and "baseline" in printed and "dpa" in printed
    numbers = json.loads((out / "alignment.json").read_text())
    assert set(numbers) == {"baseline", "dpa"}
    for report in numbers.values():
        assert len(report["modality_gap_per_layer"]) == 3 and math.isfinite(report["mir"])
    for png in ("modality_gap.png", "layer_similarity.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
