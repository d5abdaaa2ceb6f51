"""A prealign benchmark file as a VLMEvalKit dataset: `prealign bench-to-tsv BENCH OUT.tsv`.

VLMEvalKit reads a dataset it does not know from `$LMUData/NAME.tsv`: one row per item with
`index`, `question`, `answer`, the image as base64 in `image` (no column for text-only data), and
the options in columns `A`, `B`, ... for a multiple-choice set - which VLMEvalKit can score with
`--judge exact_matching`; without options it is an open-question set it can only answer.
"""

from __future__ import annotations

import base64
import csv
import re
from pathlib import Path

from ..data.records import DataError
from .runner import load_benchmark

# "... A. red B. blue C. green D. yellow ...": an option letter that opens a word after a space.
OPTION = re.compile(r"(?:^|\s)([A-Z])\.\s")


def split_options(question: str) -> tuple[str, dict[str, str]] | None:
    """A choice question's text and its options A, B, ... (in order, from A), or None when its
    options are not written as "A. ... B. ...". The last option ends at its first sentence; the
    question is what stands before the options and after them."""
    marks = list(OPTION.finditer(question))
    letters = [m.group(1) for m in marks]
    if not letters or letters != [chr(ord("A") + i) for i in range(len(letters))]:
        return None
    options, after = {}, ""
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        text = question[mark.end() : following.start() if following else len(question)].strip()
        if following is None:
            text, _, after = text.partition(". ")
        options[mark.group(1)] = text.rstrip(".").strip()
    stem = " ".join(part for part in (question[: marks[0].start()].strip(), after.strip()) if part)
    return stem, options


def benchmark_to_tsv(benchmark: str | Path, out: str | Path, image_root: str | Path | None = None) -> Path:
    """Write `benchmark` as a VLMEvalKit TSV; returns `out`. All items choice-scored (with options
    written "A. ... B. ...") make a multiple-choice set; anything else an open-question one."""
    benchmark, out = Path(benchmark), Path(out)
    items = load_benchmark(benchmark)
    root = Path(image_root) if image_root is not None else benchmark.parent
    with_image = {item.image is not None for item in items}
    if len(with_image) > 1:
        raise ValueError(
            f"{benchmark}: some items have an image and some not; a VLMEvalKit dataset is one or the other."
        )
    split = [split_options(item.question) if item.scoring == "choice" else None for item in items]
    choice = all(s is not None for s in split)
    letters = sorted({letter for s in split if s for letter in s[1]}) if choice else []
    columns = [
        "index",
        "question",
        "answer",
        "category",
        *(["image"] if True in with_image else []),
        *letters,
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        writer.writeheader()
        for index, (item, parts) in enumerate(zip(items, split, strict=True)):
            row = {"index": index, "answer": item.answer, "category": item.kind}
            row["question"], options = parts if choice else (item.question, {})
            row.update(options)
            if item.image is not None:
                path = root / item.image
                if not path.is_file():
                    raise DataError("missing_image", benchmark, item.id, "image", f"image not found: {path}")
                row["image"] = base64.b64encode(path.read_bytes()).decode()
            writer.writerow(row)
    return out
