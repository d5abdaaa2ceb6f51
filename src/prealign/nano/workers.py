"""Worker processes that end with the process that started them.

`prealign nano run` trains each stage in a fresh process and `prealign nano backbones --jobs N`
makes parts side by side. A `kill` of the command (SIGTERM to it alone, where Ctrl-C signals the
whole process group) would leave those workers running as orphans: they keep the cores busy and go
on writing checkpoints into the folder that the next run resumes from.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PARENT_POLL_S = 1.0


def worker_pool(max_workers: int) -> ProcessPoolExecutor:
    """A pool of spawned processes (each starts with a clean heap and imports) that exit within
    about a second of their parent's death, however it died."""
    return ProcessPoolExecutor(
        max_workers=max_workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    )


def _exit_with_parent(parent: int) -> None:
    # Polling the parent's pid works on every POSIX system (Linux's PR_SET_PDEATHSIG does not);
    # os._exit because the main thread is busy training and cannot be asked to return.
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
