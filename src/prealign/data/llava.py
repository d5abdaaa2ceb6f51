"""`LlavaDataset`: LLaVA-format records -> model samples, lazily, several files mixed with weights."""

from __future__ import annotations

import random
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..image_span import IMAGE_PLACEHOLDER, span_length
from ..processing import PrealignProcessor
from .encoding import (
    IGNORE_INDEX,
    EncodedSample,
    PromptFormat,
    RecordSkipped,
    check_markers,
    encode_chat,
    encode_plain,
    expand_images,
    to_messages,
    truncate,
)
from .records import DataError, RecordFile, image_paths, image_size, load_record_image


@dataclass(frozen=True)
class DataSource:
    """One record file, the folder its image paths are relative to, and its mixing weight.

    A weight of 2 uses every record twice, 0.5 a fixed random half. Image paths that leave the
    image root (absolute, `../`, a symlink out of it) are refused unless `allow_outside_root`.
    """

    path: str | Path
    image_root: str | Path | None = None
    weight: float = 1.0
    allow_outside_root: bool = False


class LlavaDataset(Dataset):
    """Map-style dataset over LLaVA JSON/JSONL files; a record is tokenised only when asked for.

    `on_error="raise"` (the default) stops at the first bad record with a `DataError` naming file,
    record and field; `"skip"` returns `None` for it (the collator drops it) and counts it in
    `stats`. Records that truncation cannot shorten without cutting an image span, and records
    left with no supervised token, are always skipped, counted and warned about - never trained on
    silently. `keep_in_memory` keeps every encoded sample after its first use, so later epochs skip
    the tokenising and image decoding (for data sets small enough to hold, trained several epochs).
    """

    def __init__(
        self,
        sources: list[DataSource | str | Path],
        processor: PrealignProcessor,
        max_length: int | None = None,
        prompt_format: PromptFormat = "chat",
        on_error: str = "raise",
        seed: int = 0,
        keep_in_memory: bool = False,
    ):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        processor.check_configured()
        self.sources = [s if isinstance(s, DataSource) else DataSource(s) for s in sources]
        self.files = [RecordFile(s.path) for s in self.sources]
        self.processor = processor
        self.max_length = max_length
        self.prompt_format = prompt_format
        self.on_error = on_error
        self.stats: Counter[str] = Counter()
        self.index = self._mix(seed)
        self.kept: dict[int, dict] | None = {} if keep_in_memory else None

    def _mix(self, seed: int) -> list[tuple[int, int]]:
        rng = random.Random(seed)
        index = []
        for f, (source, records) in enumerate(zip(self.sources, self.files, strict=True)):
            whole, part = divmod(source.weight, 1)
            index += [(f, r) for _ in range(int(whole)) for r in range(len(records))]
            if part:
                index += [(f, r) for r in sorted(rng.sample(range(len(records)), round(part * len(records))))]
        return index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict | None:
        if self.kept is not None and i in self.kept:
            sample = self.kept[i]
            self.stats["trimmed" if sample["trimmed"] else "ok"] += 1
            return sample
        f, r = self.index[i]
        try:
            sample = self.encode(f, r)
        except DataError as err:
            self.stats[err.kind] += 1
            if self.on_error == "raise":
                raise
            return None
        except RecordSkipped as skipped:
            self.stats[skipped.kind] += 1
            warnings.warn(f"{self.files[f].path}: record #{r} skipped: {skipped}", stacklevel=2)
            return None
        self.stats["trimmed" if sample["trimmed"] else "ok"] += 1
        if self.kept is not None:
            self.kept[i] = sample
        return sample

    def encode(self, f: int, r: int, load_images: bool = True) -> dict:
        """One record as a sample dict; raises DataError / RecordSkipped."""
        file, source = self.files[f], self.sources[f]
        record = file[r]
        name = file.record_name(r, record)
        paths = image_paths(record, file.path, name)
        if paths and load_images:
            root = self._image_root(f)
            images = [load_record_image(root, p, file.path, name, source.allow_outside_root) for p in paths]
            image_inputs, image_tokens = self.processor.process_images(images)
        else:
            image_inputs, image_tokens = {}, self.image_tokens_of(f, record, name)
        encoded = self.encode_record(record, file.path, name, image_tokens)
        return {
            "input_ids": torch.tensor(encoded.input_ids),
            "labels": torch.tensor(encoded.labels),
            "num_images": len(encoded.image_tokens),
            "image_tokens": encoded.image_tokens,
            "instruction": encoded.instruction,
            "trimmed": encoded.trimmed,
            **image_inputs,
        }

    def _image_root(self, f: int) -> Path:
        source = self.sources[f]
        return Path(source.image_root) if source.image_root else self.files[f].path.parent

    def image_tokens_of(self, f: int, record: dict, name: str) -> list[int]:
        """N of each image of a record of file `f`, without decoding them: the fixed count, or
        (native resolution) the count for the size its file's header gives."""
        file = self.files[f].path
        paths = image_paths(record, file, name)
        if not self.processor.native_resolution:
            return [self.processor.image_token_count(0, 0)] * len(paths)
        allow = self.sources[f].allow_outside_root
        sizes = [image_size(self._image_root(f), p, file, name, allow) for p in paths]
        return [self.processor.image_token_count(width, height) for width, height in sizes]

    def encode_record(self, record: dict, file: Path, name: str, image_tokens: list[int]) -> EncodedSample:
        """A record as target ids and labels, its images (`image_tokens`: N of each) as whole spans."""
        processor = self.processor
        messages = to_messages(record, file, name)
        paths = image_paths(record, file, name)
        placeholders = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages)
        if placeholders != len(paths):
            raise DataError(
                "placeholder_mismatch",
                file,
                name,
                "conversations",
                f"{placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but {len(paths)} image(s) in 'image'",
            )
        if self.prompt_format == "plain":
            ids, labels = encode_plain(messages, processor, len(paths))
        else:
            try:
                ids, labels = encode_chat(messages, processor)
            except ValueError as err:
                raise DataError("template_mismatch", file, name, "conversations", str(err)) from err
        try:
            ids, labels = expand_images(ids, labels, processor, image_tokens)
            check_markers(ids, processor, len(image_tokens))
        except ValueError as err:  # image tokens typed in the text
            raise DataError("placeholder_mismatch", file, name, "conversations", str(err)) from err
        trimmed = False
        if self.max_length is not None:
            end_id = processor.image_span(processor.tokenizer).end
            ids, labels, trimmed = truncate(ids, labels, self.max_length, end_id)
        if all(label == IGNORE_INDEX for label in labels):
            raise RecordSkipped("no_supervised_tokens", "no assistant token is left to learn from")
        return EncodedSample(ids, labels, image_tokens, processor.perceiver_instruction(messages), trimmed)

    def approximate_lengths(self) -> list[int]:
        """Cheap per-sample length estimates (words + image spans) for length-grouped batching.

        Tokenising a million records to sort them would take longer than it saves; like LLaVA we
        estimate from word counts, with each image counted at its full span (a native-resolution
        tower's from the image file's header).
        """
        return [self._approximate_length(f, r) for f, r in self.index]

    def _approximate_length(self, f: int, r: int) -> int:
        file = self.files[f]
        try:
            record = file[r]
            turns = record.get("conversations")
            words = sum(len(str(t.get("value", "")).split()) for t in turns if isinstance(t, dict))
            image_tokens = self.image_tokens_of(f, record, file.record_name(r, record))
            return words + sum(span_length(n) for n in image_tokens)
        except (DataError, TypeError):
            return 0  # a malformed record: reported (or skipped) when it is read, not here
