"""Test support: tiny local models, a real server on port 0 in a background thread, and what the
tests share (`server_config`, `wait_until`, `scrape`). conftest.py holds the fixtures only."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from bench._util import free_port as free_port  # re-exported: the tests take their ports from here
from promptgate.server import ServerConfig, create_server
from promptgate.server.app import ServerHandle

REPO = Path(__file__).resolve().parent.parent


def _shared_data() -> Path:
    """The labelled data set: `../shared/data` beside this checkout, or beside the repository it
    was cloned from (CI runs on a fresh clone elsewhere); PROMPTGATE_SHARED_DATA overrides."""
    import os
    import subprocess

    if os.environ.get("PROMPTGATE_SHARED_DATA"):
        return Path(os.environ["PROMPTGATE_SHARED_DATA"])
    candidates = [REPO.parent / "shared" / "data"]
    origin = subprocess.run(
        ["git", "-C", str(REPO), "config", "--get", "remote.origin.url"], capture_output=True, text=True
    ).stdout.strip()
    if origin and Path(origin).is_dir():  # a clone of a local repository
        candidates.append(Path(origin).resolve().parent / "shared" / "data")
    return next((c for c in candidates if (c / "train.jsonl").is_file()), candidates[0])


SHARED_DATA = _shared_data()
T = TypeVar("T")
# Prometheus samples: {(sample name, sorted (label, value) pairs): value}.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def corpus_files() -> list[Path]:
    """Real labelled queries to train the tiny tokenizer on, where the checkout has them."""
    train = SHARED_DATA / "train.jsonl"
    return [train] if train.exists() else []


def make_tiny_model(out_dir: Path, profile: str = "promptgate") -> Path:
    """A tiny random Qwen3-shaped model speaking `profile`, its tokenizer trained on corpus_files()."""
    from promptgate.trainer.tiny_model import build_tiny_model

    return build_tiny_model(out_dir, profile=profile, corpus_files=corpus_files())


def server_config(model: Path, **overrides: object) -> ServerConfig:
    """The tests' server: the tiny model on the transformers engine, 127.0.0.1 port 0, metrics off.

    Tests that read metrics pass `metrics_port=0` and read the port bound from the handle.
    The result cache is off: tests of load, cancellation and backpressure send the same text
    many times and mean the engine to work on each; the cache's own tests turn it on.
    """
    values: dict[str, object] = {
        "model": str(model),
        "host": "127.0.0.1",
        "port": 0,
        "engine": "transformers",
        "max_rationale_tokens": 12,
        "max_text_chars": 2000,
        "max_batch_items": 1000,
        "log_level": "warning",
        "metrics_port": None,
        "result_cache_size": None,
    }
    values.update(overrides)
    return ServerConfig(**values)  # type: ignore[arg-type]


class BackgroundServer:
    """A real promptgate server on 127.0.0.1:0, running its own event loop in a thread.

    The loop lives apart from the tests' so blocking clients (`Client`) and asyncio clients
    (`AsyncClient`) can both call it. `load=False` leaves the model unloaded (UNAVAILABLE).
    """

    def __init__(self, config: ServerConfig, *, load: bool = True) -> None:
        self.config = config
        self._load = load
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="promptgate-test-server", daemon=True)
        self.handle: ServerHandle | None = None

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        self.handle = self.run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _start(self) -> ServerHandle:
        handle = create_server(self.config)
        await handle.start()
        if self._load:
            await handle.load()
        return handle

    async def load_now(self) -> None:
        assert self.handle is not None
        await self.handle.load()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 300) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def target(self) -> str:
        assert self.handle is not None
        return f"127.0.0.1:{self.handle.port}"

    def stop(self) -> None:
        if self.handle is not None:
            self.run(self.handle.close(grace=1.0))
            self.handle = None
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


def wait_serving(target: str, timeout: float = 180) -> None:
    """Poll the standard health service until the whole server reports SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.RpcError):
                if (
                    health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return
            time.sleep(0.2)
    raise AssertionError(f"{target} never became SERVING")


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `predicate` until it holds; fail after `timeout` seconds, saying what was awaited."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def scrape(where: int | BackgroundServer) -> Samples:
    """The /metrics of a metrics port on 127.0.0.1, or of a background server's, over HTTP."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    if isinstance(where, BackgroundServer):
        assert where.handle is not None and where.handle.metrics_port, "the server serves no metrics"
        where = where.handle.metrics_port
    text = httpx.get(f"http://127.0.0.1:{where}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def word_tokens(text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """A stand-in tokenizer with the serving encoder's shape (`encode_text_with_offsets`): a
    token per word or run of spaces, with its characters."""
    import re

    spans = [m.span() for m in re.finditer(r"\S+|\s+", text)]
    return list(range(len(spans))), spans
