"""Requests answered together and in turns: the server's one worker over the model.

Every request becomes a job in one queue that a single thread works through, so the model is
never used by two threads. A greedy request without stop strings or streaming is batchable: the
worker starts it with the other batchable jobs waiting at that moment (up to `max_batch`, as many as
fit the context together) as one batch; any other job is started alone (continuing from the
previous reply's KV cache where it can). Started replies take turns: each generates `slice_tokens`
new tokens, then the next waiting job is started and the next reply continues, so a long reply
delays the others by its share rather than by its length; a batch's replies are answered as each
ends, and leave the batch. A job whose client stopped waiting is skipped; a reply whose every
client's time is up ends where it stands.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from .conversation import Conversations, Prompt
from .generation import Generation


@dataclass
class Job:
    prompt: Prompt
    options: dict
    deadline: float
    streamer: object | None = None
    future: Future = field(default_factory=Future)

    @property
    def batchable(self) -> bool:
        return self.streamer is None and not self.options["stop"] and self.options["temperature"] == 0


@dataclass
class _Turn:
    """A started reply and the jobs it answers."""

    generation: Generation
    jobs: list[Job]


class Batcher:
    """One worker thread answering jobs in batches and in turns of `slice_tokens` new tokens
    (0: each reply runs to its end before the next starts)."""

    def __init__(self, conversations: Conversations, max_batch: int, slice_tokens: int = 0):
        self.conversations = conversations
        self.max_batch = max_batch
        self.slice_tokens = slice_tokens or None
        self._jobs: deque[Job] = deque()
        self._ready = threading.Condition()
        threading.Thread(target=self._work, daemon=True, name="prealign-batcher").start()

    def submit(self, job: Job) -> Future:
        with self._ready:
            self._jobs.append(job)
            self._ready.notify()
        return job.future

    def _next(self, wait: bool) -> list[Job]:
        """The oldest job, and the batchable jobs waiting with it that fit one batch when it is
        batchable; waits for one when `wait`, else may give none."""
        with self._ready:
            while wait and not self._jobs:
                self._ready.wait()
            if not self._jobs:
                return []
            first = self._jobs.popleft()
            batch = [first]
            if first.batchable:
                for job in list(self._jobs):
                    if len(batch) == self.max_batch:
                        break
                    together = [j.prompt for j in batch] + [job.prompt]
                    if job.batchable and self.conversations.fit_together(together):
                        self._jobs.remove(job)
                        batch.append(job)
        return [job for job in batch if job.future.set_running_or_notify_cancel()]

    def _start(self, jobs: list[Job]) -> _Turn | None:
        try:
            if len(jobs) == 1 and not jobs[0].batchable:
                job, options = jobs[0], jobs[0].options
                generation = self.conversations.start(
                    job.prompt, options["temperature"], options["top_p"], options["stop"], job.streamer
                )
            else:
                generation = self.conversations.start_batch([job.prompt for job in jobs])
        except Exception as error:  # handed to each waiting request, which answers for it
            for job in jobs:
                job.future.set_exception(error)
            return None
        return _Turn(generation, jobs)

    def _work(self) -> None:
        turns: deque[_Turn] = deque()
        while True:
            if (jobs := self._next(wait=not turns)) and (turn := self._start(jobs)):
                turns.append(turn)
            if not turns:
                continue
            turn = turns.popleft()
            time_left = max(job.deadline for job in turn.jobs) - time.monotonic()
            try:
                if time_left > 0:
                    turn.generation.advance(self.slice_tokens, max_time=time_left)
                ended = turn.generation.take_ended(every=time_left <= 0)
            except Exception as error:
                for job in turn.jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            for row, reply in ended:
                turn.jobs[row].future.set_result(reply)
            if turn.generation.rows:
                turns.append(turn)
