"""Typed training settings, read from YAML with `key.sub=value` overrides."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from ..assembly.settings import ModelSettings
from ..variants import VARIANTS
from .recipes import LORA_LEARNING_RATE, RECIPES, Stage

# The recipes shipped inside the package (`configs/` of a source checkout links here), so that an
# installed wheel has them too.
SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@dataclass
class DataFile:
    path: str
    image_root: str | None = None
    weight: float = 1.0
    allow_outside_root: bool = False  # accept image paths outside image_root (absolute, ../)


@dataclass
class DataSettings:
    files: list[DataFile] = field(default_factory=list)
    max_length: int | None = None  # stage default when unset
    prompt_format: Literal["chat", "plain"] | None = None  # stage default when unset
    on_error: Literal["raise", "skip"] = "raise"
    # Hold each encoded sample after its first epoch (tokens and pixels): later epochs read no file.
    # For data sets that fit in memory (each loader worker holds its own copy).
    keep_in_memory: bool = False


@dataclass
class LoraSettings:
    enabled: bool = False
    r: int = 32
    alpha: int = 32
    dropout: float = 0.05
    # Linear layers by name (the last part of their module path), or ["all-linear"]: every one.
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    # The parts (recipes.MODEL_PARTS) whose linear layers get adapters: by default both LMs. The authors'
    # LoRA also adapts the vision tower, its merger (part "projector") and the aligner.
    parts: list[str] = field(default_factory=lambda: ["language_model", "perceiver"])


@dataclass
class TrainSettings:
    stage: Stage
    output_dir: str
    model: ModelSettings = field(default_factory=ModelSettings)
    data: DataSettings = field(default_factory=DataSettings)
    lora: LoraSettings = field(default_factory=LoraSettings)
    freeze_perceiver: bool | None = None  # the variant's choice when unset
    learning_rate: float | None = None  # stage default when unset (LoRA: 2e-4)
    vision_learning_rate: float | None = None
    # The connector's own rate (the baseline's projector, DPA's aligner), as LLaVA's `mm_projector_lr`:
    # a new module may move faster than the pre-trained LMs around it. Unset: `learning_rate`.
    connector_learning_rate: float | None = None
    epochs: float | None = None
    max_steps: int = -1
    global_batch_size: int | None = None
    per_device_batch_size: int = 1
    warmup_ratio: float | None = None
    warmup_steps: int | None = None  # instead of warmup_ratio
    # transformers' scheduler name (cosine, linear, warmup_stable_decay, ...) and its arguments
    # (warmup_stable_decay: num_stable_steps, num_decay_steps, ...); the stage's when unset.
    lr_scheduler: str | None = None
    lr_scheduler_kwargs: dict[str, Any] = field(default_factory=dict)
    weight_decay: float = 0.0
    adam_beta1: float | None = None  # transformers' defaults (0.9, 0.999) when unset
    adam_beta2: float | None = None
    gradient_checkpointing: bool | None = None
    bf16: bool | None = None  # None: on where the hardware supports it
    group_by_length: bool = True
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    seed: int = 0
    dataloader_num_workers: int = 0
    # A rank whose batch is text-only leaves the vision path without gradients; DDP must know.
    ddp_find_unused_parameters: bool = True
    fsdp: bool = False  # the Trainer's FSDP (FSDP2), each transformer block of every backbone a unit
    fsdp_config: dict[str, Any] = field(default_factory=dict)  # more of its fsdp_config: cpu_offload, ...
    deepspeed: str | None = None  # a DeepSpeed JSON file, or a shipped one (configs/distributed/...)
    report_to: str = "none"
    resume: bool = True  # continue from the newest checkpoint in output_dir, if any


def with_stage_defaults(settings: TrainSettings) -> TrainSettings:
    """The settings with every value left unset (None) taken from where its default lives: the
    stage's recipe, LoRA's learning rate, the variant (stage 2 freezing the perceiver) and the
    hardware (bf16). Filled here once, so that a value given - 0 included - is the value used."""
    recipe = RECIPES[settings.stage]

    def unset_or(value, default):
        return default if value is None else value

    freezes = settings.stage == "finetune" and VARIANTS[settings.model.variant].freeze_perceiver_in_stage2
    return dataclasses.replace(
        settings,
        learning_rate=unset_or(
            settings.learning_rate, LORA_LEARNING_RATE if settings.lora.enabled else recipe.learning_rate
        ),
        vision_learning_rate=unset_or(settings.vision_learning_rate, recipe.vision_learning_rate),
        epochs=unset_or(settings.epochs, recipe.epochs),
        global_batch_size=unset_or(settings.global_batch_size, recipe.global_batch_size),
        # Steps given: no ratio, so that giving both stays detectable.
        warmup_ratio=settings.warmup_ratio
        if settings.warmup_steps is not None
        else unset_or(settings.warmup_ratio, recipe.warmup_ratio),
        lr_scheduler=unset_or(settings.lr_scheduler, recipe.lr_scheduler),
        gradient_checkpointing=unset_or(settings.gradient_checkpointing, recipe.gradient_checkpointing),
        bf16=unset_or(settings.bf16, torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
        freeze_perceiver=unset_or(settings.freeze_perceiver, freezes),
        data=dataclasses.replace(
            settings.data,
            max_length=unset_or(settings.data.max_length, recipe.max_length),
            prompt_format=unset_or(settings.data.prompt_format, recipe.prompt_format),
        ),
    )


def load_settings(path: str | Path, overrides: list[str] = ()) -> TrainSettings:
    """Read a YAML file (and the files it names as `base`), apply `a.b=value` overrides, validate.

    A bad value is reported with its key, the allowed values and where it was set: the file, or
    the command line for an override.
    """
    path = find_config(path)
    raw = read_yaml(path)
    from_command_line = apply_overrides(raw, overrides)
    settings = from_dict(TrainSettings, raw, where=str(path), from_command_line=from_command_line)
    if Path(settings.output_dir).is_file():
        raise ValueError(f"{path}: output_dir={settings.output_dir!r} is a file; it must be a folder.")
    return settings


def find_config(path: str | Path) -> Path:
    """`path` if it exists, else the shipped recipe of that name (`paper-4b/dpa/stage1.yaml`, with or
    without a leading `configs/`): a pip-installed prealign trains `configs/...` paths as a checkout does.
    """
    path = Path(path)
    if path.is_file() or path.is_absolute():
        return path
    parts = path.parts[1:] if path.parts[:1] == ("configs",) else path.parts
    shipped = SHIPPED_CONFIGS.joinpath(*parts)
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"{path}: no such settings file, here or among prealign's shipped recipes ({SHIPPED_CONFIGS})"
    )


def apply_overrides(raw: dict, overrides: list[str]) -> set[str]:
    """Set each `a.b=value` (the value read as YAML) in the raw settings; returns the keys set."""
    keys = set()
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"Override {item!r} is not of the form key.sub=value.")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"Override {item!r}: {part!r} is not a section of the settings.")
        node[leaf] = yaml.safe_load(value)
        keys.add(key)
    return keys


def read_yaml(path: Path) -> dict:
    """A YAML mapping; a `base: other.yaml` key (relative to this file) is read first and overlaid."""
    raw = yaml.safe_load(path.read_text()) or {}
    base = raw.pop("base", None)
    return deep_merge(read_yaml(path.parent / base), raw) if base else raw


def deep_merge(base: dict, top: dict) -> dict:
    merged = dict(base)
    for key, value in top.items():
        merged[key] = (
            deep_merge(merged[key], value)
            if isinstance(value, dict) and isinstance(merged.get(key), dict)
            else value
        )
    return merged


def from_dict(cls, data: dict, where: str, prefix: str = "", from_command_line: set[str] = frozenset()):
    """Build a (nested) settings dataclass, naming any unknown or missing key and any bad value.

    `where` is the file the settings came from; `prefix` the dotted path of this section in it.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{where}: {prefix or 'the settings'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        section = f" in {prefix}" if prefix else ""
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}{section}; known: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        origin = "the command line" if key in from_command_line else where
        nested = _NESTED.get((cls, name))
        if nested is list:
            if not isinstance(value, list):
                raise ValueError(f"{origin}: {key} must be a list of files, got {value!r}")
            value = [
                from_dict(DataFile, v, where, f"{key}[{i}].", from_command_line) for i, v in enumerate(value)
            ]
        elif nested is not None:
            value = from_dict(nested, value, where, f"{key}.", from_command_line)
        else:
            value = _as_number(value, hints[name])
            problem = _type_problem(value, hints[name])
            if problem:
                raise ValueError(f"{origin}: {key}={value!r} {problem}")
        kwargs[name] = value
    try:
        settings = cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"{where}: {prefix or 'settings'}: {err}") from err
    if cls is ModelSettings and settings.variant not in VARIANTS:
        key = f"{prefix}variant"
        origin = "the command line" if key in from_command_line else where
        raise ValueError(f"{origin}: {key}={settings.variant!r} is not a variant; known: {sorted(VARIANTS)}")
    return settings


def _as_number(value: Any, hint: Any) -> Any:
    """YAML reads `1e-3` (no dot) as a string; a number field takes it as the number it means."""
    if isinstance(value, str) and float in (hint, *typing.get_args(hint)):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _type_problem(value: Any, hint: Any) -> str | None:
    """Why `value` does not fit the annotation `hint` (None when it does)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return None
    if origin is Literal:
        return None if value in args else f"is not one of {', '.join(map(repr, args))}"
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        problems = [_type_problem(value, arg) for arg in args if arg is not type(None)]
        if None in problems:
            return None
        return " or ".join(problems) + (" (or null)" if type(None) in args else "")
    if origin in (list, dict):
        return None if isinstance(value, origin) else f"must be a {origin.__name__}"
    if hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "must be a number"
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else "must be a whole number"
    return None if isinstance(value, hint) else f"must be a {hint.__name__}"


_NESTED = {
    (TrainSettings, "model"): ModelSettings,
    (TrainSettings, "data"): DataSettings,
    (TrainSettings, "lora"): LoraSettings,
    (DataSettings, "files"): list,
}
