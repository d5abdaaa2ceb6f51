"""The benchmark scoring rules: what part of a free-form answer counts, and when it is right.

A rule reduces both the model's text and the reference answer to the key it scores (a choice
letter, a yes/no verdict, a number, or the whole normalised text), so "B. red" scores on its
letter and an answer that explains itself before "yes" scores on that verdict.
"""

from __future__ import annotations

import re
from collections import Counter

_LETTER = re.compile(r"\b([A-D])\b")
_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _choice(text: str) -> str | None:
    """The first standalone option letter: models often go on to repeat the option's text."""
    match = _LETTER.search(text)
    return match[1] if match else None


def _yes_no(text: str) -> str | None:
    """The last yes/no: a worked answer states its verdict at the end."""
    found = _YES_NO.findall(text)
    return found[-1].lower() if found else None


def _number(text: str) -> str | None:
    """The last number, normalised ("07" and "7.0" are 7)."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    value = float(found[-1])
    return str(int(value)) if value.is_integer() else str(value)


_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([.,;:!?])")


def _exact(text: str) -> str | None:
    """The whole text, lower-cased, whitespace collapsed, none before punctuation (word-level
    tokenizers decode "a circle." as "a circle ."), without a final full stop."""
    normalised = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", " ".join(text.lower().split())).rstrip(".")
    return normalised or None


SCORING_RULES = {"choice": _choice, "yes_no": _yes_no, "number": _number, "exact": _exact}


def extract_answer(rule: str, text: str) -> str | None:
    """The key `rule` scores in `text`; None when the text holds none (always wrong)."""
    if rule not in SCORING_RULES:
        raise ValueError(f"unknown scoring rule {rule!r}; known: {sorted(SCORING_RULES)}")
    return SCORING_RULES[rule](text)


def score(rule: str, predictions: list[str], references: list[str]) -> dict[str, float]:
    """Accuracy of one benchmark's answers, the majority-answer baseline it must beat, and for
    yes/no also the F1 of "yes" (as POPE reports it: a model that leans "yes" scores a high
    accuracy on yes-heavy splits, but not a high F1)."""
    if len(predictions) != len(references) or not references:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    keys = [extract_answer(rule, r) for r in references]
    if None in keys:
        raise ValueError(f"the reference answer {references[keys.index(None)]!r} holds no {rule} answer")
    predicted = [extract_answer(rule, p) for p in predictions]
    report = {
        "accuracy": sum(p == k for p, k in zip(predicted, keys, strict=True)) / len(keys),
        "majority": Counter(keys).most_common(1)[0][1] / len(keys),
        "n": len(keys),
    }
    if rule == "yes_no":
        hits = sum(p == k == "yes" for p, k in zip(predicted, keys, strict=True))
        said_yes, are_yes = predicted.count("yes"), keys.count("yes")
        report["f1"] = 2 * hits / (said_yes + are_yes) if said_yes + are_yes else 1.0
    return report
