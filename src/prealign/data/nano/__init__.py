"""The nano world: a small, seeded, fully synthetic replica of the paper's ingredients."""

from .build import BENCHMARK_GROUPS, NanoDataSpec, build_nano_data
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
