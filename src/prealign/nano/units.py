"""Cached, resumable units of work: each records the inputs it was made from.

A unit is a folder with `unit.json`: a key (the hash of its inputs, upstream units' keys among
them), whether it finished, its result and its wall time. Run again, a finished unit whose inputs
are unchanged is reused; one whose inputs changed is removed and made again (and with it, through
the keys, everything downstream); an unfinished one is continued by its maker (a training stage
resumes from its newest Trainer checkpoint), so a run killed anywhere loses at most the unit in
progress' work since its last checkpoint.

The terminal gets one line per unit - what it is, how long it took, the run's elapsed time and
an estimate of what is left - while everything a unit prints (its Trainer's logs and progress
bars, its workers' output, upstream warnings) goes to `unit.log` in its folder (`verbose`: the
terminal). The estimate scales each remaining unit's expected seconds by how this machine has
done so far against the units' expected seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

RECORD = "unit.json"
LOG = "unit.log"


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
    """Runs units under `root`, prints a line per unit and keeps their wall times. `expected_s` is
    what the planned units take on the reference machine, for the estimate of the time left."""

    root: Path
    total: int | None = None  # for the progress line's "i/n"
    expected_s: float = 0.0  # the planned units' expected seconds, all together
    verbose: bool = False
    done: dict[str, UnitResult] = field(default_factory=dict)

    def __post_init__(self):
        self._start = time.perf_counter()
        self._expected_done = 0.0  # expected seconds of the units done (made or reused)
        self._expected_made, self._made_s = 0.0, 0.0  # of the units made in this run: expected, taken

    def run(
        self, name: str, inputs: dict, make: Callable[[Path], dict], expected_s: float = 0.0
    ) -> UnitResult:
        folder = self.root / name
        record_path = folder / RECORD
        key = key_of(inputs)
        record = json.loads(record_path.read_text()) if record_path.is_file() else None
        position = f"[{len(self.done) + 1}/{self.total}]" if self.total else f"[{len(self.done) + 1}]"
        if record and record["key"] == key and record.get("finished"):
            result = UnitResult(key, record["result"], record["wall_s"], reused=True)
            self._expected_done += expected_s
            self._line(f"{position} {name}: reused ({record['wall_s']:.0f} s when made)")
        else:
            if record and record["key"] != key:
                how = "inputs changed, making it again"
                shutil.rmtree(folder)
            else:
                how = "continuing an interrupted run" if record else "running"
            print(f"{position} {name}: {how} ...", end="" if not self.verbose else "\n", flush=True)
            folder.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter() - (record or {}).get("wall_s", 0.0)
            record_path.write_text(json.dumps({"key": key, "inputs": inputs, "finished": False}, default=str))
            this_run = time.perf_counter()
            with _output_to(None if self.verbose else folder / LOG):
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
            self._expected_done += expected_s
            self._expected_made += expected_s
            self._made_s += time.perf_counter() - this_run
            self._line(f"{'' if not self.verbose else f'{position} {name}:'} done in {wall:.0f} s")
        self.done[name] = result
        return result

    def _line(self, text: str) -> None:
        elapsed = time.perf_counter() - self._start
        left = max(0.0, self.expected_s - self._expected_done)
        if self._expected_made > 0:
            left *= self._made_s / self._expected_made  # this machine against the expected times
        estimate = f"; about {_minutes(left)} left" if self.expected_s and left >= 1 else ""
        print(f"{text} | {_minutes(elapsed)} elapsed{estimate}", flush=True)


def _minutes(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


@contextlib.contextmanager
def _output_to(log: Path | None) -> Iterator[None]:
    """This process's output - Python's and its libraries' and children's (file descriptors 1
    and 2) - into `log` while the block runs; a failure names the log on the terminal."""
    if log is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    failed = True
    with open(log, "a") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                yield
            failed = False
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if failed:
                print(f"\n(the unit stopped; its output is in {log})", file=sys.stderr, flush=True)
