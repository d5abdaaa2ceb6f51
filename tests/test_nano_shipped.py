"""The nano backbones shipped in the package are what their manifest says: pre-trained, measured again."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
from safetensors import safe_open

from prealign.nano.backbones import PARTS, BackboneBudget, recheck_backbones, shipped_backbones

MAX_SHIPPED_BYTES = 30 * 2**20


@pytest.fixture(scope="module")
def checked():
    return recheck_backbones(shipped_backbones())  # fails if any score drifted from manifest.json


def _scene_kinds(scores: dict) -> dict[str, dict]:
    return {k: v for k, v in scores.items() if k.startswith("text_")}


def test_shipped_files_are_small_bf16_and_complete():
    folder = shipped_backbones()
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert total <= MAX_SHIPPED_BYTES, total
    for part in PARTS:
        with safe_open(folder / part / "model.safetensors", "pt") as f:
            assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"BF16"}  # noqa: SIM118
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["command"].startswith("prealign nano backbones") and "seed" in manifest
    assert manifest["total_wall_time_s"] < 3600  # the budget of a 2-core CPU


def test_the_default_budget_is_the_one_the_shipped_backbones_were_made_with():
    # `prealign nano backbones DIR` regenerates what ships, and `pretrain-lm` defaults to it.
    manifest = json.loads((shipped_backbones() / "manifest.json").read_text())
    assert manifest["budget"] == asdict(BackboneBudget())


# What the shipped LMs have learned, kind by kind (see the README's table): held-out accuracy at
# least MARGIN above always giving the majority answer.
MARGIN = 0.1
LEARNED_BY_BOTH = {
    "arithmetic",
    "fact",
    "text_colour_at",
    "text_shape_at",
    "text_position_of",
    "text_colour_choice",
    "text_exists",
    "text_count",
    "text_count_sum",
    "text_compare",
    "text_total_objects",
    "text_spatial",
}


# In scenes of 3-4 objects a lookup cannot pass as a lucky guess between one or two candidates.
# There both LMs still read every type but the option list, which the target reads only at the
# margin (README table).
READ_IN_BUSY_SCENES_BY_BOTH = LEARNED_BY_BOTH - {"arithmetic", "fact", "text_colour_choice"}
# The lookups by name that the larger target LM does clearly better in busy scenes (shipped:
# +0.19, +0.25): the capacity difference the DPA experiment is about.
TARGET_READS_BETTER = ("text_position_of", "text_spatial")


def test_the_vit_retrieves_captions_far_above_chance(checked):
    vit = checked["parts"]["vit"]["scores"]
    assert vit["top1"] >= 50 * vit["chance"], vit


@pytest.mark.parametrize("part", ["lm_perceiver", "lm_target"])
def test_each_lm_beats_the_majority_answer_on_what_it_learned(checked, part):
    scores = checked["parts"][part]["scores"]
    for kind in LEARNED_BY_BOTH:
        assert scores[kind]["accuracy"] >= scores[kind]["majority"] + MARGIN, (part, kind, scores[kind])


@pytest.mark.parametrize("part", ["lm_perceiver", "lm_target"])
def test_each_lm_reads_busy_scenes(checked, part):
    scores = checked["parts"][part]["scores"]
    for kind in READ_IN_BUSY_SCENES_BY_BOTH:
        busy = scores[kind]["busy"]
        assert busy["n"] >= 30 and busy["accuracy"] >= busy["majority"] + MARGIN, (part, kind, busy)


def test_the_target_lm_looks_up_objects_in_busy_scenes_better_than_the_perceiver_lm(checked):
    perceiver, target = (checked["parts"][p]["scores"] for p in ("lm_perceiver", "lm_target"))
    for kind in TARGET_READS_BETTER:
        assert target[kind]["busy"]["accuracy"] >= perceiver[kind]["busy"]["accuracy"] + MARGIN, kind


def test_the_target_lm_reads_scenes_and_adds_better_than_the_perceiver_lm(checked):
    def mean(part: str) -> float:
        scores = checked["parts"][part]["scores"]
        kinds = [*_scene_kinds(scores), "arithmetic"]
        return sum(scores[k]["accuracy"] for k in kinds) / len(kinds)

    perceiver, target = mean("lm_perceiver"), mean("lm_target")
    assert target >= perceiver + 0.02, (perceiver, target)  # shipped: 0.87 vs 0.84
    sizes = [checked["parts"][p]["scores"]["parameters"] for p in ("lm_perceiver", "lm_target")]
    assert 5 <= sizes[1] / sizes[0] <= 8  # the paper's 0.6B : 4B
