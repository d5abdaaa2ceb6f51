"""Typed training settings, read from YAML with `key.sub=value` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .recipes import Stage


@dataclass
class ModelSettings:
    """Either a saved prealign `checkpoint` (e.g. stage 1's output) or parts to assemble.

    `variant` names a row of the paper's ablation table (prealign.variants.VARIANTS): it supplies
    config values, how the perceiver starts and whether stage 2 freezes it.
    """

    variant: str = "dpa"
    checkpoint: str | None = None
    vision: str | None = None
    text: str | None = None
    perceiver: str | None = None  # a pretrained small causal LM (dpa_untrained_perceiver)
    perceiver_vlm: str | None = None  # a small VLM trained with the baseline recipe (the usual perceiver)
    perceiver_tokenizer: str | None = None  # when the perceiver's vocabulary differs from the target's
    config: dict[str, Any] = field(default_factory=dict)  # PrealignConfig fields
    dtype: str | None = None
    attn_implementation: str | None = None


@dataclass
class DataFile:
    path: str
    image_root: str | None = None
    weight: float = 1.0


@dataclass
class DataSettings:
    files: list[DataFile] = field(default_factory=list)
    max_length: int | None = None  # stage default when unset
    prompt_format: Literal["chat", "plain"] | None = None  # stage default when unset
    on_error: Literal["raise", "skip"] = "raise"


@dataclass
class LoraSettings:
    enabled: bool = False
    r: int = 32
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


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
    epochs: float | None = None
    max_steps: int = -1
    global_batch_size: int | None = None
    per_device_batch_size: int = 1
    warmup_ratio: float | None = None
    weight_decay: float = 0.0
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
    fsdp: str | None = None  # e.g. "full_shard auto_wrap"
    deepspeed: str | None = None  # path to a DeepSpeed JSON config
    report_to: str = "none"
    resume: bool = True  # continue from the newest checkpoint in output_dir, if any


def load_settings(path: str | Path, overrides: list[str] = ()) -> TrainSettings:
    """Read a YAML file (and the files it names as `base`), apply `a.b=value` overrides, validate."""
    raw = read_yaml(Path(path))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"Override {item!r} is not of the form key.sub=value.")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return from_dict(TrainSettings, raw, where=str(path))


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


def from_dict(cls, data: dict, where: str):
    """Build a (nested) settings dataclass, naming any unknown or missing key."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        nested = _NESTED.get((cls, name))
        if nested is list:
            value = [from_dict(DataFile, v, f"{where}.{name}[{i}]") for i, v in enumerate(value)]
        elif nested is not None:
            value = from_dict(nested, value, f"{where}.{name}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"{where}: {err}") from err


_NESTED = {
    (TrainSettings, "model"): ModelSettings,
    (TrainSettings, "data"): DataSettings,
    (TrainSettings, "lora"): LoraSettings,
    (DataSettings, "files"): list,
}
