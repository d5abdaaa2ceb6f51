"""`train(settings)`: one stage of the recipe, from settings to a saved checkpoint."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from transformers import AutoImageProcessor, AutoTokenizer, TrainerCallback, TrainingArguments, set_seed

from ..data import DataSource, LlavaDataset, PrealignCollator
from ..modeling import PrealignForConditionalGeneration
from ..modeling.parts import load_causal_lm
from ..processing import SPAN_TOKEN_ARGUMENTS, PrealignProcessor
from ..variants import VARIANTS
from .curves import write_loss_plot
from .distributed import block_class_names, release_process_group
from .initialization import dpa_from_perceiver_vlm, reinitialize_perceiver_lm
from .recipes import LORA_LEARNING_RATE, PARTS, RECIPES, apply_stage, connector_path, part_of
from .settings import ModelSettings, TrainSettings, find_config
from .trainer import PrealignTrainer


def build_model_and_processor(settings: ModelSettings):
    """A saved prealign checkpoint, or a model of `settings.variant` assembled from pretrained parts."""
    _check_local_paths(settings)
    dtype = getattr(torch, settings.dtype) if settings.dtype else None
    load = {k: v for k, v in (("dtype", dtype), ("attn_implementation", settings.attn_implementation)) if v}
    if settings.checkpoint:
        if settings.config:
            raise ValueError(
                f"model.config {settings.config} cannot apply to model.checkpoint {settings.checkpoint}: "
                "a saved model's architecture is fixed; config values apply when assembling from parts."
            )
        if settings.image_processor:
            raise ValueError(
                f"model.image_processor cannot apply to model.checkpoint {settings.checkpoint}: its "
                "processor carries the settings it was trained with; they apply when assembling from parts."
            )
        model = PrealignForConditionalGeneration.from_pretrained(settings.checkpoint, **load)
        processor = PrealignProcessor.from_pretrained(settings.checkpoint)
        _check_checkpoint_processor(settings, processor)
        return model, processor
    variant = VARIANTS[settings.variant]
    _check_parts(settings, variant)
    config = {**variant.config, **settings.config}
    if settings.perceiver_vlm:
        if settings.image_processor:
            raise ValueError(
                "model.image_processor applies to model.vision; a perceiver_vlm brings the image processor "
                f"it was trained with ({settings.perceiver_vlm})."
            )
        vlm_processor = PrealignProcessor.from_pretrained(settings.perceiver_vlm)
        processor = PrealignProcessor(
            vlm_processor.image_processor,
            AutoTokenizer.from_pretrained(settings.text),
            vlm_processor.tokenizer,
            **_prompt_convention(settings),
            **{**vlm_processor.image_span_tokens(), **_image_tokens(settings)},
        )
        vlm = PrealignForConditionalGeneration.from_pretrained(settings.perceiver_vlm, **load)
        text = load_causal_lm(settings.text, **load)
        model = dpa_from_perceiver_vlm(vlm, text, processor, **config)
    else:
        perceiver_tokenizer = (
            AutoTokenizer.from_pretrained(settings.perceiver_tokenizer)
            if settings.perceiver_tokenizer
            else None
        )
        processor = PrealignProcessor(
            AutoImageProcessor.from_pretrained(settings.vision, **settings.image_processor),
            AutoTokenizer.from_pretrained(settings.text),
            perceiver_tokenizer,
            **_prompt_convention(settings),
            **_image_tokens(settings),
        )
        model = PrealignForConditionalGeneration.from_parts(
            settings.vision, settings.text, settings.perceiver, processor=processor, **load, **config
        )
    if variant.perceiver_init == "random_lm_blocks":
        reinitialize_perceiver_lm(model)
    return model, processor


PROMPT_SETTINGS = ("system_prompt", "thinking", "template_variables", "perceiver_prompt")


def _prompt_convention(settings: ModelSettings) -> dict:
    unknown = sorted(set(settings.prompt) - set(PROMPT_SETTINGS))
    if unknown:
        raise ValueError(f"model.prompt: unknown setting(s) {unknown} (known: {', '.join(PROMPT_SETTINGS)}).")
    return settings.prompt


def _check_checkpoint_processor(settings: ModelSettings, processor: PrealignProcessor) -> None:
    """A checkpoint's processor carries the prompt convention and image tokens it was trained with:
    settings may repeat them (a recipe's shared file does), never change them."""
    wanted = {**_prompt_convention(settings), **_image_tokens(settings)}
    differ = {
        key: (value, getattr(processor, key))
        for key, value in wanted.items()
        if getattr(processor, key) != value
    }
    if differ:
        listed = ", ".join(
            f"{key}: settings {want!r}, checkpoint {got!r}" for key, (want, got) in differ.items()
        )
        raise ValueError(
            f"model.prompt / model.image_tokens differ from what model.checkpoint {settings.checkpoint} was "
            f"trained with ({listed}); a checkpoint keeps its own."
        )


def _image_tokens(settings: ModelSettings) -> dict:
    unknown = sorted(set(settings.image_tokens) - set(SPAN_TOKEN_ARGUMENTS))
    if unknown:
        raise ValueError(
            f"model.image_tokens: unknown key(s) {unknown} (known: {', '.join(SPAN_TOKEN_ARGUMENTS)})."
        )
    return settings.image_tokens


def _check_local_paths(settings: ModelSettings) -> None:
    """A missing local folder would reach the hub client and be reported as a bad repo id."""
    for key in ("checkpoint", "vision", "text", "perceiver", "perceiver_vlm", "perceiver_tokenizer"):
        value = getattr(settings, key)
        if value and not Path(value).exists() and _looks_local(value):
            raise FileNotFoundError(f"model.{key}: {value} does not exist (no such folder).")


def _looks_local(name: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else can only be a local path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name


def _check_parts(settings: ModelSettings, variant) -> None:
    where = f"model (variant {variant.name})"
    if not settings.text:
        raise ValueError(f"{where}: give `checkpoint`, or `text` (the target LM) and the perceiver's parts.")
    if not variant.uses_perceiver:
        if settings.perceiver or settings.perceiver_vlm or not settings.vision:
            raise ValueError(f"{where}: the baseline takes `vision` and `text` only.")
    elif variant.perceiver_init == "untrained":
        if not (settings.vision and settings.perceiver):
            raise ValueError(
                f"{where}: needs `vision` and `perceiver` (a pretrained small LM); phi_p is new."
            )
    elif not settings.perceiver_vlm:
        raise ValueError(
            f"{where}: needs `perceiver_vlm`, a small VLM trained with the baseline recipe (stage "
            "'align' then 'finetune' with the small LM as `text`); or use variant dpa_untrained_perceiver."
        )


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
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"lora.parts: unknown part(s) {unknown} (known: {', '.join(PARTS)}).")
    every = names == ["all-linear"]
    return [
        path
        for path, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and part_of(path) in parts
        and part_of(path) != "lm_head"
        and (every or path.rsplit(".", 1)[-1] in names)
    ]


def training_arguments(settings: TrainSettings, recipe, wrap_classes: list[str] = ()) -> TrainingArguments:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    global_batch = settings.global_batch_size or recipe.global_batch_size
    per_step = settings.per_device_batch_size * world
    if global_batch % per_step:
        raise ValueError(
            f"global_batch_size {global_batch} is not a multiple of per_device_batch_size x processes "
            f"({settings.per_device_batch_size} x {world} = {per_step}): gradient accumulation would train "
            "another batch size."
        )
    accumulation = max(1, global_batch // per_step)
    lr = settings.learning_rate or (LORA_LEARNING_RATE if settings.lora.enabled else recipe.learning_rate)
    bf16 = settings.bf16
    if bf16 is None:
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    checkpointing = settings.gradient_checkpointing
    if checkpointing is None:
        checkpointing = recipe.gradient_checkpointing
    return TrainingArguments(
        output_dir=settings.output_dir,
        per_device_train_batch_size=settings.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=settings.epochs if settings.epochs is not None else recipe.epochs,
        max_steps=settings.max_steps,
        learning_rate=lr,
        lr_scheduler_type=settings.lr_scheduler or recipe.lr_scheduler,
        lr_scheduler_kwargs=settings.lr_scheduler_kwargs,
        warmup_steps=_warmup(settings, recipe),
        weight_decay=settings.weight_decay,
        **{k: v for k in ("adam_beta1", "adam_beta2") if (v := getattr(settings, k)) is not None},
        bf16=bf16,
        # Under FSDP, FSDP's own checkpointing (in fsdp_config): the Trainer's would all-gather twice.
        activation_checkpointing=checkpointing and not settings.fsdp,
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
            "activation_checkpointing": checkpointing,
            **settings.fsdp_config,
        }
        if settings.fsdp
        else None,
        deepspeed=str(find_config(settings.deepspeed)) if settings.deepspeed else None,
        report_to=settings.report_to,
        use_cpu=not torch.cuda.is_available(),
    )


def _warmup(settings: TrainSettings, recipe) -> float | int:
    """Warmup as steps (an int) or as a fraction of training (a float below 1), as transformers reads it."""
    if settings.warmup_steps is not None:
        if settings.warmup_ratio is not None:
            raise ValueError("Give warmup_steps or warmup_ratio, not both.")
        return settings.warmup_steps
    ratio = settings.warmup_ratio if settings.warmup_ratio is not None else recipe.warmup_ratio
    if not 0 <= ratio < 1:  # transformers reads a value of 1 or more as a number of steps
        raise ValueError(f"warmup_ratio must be in [0, 1), got {ratio}; give warmup_steps for a step count.")
    return ratio


def build_trainer(settings: TrainSettings, model=None, processor=None) -> PrealignTrainer:
    """Everything `train` runs, ready to go (the model may be passed in already built)."""
    recipe = RECIPES[settings.stage]
    if model is None:
        # Seed before the new modules (projector, aligner) are created: same settings, same weights.
        set_seed(settings.seed)
        model, processor = build_model_and_processor(settings.model)
    freeze = settings.freeze_perceiver
    if freeze is None:
        freeze = settings.stage == "finetune" and VARIANTS[settings.model.variant].freeze_perceiver_in_stage2
    trainable = apply_stage(model, settings.stage, freeze)
    if settings.lora.enabled:
        model = apply_lora(model, settings, trainable)
    data = settings.data
    dataset = LlavaDataset(
        [DataSource(f.path, f.image_root, f.weight, f.allow_outside_root) for f in data.files],
        processor,
        max_length=data.max_length or recipe.max_length,
        prompt_format=data.prompt_format or recipe.prompt_format,
        on_error=data.on_error,
        seed=settings.seed,
        keep_in_memory=data.keep_in_memory,
    )
    vision_lr = settings.vision_learning_rate or recipe.vision_learning_rate
    module_lrs = {"model.vision_tower": vision_lr} if vision_lr else {}
    if settings.connector_learning_rate:
        module_lrs[connector_path(model)] = settings.connector_learning_rate
    trainer = PrealignTrainer(
        model=model,
        args=training_arguments(settings, recipe, block_class_names(model)),
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
