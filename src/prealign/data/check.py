"""`prealign data check`: validate a data set before anyone spends GPU hours on it."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..processing import PROCESSOR_FILE, PrealignProcessor
from .encoding import IGNORE_INDEX, ROLES, RecordSkipped
from .llava import DataSource, LlavaDataset
from .records import DataError, RecordFile, image_paths, resolve_image_path

ERROR_CLASSES = (
    "malformed_file",
    "malformed_record",
    "unknown_role",
    "placeholder_mismatch",
    "template_mismatch",
    "unsafe_image_path",
    "missing_image",
    "corrupt_image",
    "image_span_cut",
    "no_supervised_tokens",
)


FILE_STATS = ("records", "usable", "replies", "supervised_replies", "supervised_tokens")


@dataclass
class CheckReport:
    records: int = 0
    counts: Counter = field(default_factory=Counter)
    lengths: list[int] = field(default_factory=list)
    images_per_record: Counter = field(default_factory=Counter)
    first_errors: dict[str, str] = field(default_factory=dict)
    shown: list[str] = field(default_factory=list)
    # Per data file: records read, usable, replies in the usable ones, replies and tokens supervised.
    files: dict[str, Counter] = field(default_factory=dict)

    def record_error(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        self.first_errors.setdefault(kind, message)

    def errors(self, tolerate: set[str] = frozenset()) -> dict[str, int]:
        return {k: self.counts[k] for k in ERROR_CLASSES if self.counts[k] and k not in tolerate}

    def to_dict(self) -> dict:
        lengths = sorted(self.lengths)
        return {
            "records": self.records,
            "usable": len(lengths),
            "trimmed": self.counts["trimmed"],
            "errors": {k: self.counts[k] for k in ERROR_CLASSES},
            "first_error_of_each_kind": self.first_errors,
            "token_length": _distribution(lengths),
            "images_per_record": {str(k): v for k, v in sorted(self.images_per_record.items())},
            "files": {path: {k: stats[k] for k in FILE_STATS} for path, stats in self.files.items()},
        }


def _distribution(values: list[int]) -> dict[str, float]:
    if not values:
        return {}

    def pct(q: float) -> int:
        return values[min(len(values) - 1, int(q * len(values)))]

    return {
        "min": values[0],
        "p50": pct(0.5),
        "p90": pct(0.9),
        "p99": pct(0.99),
        "max": values[-1],
        "mean": round(statistics.fmean(values), 1),
    }


def processor_for_check(tokenizer: str | Path, image_tokens: int | None = None) -> PrealignProcessor:
    """What a check reads records with: a saved PrealignProcessor (its span length unless
    `image_tokens` says otherwise), or a plain tokenizer with the span length given."""
    if (Path(tokenizer) / PROCESSOR_FILE).is_file():
        processor = PrealignProcessor.from_pretrained(tokenizer)
        processor.num_image_tokens = image_tokens or processor.num_image_tokens
        return processor
    if not image_tokens:
        raise ValueError(f"{tokenizer} is a plain tokenizer; pass --image-tokens N (features per image).")
    from transformers import AutoTokenizer

    return PrealignProcessor(None, AutoTokenizer.from_pretrained(tokenizer), num_image_tokens=image_tokens)


def check_data(
    files: list[str | Path],
    processor: PrealignProcessor,
    image_root: str | Path | None = None,
    max_length: int | None = None,
    show: int = 0,
    prompt_format: str = "chat",
    progress: bool = True,
    allow_outside_root: bool = False,
) -> CheckReport:
    """Read every record of every file once and count what is wrong with it."""
    report = CheckReport()
    for path in files:
        try:
            dataset = LlavaDataset(
                [DataSource(path, image_root, allow_outside_root=allow_outside_root)],
                processor,
                max_length=max_length,
                prompt_format=prompt_format,
            )
        except DataError as err:
            report.record_error(err.kind, str(err))
            continue
        file = dataset.files[0]
        stats = report.files.setdefault(str(path), Counter())
        for r in tqdm(range(len(file)), desc=f"checking {Path(path).name}", unit="rec", disable=not progress):
            report.records += 1
            stats["records"] += 1
            _check_record(dataset, file, r, report, show, stats)
    return report


def _check_record(
    dataset: LlavaDataset, file: RecordFile, r: int, report: CheckReport, show: int, stats: Counter
) -> None:
    try:
        record = file[r]
        name = file.record_name(r, record)
        paths = image_paths(record, file.path, name)
        report.images_per_record[len(paths)] += 1
        root = Path(dataset.sources[0].image_root or file.path.parent)
        allow = dataset.sources[0].allow_outside_root
        image_ok = all([_check_image(root, p, file.path, name, report, allow) for p in paths])
        if not image_ok and dataset.processor.native_resolution:
            return  # its spans' lengths come from its images' sizes
        sample = dataset.encode_record(record, file.path, name, dataset.image_tokens_of(0, record, name))
    except DataError as err:
        report.record_error(err.kind, str(err))
        return
    except RecordSkipped as skipped:
        report.record_error(skipped.kind, f"{file.path}: record {name}: {skipped}")
        return
    if not image_ok:
        return
    report.counts["trimmed"] += sample.trimmed
    report.lengths.append(len(sample.input_ids))
    supervised = [label != IGNORE_INDEX for label in sample.labels]
    stats["usable"] += 1
    stats["replies"] += sum(ROLES.get(turn.get("from")) == "assistant" for turn in record["conversations"])
    stats["supervised_replies"] += sum(
        now and not before for before, now in zip([False, *supervised[:-1]], supervised, strict=True)
    )
    stats["supervised_tokens"] += sum(supervised)
    if len(report.shown) < show:
        report.shown.append(
            f"--- {file.path.name} record {name}\n" + render_labels(sample, dataset.processor)
        )


def _check_image(root: Path, relative: str, file: Path, name: str, report: CheckReport, allow: bool) -> bool:
    path = resolve_image_path(root, relative, file, name, allow)  # a DataError the caller counts
    if not path.is_file():
        report.record_error("missing_image", f"{file}: record {name}: field 'image': image not found: {path}")
        return False
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        report.record_error(
            "corrupt_image", f"{file}: record {name}: field 'image': cannot decode {path}: {err}"
        )
        return False
    return True


def render_labels(sample, processor: PrealignProcessor) -> str:
    """The sample as text, supervised spans in [[...]], each image span collapsed to one marker."""
    ids = processor.token_ids()
    image_ids = {ids["image_token_id"], ids["image_start_token_id"], ids["image_end_token_id"]}
    pieces, run, supervised = [], [], None
    image_tokens = iter(sample.image_tokens)

    def flush():
        if run:
            text = processor.tokenizer.decode(run)
            pieces.append(f"[[{text}]]" if supervised else text)

    for token, label in zip(sample.input_ids, sample.labels, strict=True):
        if token in image_ids:
            if token == ids["image_start_token_id"]:
                flush()
                run, supervised = [], None
                pieces.append(f"<image x{next(image_tokens)}>")
            continue
        is_supervised = label != IGNORE_INDEX
        if is_supervised != supervised:
            flush()
            run, supervised = [], is_supervised
        run.append(token)
    flush()
    return "".join(pieces)


def format_report(report: CheckReport, tolerate: set[str]) -> str:
    d = report.to_dict()
    rows = [("records read", d["records"]), ("usable", d["usable"]), ("trimmed to fit", d["trimmed"])]
    for kind in ERROR_CLASSES:
        mark = " (tolerated)" if kind in tolerate and d["errors"][kind] else ""
        rows.append((kind, f"{d['errors'][kind]}{mark}"))
    if d["token_length"]:
        rows.append(("token length", "  ".join(f"{k} {v}" for k, v in d["token_length"].items())))
    rows.append(("images per record", "  ".join(f"{k}: {v}" for k, v in d["images_per_record"].items())))
    for path, stats in d["files"].items():
        rows.append((Path(path).name, "  ".join(f"{k.replace('_', ' ')} {v}" for k, v in stats.items())))
    lines = [f"{name:<22}{value}" for name, value in rows]
    lines += [f"first {kind}: {message}" for kind, message in d["first_error_of_each_kind"].items()]
    return "\n".join(lines + report.shown)
