"""Bad input gets a clear error naming file, record and field; truncation never cuts an image span."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from data_fixtures import INSTRUCT, PRETRAIN, write_llava_set

from prealign.cli import main
from prealign.data import DataError, DataSource, LlavaDataset
from prealign.data.check import check_data
from prealign.tiny import tiny_model

GOOD = INSTRUCT[0]
BAD_RECORDS = {
    "missing_image": ({**GOOD, "id": "no_file", "image": "coco/does_not_exist.jpg"}, "image"),
    "corrupt_image": ({**GOOD, "id": "broken", "image": "broken.jpg"}, "image"),
    "malformed_record": ({"id": "no_conv", "image": GOOD["image"]}, "conversations"),
    "unknown_role": (
        {
            "id": "bad_role",
            "conversations": [{"from": "robot", "value": "hi"}, {"from": "gpt", "value": "x"}],
        },
        "conversations[0].from",
    ),
    "placeholder_mismatch": (
        {
            **GOOD,
            "id": "two_tags",
            "conversations": [
                {"from": "human", "value": "<image> and <image>"},
                {"from": "gpt", "value": "x"},
            ],
        },
        "conversations",
    ),
}


@pytest.fixture
def processor():
    return tiny_model("dpa")[1]


@pytest.fixture
def bad_set(tmp_path):
    paths = write_llava_set(tmp_path)
    (paths["images"] / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    records = [GOOD] + [record for record, _ in BAD_RECORDS.values()]
    (tmp_path / "bad.json").write_text(json.dumps(records))
    return tmp_path / "bad.json", paths["images"]


@pytest.mark.parametrize("kind", sorted(BAD_RECORDS))
def test_each_bad_input_raises_an_error_naming_file_record_and_field(kind, bad_set, processor):
    path, images = bad_set
    record, field = BAD_RECORDS[kind]
    dataset = LlavaDataset([DataSource(path, images)], processor)
    position = 1 + list(BAD_RECORDS).index(kind)
    with pytest.raises(DataError) as err:
        dataset[position]
    assert err.value.kind == kind
    message = str(err.value)
    assert "bad.json" in message and record["id"] in message and f"field '{field}'" in message


def test_skip_mode_returns_none_and_counts_each_kind(bad_set, processor):
    path, images = bad_set
    dataset = LlavaDataset([DataSource(path, images)], processor, on_error="skip")
    samples = [dataset[i] for i in range(len(dataset))]
    assert samples[0] is not None and samples[1:] == [None] * len(BAD_RECORDS)
    assert dataset.stats == {"ok": 1, **{kind: 1 for kind in BAD_RECORDS}}


def test_truncation_trims_text_after_the_last_image(tmp_path, processor):
    record = {
        "id": "long",
        "image": "coco/000000033471.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nDescribe."},
            {"from": "gpt", "value": "word " * 200},
        ],
    }
    paths = write_llava_set(tmp_path)
    (tmp_path / "long.json").write_text(json.dumps([record]))
    full = LlavaDataset([DataSource(tmp_path / "long.json", paths["images"])], processor)[0]
    limit = len(full["input_ids"]) - 50
    dataset = LlavaDataset([DataSource(tmp_path / "long.json", paths["images"])], processor, max_length=limit)
    sample = dataset[0]
    assert len(sample["input_ids"]) == limit and sample["trimmed"]
    assert sample["input_ids"].tolist() == full["input_ids"][:limit].tolist()
    assert dataset.stats == {"trimmed": 1}


def test_a_cut_through_an_image_span_drops_the_record_and_reports_it(tmp_path, processor):
    paths = write_llava_set(tmp_path)
    dataset = LlavaDataset([DataSource(paths["instruct"], paths["images"])], processor, max_length=12)
    with pytest.warns(UserWarning, match="record #0 skipped: .* image span"):
        assert dataset[0] is None
    assert dataset.stats["image_span_cut"] == 1


def test_a_record_left_without_supervised_tokens_is_reported(tmp_path, processor):
    paths = write_llava_set(tmp_path)
    dataset = LlavaDataset([DataSource(paths["instruct"], paths["images"])], processor, max_length=8)
    with pytest.warns(UserWarning, match="no assistant token"):
        assert dataset[1] is None  # the text-only record: 8 tokens hold only the user turn
    assert dataset.stats["no_supervised_tokens"] == 1


def test_data_check_counts_every_error_class(bad_set, processor, tmp_path):
    path, images = bad_set
    report = check_data([path], processor, image_root=images, progress=False)
    assert report.records == 1 + len(BAD_RECORDS)
    assert report.errors() == {kind: 1 for kind in BAD_RECORDS}
    for kind, (record, field) in BAD_RECORDS.items():
        assert record["id"] in report.first_errors[kind] and f"field '{field}'" in report.first_errors[kind]
    assert report.lengths and len(report.lengths) == 1


def test_data_check_command_exit_status_and_json(bad_set, processor, tmp_path, capsys):
    path, images = bad_set
    processor.save_pretrained(tmp_path / "proc")
    args = ["data", "check", str(path), "--image-root", str(images), "--tokenizer", str(tmp_path / "proc")]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "missing_image=1" in out
    assert main([*args, "--tolerate", *BAD_RECORDS, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == 6 and report["errors"]["corrupt_image"] == 1


def test_data_check_shows_the_label_mask(tmp_path, processor, capsys):
    paths = write_llava_set(tmp_path)
    processor.tokenizer.save_pretrained(tmp_path / "tok")
    n = processor.num_image_tokens
    args = [
        "data",
        "check",
        str(paths["pretrain"]),
        str(paths["instruct"]),
        "--image-root",
        str(paths["images"]),
        "--tokenizer",
        str(tmp_path / "tok"),
        "--image-tokens",
        str(n),
        "--show",
        "5",
        "--max-length",
        "4096",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "records read          5" in out
    assert f"[[{PRETRAIN[0]['conversations'][1]['value']}<|im_end|>]]" in out
    assert f"<image x{n}>" in out
    assert "images per record     0: 1  1: 3  2: 1" in out


@pytest.mark.e2e
def test_data_check_streams_a_large_file_with_a_progress_bar(tmp_path, processor):
    paths = write_llava_set(tmp_path)
    processor.save_pretrained(tmp_path / "proc")
    with (tmp_path / "big.jsonl").open("w") as f:
        for i in range(20_000):
            f.write(json.dumps({**PRETRAIN[i % 2], "id": str(i)}) + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "prealign.cli",
            "data",
            "check",
            str(tmp_path / "big.jsonl"),
            "--image-root",
            str(paths["images"]),
            "--tokenizer",
            str(tmp_path / "proc"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "records read          20000" in result.stdout
    assert "rec/s" in result.stderr or "rec]" in result.stderr  # tqdm's bar
