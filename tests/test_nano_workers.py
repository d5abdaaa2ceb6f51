"""The nano commands' worker processes end with the command, however it is stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STARTS_A_LONG_TASK = """
import os, time
from prealign.nano.workers import worker_pool
pool = worker_pool(1)
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 300)
time.sleep(300)
"""


def _running(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir() and Path("/proc/self").exists():
        # A reaped process has no entry; an orphan nobody reaped yet is a zombie ("Z"), not running.
        return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_worker_exits_when_the_command_that_started_it_is_killed(how):
    command = subprocess.Popen([sys.executable, "-c", STARTS_A_LONG_TASK], stdout=subprocess.PIPE, text=True)
    worker = int(command.stdout.readline())
    try:
        time.sleep(0.5)
        assert _running(worker), "the worker should be busy with its task while the command lives"
        command.send_signal(how)
        command.wait(timeout=30)
        deadline = time.monotonic() + 20
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(worker), f"worker {worker} outlived the command killed by {how.name}"
    finally:
        command.kill()
        if _running(worker):
            os.kill(worker, signal.SIGKILL)
