"""Reading LLaVA-format record files (JSON list or JSONL) lazily, and the errors bad input raises."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..images import to_rgb


class DataError(ValueError):
    """Bad input, located: which file, which record, which field."""

    def __init__(self, kind: str, file: str | Path, record: str, field: str, message: str):
        self.kind, self.file, self.record, self.field = kind, str(file), record, field
        super().__init__(f"{file}: record {record}: field '{field}': {message}")


class RecordFile:
    """Random access to the records of one JSON-list or JSONL file.

    The format is decided by the extension (`.jsonl`) or else by parsing: a file that holds one
    JSON value is a JSON list; one that holds several is JSONL. JSONL is indexed by byte offset
    and parsed record by record, so a million-record file costs one offset per record in memory.
    A JSON list has to be parsed whole (json offers no lazy access); either way nothing is
    tokenised until a record is asked for. A file with no records is an error, not an empty set.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such data file")
        self._records, self._offsets = None, None
        if self.path.suffix == ".jsonl":
            self._offsets = self._index_lines()
        else:
            self._records = self._parse_whole()
        if len(self) == 0:
            raise DataError("malformed_file", self.path, "-", "-", "holds no records")

    @property
    def is_jsonl(self) -> bool:
        return self._offsets is not None

    def _parse_whole(self) -> list | None:
        """The records of a JSON list; None (and the file indexed as JSONL) if it holds several values."""
        text = _utf8(self.path.read_bytes(), self.path, "-")
        if not text.strip():
            return []
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg == "Extra data":  # several JSON values one after another: JSONL
                self._offsets = self._index_lines()
                return None
            raise DataError("malformed_file", self.path, "-", "-", f"invalid JSON: {err}") from err
        if not isinstance(records, list):
            raise DataError(
                "malformed_file",
                self.path,
                "-",
                "-",
                f"holds a JSON {type(records).__name__}; a data file holds a list of records "
                "(or, as JSONL, one record per line)",
            )
        return records

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
                line = _utf8(f.readline(), self.path, f"#{index}")
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


def _utf8(data: bytes, file: Path, record: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        kind = "malformed_file" if record == "-" else "malformed_record"
        raise DataError(
            kind,
            file,
            record,
            "-",
            f"not UTF-8 text (byte {err.start} of the {'file' if record == '-' else 'line'})",
        ) from err


def image_paths(record: dict, file: str | Path = "-", name: str = "-") -> list[str]:
    """A record's images: LLaVA uses one relative path; some sets use a list."""
    image = record.get("image")
    if image is None:
        return []
    paths = [image] if isinstance(image, str) else image
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise DataError(
            "malformed_record", file, name, "image", f"must be a path or a list of paths, got {image!r}"
        )
    return paths


def resolve_image_path(
    root: Path, relative: str, file: Path, record: str, allow_outside_root: bool = False
) -> Path:
    """Where a record's image is; refuses paths that leave the image root unless allowed.

    A data file from elsewhere could otherwise make training read any file on the machine
    (`/etc/...`, `../../`, or a symlink out of the root).
    """
    if not isinstance(relative, str) or not relative:
        raise DataError(
            "malformed_record", file, record, "image", f"an image path must be a string: {relative!r}"
        )
    path = Path(root) / relative
    if allow_outside_root:
        return path
    if Path(relative).is_absolute():
        raise DataError(
            "unsafe_image_path",
            file,
            record,
            "image",
            f"absolute image path {relative!r}; paths are relative to the image root {root} "
            "(allow_outside_root=True to accept it)",
        )
    if not path.resolve().is_relative_to(Path(root).resolve()):
        raise DataError(
            "unsafe_image_path",
            file,
            record,
            "image",
            f"image path {relative!r} leads outside the image root {root} "
            "(allow_outside_root=True to accept it)",
        )
    return path


def load_record_image(
    root: Path, relative: str, file: Path, record: str, allow_outside_root: bool = False
) -> Image.Image:
    return _open_image(
        root, relative, file, record, allow_outside_root, lambda img: to_rgb(img, str(img.filename))
    )


def image_size(
    root: Path, relative: str, file: Path, record: str, allow_outside_root: bool = False
) -> tuple[int, int]:
    """(width, height) from the image file's header, without decoding its pixels."""
    return _open_image(root, relative, file, record, allow_outside_root, lambda img: img.size)


def _open_image(root: Path, relative: str, file: Path, record: str, allow_outside_root: bool, read):
    path = resolve_image_path(root, relative, file, record, allow_outside_root)
    if not path.is_file():
        raise DataError("missing_image", file, record, "image", f"image not found: {path}")
    try:
        with Image.open(path) as img:
            return read(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:  # ValueError: to_rgb's
        raise DataError("corrupt_image", file, record, "image", f"cannot decode {path}: {err}") from err
