"""lmms-eval's own command line, `--model prealign`, on a local task (a task YAML over a JSON
lines file and PNG images): the chat interface, a two-round document included, answers as the
library does, and lmms-eval scores it."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import random_image

from prealign.serving.conversation import Conversations
from prealign.tiny import tiny_model

pytestmark = pytest.mark.e2e

NEW_TOKENS = 4
TASK_UTILS = """
from PIL import Image


def doc_to_visual(doc):
    return [Image.open(doc["image"]).convert("RGB")]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def doc_to_messages(doc, lmms_eval_specific_kwargs=None):
    first = [{"type": "image", "url": doc_to_visual(doc)[0]}, {"type": "text", "text": doc["question"]}]
    messages = [{"role": "user", "content": first}]
    for earlier in doc["history"]:  # a multi-round document: the earlier rounds, then its question
        messages += [
            {"role": "assistant", "content": [{"type": "text", "text": earlier}]},
            {"role": "user", "content": [{"type": "text", "text": doc["follow_up"]}]},
        ]
    return messages
"""


def _task(folder: Path, data: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "utils.py").write_text(TASK_UTILS)
    (folder / "prealign_local.yaml").write_text(
        textwrap.dedent(
            f"""\
            task: prealign_local
            dataset_path: json
            dataset_kwargs:
              data_files:
                test: {data}
            test_split: test
            output_type: generate_until
            doc_to_visual: !function utils.doc_to_visual
            doc_to_text: !function utils.doc_to_text
            doc_to_messages: !function utils.doc_to_messages
            doc_to_target: answer
            generation_kwargs:
              max_new_tokens: {NEW_TOKENS}
              until: ["<|im_end|>"]
            metric_list:
              - metric: exact_match
                aggregation: mean
                higher_is_better: true
            metadata:
              version: 0.0
            """
        )
    )


def test_the_lmms_eval_command_runs_a_local_task_with_the_prealign_chat_model(tmp_path):
    pytest.importorskip("lmms_eval")  # tools/install_venv.sh installs it with what its command line needs
    model, processor = tiny_model("dpa")
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    docs = []
    for i, question in enumerate(["what colour is it?", "how many shapes?", "what is in the picture?"]):
        random_image(i).save(tmp_path / f"{i}.png")
        history = ["a square"] if i == 2 else []  # a two-round document
        docs.append({"image": str(tmp_path / f"{i}.png"), "question": question, "history": history})
        docs[-1]["follow_up"] = "and its colour?"
    # What the library answers to each document's messages.
    chat = Conversations(model.eval(), processor, feature_cache_images=0)
    expected = []
    for doc in docs:
        first = [{"type": "image", "image": doc["image"]}, {"type": "text", "text": doc["question"]}]
        messages = [{"role": "user", "content": first}]
        for earlier in doc["history"]:
            messages += [
                {"role": "assistant", "content": [{"type": "text", "text": earlier}]},
                {"role": "user", "content": [{"type": "text", "text": doc["follow_up"]}]},
            ]
        expected.append(chat.reply(messages, max_new_tokens=NEW_TOKENS, stop=["<|im_end|>"]).text.strip())
    # The first document's reference answer is the model's: lmms-eval must score it 1, the others 0.
    for doc, answer in zip(docs, [expected[0], "no such answer", "no such answer"], strict=True):
        doc["answer"] = answer
    data = tmp_path / "bench.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    _task(tmp_path / "tasks" / "prealign_local", data)
    command = [
        str(Path(sys.executable).parent / "lmms-eval"),
        "--model",
        "prealign",
        "--model_args",
        f"pretrained={tmp_path / 'model'},device=cpu,dtype=float32",
        "--tasks",
        "prealign_local",
        "--include_path",
        str(tmp_path / "tasks"),
        "--batch_size",
        "1",
        "--log_samples",
        "--output_path",
        str(tmp_path / "out"),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("*_results.json")]
    assert len(results) == 1 and "prealign_local" in results[0]["results"]
    score = results[0]["results"]["prealign_local"]["exact_match,none"]
    samples = [
        json.loads(line)
        for p in (tmp_path / "out").rglob("*samples_prealign_local*.jsonl")
        for line in p.open()
    ]
    assert {s["doc_id"]: s["filtered_resps"].strip() for s in samples} == dict(enumerate(expected))
    assert expected[1] != "no such answer" and expected[2] != "no such answer"
    assert score == pytest.approx(1 / 3)
