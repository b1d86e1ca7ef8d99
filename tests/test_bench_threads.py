"""bench.threads' reading of /proc: each thread's CPU and context switches, per query."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from bench.threads import per_query, thread_times

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/task")


def test_the_thread_that_worked_is_charged_busiest_first_and_the_main_thread_is_the_event_loop() -> None:
    pid = os.getpid()
    before = thread_times(pid)
    spun, stop = threading.Event(), threading.Event()

    def busy() -> None:
        deadline = time.thread_time() + 0.3
        while time.thread_time() < deadline:
            pass
        spun.set()
        stop.wait()  # stays alive, so its /proc entry is still there to read

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        assert spun.wait(30)
        after = thread_times(pid)
    finally:
        stop.set()
        worker.join()
    rows = per_query(before, after, pid, n=10)
    charged = next(r for r in rows if r["thread"].endswith(f" {worker.native_id}"))
    assert charged["cpu_ms_per_query"] >= 20  # at least 0.3 s over 10 queries, give or take a tick
    assert rows[0] is charged  # busiest first: the main thread mostly waited
    # Over the process's whole life the main thread has worked: it is the one named the event loop.
    assert "event loop" in [r["thread"] for r in per_query({}, after, pid, n=1)]
