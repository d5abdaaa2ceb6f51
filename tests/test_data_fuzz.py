"""Fuzzing the data reader: whatever bytes a data file holds, only `DataError` ever escapes.

Random record lists are damaged the ways real files are - a field of the wrong type, a missing
or corrupt image, a placeholder too many, a truncated file, stray bytes, another encoding - and
read through `LlavaDataset` in both error modes. In "skip" mode every record is accounted for:
each one is either a sample or counted in `stats` under what was wrong with it.
"""

from __future__ import annotations

import json
import warnings

import pytest
from conftest import random_image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prealign.data import DataSource, LlavaDataset
from prealign.data.records import DataError
from prealign.tiny import tiny_model

JUNK = st.one_of(
    st.none(),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.text(max_size=8),
    st.lists(st.integers()),
)
IMAGES = ("good.png", "corrupt.png", "missing.png", "../escape.png", "/etc/hostname")


@st.composite
def records(draw):
    """A LLaVA record, possibly damaged in one or more fields."""
    n_images = draw(st.integers(0, 2))
    question = " ".join(["<image>"] * n_images + [draw(st.text(min_size=1, max_size=12))])
    record = {
        "id": draw(st.one_of(st.text(max_size=6), st.integers())),
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": "fine."}],
    }
    if n_images:
        record["image"] = [draw(st.sampled_from(IMAGES)) for _ in range(n_images)]
    for _ in range(draw(st.integers(0, 2))):
        damage = draw(st.sampled_from(["field", "turn", "role", "drop", "extra_placeholder", "whole"]))
        if damage == "field":
            record[draw(st.sampled_from(["conversations", "image", "id"]))] = draw(JUNK)
        elif damage == "turn" and isinstance(record.get("conversations"), list) and record["conversations"]:
            record["conversations"][0] = draw(st.one_of(JUNK, st.fixed_dictionaries({"value": JUNK})))
        elif damage == "role" and isinstance(record.get("conversations"), list) and record["conversations"]:
            turn = record["conversations"][-1]
            if isinstance(turn, dict):
                turn["from"] = draw(st.sampled_from(["gpt", "human", "robot", "system"]))
        elif damage == "drop":
            record.pop(draw(st.sampled_from(["conversations", "image", "id"])), None)
        elif damage == "extra_placeholder" and isinstance(record.get("conversations"), list):
            record["conversations"].append({"from": "human", "value": "and <image>?"})
        elif damage == "whole":
            return draw(JUNK)
    return record


@st.composite
def data_files(draw):
    """(file name, bytes): a JSON list or JSONL of records, then perhaps cut, soiled or re-encoded."""
    items = draw(st.lists(records(), min_size=0, max_size=6))
    jsonl = draw(st.booleans())
    text = "\n".join(json.dumps(r, ensure_ascii=False) for r in items) if jsonl else json.dumps(items)
    data = text.encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"])), errors="replace")
    damage = draw(st.sampled_from(["none", "none", "truncate", "stray_bytes"]))
    if damage == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "stray_bytes":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=6)) + data[at:]
    return ("data.jsonl" if jsonl else "data.json"), data


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    (root / "images").mkdir()
    random_image(0).save(root / "images/good.png")
    (root / "images/corrupt.png").write_bytes(b"\x89PNG not really")
    _, processor = tiny_model("dpa")
    return root, processor


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data_files())
def test_only_data_errors_escape_and_skip_mode_accounts_for_every_record(workspace, file):
    root, processor = workspace
    name, content = file
    path = root / name
    path.write_bytes(content)
    source = DataSource(path, root / "images")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # records skipped by design (no supervised token) warn
        try:
            strict = LlavaDataset([source], processor, on_error="raise")
        except DataError:
            return  # a file-level problem, named; nothing else may escape
        raised = 0
        for i in range(len(strict)):
            try:
                strict[i]
            except DataError:
                raised += 1
        lenient = LlavaDataset([source], processor, on_error="skip")
        samples = [lenient[i] for i in range(len(lenient))]
    usable = sum(sample is not None for sample in samples)
    assert lenient.stats["ok"] + lenient.stats["trimmed"] == usable
    assert sum(lenient.stats.values()) == len(lenient)  # every bad record counted once
    by_design = {"ok", "trimmed", "image_span_cut", "no_supervised_tokens"}  # not errors
    assert sum(n for kind, n in lenient.stats.items() if kind not in by_design) == raised
