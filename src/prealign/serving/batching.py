"""Requests that arrive together, answered together: the server's one worker over the model.

Every request becomes a job in one queue that a single thread works through, so the model is
never used by two threads. A greedy request without stop strings or streaming is batchable: the
worker takes it with the other batchable jobs waiting at that moment (up to `max_batch`) and answers
them with one `Conversations.reply_batch`; any other job is answered alone by `Conversations.reply`
(which reuses the previous request's KV cache). A job whose client stopped waiting is skipped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field

from .conversation import Conversations


@dataclass
class Job:
    messages: list[dict]
    options: dict
    deadline: float
    streamer: object | None = None
    future: Future = field(default_factory=Future)

    @property
    def batchable(self) -> bool:
        return self.streamer is None and not self.options["stop"] and self.options["temperature"] == 0


class Batcher:
    """One worker thread answering jobs; batchable jobs waiting together share a `generate`."""

    def __init__(self, conversations: Conversations, max_batch: int):
        self.conversations = conversations
        self.max_batch = max_batch
        self._jobs: deque[Job] = deque()
        self._ready = threading.Condition()
        threading.Thread(target=self._work, daemon=True, name="prealign-batcher").start()

    def submit(self, job: Job) -> Future:
        with self._ready:
            self._jobs.append(job)
            self._ready.notify()
        return job.future

    def _next(self) -> list[Job]:
        """The oldest job, and the batchable jobs waiting with it when it is batchable."""
        with self._ready:
            while not self._jobs:
                self._ready.wait()
            first = self._jobs.popleft()
            batch = [first]
            if first.batchable:
                for job in list(self._jobs):
                    if len(batch) == self.max_batch:
                        break
                    if job.batchable:
                        self._jobs.remove(job)
                        batch.append(job)
        return [job for job in batch if job.future.set_running_or_notify_cancel()]

    def _work(self) -> None:
        while True:
            jobs = self._next()
            if not jobs:
                continue
            try:
                if len(jobs) == 1 and not jobs[0].batchable:
                    job = jobs[0]
                    remaining = max(0.01, job.deadline - time.monotonic())
                    replies = [
                        self.conversations.reply(
                            job.messages, streamer=job.streamer, max_time=remaining, **job.options
                        )
                    ]
                else:
                    replies = self.conversations.reply_batch(
                        [job.messages for job in jobs], [job.options["max_new_tokens"] for job in jobs]
                    )
            except Exception as error:  # handed to each waiting request, which answers for it
                for job in jobs:
                    job.future.set_exception(error)
                continue
            for job, reply in zip(jobs, replies, strict=True):
                job.future.set_result(reply)
