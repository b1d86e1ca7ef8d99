"""Test support: tiny local models and a real server on port 0 in a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

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


def corpus_files() -> list[Path]:
    """Real labelled queries to train the tiny tokenizer on, where the checkout has them."""
    train = SHARED_DATA / "train.jsonl"
    return [train] if train.exists() else []


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
