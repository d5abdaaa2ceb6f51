"""The two-stage recipe on the transformers Trainer: what trains, that it learns, LoRA, lr groups."""

from __future__ import annotations

import json

import pytest
import torch
from data_fixtures import INSTRUCT, write_llava_set
from peft import PeftModel
from transformers import TrainerCallback

from prealign import PrealignForConditionalGeneration, PrealignProcessor
from prealign.data import DataSource, LlavaDataset, PrealignCollator
from prealign.tiny import tiny_model
from prealign.training import build_trainer, train, trainable_parts
from prealign.training.recipes import part_of
from prealign.training.run import training_arguments
from prealign.training.settings import DataFile, TrainSettings, from_dict, with_stage_defaults


def save_tiny(folder, variant="dpa", **config):
    model, processor = tiny_model(variant, **config)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture
def workspace(tmp_path):
    data = write_llava_set(tmp_path / "data")
    return tmp_path, data


def stage_config(tmp_path, data, checkpoint, stage="finetune", **overrides) -> dict:
    """A small, fast stage over the fixture data, as the YAML a user would write."""
    files = [
        {"path": str(data["instruct"]), "image_root": str(data["images"])},
        {"path": str(data["pretrain"]), "image_root": str(data["images"])},
    ]
    base = {
        "stage": stage,
        "output_dir": str(tmp_path / f"run_{stage}"),
        "model": {"checkpoint": str(checkpoint)},
        "data": {"files": files, "prompt_format": "chat"},
        "max_steps": 3,
        "per_device_batch_size": 2,
        "global_batch_size": 2,
        "learning_rate": 1e-2,
        "vision_learning_rate": 1e-3,
        "logging_steps": 1,
        "save_steps": 1000,
        "group_by_length": False,
        "warmup_ratio": 0.0,
    }
    return {**base, **overrides}


def settings_for(tmp_path, data, checkpoint, stage="finetune", **overrides) -> TrainSettings:
    return from_dict(TrainSettings, stage_config(tmp_path, data, checkpoint, stage, **overrides), "test")


def changed_parts(before: dict, model) -> set[str]:
    after = model.state_dict()
    return {part_of(name) for name, value in before.items() if not torch.equal(value, after[name])}


@pytest.mark.parametrize(
    "variant,stage,freeze,expected",
    [
        ("dpa", "align", False, {"aligner"}),
        ("baseline", "align", False, {"projector"}),
        (
            "dpa",
            "finetune",
            False,
            {"vision_tower", "projector", "perceiver", "aligner", "language_model", "lm_head"},
        ),
        ("dpa", "finetune", True, {"aligner", "language_model", "lm_head"}),
        ("baseline", "finetune", False, {"vision_tower", "projector", "language_model", "lm_head"}),
    ],
)
def test_each_stage_changes_exactly_its_parameters(workspace, variant, stage, freeze, expected):
    tmp_path, data = workspace
    checkpoint = save_tiny(tmp_path / "ckpt", variant)
    trainer = build_trainer(settings_for(tmp_path, data, checkpoint, stage, freeze_perceiver=freeze))
    assert set(trainable_parts(trainer.model, stage, freeze)) == expected
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    assert changed_parts(before, trainer.model) == expected


def test_vision_tower_gets_its_own_learning_rate(workspace):
    tmp_path, data = workspace
    trainer = build_trainer(settings_for(tmp_path, data, save_tiny(tmp_path / "ckpt")))
    optimizer = trainer.create_optimizer()
    vision = {id(p) for p in trainer.model.model.vision_tower.parameters()}
    for group in optimizer.param_groups:
        in_vision = {id(p) in vision for p in group["params"]}
        assert len(in_vision) == 1  # a group is all vision or none
        assert group["lr"] == (1e-3 if in_vision.pop() else 1e-2)


