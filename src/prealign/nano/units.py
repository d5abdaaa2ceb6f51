"""Cached, resumable units of work: each records the inputs it was made from.

A unit is a folder with `unit.json`: a key (the hash of its inputs, upstream units' keys among
them), whether it finished, its result and its wall time. Run again, a finished unit whose inputs
are unchanged is reused; one whose inputs changed is removed and made again (and with it, through
the keys, everything downstream); an unfinished one is continued by its maker (a training stage
resumes from its newest Trainer checkpoint), so a run killed anywhere loses at most the unit in
progress' work since its last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RECORD = "unit.json"


def key_of(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class UnitResult:
    key: str
    result: dict
    wall_s: float
    reused: bool


@dataclass
class Units:
    """Runs units under `root`, prints a progress line per unit and keeps their wall times."""

    root: Path
    total: int | None = None  # for the progress line's "i/n"
    done: dict[str, UnitResult] = field(default_factory=dict)

    def run(self, name: str, inputs: dict, make: Callable[[Path], dict]) -> UnitResult:
        folder = self.root / name
        record_path = folder / RECORD
        key = key_of(inputs)
        record = json.loads(record_path.read_text()) if record_path.is_file() else None
        position = f"[{len(self.done) + 1}/{self.total}]" if self.total else f"[{len(self.done) + 1}]"
        if record and record["key"] == key and record.get("finished"):
            result = UnitResult(key, record["result"], record["wall_s"], reused=True)
            print(f"{position} {name}: reused ({record['wall_s']:.0f} s when made)", flush=True)
        else:
            if record and record["key"] != key:
                print(f"{position} {name}: inputs changed, making it again", flush=True)
                shutil.rmtree(folder)
            elif record:
                print(f"{position} {name}: continuing an interrupted run", flush=True)
            else:
                print(f"{position} {name}: running", flush=True)
            folder.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter() - (record or {}).get("wall_s", 0.0)
            record_path.write_text(json.dumps({"key": key, "inputs": inputs, "finished": False}, default=str))
            outcome = make(folder)
            wall = round(time.perf_counter() - started, 1)
            record_path.write_text(
                json.dumps(
                    {"key": key, "inputs": inputs, "finished": True, "result": outcome, "wall_s": wall},
                    indent=1,
                    default=str,
                )
                + "\n"
            )
            result = UnitResult(key, outcome, wall, reused=False)
            print(f"{position} {name}: done in {wall:.0f} s", flush=True)
        self.done[name] = result
        return result
