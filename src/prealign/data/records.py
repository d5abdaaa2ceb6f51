"""Reading LLaVA-format record files (JSON list or JSONL) lazily, and the errors bad input raises."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError


class DataError(ValueError):
    """Bad input, located: which file, which record, which field."""

    def __init__(self, kind: str, file: str | Path, record: str, field: str, message: str):
        self.kind, self.file, self.record, self.field = kind, str(file), record, field
        super().__init__(f"{file}: record {record}: field '{field}': {message}")


class RecordFile:
    """Random access to the records of one JSON-list or JSONL file.

    JSONL is indexed by byte offset and parsed record by record, so a million-record file costs
    one offset per record in memory. A JSON list has to be parsed whole (json offers no lazy
    access); either way nothing is tokenised until a record is asked for.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such data file")
        self.is_jsonl = self._looks_like_jsonl()
        if self.is_jsonl:
            self._offsets = self._index_lines()
            self._records = None
        else:
            with self.path.open(encoding="utf-8") as f:
                try:
                    records = json.load(f)
                except json.JSONDecodeError as err:
                    raise DataError("malformed_file", self.path, "-", "-", f"invalid JSON: {err}") from err
            if not isinstance(records, list):
                raise DataError("malformed_file", self.path, "-", "-", "a JSON data file must hold a list")
            self._records = records

    def _looks_like_jsonl(self) -> bool:
        if self.path.suffix == ".jsonl":
            return True
        with self.path.open("rb") as f:
            for line in f:
                if line.strip():
                    return not line.lstrip().startswith(b"[")
        return False

    def _index_lines(self) -> list[int]:
        offsets, position = [], 0
        with self.path.open("rb") as f:
            for line in f:
                if line.strip():
                    offsets.append(position)
                position += len(line)
        return offsets

    def __len__(self) -> int:
        return len(self._offsets) if self.is_jsonl else len(self._records)

    def __getitem__(self, index: int) -> dict:
        if not self.is_jsonl:
            record = self._records[index]
        else:
            with self.path.open("rb") as f:
                f.seek(self._offsets[index])
                line = f.readline()
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    "malformed_record", self.path, f"#{index}", "-", f"invalid JSON line: {err}"
                ) from err
        if not isinstance(record, dict):
            raise DataError("malformed_record", self.path, f"#{index}", "-", "a record must be a JSON object")
        return record

    def __iter__(self) -> Iterator[dict]:
        for index in range(len(self)):
            yield self[index]

    def record_name(self, index: int, record: dict | None) -> str:
        """How errors name a record: its id when it has one, else its position."""
        if isinstance(record, dict) and "id" in record:
            return f"{record['id']!s} (#{index})"
        return f"#{index}"


def image_paths(record: dict) -> list[str]:
    """A record's images: LLaVA uses one relative path; some sets use a list."""
    image = record.get("image")
    if image is None:
        return []
    return [image] if isinstance(image, str) else list(image)


def load_image(root: Path, relative: str, file: Path, record: str) -> Image.Image:
    path = root / relative
    if not path.is_file():
        raise DataError("missing_image", file, record, "image", f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError("corrupt_image", file, record, "image", f"cannot decode {path}: {err}") from err
