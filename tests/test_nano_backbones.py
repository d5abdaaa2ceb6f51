"""Nano backbone pre-training really teaches something, checked at the smallest size."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, Qwen3ForCausalLM, SiglipModel

from prealign.data.nano import NanoDataSpec, build_nano_data
from prealign.training import nano_backbones as nb


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    out = tmp_path_factory.mktemp("nano")
    paths = build_nano_data(out, NanoDataSpec(pretrain=20, instruct=20, corpus=2000, benchmark=10))
    return AutoTokenizer.from_pretrained(str(paths["tokenizer"]))


@pytest.mark.e2e
def test_lm_pretraining_beats_random_init(tokenizer, tmp_path):
    items = nb.lm_eval_items(n_per_kind=20)
    torch.manual_seed(0)
    untrained = Qwen3ForCausalLM(nb.lm_config(nb.LM_SIZES["tiny"], len(tokenizer)))
    before = nb.answer_loss(untrained, tokenizer, items)
    model = nb.pretrain_lm(tokenizer, tmp_path / "lm", size="tiny", steps=150, batch=32, resume=False)
    after = nb.answer_loss(model, tokenizer, items)
    assert after < 0.5 * before, (before, after)
    assert (tmp_path / "lm/config.json").is_file() and (tmp_path / "lm/tokenizer.json").is_file()
    report = nb.evaluate_lm(model, tokenizer, items)
    assert set(report) >= {"arithmetic", "fact", "text_count", "text_spatial"}


@pytest.mark.e2e
def test_vit_pretraining_beats_random_init(tokenizer, tmp_path):
    pairs = nb.retrieval_pairs(tokenizer, n=64, image_size=32)
    torch.manual_seed(0)
    untrained = SiglipModel(nb.siglip_config(len(tokenizer), 32, hidden=64, layers=2))
    with torch.no_grad():
        untrained.logit_scale.fill_(2.302585)
        untrained.logit_bias.fill_(-10.0)
    before = nb.evaluate_retrieval(untrained, pairs)
    model = nb.pretrain_vit(
        tokenizer, tmp_path / "vit", steps=60, batch=32, image_size=32, hidden=64, layers=2, resume=False
    )
    after = nb.evaluate_retrieval(model, pairs)
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    assert (tmp_path / "vit/preprocessor_config.json").is_file()


@pytest.mark.e2e
def test_one_command_builds_every_backbone_with_a_manifest_and_reuses_them(tmp_path):
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", "prealign.cli", "nano", "backbones", str(tmp_path / "nb"), "--tiny"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    manifest = json.loads((tmp_path / "nb/manifest.json").read_text())
    assert set(manifest["parts"]) == {"data", "vit", "lm_perceiver", "lm_target"}
    assert "nano backbones" in manifest["command"] and manifest["seed"] == 0
    assert 0 <= manifest["parts"]["vit"]["scores"]["top1"] <= 1
    assert "arithmetic" in manifest["parts"]["lm_target"]["scores"]
    for folder in ("vit", "lm_perceiver", "lm_target"):
        assert (tmp_path / "nb" / folder / "model.safetensors").is_file()
    assert "total wall time" in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and second.stdout.count("reused") == 4
