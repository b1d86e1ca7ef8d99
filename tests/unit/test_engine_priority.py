"""The engine's processes run below the front end: `lower_priority` on real processes and threads."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from promptgate.server.engine.priority import descendants, lower_priority

# A child with three threads (the main one and two that sleep), like an engine process.
_CHILD = """
import threading, time
for _ in range(2):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""


def _niceness_of_threads(pid: int) -> list[int]:
    return [os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in os.listdir(f"/proc/{pid}/task")]


@pytest.fixture
def child() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="per-thread niceness is Linux's")
def test_every_thread_of_the_processes_is_lowered_and_capped_at_19(child: subprocess.Popen[str]) -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert child.pid in descendants()
    assert _niceness_of_threads(child.pid) == [own] * 3
    assert lower_priority({child.pid}, 5) == {child.pid: min(19, own + 5)}
    assert _niceness_of_threads(child.pid) == [min(19, own + 5)] * 3
    # Added again: from where it is now, never past the lowest priority.
    assert lower_priority({child.pid}, 30) == {child.pid: 19}
    assert _niceness_of_threads(child.pid) == [19] * 3


def test_a_process_that_has_ended_is_skipped() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    time.sleep(0.1)
    assert lower_priority({proc.pid}, 5) == {}
