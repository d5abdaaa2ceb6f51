"""The nano report over several seeds: means, spreads and verdicts follow from per-seed results."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from prealign.nano.data import BENCHMARK_GROUPS
from prealign.nano.report import build_report, claim_verdict, render_markdown

SEEDS = (0, 1, 2)
# Per seed: (Multi-modal accuracy of every image group, Text accuracy, MIR).
MODELS = {
    "perceiver-vlm": ((0.40, 0.42, 0.41), (0.30, 0.31, 0.29), None),
    "baseline": ((0.60, 0.62, 0.61), (0.70, 0.71, 0.69), (1.0, 1.1, 0.9)),
    "dpa": ((0.70, 0.60, 0.65), (0.72, 0.70, 0.71), (0.8, 0.9, 0.85)),
}


def _scores(image: float, text: float) -> dict:
    scores = {g: {"accuracy": image, "kinds": {}} for g in BENCHMARK_GROUPS[:-1]}
    scores["perception"]["kinds"] = {"position": {"accuracy": image, "majority": 0.2}}
    scores["text"] = {"accuracy": text, "kinds": {}}
    return scores


def _results() -> dict:
    seeds = {}
    for i, seed in enumerate(SEEDS):
        models = {
            name: {"scores": _scores(image[i], text[i]), "training": {"stage1": {"final_loss": 1.0 + i}}}
            for name, (image, text, _) in MODELS.items()
        }
        seeds[seed] = {
            "models": models,
            "reference": {"text": {"accuracy": 0.8}},
            "data_summary": {"caption_unigram_loss": 3.0},
        }
    alignment = {
        seed: {
            name: {"mir": mir[i], "modality_gap_per_layer": [mir[i]] * 2}
            for name, (_, _, mir) in MODELS.items()
            if mir
        }
        for i, seed in enumerate(SEEDS)
    }
    return {"seeds": seeds, "alignment": alignment, "cost": None, "units": {}, "wall_s": 1.0}


@pytest.fixture
def report() -> dict:
    return build_report(SimpleNamespace(preset="full", variants=("baseline", "dpa")), _results())


def test_rows_are_means_and_sample_spreads_over_the_seeds(report):
    dpa = report["models"]["dpa"]
    assert dpa["mean"]["multi_avg"] == pytest.approx(0.65)
    assert dpa["std"]["multi_avg"] == pytest.approx(0.05)  # sample standard deviation of .70, .60, .65
    assert dpa["delta_vs_baseline"]["multi_avg"] == pytest.approx(0.04)
    assert dpa["forgetting"]["mean"] == pytest.approx(0.09)
    assert report["stage1_caption_loss"]["dpa"] == {"mean": 2.0, "std": 1.0}


def test_each_claim_is_decided_on_the_per_seed_differences_by_the_rule(report):
    claims = {c["claim"]: c for c in report["claims"]}
    multi = claims["DPA > baseline on Multi Avg"]  # d = +.10, -.02, +.04: mean .04, spread .06
    assert (multi["ours"], multi["spread"]) == (pytest.approx(0.04), pytest.approx(0.06))
    assert multi["verdict"] == "inconclusive"  # the right sign, but within the seeds' spread
    text = claims["DPA forgets less text (Text: DPA > baseline)"]  # d = +.02, -.01, +.02
    assert text["verdict"] == "inconclusive"
    mir = claims["DPA's MIR below the baseline's"]  # d = -.2, -.2, -.05: every seed's MIR, not the first's
    assert mir["ours"] == pytest.approx(-0.15)
    assert mir["seeds"] == 3
    assert mir["verdict"] == "agrees"
    assert not any("one seed" in c["verdict"] for c in claims.values())


def test_mir_is_reported_as_mean_and_spread_with_the_first_seeds_layers(report):
    baseline = report["alignment"]["baseline"]
    assert baseline["mir"] == {"mean": pytest.approx(1.0), "std": pytest.approx(0.1)}
    assert baseline["modality_gap_per_layer"] == [1.0, 1.0]
    markdown = render_markdown(report)
    assert "- dpa: MIR 0.850 ± 0.050" in markdown
    assert "Plots: seed 0." in markdown


@pytest.mark.parametrize(
    ("d", "s", "sign", "verdict"),
    [
        (0.05, 0.02, 1, "agrees"),
        (-0.05, 0.02, 1, "disagrees"),
        (0.05, 0.06, 1, "inconclusive"),  # the right sign, within the spread
        (-0.05, 0.02, -1, "agrees"),
        (0.01, 0.015, 0, "agrees"),  # equal within the tolerance, seeds that resolve it
        (0.01, 0.094, 0, "inconclusive"),  # a spread this wide cannot show equality
        (0.05, 0.01, 0, "disagrees"),
        (0.05, 0.08, 0, "inconclusive"),
        (0.015, 0.0, 0, "agrees"),  # one seed
    ],
)
def test_the_rule_decides_directional_and_equality_claims(d, s, sign, verdict):
    assert claim_verdict(d, s, sign) == verdict
