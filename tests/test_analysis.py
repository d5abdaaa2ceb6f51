"""Cost accounting: every parameter counted once, FLOPs measured per component and consistent."""

from __future__ import annotations

import pytest
import torch

from prealign.analysis import COMPONENTS, forward_flops, one_image_sample, parameter_counts
from prealign.cli import main
from prealign.tiny import tiny_model


@pytest.mark.parametrize("variant", ["baseline", "dpa"])
def test_parameter_counts_cover_the_model_once(variant):
    model, _ = tiny_model(variant)
    counts = parameter_counts(model)
    assert sum(counts.values()) == sum(p.numel() for p in model.parameters())
    assert ("perceiver" in counts and "aligner" in counts) == (variant == "dpa")
    assert list(counts) == [c for c in COMPONENTS if c in counts]  # forward order


def test_tied_embeddings_count_once():
    model, _ = tiny_model("baseline")
    model.lm_head.weight = model.model.language_model.get_input_embeddings().weight
    counts = parameter_counts(model)
    assert counts["lm_head"] == 0 and sum(counts.values()) == sum(p.numel() for p in model.parameters())


def test_flops_per_component_add_up_and_dpa_adds_cost_only_before_the_target():
    torch.manual_seed(0)
    (baseline, processor), (dpa, dpa_processor) = tiny_model("baseline"), tiny_model("dpa")
    flops = {
        "baseline": forward_flops(baseline, one_image_sample(processor)),
        "dpa": forward_flops(dpa, one_image_sample(dpa_processor)),
    }
    for measured in flops.values():
        parts = sum(v for k, v in measured.items() if k != "total")
        assert parts == measured["total"] and all(v > 0 for v in measured.values())
    # The same target LM reads the same number of positions in both: its cost is the same.
    for part in ("vision_tower", "language_model", "lm_head"):
        assert flops["dpa"][part] == flops["baseline"][part], part
    assert flops["dpa"]["total"] > flops["baseline"]["total"]


def test_flops_grow_with_the_batch_exactly():
    model, processor = tiny_model("dpa")
    one = one_image_sample(processor)
    two = {k: torch.cat([v, v]) for k, v in one.items()}
    single, double = forward_flops(model, one), forward_flops(model, two)
    assert all(double[k] == 2 * single[k] for k in single), (single, double)


@pytest.mark.e2e
def test_analyze_cost_command_prints_each_component(tmp_path, capsys):
    model, processor = tiny_model("dpa")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert main(["analyze", "cost", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("vision_tower", "perceiver", "aligner", "language_model", "total"))
