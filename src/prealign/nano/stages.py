"""The nano recipe's steps as the protocol and the backbones command run them: a stage's settings
from `configs/nano` placed in a run's folders, a stage trained in a fresh process, a saved VLM on
a world's benchmarks."""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

from ..assembly import load_saved
from ..evaluation import run_benchmark
from ..training.curves import loss_curve
from ..training.run import train
from ..training.settings import SHIPPED_CONFIGS, TrainSettings, apply_overrides, from_dict, read_yaml
from .data import BENCHMARK_GROUPS
from .workers import worker_pool

# The recipe's YAML files (shipped in the package; `configs/nano` of a source checkout); their paths
# name `runs/nano/...`, which each run maps into its own folders.
CONFIGS = SHIPPED_CONFIGS / "nano"
CONFIG_ROOT = "runs/nano"
PERCEIVER_VLM = "perceiver-vlm"
EVAL_BATCH_SIZE = 100
MAX_NEW_TOKENS = 8  # the longest nano answer is 4 tokens ("above and left" + end)


@dataclass(frozen=True)
class Placement:
    """Where a run's stages read and write: `runs/nano/backbones` -> `backbones`, `runs/nano/data`
    -> `data`, `runs/nano/perceiver-vlm/stage2` -> `perceiver_vlm` when given, any other
    `runs/nano/...` -> `root/...`."""

    root: Path
    backbones: Path
    data: Path
    perceiver_vlm: Path | None = None

    def mapping(self) -> dict[str, str]:
        shipped = self.perceiver_vlm
        return {
            **({f"{CONFIG_ROOT}/{PERCEIVER_VLM}/stage2": str(shipped)} if shipped else {}),
            f"{CONFIG_ROOT}/backbones": str(self.backbones),
            f"{CONFIG_ROOT}/data": str(self.data),
            f"{CONFIG_ROOT}/": str(self.root) + "/",
        }


def stage_settings(
    configs: Path, name: str, stage: str, seed: int, placement: Placement, overrides: tuple[str, ...] = ()
) -> tuple[TrainSettings, dict]:
    """<configs>/<name>/<stage>.yaml with its `runs/nano/...` paths placed, the seed and the
    overrides; also the raw settings before placing (what a unit records as its input)."""
    path = configs / name / f"{stage}.yaml"
    raw = read_yaml(path)
    raw["seed"] = seed
    overridden = apply_overrides(raw, list(overrides))
    settings = from_dict(
        TrainSettings, _map_paths(raw, placement.mapping()), where=str(path), from_command_line=overridden
    )
    return settings, raw


def _map_paths(node, mapping: dict[str, str]):
    if isinstance(node, dict):
        return {k: _map_paths(v, mapping) for k, v in node.items()}
    if isinstance(node, list):
        return [_map_paths(v, mapping) for v in node]
    if isinstance(node, str):
        for prefix, target in mapping.items():
            if node.startswith(prefix):
                return target + node[len(prefix) :]
    return node


def train_stage(settings: TrainSettings) -> dict:
    """One training stage in a fresh process: a long-lived one that has trained before runs the
    next stage ~1.5x slower (its heap grows to gigabytes and a fifth of its time goes to the
    kernel; docs/nano_world.md, "Budgets"), and a stage's memory is released when it ends."""
    with worker_pool(1) as pool:
        return pool.submit(_train_here, settings).result()


def _train_here(settings: TrainSettings) -> dict:
    trainer = train(settings)
    history = trainer.state.log_history
    losses = loss_curve(history)
    summary = next((row for row in reversed(history) if "train_runtime" in row), {})
    result = {
        "steps": trainer.state.global_step,
        "train_runtime_s": summary.get("train_runtime"),
        "final_loss": losses[-1][1] if losses else summary.get("train_loss"),
        "loss_curve": losses,
    }
    # No teardown: the process ends with the stage, and its daemonic loader worker with it
    # (joining that worker here took 1-5 s per stage).
    return result


def evaluate_vlm(
    model_folder: Path,
    data_dir: Path,
    folder: Path,
    batch_size: int = EVAL_BATCH_SIZE,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> dict:
    """A saved VLM's scores on every benchmark group of a world (answers written under `folder`)."""
    model, processor = load_saved(model_folder)
    scores = {
        group: run_benchmark(
            model,
            processor,
            data_dir / "bench" / f"{group}.json",
            folder,
            image_root=data_dir / "images",
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
        )
        for group in BENCHMARK_GROUPS
    }
    del model
    gc.collect()
    return scores
