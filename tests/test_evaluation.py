"""Benchmark runner and report: prompts as in training, batched like one by one, resumable, compared."""

from __future__ import annotations

import json

import pytest
import torch

from prealign.cli import main
from prealign.data.records import DataError
from prealign.evaluation import BenchmarkItem, load_benchmark, run_benchmark, runner, score_items
from prealign.nano import NanoDataSpec, build_nano_data
from prealign.tiny import tiny_model

ITEMS = [
    {"id": "a", "question": "what colour is it?", "answer": "red", "scoring": "exact", "image": "0.png"},
    {"id": "b", "question": "how many?", "answer": "3", "scoring": "number", "image": "1.png"},
    {"id": "c", "question": "what is 2 plus 2?", "answer": "4", "scoring": "number"},
    {
        "id": "d",
        "question": "is it round? answer yes or no.",
        "answer": "yes",
        "scoring": "yes_no",
        "image": "2.png",
    },
    {"id": "e", "question": "A. red B. blue. which?", "answer": "B", "scoring": "choice"},
]
for item, kind in zip(ITEMS, ["colour", "count", "count", "yn", "mc"], strict=True):
    item["kind"] = kind


@pytest.fixture
def benchmark(tmp_path, images):
    for i, image in enumerate(images[:3]):
        image.save(tmp_path / f"{i}.png")
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(ITEMS))
    return path


@pytest.mark.parametrize("variant", ["baseline", "dpa"])
def test_batched_answers_equal_answers_one_by_one(variant, benchmark):
    # Left padding must not move any answer: positions, masks and the image spans line up.
    torch.manual_seed(0)
    model, processor = tiny_model(variant, early_fusion=variant == "dpa")
    model.eval()
    items = load_benchmark(benchmark)
    batched = runner.answer_batch(model, processor, items, benchmark.parent, benchmark, max_new_tokens=6)
    alone = [
        runner.answer_batch(model, processor, [item], benchmark.parent, benchmark, max_new_tokens=6)[0]
        for item in items
    ]
    assert batched == alone
    assert any(batched)  # the tiny model does say something


def test_an_interrupted_run_resumes_and_asks_each_item_once(benchmark, tmp_path, monkeypatch):
    model, processor = tiny_model("dpa")
    out = tmp_path / "out"
    first = run_benchmark(model, processor, benchmark, out, batch_size=2, max_new_tokens=4)
    predictions = out / "bench.predictions.jsonl"
    lines = predictions.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [item["id"] for item in ITEMS]
    # Interrupted after two items, in the middle of writing the third line.
    predictions.write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])
    asked = []
    answer_batch = runner.answer_batch

    def counting(model, processor, items, *args):
        asked.extend(item.id for item in items)
        return answer_batch(model, processor, items, *args)

    monkeypatch.setattr(runner, "answer_batch", counting)
    again = run_benchmark(model, processor, benchmark, out, batch_size=2, max_new_tokens=4)
    assert asked == ["c", "d", "e"]
    assert sorted(json.loads(line)["id"] for line in predictions.read_text().splitlines()) == sorted("abcde")
    assert again == first == json.loads((out / "bench.scores.json").read_text())


def test_predictions_of_unknown_origin_are_refused(benchmark, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "bench.predictions.jsonl").write_text(json.dumps({"id": "a", "prediction": "x"}) + "\n")
    model, processor = tiny_model("baseline")
    with pytest.raises(ValueError, match="no record of which model"):
        run_benchmark(model, processor, benchmark, out)


def test_another_models_predictions_are_never_scored_as_this_ones(benchmark, tmp_path):
    """Resuming by item id alone would score model A's answers as model B's."""
    torch.manual_seed(0)
    first, processor = tiny_model("baseline")
    torch.manual_seed(1)
    second, _ = tiny_model("baseline")
    out = tmp_path / "out"
    run_benchmark(first, processor, benchmark, out, max_new_tokens=4)
    with pytest.raises(ValueError, match="another model"):
        run_benchmark(second, processor, benchmark, out, max_new_tokens=4)
    with pytest.raises(ValueError, match="another max_new_tokens"):
        run_benchmark(first, processor, benchmark, out, max_new_tokens=5)
    fresh = run_benchmark(second, processor, benchmark, out, max_new_tokens=4, fresh=True)
    alone = run_benchmark(second, processor, benchmark, tmp_path / "alone", max_new_tokens=4)
    assert fresh == alone
    written = (out / "bench.predictions.jsonl").read_text()
    assert written == (tmp_path / "alone/bench.predictions.jsonl").read_text()