@pytest.mark.parametrize("variant,connector", [("baseline", "projector"), ("dpa", "aligner")])
def test_the_connector_gets_its_own_learning_rate(workspace, variant, connector):
    tmp_path, data = workspace
    settings = settings_for(
        tmp_path, data, save_tiny(tmp_path / "ckpt", variant), connector_learning_rate=5e-3
    )
    trainer = build_trainer(settings)
    rates = {1e-3: set(), 5e-3: set(), 1e-2: set()}
    for group in trainer.create_optimizer().param_groups:
        rates[group["lr"]] |= {id(p) for p in group["params"]}
    parts = {name: getattr(trainer.model.model, name) for name in ("vision_tower", connector)}
    assert rates[5e-3] == {id(p) for p in parts[connector].parameters()}
    assert rates[1e-3] == {id(p) for p in parts["vision_tower"].parameters()}
    assert rates[1e-2] and not rates[1e-2] & (rates[5e-3] | rates[1e-3])  # the LMs (and DPA's phi_p)


def test_fsdp_settings_reach_the_trainer_as_upstream_names_them(workspace):
    tmp_path, data = workspace
    settings = settings_for(
        tmp_path, data, save_tiny(tmp_path / "ckpt"), fsdp=True, gradient_checkpointing=True
    )
    settings.fsdp_config = {"cpu_offload": True}
    args = training_arguments(with_stage_defaults(settings), ["Qwen3DecoderLayer"])
    assert args.fsdp and args.fsdp_config["transformer_layer_cls_to_wrap"] == ["Qwen3DecoderLayer"]
    assert args.fsdp_config["cpu_offload"] is True
    # FSDP's own activation checkpointing; the Trainer's would all-gather every block twice
    assert args.fsdp_config["activation_checkpointing"] is True and not args.activation_checkpointing


def test_loss_falls_when_overfitting_a_handful_of_samples(workspace, capsys):
    tmp_path, data = workspace
    settings = settings_for(
        tmp_path,
        data,
        save_tiny(tmp_path / "ckpt"),
        max_steps=40,
        learning_rate=3e-3,
        vision_learning_rate=3e-4,
        per_device_batch_size=5,
        global_batch_size=5,
    )
    trainer = build_trainer(settings)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[-1] < 0.3 * losses[0], losses
    printed = capsys.readouterr().out
    assert "'tokens_per_second'" in printed and "'samples_per_second'" in printed


def test_lora_adapters_round_trip_and_merge_with_the_aligner(workspace):
    tmp_path, data = workspace
    checkpoint = save_tiny(tmp_path / "ckpt")
    lora = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}
    trainer = build_trainer(settings_for(tmp_path, data, checkpoint, lora=lora))
    peft_model = trainer.model
    lora_names = [n for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n]
    assert any("model.language_model." in n for n in lora_names)
    assert any("perceiver.language_model." in n for n in lora_names)
    assert not any("vision_tower" in n for n in lora_names)
    trainer.train()
    peft_model.save_pretrained(tmp_path / "adapter")

    processor = PrealignProcessor.from_pretrained(checkpoint)
    dataset = LlavaDataset([DataSource(data["instruct"], data["images"])], processor)
    batch = PrealignCollator(processor)([dataset[i] for i in range(3)])
    peft_model.eval()
    base = PrealignForConditionalGeneration.from_pretrained(checkpoint)
    with torch.no_grad():
        trained = peft_model(**batch).logits
        reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
        assert torch.equal(reloaded(**batch).logits, trained)
        merged = reloaded.merge_and_unload()
        assert isinstance(merged, PrealignForConditionalGeneration)
        torch.testing.assert_close(merged(**batch).logits, trained, rtol=1e-4, atol=1e-4)
    fresh = PrealignForConditionalGeneration.from_pretrained(checkpoint)
    assert not torch.equal(merged.model.aligner[0].weight, fresh.model.aligner[0].weight)  # trained, and kept


