"""The paper's two-stage recipe on the transformers Trainer."""

from .recipes import RECIPES, apply_stage, trainable_parts
from .run import build_trainer, train
from .settings import TrainSettings, load_settings, with_stage_defaults
from .trainer import PrealignTrainer

__all__ = [
    "RECIPES",
    "PrealignTrainer",
    "TrainSettings",
    "apply_stage",
    "build_trainer",
    "load_settings",
    "train",
    "trainable_parts",
    "with_stage_defaults",
]
