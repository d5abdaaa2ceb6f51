"""Scoring model answers against benchmark answers, and running models on benchmark files."""

from .runner import BenchmarkItem, load_benchmark, run_benchmark, score_items
from .scoring import SCORING_RULES, extract_answer, score

__all__ = [
    "SCORING_RULES",
    "BenchmarkItem",
    "extract_answer",
    "load_benchmark",
    "run_benchmark",
    "score",
    "score_items",
]
