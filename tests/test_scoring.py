"""Benchmark scoring rules: each reduces free text to the key it scores."""

from __future__ import annotations

import pytest

from prealign.evaluation import extract_answer, score


@pytest.mark.parametrize(
    ("rule", "prediction", "reference", "right"),
    [
        ("choice", "B", "B", True),
        ("choice", "B. red", "B", True),
        ("choice", "the answer is C", "B", False),
        ("choice", "a red circle", "A", False),  # the article "a" is no option letter
        ("yes_no", "top left and middle right. yes", "top left and middle right. yes", True),
        ("yes_no", "top left and middle right. no", "bottom left and middle right. yes", False),
        ("yes_no", "Yes", "yes", True),
        ("yes_no", "not sure", "no", False),  # "not" holds no verdict
        ("number", "7", "7", True),
        ("number", "there are 07", "7", True),
        ("number", "17", "7", False),
        ("exact", " Top Left. ", "top left", True),
        ("exact", "top", "top left", False),
        # A word-level tokenizer decodes "one object. a red circle." with spaces before the stops.
        ("exact", "one object . a red circle .", "one object. a red circle.", True),
        ("exact", "one object . a red square .", "one object. a red circle.", False),
    ],
)
def test_rules_score_the_key_they_extract(rule, prediction, reference, right):
    assert score(rule, [prediction], [reference])["accuracy"] == (1.0 if right else 0.0)


def test_text_without_an_answer_is_wrong_and_a_bad_reference_or_rule_is_an_error():
    assert extract_answer("number", "many") is None
    assert score("number", ["many"], ["3"])["accuracy"] == 0.0
    with pytest.raises(ValueError, match="reference answer 'maybe'"):
        score("yes_no", ["yes"], ["maybe"])
    with pytest.raises(ValueError, match="unknown scoring rule 'fuzzy'"):
        extract_answer("fuzzy", "x")


def test_a_benchmark_score_holds_accuracy_baseline_and_yes_f1():
    references = ["yes", "yes", "yes", "no"]
    always_yes = score("yes_no", ["yes"] * 4, references)
    assert always_yes == {"accuracy": 0.75, "majority": 0.75, "n": 4, "f1": 2 * 3 / (4 + 3)}
    never_yes = score("yes_no", ["no"] * 4, references)
    assert never_yes["accuracy"] == 0.25 and never_yes["f1"] == 0.0
    letters = score("choice", ["B. red", "C", "nothing"], ["B", "B", "A"])
    assert letters == {"accuracy": 1 / 3, "majority": 2 / 3, "n": 3}  # no F1 outside yes/no
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        score("number", ["1", "2"], ["1"])
