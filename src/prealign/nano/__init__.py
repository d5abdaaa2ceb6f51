"""The nano world, in one home: a small, seeded, fully synthetic replica of the paper's experiment.

scenes, language, tokenizer   what the world holds and how it is said
data                          the data sets, benchmarks and corpus written from a seed
streams                       the endless training streams the backbones pre-train on
pretraining                   nano ViT and LM pre-training and their evaluation
backbones                     `prealign nano backbones`: every backbone, with a manifest
protocol, units, report       `prealign nano run`: the main job, as cached units, and its report
workers                       processes that end with the command that started them
"""

from .data import BENCHMARK_GROUPS, NanoDataSpec, build_nano_data
from .scenes import Scene, SceneObject, render, sample_scene

__all__ = [
    "BENCHMARK_GROUPS",
    "NanoDataSpec",
    "Scene",
    "SceneObject",
    "build_nano_data",
    "render",
    "sample_scene",
]
