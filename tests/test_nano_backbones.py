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
from prealign.nano.backbones import PARTS, recheck_backbones


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
    command = [sys.executable, "-m", "prealign.cli", "nano", "backbones", str(tmp_path / "nb"), "--tiny"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    manifest = json.loads((tmp_path / "nb/manifest.json").read_text())
    assert set(manifest["parts"]) == set(PARTS)
    assert "nano backbones" in manifest["command"] and manifest["seed"] == 0
    assert 0 <= manifest["parts"]["vit"]["scores"]["top1"] <= 1
    assert "arithmetic" in manifest["parts"]["lm_target"]["scores"]
    for folder in PARTS:
        weights = load_file(tmp_path / "nb" / folder / "model.safetensors")
        assert {t.dtype for t in weights.values()} == {torch.bfloat16}  # what ships is what was scored
        assert not list((tmp_path / "nb" / folder).glob("checkpoint-*"))
    assert "total" in first.stdout
    # Scores recorded in the manifest are those of the saved weights.
    recheck_backbones(tmp_path / "nb", tolerance=0.0)
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and second.stdout.count("reused") == len(PARTS)


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


@pytest.fixture(scope="module")
def tiny_backbones(tmp_path_factory):
    from prealign.nano.backbones import TINY_BUDGET, build_backbones

    out = tmp_path_factory.mktemp("tiny_backbones")
    build_backbones(out, budget=TINY_BUDGET)
    return out


@pytest.mark.e2e
def test_nano_run_writes_data_and_rechecks_the_backbones(tiny_backbones, tmp_path, capsys):
    from prealign.nano.run import NanoRun, run_nano

    spec = NanoDataSpec(pretrain=6, instruct=6, corpus=10, benchmark=4, image_size=32)
    summary = run_nano(NanoRun(out=tmp_path / "run", backbones=tiny_backbones, data=spec))
    assert json.loads((tmp_path / "run/run.json").read_text()) == json.loads(json.dumps(summary))
    assert (tmp_path / "run/data/pretrain.json").is_file()
    assert set(summary["backbone_scores"]) == set(PARTS)
    assert "reused" not in capsys.readouterr().out
    run_nano(NanoRun(out=tmp_path / "run", backbones=tiny_backbones, data=spec))
    assert "data: reused" in capsys.readouterr().out


@pytest.mark.e2e
def test_nano_run_refuses_backbones_whose_scores_or_tokenizer_differ(tiny_backbones, tmp_path):
    import shutil

    from prealign.nano.run import NanoRun, run_nano

    spec = NanoDataSpec(pretrain=2, instruct=2, corpus=2, benchmark=2, image_size=32)
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_backbones, tampered)
    manifest = json.loads((tampered / "manifest.json").read_text())
    manifest["parts"]["vit"]["scores"]["top1"] += 0.5
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="vit top1"):
        run_nano(NanoRun(out=tmp_path / "a", backbones=tampered, data=spec))

    other_ids = tmp_path / "other_ids"
    shutil.copytree(tiny_backbones, other_ids)
    vocab_file = other_ids / "tokenizer/tokenizer.json"
    tokenizer = json.loads(vocab_file.read_text())
    vocab = tokenizer["model"]["vocab"]
    red, blue = vocab["red"], vocab["blue"]
    vocab["red"], vocab["blue"] = blue, red
    vocab_file.write_text(json.dumps(tokenizer))
    with pytest.raises(ValueError, match="tokenizer"):
        run_nano(NanoRun(out=tmp_path / "b", backbones=other_ids, data=spec))


@pytest.mark.e2e
def test_the_nano_configs_train_every_variant_from_the_nano_run_folder(tiny_backbones, tmp_path, monkeypatch):
    """configs/nano names runs/nano/...: the perceiver VLM, stage 1 of every variant, stage 2 of DPA."""
    from pathlib import Path

    from prealign import PrealignForConditionalGeneration
    from prealign.nano.run import NanoRun, run_nano
    from prealign.training import load_settings, train
    from prealign.variants import VARIANTS

    configs = Path(__file__).parents[1] / "configs" / "nano"
    monkeypatch.chdir(tmp_path)
    spec = NanoDataSpec(pretrain=8, instruct=8, corpus=4, benchmark=2, image_size=32)
    run_nano(NanoRun(out="runs/nano", backbones=tiny_backbones, data=spec))
    quick = ["max_steps=2", "global_batch_size=2", "per_device_batch_size=2", "save_steps=1000"]
    order = ["perceiver-vlm/stage1", "perceiver-vlm/stage2", *(f"{v}/stage1" for v in VARIANTS), "dpa/stage2"]
    for name in order:
        settings = load_settings(configs / f"{name}.yaml", quick)
        train(settings)
        assert (tmp_path / settings.output_dir / "model.safetensors").is_file(), name
    dpa = PrealignForConditionalGeneration.from_pretrained(tmp_path / "runs/nano/dpa/stage2")
    assert dpa.config.is_dpa and dpa.config.text_config.hidden_size == 64  # the tiny target backbone


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
    assert seen["row_length"] == used and seen["steps"] == 7000 and seen["lr"] == 2e-3