def test_scores_follow_each_items_rule():
    items = [BenchmarkItem(**item) for item in ITEMS]
    right = ["Red.", "there are 3", "4", "it is round, so yes", "B. blue"]
    perfect = score_items(items, right)
    assert perfect["accuracy"] == 1.0 and perfect["n"] == 5
    # Each kind's most common answer: right for the one-item kinds, for one of the two counts.
    assert perfect["majority"] == pytest.approx(4 / 5)
    assert set(perfect["kinds"]) == {"colour", "count", "yn", "mc"} and perfect["kinds"]["count"]["n"] == 2
    wrong = score_items(items, ["it is red", "3", "5", "no", "A"])  # exact: the whole answer
    assert wrong["accuracy"] == pytest.approx(1 / 5)
    assert wrong["kinds"]["yn"]["accuracy"] == 0 and wrong["kinds"]["yn"]["f1"] == 0
    mixed = [*items[:1], BenchmarkItem("x", "q", "yes", "yes_no", "colour")]
    with pytest.raises(ValueError, match="mixes scoring rules"):
        score_items(mixed, ["red", "yes"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"answer": None}, "answer"),
        ({"scoring": "fuzzy"}, "scoring"),
        ({"scoring": "number", "answer": "red"}, "answer"),
        ({"id": "b"}, "id"),
        ({"image": ["0.png", "1.png"]}, "image"),
    ],
)
def test_a_malformed_item_is_named_by_file_item_and_field(tmp_path, change, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([ITEMS[1], {**ITEMS[0], **change}]))
    with pytest.raises(DataError) as error:
        load_benchmark(path)
    assert error.value.field == field and "bad.json" in str(error.value)
    assert error.value.record == f"{change.get('id', 'a')} (#1)"


def test_a_missing_image_is_named(benchmark):
    (benchmark.parent / "1.png").unlink()
    model, processor = tiny_model("baseline")
    with pytest.raises(DataError, match=r"1\.png") as error:
        run_benchmark(model, processor, benchmark, benchmark.parent / "out")
    assert error.value.record == "b" and error.value.kind == "missing_image"


@pytest.mark.e2e
def test_eval_command_scores_the_nano_benchmarks_with_a_saved_model(tmp_path, capsys):
    data = tmp_path / "data"
    build_nano_data(data, NanoDataSpec(pretrain=2, instruct=2, corpus=2, benchmark=6, image_size=32))
    model, processor = tiny_model("dpa")
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    benches = [str(data / "bench" / f"{group}.json") for group in ("perception", "text")]
    code = main(
        ["eval", str(tmp_path / "model"), *benches, "--out", str(tmp_path / "eval"),
         "--image-root", str(data / "images"), "--max-new-tokens", "4"]
    )  # fmt: skip
    assert code == 0
    for group in ("perception", "text"):
        scores = json.loads((tmp_path / "eval" / f"{group}.scores.json").read_text())
        assert scores["n"] == 6 and 0 <= scores["accuracy"] <= 1
        assert sum(k["n"] for k in scores["kinds"].values()) == 6
    assert "accuracy" in capsys.readouterr().out


def _write_scores(folder, model: str, bench: str, accuracy: float) -> None:
    (folder / model).mkdir(parents=True, exist_ok=True)
    scores = {"accuracy": accuracy, "majority": {"perception": 0.25, "text": 0.5}[bench], "n": 10}
    (folder / model / f"{bench}.scores.json").write_text(json.dumps(scores))


def test_report_puts_models_side_by_side_and_plots_them(tmp_path, capsys):
    from PIL import Image

    from prealign.evaluation.report import collect_scores, format_report

    _write_scores(tmp_path, "baseline", "perception", 0.5)
    _write_scores(tmp_path, "baseline", "text", 0.25)
    _write_scores(tmp_path, "dpa", "perception", 0.75)  # no text score yet: no mean either
    table = format_report(collect_scores(tmp_path)).splitlines()
    assert table[0].split() == ["model", "perception", "text", "mean"]
    assert table[1].split() == ["baseline", "0.500", "0.250", "0.375"]
    assert table[2].split() == ["dpa", "0.750", "-", "-"]
    assert table[3].split() == ["majority", "answer", "0.250", "0.500", "0.375"]
    assert main(["report", str(tmp_path), "--plot", str(tmp_path / "plot.png")]) == 0
    assert "0.375" in capsys.readouterr().out
    with Image.open(tmp_path / "plot.png") as plot:
        assert plot.format == "PNG" and plot.width > 300 and plot.height > 300


def test_report_of_an_empty_folder_says_how_to_fill_it(tmp_path):
    from prealign.evaluation.report import collect_scores

    with pytest.raises(FileNotFoundError, match="prealign eval"):
        collect_scores(tmp_path)
