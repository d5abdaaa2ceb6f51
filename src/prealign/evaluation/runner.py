"""Run a prealign model on a benchmark file and score its answers, each item by its rule.

A benchmark is a JSON or JSONL list of items `{"id", "question", "answer", "scoring"}`, with an
optional `"image"` (relative to an image root) and `"kind"` (scores are reported per kind; other
fields are ignored). The nano world writes its benchmarks so; other sets convert to it. Prompts
go through the same chat template and placeholder expansion as training. Answers are appended to
a predictions JSONL as each batch finishes, so an interrupted run resumes where it stopped and
never asks an item twice. A resumed run continues only what the same model, benchmark file and
generation settings started (recorded beside the predictions); anything else is refused, since
scoring another model's answers as this one's would be silently wrong.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..data.records import DataError, RecordFile, load_record_image
from .answering import generate_answers
from .scoring import SCORING_RULES, extract_answer, score

REQUIRED_FIELDS = ("id", "question", "answer", "scoring")


@dataclass(frozen=True)
class BenchmarkItem:
    id: str
    question: str
    answer: str
    scoring: str
    kind: str
    image: str | None = None


def load_benchmark(path: str | Path) -> list[BenchmarkItem]:
    """Items of a benchmark file; a malformed item is an error naming the file, item and field."""
    records = RecordFile(path)
    items, seen = [], set()
    for index, record in enumerate(records):
        name = records.record_name(index, record)
        for field in REQUIRED_FIELDS:
            if not isinstance(record.get(field), str) or not record[field]:
                raise DataError("malformed_record", path, name, field, "missing or not a non-empty string")
        if record["scoring"] not in SCORING_RULES:
            raise DataError(
                "malformed_record",
                path,
                name,
                "scoring",
                f"unknown rule {record['scoring']!r}; known: {sorted(SCORING_RULES)}",
            )
        if extract_answer(record["scoring"], record["answer"]) is None:
            raise DataError("malformed_record", path, name, "answer", f"holds no {record['scoring']} answer")
        if record["id"] in seen:
            raise DataError("malformed_record", path, name, "id", "appears twice")
        seen.add(record["id"])
        image = record.get("image")
        if image is not None and not isinstance(image, str):
            raise DataError("malformed_record", path, name, "image", "must be one relative path")
        items.append(
            BenchmarkItem(
                record["id"],
                record["question"],
                record["answer"],
                record["scoring"],
                record.get("kind", record["scoring"]),
                image,
            )
        )
    return items


def answer_batch(
    model, processor, items: list[BenchmarkItem], image_root: Path, file: Path, max_new_tokens: int
) -> list[str]:
    """Greedy answers to a batch of items (`generate_answers`: the images first, left-padded)."""
    images = [
        [load_record_image(image_root, item.image, file, item.id)] if item.image else [] for item in items
    ]
    return generate_answers(model, processor, [item.question for item in items], images, max_new_tokens)


def score_items(items: list[BenchmarkItem], predictions: list[str]) -> dict:
    """Accuracy over all items against always answering each kind's most common answer, and per
    kind its rule's report (majority baseline, F1 for yes/no)."""
    by_kind: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_kind[item.kind].append(i)
    kinds = {}
    for kind, indices in sorted(by_kind.items()):
        rules = {items[i].scoring for i in indices}
        if len(rules) > 1:
            raise ValueError(f"kind {kind!r} mixes scoring rules {sorted(rules)}")
        kinds[kind] = score(
            rules.pop(), [predictions[i] for i in indices], [items[i].answer for i in indices]
        )
    return {
        "accuracy": sum(k["accuracy"] * k["n"] for k in kinds.values()) / len(items),
        # Always giving the most common answer of each item's kind: what accuracy must beat.
        "majority": sum(k["majority"] * k["n"] for k in kinds.values()) / len(items),
        "n": len(items),
        "kinds": kinds,
    }


