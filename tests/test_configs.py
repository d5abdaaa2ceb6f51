"""Every shipped config loads, names a real variant and a complete model source; `prealign train` runs."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from data_fixtures import write_llava_set
from qwen_fixtures import save_qwen_parts
from test_training import save_tiny, stage_config
from transformers import AutoModel, AutoModelForCausalLM

from prealign import PrealignForConditionalGeneration
from prealign.assembly import check_parts
from prealign.training import train
from prealign.training.settings import SHIPPED_CONFIGS, load_settings
from prealign.variants import VARIANTS

ROOT = Path(__file__).parents[1]
CONFIGS = SHIPPED_CONFIGS
RUNNABLE = sorted(p for p in CONFIGS.rglob("stage*.yaml") if p.parent.name in {*VARIANTS, "perceiver-vlm"})


@pytest.mark.parametrize("scale", ["paper-4b", "paper-4b-official", "nano"])
def test_a_scale_holds_the_whole_ablation_table(scale):
    for stage in ("stage1", "stage2"):
        assert {p.parent.name for p in (CONFIGS / scale).glob(f"*/{stage}.yaml")} == {
            *VARIANTS,
            "perceiver-vlm",
        }


@pytest.mark.parametrize("path", RUNNABLE, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_config_loads_with_a_complete_model_source(path):
    settings = load_settings(path)
    assert settings.model.variant in VARIANTS
    assert settings.output_dir.startswith(
        "runs/nano/" if path.is_relative_to(CONFIGS / "nano") else "outputs/"
    )
    if settings.model.checkpoint is None:
        check_parts(settings.model, VARIANTS[settings.model.variant])
    assert settings.stage == ("align" if path.name == "stage1.yaml" else "finetune")
    assert settings.data.files


def test_overrides_and_unknown_keys(tmp_path):
    path = CONFIGS / "paper-4b/dpa/stage2.yaml"
    settings = load_settings(path, ["max_steps=10", "data.max_length=2048", "lora.enabled=true"])
    assert settings.max_steps == 10 and settings.data.max_length == 2048 and settings.lora.enabled
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['learning_rat'\]"):
        load_settings(path, ["learning_rat=1e-3"])
    with pytest.raises(ValueError, match=r"key\.sub=value"):
        load_settings(path, ["max_steps"])


def test_a_checkouts_configs_folder_is_the_shipped_one():
    assert (ROOT / "configs").resolve() == SHIPPED_CONFIGS.resolve()


def test_a_shipped_recipe_loads_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("paper-4b/dpa/stage1.yaml", "configs/paper-4b/dpa/stage1.yaml"):
        assert load_settings(name) == load_settings(SHIPPED_CONFIGS / "paper-4b/dpa/stage1.yaml")
    (tmp_path / "configs/paper-4b/dpa").mkdir(parents=True)
    (tmp_path / "configs/paper-4b/dpa/stage1.yaml").write_text(
        f"base: {SHIPPED_CONFIGS / 'paper-4b/dpa/stage1.yaml'}\nlearning_rate: 0.5\n"
    )
    assert load_settings("configs/paper-4b/dpa/stage1.yaml").learning_rate == 0.5  # a local file wins
    with pytest.raises(FileNotFoundError, match=r"paper-4b/dpa/stage3\.yaml: no such settings file"):
        load_settings("paper-4b/dpa/stage3.yaml")


@pytest.mark.e2e
def test_the_wheel_ships_the_recipes_and_the_nano_backbones(tmp_path):
    """`pip install prealign` must be able to run `prealign nano run` and `prealign train paper-4b/...`."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-qw", tmp_path, ROOT],
        check=True,
    )
    (wheel,) = tmp_path.glob("prealign-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        "prealign/" + str(p.relative_to(SHIPPED_CONFIGS.parent))
        for p in SHIPPED_CONFIGS.rglob("*")
        if p.is_file()
    }
    assert shipped and shipped <= names, sorted(shipped - names)
    assert "prealign/assets/nano/manifest.json" in names
    assert any(n.startswith("prealign/assets/nano/lm_target/") and n.endswith(".safetensors") for n in names)


@pytest.mark.e2e
def test_prealign_train_command_runs_a_stage(tmp_path):
    data = write_llava_set(tmp_path / "data")
    checkpoint = save_tiny(tmp_path / "ckpt")
    config = stage_config(tmp_path, data, checkpoint, "align", output_dir=str(tmp_path / "out"))
    del config["max_steps"], config["logging_steps"]  # given on the command line below
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "prealign.cli",
            "train",
            str(tmp_path / "c.yaml"),
            "max_steps=3",
            "logging_steps=1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "'loss'" in result.stdout and "tokens_per_second" in result.stdout
    trained = PrealignForConditionalGeneration.from_pretrained(tmp_path / "out")
    before = PrealignForConditionalGeneration.from_pretrained(checkpoint)
    assert not (trained.model.aligner[0].weight == before.model.aligner[0].weight).all()
    assert (tmp_path / "out/processor_config.json").is_file()


