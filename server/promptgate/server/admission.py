"""Admission control: a bound on queries admitted at once, so overload is an answer, not latency.

Unary calls and batches are admitted whole or turned away at once with RESOURCE_EXHAUSTED
and a retry hint (how long the queue takes to drain at the recent pace), so a caller's
deadline is never spent waiting in an unbounded queue. Streams wait for room instead:
they are bulk work, and waiting stops the server reading the stream, which pushes back
on the sender through HTTP/2 flow control.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from .errors import Overloaded

__all__ = ["Admission", "Overloaded"]

_MIN_RETRY_S, _MAX_RETRY_S = 0.05, 5.0


class Admission:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.depth = 0
        self._room = asyncio.Condition()
        self._waiting = 0
        # Completion times of recent queries: the drain rate behind the retry hint.
        self._done: deque[float] = deque(maxlen=256)

    def retry_after(self) -> float:
        """Seconds until the queue has room at the recent completion rate, clamped."""
        now = time.monotonic()
        recent = [t for t in self._done if now - t < 10.0]
        if len(recent) < 2:
            return 1.0
        rate = (len(recent) - 1) / max(recent[-1] - recent[0], 1e-3)
        excess = max(1, self.depth - self.limit + 1)
        return min(_MAX_RETRY_S, max(_MIN_RETRY_S, excess / rate))

    def try_acquire(self, n: int = 1) -> None:
        """Admit `n` queries now or raise Overloaded (RESOURCE_EXHAUSTED) with a retry hint."""
        if self.depth + n > self.limit:
            raise Overloaded(
                f"server is at capacity ({self.depth} of {self.limit} queries admitted (max_queue)); "
                f"retry in {self.retry_after():.2f}s",
                retry_after=self.retry_after(),
            )
        self.depth += n

    async def acquire(self, n: int = 1) -> None:
        """Wait until `n` queries fit, then admit them."""
        if self.depth + n <= self.limit:
            self.depth += n
            return
        self._waiting += 1
        try:
            async with self._room:
                await self._room.wait_for(lambda: self.depth + n <= self.limit)
                self.depth += n
        finally:
            self._waiting -= 1

    def release(self, n: int = 1) -> None:
        self.depth -= n
        now = time.monotonic()
        self._done.extend([now] * min(n, 32))
        if self._waiting:  # wake stream readers waiting for room (rare: only under overload)
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._room:
            self._room.notify_all()