def model_fingerprint(model) -> str:
    """A digest of the model's config and weights (per-tensor sums: cheap, and differs when any
    weight does), so predictions can be told apart by the model that made them."""
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        values = tensor.detach().float()
        digest.update(
            f"{name}{tuple(values.shape)}{values.sum().item():.9g}{values.abs().sum().item():.9g}".encode()
        )
    return digest.hexdigest()[:16]


def run_identity(model, processor, benchmark: Path, max_new_tokens: int) -> dict:
    """What the predictions of a run depend on."""
    template = processor.tokenizer.chat_template or ""
    return {
        "model": model_fingerprint(model),
        "benchmark_sha256": hashlib.sha256(benchmark.read_bytes()).hexdigest()[:16],
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest()[:16],
        "max_new_tokens": max_new_tokens,
    }


def _claim_predictions(predictions_file: Path, run_file: Path, identity: dict, fresh: bool) -> None:
    """Make sure existing predictions are this run's own, or start over when `fresh`."""
    if fresh:
        predictions_file.unlink(missing_ok=True)
    elif predictions_file.is_file() and predictions_file.stat().st_size:
        recorded = json.loads(run_file.read_text()) if run_file.is_file() else None
        if recorded != identity:
            differs = (
                "no record of which model, benchmark and settings made them"
                if recorded is None
                else "they were made with another "
                + ", ".join(k for k in identity if recorded.get(k) != identity[k])
            )
            raise ValueError(
                f"{predictions_file} holds predictions this run cannot continue: {differs}. Use another "
                "output folder, or start a fresh file (`prealign eval --fresh`, run_benchmark(fresh=True))."
            )
    run_file.write_text(json.dumps(identity, indent=1) + "\n")


def _finished(predictions_file: Path) -> dict[str, str]:
    """Predictions already written; a line cut off by an interruption is dropped and asked again."""
    if not predictions_file.is_file():
        return {}
    done, lines = {}, []
    for line in predictions_file.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        done[row["id"]] = row["prediction"]
        lines.append(line)
    predictions_file.write_text("".join(f"{line}\n" for line in lines))
    return done


def run_benchmark(
    model,
    processor,
    benchmark: str | Path,
    out_dir: str | Path,
    image_root: str | Path | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 32,
    fresh: bool = False,
) -> dict:
    """Answer every item of `benchmark` not answered yet in `out_dir`, then score them all.

    Image paths are relative to `image_root` (default: the benchmark's folder). Writes
    `<name>.predictions.jsonl` (a line per item, as it is answered), `<name>.run.json` (what made
    them) and `<name>.scores.json` in `out_dir`; returns the scores. `fresh` discards earlier
    predictions instead of continuing them."""
    benchmark, out_dir = Path(benchmark), Path(out_dir)
    items = load_benchmark(benchmark)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions_file = out_dir / f"{benchmark.stem}.predictions.jsonl"
    identity = run_identity(model, processor, benchmark, max_new_tokens)
    _claim_predictions(predictions_file, out_dir / f"{benchmark.stem}.run.json", identity, fresh)
    done = _finished(predictions_file)
    unknown = set(done) - {item.id for item in items}
    if unknown:
        raise ValueError(
            f"{predictions_file} holds ids that {benchmark} lacks (e.g. {sorted(unknown)[0]!r}): "
            "it belongs to another benchmark; use another output folder"
        )
    todo = [item for item in items if item.id not in done]
    root = Path(image_root) if image_root is not None else benchmark.parent
    model.eval()
    with (
        open(predictions_file, "a") as f,
        tqdm(total=len(items), initial=len(done), desc=benchmark.stem) as bar,
    ):
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            answers = answer_batch(model, processor, batch, root, benchmark, max_new_tokens)
            for item, answer in zip(batch, answers, strict=True):
                done[item.id] = answer
                row = {"id": item.id, "kind": item.kind, "prediction": answer, "answer": item.answer}
                f.write(json.dumps(row) + "\n")
            f.flush()
            bar.update(len(batch))
    scores = score_items(items, [done[item.id] for item in items])
    (out_dir / f"{benchmark.stem}.scores.json").write_text(
        json.dumps(scores, indent=1, sort_keys=True) + "\n"
    )
    return scores