OFFICIAL = CONFIGS / "paper-4b-official"
OFFICIAL_OUT = Path("outputs/paper-4b-official")
# The official recipe's rows in an order that trains each one's starting point first.
OFFICIAL_ROWS = ["perceiver-vlm", *sorted(set(VARIANTS))]


@pytest.mark.e2e
def test_the_official_recipe_runs_every_row_on_tiny_stand_ins(tmp_path, monkeypatch):
    """Both stages of every row of configs/paper-4b-official, a step each, as written - only the hub
    ids point to tiny stand-ins (Qwen's tokenizer, Qwen3's head size 128, so the recipe's M-RoPE
    sections apply unchanged) and the data to the fixture set; the rows chain through their own
    outputs/ paths (perceiver VLM -> DPA rows, stage 1 -> stage 2)."""
    parts = tmp_path / "hub"
    save_qwen_parts(parts, head_dim=128)
    data = write_llava_set(tmp_path / "data", sizes=[(40, 48), (100, 60), (150, 150)])
    hub = {
        "Qwen/Qwen2.5-VL-3B-Instruct": parts / "qwen2_5_vl",
        "Qwen/Qwen3-4B": parts / "qwen3_4b",
        "Qwen/Qwen3-0.6B": parts / "qwen3_0_6b",
    }
    files = [{"path": str(data["instruct"]), "image_root": str(data["images"])}]
    monkeypatch.chdir(tmp_path)  # the recipes' outputs/paper-4b-official/... land here
    for row in OFFICIAL_ROWS:
        for stage in ("stage1", "stage2"):
            path = OFFICIAL / row / f"stage{stage[-1]}.yaml"
            written = load_settings(path).model
            local = [f"model.{key}={hub[value]}" for key in ("vision", "text", "perceiver")
                     if (value := getattr(written, key)) in hub]  # fmt: skip
            settings = load_settings(
                path,
                [*local, f"data.files={json.dumps(files)}", "max_steps=1", "global_batch_size=2",
                 "per_device_batch_size=2", "bf16=false", "save_steps=1000", "dataloader_num_workers=0"],
            )  # fmt: skip
            trainer = train(settings)
            assert trainer.state.global_step == 1, (row, stage)
    final = PrealignForConditionalGeneration.from_pretrained(OFFICIAL_OUT / "dpa/stage2")
    assert final.config.projector_type == "merger" and final.config.perceiver_mrope_section == [16, 24, 24]
    baseline = PrealignForConditionalGeneration.from_pretrained(OFFICIAL_OUT / "baseline/stage2")
    assert baseline.config.text_mrope_section == [16, 24, 24]


def test_every_official_row_builds_at_full_size_on_the_meta_device(tmp_path):
    """Each row's stage-1 model at its real size, from the published configs of the parts it names
    (no download): the merger re-made at the first LM's width, M-RoPE sections fitting Qwen3's
    heads. DPA rows take the perceiver VLM's (perceiver-vlm row) projector and positions."""
    from qwen_fixtures import qwen_tokenizer

    from prealign import PrealignProcessor
    from prealign.analysis.paper_scale import LANGUAGE_MODELS, VISION_TOWERS
    from prealign.assembly import dpa_from_perceiver_vlm
    from prealign.tiny import tiny_image_processor

    published = {"Qwen/Qwen3-4B": "Qwen3-4B", "Qwen/Qwen3-0.6B": "Qwen3-0.6B"}
    tokenizer = qwen_tokenizer(tmp_path / "tokenizer")

    def lm(hub_id):
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(LANGUAGE_MODELS[published[hub_id]])

    def tower():
        with torch.device("meta"):
            return AutoModel.from_config(VISION_TOWERS["Qwen2.5-VL-3B ViT"])

    def processor(settings):
        return PrealignProcessor(
            tiny_image_processor("qwen2_5_vl"), tokenizer, **settings.image_tokens, **settings.prompt
        )

    built = {}
    for row in OFFICIAL_ROWS:
        settings = load_settings(OFFICIAL / row / "stage1.yaml").model
        config = {**VARIANTS[settings.variant].config, **settings.config}
        if settings.perceiver_vlm:
            model = dpa_from_perceiver_vlm(
                built["perceiver-vlm"], lm(settings.text), processor(settings), **config
            )
        else:
            perceiver = lm(settings.perceiver) if settings.perceiver else None
            model = PrealignForConditionalGeneration.from_parts(
                tower(), lm(settings.text), perceiver, processor=processor(settings), **config
            )
        built[row] = model
        assert model.config.projector_type == "merger" and model.device.type == "meta", row
        assert (
            model.model.vision_tower.merger.mlp[-1].out_features == model.config.first_lm_config.hidden_size
        )
        if model.config.uses_perceiver and model.config.perceiver_blocks == "lm":
            assert model.config.perceiver_mrope_section == [16, 24, 24], row
    billions = {row: sum(p.numel() for p in m.parameters()) / 1e9 for row, m in built.items()}
    assert 4.6 < billions["baseline"] < 4.8 and 5.2 < billions["dpa"] < 5.5  # ViT 0.67B, Qwen3 4.0B/0.6B