class StopAt(TrainerCallback):
    """Simulates a killed run: stops right after the checkpoint at `step` is written."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_interrupted_run_resumes_to_the_same_weights(workspace):
    tmp_path, data = workspace
    checkpoint = save_tiny(tmp_path / "ckpt")
    common = dict(
        max_steps=6,
        save_steps=2,
        save_total_limit=None,
        group_by_length=True,
        warmup_ratio=0.3,
        learning_rate=3e-3,
        vision_learning_rate=3e-4,
    )

    straight = settings_for(tmp_path, data, checkpoint, output_dir=str(tmp_path / "straight"), **common)
    reference = train(straight).model.state_dict()

    resumed = settings_for(tmp_path, data, checkpoint, output_dir=str(tmp_path / "resumed"), **common)
    first = build_trainer(resumed)
    first.add_callback(StopAt(4))
    first.train()
    assert first.state.global_step == 4 and (tmp_path / "resumed/checkpoint-4").is_dir()
    second = train(resumed)  # finds checkpoint-4 in output_dir and continues
    assert second.state.global_step == 6
    final = second.model.state_dict()
    assert all(torch.equal(final[k], reference[k]) for k in reference)
    saved = PrealignForConditionalGeneration.from_pretrained(tmp_path / "resumed")
    assert all(torch.equal(v, reference[k]) for k, v in saved.state_dict().items())


@pytest.mark.e2e
def test_a_killed_run_resumes_to_the_same_weights(workspace):
    """SIGKILL a real `prealign train` mid-run, leave a half-written checkpoint, resume, compare."""
    import signal
    import subprocess
    import sys
    import time

    import yaml

    tmp_path, data = workspace
    checkpoint = save_tiny(tmp_path / "ckpt")
    config = stage_config(
        tmp_path,
        data,
        checkpoint,
        max_steps=200,
        save_steps=10,
        save_total_limit=2,
        learning_rate=1e-3,
        logging_steps=50,
        group_by_length=True,
        warmup_ratio=0.03,
    )

    def command(name):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**config, "output_dir": str(tmp_path / name)}))
        return [sys.executable, "-m", "prealign.cli", "train", str(tmp_path / f"{name}.yaml")]

    subprocess.run(command("straight"), check=True, capture_output=True, timeout=600)
    victim = subprocess.Popen(command("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "killed/checkpoint-30/trainer_state.json"
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL  # it really died mid-run
    assert not (tmp_path / "killed/model.safetensors").exists()
    (tmp_path / "killed/checkpoint-9999").mkdir()  # as if killed while writing a checkpoint
    subprocess.run(command("killed"), check=True, capture_output=True, timeout=600)

    reference = PrealignForConditionalGeneration.from_pretrained(tmp_path / "straight").state_dict()
    resumed = PrealignForConditionalGeneration.from_pretrained(tmp_path / "killed").state_dict()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_an_align_batch_without_images_trains_nothing_and_does_not_crash(workspace):
    """Stage 1 trains only the connector; a length-grouped batch of text-only records never reaches it."""
    tmp_path, data = workspace
    text_only = tmp_path / "text_only.json"
    text_only.write_text(json.dumps([r for r in INSTRUCT if "image" not in r] * 4))
    settings = settings_for(tmp_path, data, save_tiny(tmp_path / "ckpt"), "align", group_by_length=True)
    settings.data.files = [DataFile(str(text_only))]
    settings.data.prompt_format = "chat"
    trainer = build_trainer(settings)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    assert trainer.state.global_step == 3
    assert changed_parts(before, trainer.model) == set()


def test_a_stage_writes_its_loss_curve_and_passes_report_to_through(workspace):
    from PIL import Image

    from prealign.training.curves import LOSS_PLOT

    tmp_path, data = workspace
    settings = settings_for(tmp_path, data, save_tiny(tmp_path / "ckpt"))
    train(settings)
    with Image.open(tmp_path / "run_finetune" / LOSS_PLOT) as plot:
        assert plot.format == "PNG" and plot.width > 100
    logged = settings_for(tmp_path, data, tmp_path / "ckpt", report_to="tensorboard")
    assert training_arguments(with_stage_defaults(logged), []).report_to == ["tensorboard"]
