"""Every shipped config loads, names a real variant and a complete model source; `prealign train` runs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from data_fixtures import write_llava_set
from test_training import save_tiny, stage_config

from prealign import PrealignForConditionalGeneration
from prealign.training.run import _check_parts
from prealign.training.settings import SHIPPED_CONFIGS, load_settings
from prealign.variants import VARIANTS

ROOT = Path(__file__).parents[1]
CONFIGS = SHIPPED_CONFIGS
RUNNABLE = sorted(p for p in CONFIGS.rglob("stage*.yaml") if p.parent.name in {*VARIANTS, "perceiver-vlm"})


@pytest.mark.parametrize("scale", ["paper-4b", "nano"])
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
        _check_parts(settings.model, VARIANTS[settings.model.variant])
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
