"""VLMEvalKit, the paper's harness, run for real on a prealign model.

VLMEvalKit cannot live in the main environment (its torchvision changes transformers' image
preprocessing), so it has its own: `make vlmeval-venv` builds `.venv-vlmeval` from
requirements/vlmeval-lock.txt (`make test` builds it first). There `prealign vlmeval` runs
VLMEvalKit's own inference and `exact_matching` evaluation on a nano benchmark exported with
`prealign bench-to-tsv`; the same items, as VLMEvalKit prompts them, are then answered and scored
by `prealign eval` here, and both must give the same answers and the same accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from prealign.cli import main
from prealign.evaluation import run_benchmark
from prealign.evaluation.tsv import split_options
from prealign.nano.data import NanoDataSpec, build_nano_data
from prealign.tiny import tiny_model

ROOT = Path(__file__).parents[1]
VENV = ROOT / ".venv-vlmeval"
HERE = Path(__file__).parent / "vlmeval_env"


def test_options_are_read_from_a_choice_question_wherever_they_stand():
    assert split_options("which one? A. red B. blue C. green. answer with the letter.") == (
        "which one? answer with the letter.",
        {"A": "red", "B": "blue", "C": "green"},
    )
    assert split_options("A. red B. blue. which letter is the colour of the circle?") == (
        "which letter is the colour of the circle?",
        {"A": "red", "B": "blue"},
    )
    assert split_options("how many? A. one C. three") is None  # not A, B, ...
    assert split_options("how many objects are there?") is None


def test_prealign_vlmeval_without_vlmeval_says_how_to_install_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["vlmeval", "--help"])
    assert exit_info.value.code == 0
    assert "VLMEvalKit's own command line" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"pip install 'prealign\[vlmeval\]'"):
        main(["vlmeval", "some/model", "--data", "MMStar"])


@pytest.mark.e2e
def test_vlmeval_scores_a_nano_benchmark_as_prealign_eval_does(tmp_path):
    if not (VENV / ".prealign-installed").is_file():
        pytest.skip(f"{VENV} is missing: `make vlmeval-venv` builds it (`make test` does)")
    build_nano_data(
        tmp_path / "data", NanoDataSpec(pretrain=2, instruct=2, corpus=2, benchmark=24, image_size=32)
    )
    choice = [
        item
        for group in ("general", "perception", "reasoning")
        for item in json.loads((tmp_path / "data/bench" / f"{group}.json").read_text())
        if item["scoring"] == "choice"
    ]
    (tmp_path / "choice.json").write_text(json.dumps(choice))
    # A tiny model that always answers with one option letter, its own pick among A-D: answers that
    # both harnesses read the same way, and an accuracy that is neither 0 nor 1.
    model, processor = tiny_model("dpa")
    letters = processor.tokenizer.convert_tokens_to_ids(list("ABCD"))
    model.generation_config.sequence_bias = [[[token], 20.0] for token in letters]
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    lmu = tmp_path / "LMUData"
    assert main(["bench-to-tsv", str(tmp_path / "choice.json"), str(lmu / "nano_choice.tsv"),
                 "--image-root", str(tmp_path / "data/images")]) == 0  # fmt: skip
    env = {**os.environ, "LMUData": str(lmu)}
    python = str(VENV / "bin/python")
    run = subprocess.run(
        [python, str(HERE / "run_prealign.py"), "vlmeval", "--max-new-tokens", "1", str(tmp_path / "model"),
         "--data", "nano_choice", "--judge", "exact_matching", "--work-dir", str(tmp_path / "work")],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    items_script = str(HERE / "vlmeval_items.py")
    found = subprocess.run(
        [python, items_script, "nano_choice", str(tmp_path / "work"), str(tmp_path / "v.json")],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr[-3000:]
    vlmeval = json.loads((tmp_path / "v.json").read_text())
    assert len(vlmeval["items"]) == len(choice) and "Options:\nA. " in vlmeval["items"][0]["question"]
    (tmp_path / "as_vlmeval_asks.json").write_text(json.dumps(vlmeval["items"]))
    ours = run_benchmark(
        model.eval(),
        processor,
        tmp_path / "as_vlmeval_asks.json",
        tmp_path / "eval",
        image_root=lmu,
        max_new_tokens=1,
    )
    predictions = [json.loads(line) for line in (tmp_path / "eval/as_vlmeval_asks.predictions.jsonl").open()]
    assert {p["id"]: p["prediction"] for p in predictions} == vlmeval["predictions"]
    assert 0 < ours["accuracy"] < 1
    assert ours["accuracy"] == pytest.approx(vlmeval["accuracy"], abs=1e-12)
