"""Bounded, unordered concurrent mapping: the flow control of every streaming path.

Used by the server's ClassifyStream and by `promptgate screen --local`: results come out as
they finish, and at most `window` items are taken from the input and not yet handed to the
consumer, so memory stays flat however long the input is and however slow the consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
_END = object()


async def map_unordered(
    items: AsyncIterable[T] | Iterable[T], fn: Callable[[T], Awaitable[R]], window: int
) -> AsyncIterator[R]:
    """Yield `fn(item)` for every item, in completion order, with at most `window` in hand.

    A slot is taken when an item is read and given back only once its result has been
    taken by the consumer. An exception from `fn` or from `items` ends the iteration with
    that exception; closing the iterator early cancels the work in flight.
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    slots = asyncio.Semaphore(window)
    done: asyncio.Queue[object] = asyncio.Queue()
    tasks: set[asyncio.Task[None]] = set()

    async def run(item: T) -> None:
        done.put_nowait(await fn(item))

    async def feed() -> None:
        try:
            if isinstance(items, AsyncIterable):
                async for item in items:
                    await slots.acquire()
                    _spawn(item)
            else:
                for item in items:
                    await slots.acquire()
                    _spawn(item)
            while tasks:
                await asyncio.gather(*tasks)
        finally:
            done.put_nowait(_END)

    def _spawn(item: T) -> None:
        task = asyncio.create_task(run(item))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    feeder = asyncio.create_task(feed())
    try:
        while (result := await done.get()) is not _END:
            yield result  # type: ignore[misc]
            slots.release()
        await feeder  # surfaces a failure of the input or of fn
    finally:
        feeder.cancel()
        for task in list(tasks):
            task.cancel()
