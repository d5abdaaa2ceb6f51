"""`train(settings)`: one stage of the recipe, from settings to a saved checkpoint."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from transformers import TrainerCallback, TrainingArguments, set_seed

from ..assembly import build_model_and_processor
from ..data import DataSource, LlavaDataset, PrealignCollator
from .curves import write_loss_plot
from .distributed import block_class_names, release_process_group
from .recipes import MODEL_PARTS, apply_stage, connector_path, part_of
from .settings import TrainSettings, find_config, with_stage_defaults
from .trainer import PrealignTrainer


def apply_lora(model, settings: TrainSettings, trainable: list[str]):
    """LoRA on the linear layers of `lora.parts` that `lora.target_modules` names; a trainable
    connector (projector, aligner) outside those parts trains whole, saved with the adapters."""
    from peft import LoraConfig, get_peft_model

    lora = settings.lora
    targets = lora_target_modules(model, lora.parts, lora.target_modules)
    if not targets:
        raise ValueError(f"lora: no linear layer named {lora.target_modules} in the parts {lora.parts}.")
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        modules_to_save=[p for p in trainable if p in ("projector", "aligner") and p not in lora.parts],
    )
    return get_peft_model(model, config)


def lora_target_modules(model, parts: list[str], names: list[str]) -> list[str]:
    """Full paths of the linear layers LoRA adapts: in `parts`, named in `names` (or all of them
    for ["all-linear"]); never the LM head, whose rows are the vocabulary."""
    unknown = sorted(set(parts) - set(MODEL_PARTS))
    if unknown:
        raise ValueError(f"lora.parts: unknown part(s) {unknown} (known: {', '.join(MODEL_PARTS)}).")
    every = names == ["all-linear"]
    return [
        path
        for path, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and part_of(path) in parts
        and part_of(path) != "lm_head"
        and (every or path.rsplit(".", 1)[-1] in names)
    ]


def training_arguments(settings: TrainSettings, wrap_classes: list[str] = ()) -> TrainingArguments:
    """transformers' arguments for a stage's settings (their defaults filled: `with_stage_defaults`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = settings.per_device_batch_size * world
    if settings.global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size {settings.global_batch_size} is not a multiple of per_device_batch_size x "
            f"processes ({settings.per_device_batch_size} x {world} = {per_step}): gradient accumulation "
            "would train another batch size."
        )
    return TrainingArguments(
        output_dir=settings.output_dir,
        per_device_train_batch_size=settings.per_device_batch_size,
        gradient_accumulation_steps=max(1, settings.global_batch_size // per_step),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        lr_scheduler_kwargs=settings.lr_scheduler_kwargs,
        warmup_steps=_warmup(settings),
        weight_decay=settings.weight_decay,
        **{k: v for k in ("adam_beta1", "adam_beta2") if (v := getattr(settings, k)) is not None},
        bf16=settings.bf16,
        # Under FSDP, FSDP's own checkpointing (in fsdp_config): the Trainer's would all-gather twice.
        activation_checkpointing=settings.gradient_checkpointing and not settings.fsdp,
        logging_steps=settings.logging_steps,
        logging_first_step=True,
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        seed=settings.seed,
        data_seed=settings.seed,
        dataloader_num_workers=settings.dataloader_num_workers,
        # Loader processes kept across epochs: forking them anew costs seconds at every epoch start.
        dataloader_persistent_workers=settings.dataloader_num_workers > 0,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        ddp_find_unused_parameters=settings.ddp_find_unused_parameters,
        fsdp=True if settings.fsdp else None,
        fsdp_config={
            "transformer_layer_cls_to_wrap": list(wrap_classes),
            "activation_checkpointing": settings.gradient_checkpointing,
            **settings.fsdp_config,
        }
        if settings.fsdp
        else None,
        deepspeed=str(find_config(settings.deepspeed)) if settings.deepspeed else None,
        report_to=settings.report_to,
        use_cpu=not torch.cuda.is_available(),
    )


def _warmup(settings: TrainSettings) -> float | int:
    """Warmup as steps (an int) or as a fraction of training (a float below 1), as transformers reads it."""
    if settings.warmup_steps is not None:
        if settings.warmup_ratio is not None:
            raise ValueError("Give warmup_steps or warmup_ratio, not both.")
        return settings.warmup_steps
    if not 0 <= settings.warmup_ratio < 1:  # transformers reads a value of 1 or more as a number of steps
        raise ValueError(
            f"warmup_ratio must be in [0, 1), got {settings.warmup_ratio}; "
            "give warmup_steps for a step count."
        )
    return settings.warmup_ratio


def build_trainer(settings: TrainSettings, model=None, processor=None) -> PrealignTrainer:
    """Everything `train` runs, ready to go (the model may be passed in already built)."""
    settings = with_stage_defaults(settings)
    if model is None:
        # Seed before the new modules (projector, aligner) are created: same settings, same weights.
        set_seed(settings.seed)
        model, processor = build_model_and_processor(settings.model)
    trainable = apply_stage(model, settings.stage, settings.freeze_perceiver)
    if settings.lora.enabled:
        model = apply_lora(model, settings, trainable)
    data = settings.data
    dataset = LlavaDataset(
        [DataSource(f.path, f.image_root, f.weight, f.allow_outside_root) for f in data.files],
        processor,
        max_length=data.max_length,
        prompt_format=data.prompt_format,
        on_error=data.on_error,
        seed=settings.seed,
        keep_in_memory=data.keep_in_memory,
    )
    module_lrs = {}
    if settings.vision_learning_rate is not None:
        module_lrs["model.vision_tower"] = settings.vision_learning_rate
    if settings.connector_learning_rate is not None:
        module_lrs[connector_path(model)] = settings.connector_learning_rate
    trainer = PrealignTrainer(
        model=model,
        args=training_arguments(settings, block_class_names(model)),
        train_dataset=dataset,
        data_collator=PrealignCollator(processor),
        processing_class=processor,
        module_learning_rates=module_lrs or None,
        callbacks=[ThroughputCallback()],
    )
    if settings.fsdp and not trainer.is_fsdp_enabled:
        # accelerate runs CPU processes as DDP whatever fsdp says: full replicas, and no activation
        # checkpointing (under FSDP it is FSDP's own); better no run than a silently different one.
        raise ValueError(
            f"fsdp=true, but the Trainer would not shard here ({trainer.accelerator.distributed_type}): "
            "FSDP through the Trainer needs GPUs. Drop fsdp=true to train with DDP."
        )
    return trainer


def train(settings: TrainSettings) -> PrealignTrainer:
    """Run one stage; resumes from the newest complete checkpoint in `output_dir` when there is one."""
    trainer = build_trainer(settings)
    resume = last_complete_checkpoint(settings.output_dir) if settings.resume else None
    if resume:
        print(f"resuming from {resume} (the newest complete checkpoint in {settings.output_dir})")
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(settings.output_dir)
    if trainer.is_world_process_zero():
        write_loss_plot(trainer.state.log_history, settings.output_dir)
    return trainer


def run_stage(settings: TrainSettings) -> None:
    """`prealign train`: one stage, then (under torchrun) the process group torn down in the
    order that exits cleanly - the trainer, model and optimizer released first."""
    trainer = train(settings)
    del trainer
    release_process_group()


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest checkpoint whose trainer state was written (the Trainer writes it last).

    A run killed while saving leaves a half-written checkpoint folder; resuming from it would fail.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    for checkpoint in sorted(folder.glob("checkpoint-*"), key=_step, reverse=True):
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return str(checkpoint)
    return None


def _step(checkpoint: Path) -> int:
    suffix = checkpoint.name.removeprefix("checkpoint-")
    return int(suffix) if suffix.isdigit() else -1


class ThroughputCallback(TrainerCallback):
    """Adds samples/s and tokens/s since the previous log to every log line."""

    def __init__(self):
        self.last: tuple[float, int, int] | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        samples = (
            state.global_step * args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        )
        if self.last is not None and logs is not None and now > self.last[0]:
            elapsed = now - self.last[0]
            logs["tokens_per_second"] = round((tokens - self.last[1]) / elapsed, 1)
            logs["samples_per_second"] = round((samples - self.last[2]) / elapsed, 2)
        self.last = (now, tokens, samples)
