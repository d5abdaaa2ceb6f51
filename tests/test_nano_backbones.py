"""Nano backbone pre-training really teaches something, checked at the smallest size."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, Qwen3ForCausalLM, SiglipModel

from prealign.nano import NanoDataSpec, build_nano_data
from prealign.nano import pretraining as nb
from prealign.nano.backbones import (
    BACKBONES,
    PRETRAINED_PARTS,
    TINY_BUDGET,
    BackboneBudget,
    recheck_backbones,
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    out = tmp_path_factory.mktemp("nano")
    paths = build_nano_data(out, NanoDataSpec(pretrain=20, instruct=20, corpus=2000, benchmark=10))
    return AutoTokenizer.from_pretrained(str(paths["tokenizer"]))


@pytest.mark.e2e
def test_lm_pretraining_beats_random_init(tokenizer, tmp_path):
    items = nb.lm_eval_items(n_per_kind=20)
    torch.manual_seed(0)
    untrained = Qwen3ForCausalLM(nb.lm_config(nb.LM_SIZES["tiny"], tokenizer))
    before = nb.answer_loss(untrained, tokenizer, items)
    model = nb.pretrain_lm(
        tokenizer, tmp_path / "lm", size="tiny", steps=150, batch=32, lr=2e-3, resume=False
    )
    after = nb.answer_loss(model, tokenizer, items)
    assert after < 0.5 * before, (before, after)
    assert (tmp_path / "lm/config.json").is_file() and (tmp_path / "lm/tokenizer.json").is_file()
    report = nb.evaluate_lm(model, tokenizer, items)
    assert set(report) >= {"arithmetic", "fact", "text_count", "text_spatial"}
    busy_counts = [qa for qa in items if qa.kind == "text_count" and qa.objects >= nb.BUSY_SCENE]
    assert report["text_count"]["busy"]["n"] == len(busy_counts) > 0
    assert "busy" not in report["arithmetic"]


@pytest.mark.e2e
def test_vit_pretraining_beats_random_init(tokenizer, tmp_path):
    pairs = nb.retrieval_pairs(tokenizer, n=64, image_size=36)
    torch.manual_seed(0)
    untrained = SiglipModel(nb.siglip_config(len(tokenizer), 36, hidden=64, layers=2))
    with torch.no_grad():
        untrained.logit_scale.fill_(2.302585)
        untrained.logit_bias.fill_(-10.0)
    before = nb.evaluate_retrieval(untrained, pairs)
    model = nb.pretrain_vit(
        tokenizer, tmp_path / "vit", steps=60, batch=32, image_size=36, hidden=64, layers=2, resume=False
    )
    after = nb.evaluate_retrieval(model, pairs)
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    assert (tmp_path / "vit/preprocessor_config.json").is_file()


@pytest.mark.e2e
def test_one_command_builds_every_backbone_with_a_manifest_and_reuses_them(tmp_path):
    # Two parts at a time, each in its own process, as the shipped ones were made.
    command = [
        sys.executable,
        "-m",
        "prealign.cli",
        "nano",
        "backbones",
        str(tmp_path / "nb"),
        "--tiny",
        "--jobs",
        "2",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    manifest = json.loads((tmp_path / "nb/manifest.json").read_text())
    assert set(manifest["parts"]) == set(BACKBONES)
    assert "nano backbones" in manifest["command"] and manifest["seed"] == 0
    assert 0 <= manifest["parts"]["vit"]["scores"]["top1"] <= 1
    assert "arithmetic" in manifest["parts"]["lm_target"]["scores"]
    for folder in BACKBONES:
        weights = load_file(tmp_path / "nb" / folder / "model.safetensors")
        assert {t.dtype for t in weights.values()} == {torch.bfloat16}  # what ships is what was scored
        assert not list((tmp_path / "nb" / folder).glob("checkpoint-*"))
    # The budget's measure is the command's own wall time, whatever the parts' overlap.
    assert "elapsed" in first.stdout and manifest["elapsed_s"] > 0
    threads = {manifest["parts"][name]["threads"] for name in PRETRAINED_PARTS}
    assert threads == {max(1, torch.get_num_threads() // 2)}  # the perceiver VLM, after them, takes all
    # Scores recorded in the manifest are those of the saved weights.
    recheck_backbones(tmp_path / "nb", tolerance=0.0)
    # The perceiver VLM: one candidate per training seed on the validation world, the rule's pick
    # shipped (in bf16, above) and scored as saved.
    vlm = manifest["parts"]["perceiver_vlm"]
    perception = {int(seed): c["perception"]["accuracy"] for seed, c in vlm["candidates"].items()}
    assert set(perception) == set(TINY_BUDGET.perceiver_vlm_seeds)
    assert vlm["chosen_seed"] == max(perception, key=lambda s: (perception[s], -s))
    assert {"stage1", "stage2"} <= set(vlm["training"]) and "perception" in vlm["scores"]
    assert not (tmp_path / "nb/perceiver_vlm.work").exists()
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and second.stdout.count("reused") == len(BACKBONES)


@pytest.mark.e2e
def test_pretrain_lm_command_trains_scores_and_saves_one_lm(tmp_path, capsys):
    from prealign.cli import main

    data = build_nano_data(tmp_path / "data", NanoDataSpec(pretrain=2, instruct=2, corpus=2, benchmark=2))
    command = [
        "nano",
        "pretrain-lm",
        str(tmp_path / "data"),
        "--size",
        "tiny",
        "--steps",
        "3",
        "--row-length",
        "128",
    ]
    assert main([*command, "--lr", "1e-3", "--out", str(tmp_path / "lm")]) == 0
    printed = capsys.readouterr().out
    assert "text_position_of" in printed and "trained in" in printed and "3+ objects" in printed
    model = Qwen3ForCausalLM.from_pretrained(str(tmp_path / "lm"))
    assert model.config.use_cache  # trained without one (packed rows), saved for generation with one
    assert model.config.vocab_size == len(AutoTokenizer.from_pretrained(str(data["tokenizer"])))
    state = json.loads(next((tmp_path / "lm").glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["max_steps"] == 3 and state["log_history"][0]["learning_rate"] <= 1e-3


@pytest.mark.parametrize(
    ("given", "used"), [([], 128), (["--row-length", "0"], None), (["--row-length", "96"], 96)]
)
def test_pretrain_lm_command_packs_rows_as_the_shipped_lms_unless_told(tmp_path, monkeypatch, given, used):
    from prealign.cli import main

    build_nano_data(tmp_path / "data", NanoDataSpec(pretrain=2, instruct=2, corpus=2, benchmark=2))
    seen = {}

    class Stop(Exception):
        pass

    def record(*args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(nb, "pretrain_lm", record)
    with pytest.raises(Stop):
        main(["nano", "pretrain-lm", str(tmp_path / "data"), "--out", str(tmp_path / "lm"), *given])
    budget = BackboneBudget()  # the shipped perceiver LM's
    assert seen["row_length"] == used and seen["steps"] == budget.perceiver_steps
    assert seen["lr"] == budget.perceiver_lr
