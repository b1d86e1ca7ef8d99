"""Admission control: a bound on queries admitted at once, so overload is an answer, not latency.

Unary calls and batches are admitted whole or turned away at once with RESOURCE_EXHAUSTED
and a retry hint (how long the queue takes to drain at the recent pace), so a caller's
deadline is never spent waiting in an unbounded queue. Streams wait for room instead:
they are bulk work, and waiting stops the server reading the stream, which pushes back
on the sender through HTTP/2 flow control.
"""

from __future__ import annotations

import asyncio
import random
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
        # (time, queries) of recent completions: the pace behind the retry hint.
        self._done: deque[tuple[float, int]] = deque(maxlen=256)
        # When the queue last went from empty to busy: the pace counts busy time only, so
        # neither idle time nor the wait for the first batch of a burst skews it.
        self._busy_since = time.monotonic()
        self._last_rate: float | None = None
        self._rate_at = -1.0
        # When the callers turned away so far were told to come back (time.monotonic()).
        self._promised = 0.0
        self._jitter = random.Random()

    def completion_rate(self) -> float | None:
        """Queries answered per second of busy time over the last 10 s; None when unknown."""
        now = time.monotonic()
        if now - self._rate_at < 0.05:  # a burst of rejections reuses one estimate
            return self._last_rate
        self._rate_at = now
        start = max(now - 10.0, self._busy_since)
        if len(self._done) == self._done.maxlen:  # older completions fell out: count from the oldest kept
            start = max(start, self._done[0][0])
        done = sum(n for t, n in self._done if t > start)
        if done and now - start > 1e-3:
            self._last_rate = done / (now - start)
        # Nothing answered yet in this busy spell: the pace of the last one, if any.
        return self._last_rate

    def retry_after(self, n: int = 1) -> float:
        """Seconds after which `n` queries turned away now should come back; books their turn.

        gRPC waits out a pushback exactly, without jitter, so callers turned away together
        and told the same time would all come back together and be turned away again. Each
        rejection therefore books the next stretch of the recent completion rate: the first
        caller returns once enough admitted queries are done to fit it, the next one `n /
        rate` later, and so on. Past the upper bound, returns are spread over its second half.
        """
        now = time.monotonic()
        # Unknown pace (nothing answered yet): assume a full queue drains in a second.
        rate = self.completion_rate() or float(self.limit)
        drained = now + max(1, self.depth + n - self.limit) / rate
        start = max(drained, self._promised)
        # Bounded, so a past overload never pushes the callers of a later one far out.
        self._promised = min(start + n / rate, now + 2 * _MAX_RETRY_S)
        wait = start - now
        if wait > _MAX_RETRY_S:
            return self._jitter.uniform(_MAX_RETRY_S / 2, _MAX_RETRY_S)
        return max(_MIN_RETRY_S, wait)

    def try_acquire(self, n: int = 1) -> None:
        """Admit `n` queries now or raise Overloaded (RESOURCE_EXHAUSTED) with a retry hint."""
        if self.depth + n > self.limit:
            retry = self.retry_after(n)
            raise Overloaded(
                f"server is at capacity ({self.depth} of {self.limit} queries admitted (max_queue)); "
                f"retry in {retry:.2f}s",
                retry_after=retry,
            )
        self._admit(n)

    def admit_now(self, n: int = 1) -> bool:
        """Admit `n` queries if they fit now; False (and nothing else) if not."""
        if self.depth + n > self.limit:
            return False
        self._admit(n)
        return True

    async def acquire(self, n: int = 1) -> None:
        """Wait until `n` queries fit, then admit them."""
        if self.depth + n <= self.limit:
            self._admit(n)
            return
        self._waiting += 1
        try:
            async with self._room:
                await self._room.wait_for(lambda: self.depth + n <= self.limit)
                self._admit(n)
        finally:
            self._waiting -= 1

    def _admit(self, n: int) -> None:
        if self.depth == 0:
            self._busy_since = time.monotonic()
        self.depth += n

    def release(self, n: int = 1) -> None:
        self.depth -= n
        self._done.append((time.monotonic(), n))
        if self._waiting:  # wake stream readers waiting for room (rare: only under overload)
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._room:
            self._room.notify_all()
