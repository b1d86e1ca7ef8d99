"""`promptgate serve --engine vllm` as a process: serves, and exits non-zero when the engine dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from promptgate.client import Client

from ..support import free_port, wait_serving


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def test_engine_death_turns_not_serving_and_exits_non_zero(tiny_model: Path) -> None:
    port = free_port()
    cmd = [
        sys.executable, "-m", "promptgate.cli", "serve", "--model", str(tiny_model), "--engine", "vllm",
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager", "true",
        "--kv-cache-memory-gib", "0.5", "--max-model-len", "2048", "--grace-period", "2",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_serving(f"127.0.0.1:{port}")
        with Client(f"127.0.0.1:{port}", timeout=60) as client:
            assert client.model_info().engine == "vllm"
            assert client.classify("hello", mode="fast").mode.value == "fast"
        engine_processes = _descendants(proc.pid)
        assert engine_processes, "vLLM runs its engine core in child processes"
        # On CPU the engine's processes run 10 below the server, every thread of them, so
        # that their spin-waits give way to the front end (engine/priority.py).
        named = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in engine_processes}
        for name in ("VLLM::EngineCor", "VLLM::Worker"):  # comm is cut to 15 characters
            assert any(v.startswith(name) for v in named.values()), named
        expected = min(19, os.getpriority(os.PRIO_PROCESS, proc.pid) + 10)
        for pid in engine_processes:
            threads = [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]
            assert {os.getpriority(os.PRIO_PROCESS, tid) for tid in threads} == {expected}, named[pid]
        for pid in engine_processes:
            os.kill(pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, stderr[-3000:]
    events = [json.loads(line).get("event") for line in stderr.splitlines() if line.startswith("{")]
    assert "engine died" in events
    assert events.index("engine died") < events.index("shutting down") < events.index("stopped")
