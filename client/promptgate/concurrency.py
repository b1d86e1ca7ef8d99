"""Bounded, unordered concurrent mapping: the flow control of every streaming path.

Used by the server's ClassifyStream and by `promptgate screen --local` (`map_unordered_batches`,
which starts the items that are ready together): results come out as they finish, and at most
`window` items are taken from the input and not yet handed to the consumer, so memory stays
flat however long the input is and however slow the consumer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
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


async def map_unordered_batches(
    items: AsyncIterable[T] | Iterable[T],
    start: Callable[[list[T]], Awaitable[Sequence[Awaitable[R]]]],
    window: int,
    *,
    gather: int = 1,
    linger: float = 0.0,
) -> AsyncIterator[R]:
    """`map_unordered`, with the items that are ready started together.

    `start(batch)` begins the work on a list of items and returns one awaitable per item. The
    items read while the last batch was being started, or while results were being taken,
    make the next batch, so a fast input is started in batches as large as the room in the
    window, and a slow one an item at a time. The window, the order and the errors are as in
    `map_unordered`: a slot is taken when an item is read and given back once its result has
    been taken.

    `gather`, `linger`: while earlier items are still running, a batch smaller than `gather`
    waits up to `linger` seconds for more items to arrive. An input that arrives an item at
    a time (a gRPC stream is read one message per event-loop turn) is then started in groups,
    and the wait costs nothing while the work in flight keeps the engine busy. With nothing
    in flight a batch starts at once.
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    if gather < 1 or linger < 0:
        raise ValueError("gather must be >= 1 and linger >= 0")
    slots = asyncio.Semaphore(window)
    ready: asyncio.Queue[object] = asyncio.Queue()  # read, not started
    done: asyncio.Queue[object] = asyncio.Queue()  # finished futures, then _END
    running: set[asyncio.Future[R]] = set()

    async def feed() -> None:
        try:
            if isinstance(items, AsyncIterable):
                async for item in items:
                    await slots.acquire()
                    ready.put_nowait(item)
            else:
                for item in items:
                    await slots.acquire()
                    ready.put_nowait(item)
        finally:
            ready.put_nowait(_END)

    def finished(future: asyncio.Future[R]) -> None:
        running.discard(future)
        done.put_nowait(future)

    async def gather_more(batch: list[object]) -> None:
        """Add the items that arrive within `linger`, until the batch has `gather` (or the end)."""
        try:
            async with asyncio.timeout(linger):
                while len(batch) < gather and batch[-1] is not _END:
                    batch.append(await ready.get())  # cancelled by the timeout: no item is lost
                    while not ready.empty():
                        batch.append(ready.get_nowait())
        except TimeoutError:
            pass

    async def starter() -> None:
        try:
            ended = False
            while not ended:
                batch = [await ready.get()]
                while not ready.empty():
                    batch.append(ready.get_nowait())
                if running and len(batch) < gather and batch[-1] is not _END and linger > 0:
                    await gather_more(batch)
                if batch[-1] is _END:
                    ended = True
                    batch.pop()
                if batch:
                    for work in await start(batch):  # type: ignore[arg-type]
                        future = asyncio.ensure_future(work)
                        running.add(future)
                        future.add_done_callback(finished)
            while running:
                await asyncio.wait(set(running))
        finally:
            done.put_nowait(_END)

    feeder = asyncio.create_task(feed())
    starting = asyncio.create_task(starter())
    try:
        while (future := await done.get()) is not _END:
            yield future.result()  # type: ignore[attr-defined]
            slots.release()
        await feeder  # surfaces a failure of the input
        await starting  # or of start
    finally:
        feeder.cancel()
        starting.cancel()
        for future in list(running):
            future.cancel()
