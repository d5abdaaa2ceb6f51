"""Scoring model answers against benchmark answers."""

from .scoring import SCORING_RULES, extract_answer, score

__all__ = ["SCORING_RULES", "extract_answer", "score"]
