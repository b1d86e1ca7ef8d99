"""The flow control of the streaming paths: `map_unordered` and `map_unordered_batches`."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from promptgate.concurrency import map_unordered_batches


async def test_ready_items_start_together_within_the_window() -> None:
    batches: list[list[int]] = []
    in_hand = 0
    most = 0

    async def start(batch: list[int]) -> list[asyncio.Future[int]]:
        nonlocal in_hand, most
        batches.append(batch)
        in_hand += len(batch)
        most = max(most, in_hand)

        async def one(x: int) -> int:
            await asyncio.sleep(0.001 * (x % 3))
            return x * 2

        return [asyncio.ensure_future(one(x)) for x in batch]

    out = []
    async for y in map_unordered_batches(range(100), start, window=16):
        in_hand -= 1
        out.append(y)
    assert sorted(out) == [2 * x for x in range(100)]
    assert most <= 16
    assert batches[0] == list(range(16))  # a fast input fills the window in one batch
    assert [x for b in batches for x in b] == list(range(100))


async def test_a_slow_input_is_started_an_item_at_a_time() -> None:
    async def slow():
        for x in range(5):
            await asyncio.sleep(0.005)
            yield x

    batches: list[list[int]] = []

    async def start(batch: list[int]) -> list[asyncio.Future[int]]:
        batches.append(batch)
        return [asyncio.ensure_future(asyncio.sleep(0, x)) for x in batch]

    assert sorted([y async for y in map_unordered_batches(slow(), start, window=8)]) == list(range(5))
    assert batches == [[x] for x in range(5)]


async def test_while_work_is_in_flight_an_item_at_a_time_input_is_gathered_into_groups() -> None:
    """As a gRPC stream arrives (one message per event-loop turn): `gather` groups it while the
    first item's work runs; without it, every item starts alone."""

    async def one_per_turn():
        for x in range(10):
            await asyncio.sleep(0)
            yield x

    async def batches_of(**gathering: float) -> list[list[int]]:
        release = asyncio.Event()
        batches: list[list[int]] = []

        async def work(x: int) -> int:
            if x == 0:
                await release.wait()  # in flight until the rest has been started
            return x

        async def start(batch: list[int]) -> list[asyncio.Future[int]]:
            batches.append(batch)
            if batch[-1] == 9:
                release.set()
            return [asyncio.ensure_future(work(x)) for x in batch]

        out = [y async for y in map_unordered_batches(one_per_turn(), start, window=16, **gathering)]
        assert sorted(out) == list(range(10))
        return batches

    assert await batches_of() == [[x] for x in range(10)]
    assert await batches_of(gather=4, linger=5.0) == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]


async def test_a_batch_waits_no_longer_than_linger_and_not_at_all_with_nothing_in_flight() -> None:
    async def spaced():
        for x in range(3):
            await asyncio.sleep(0.05)
            yield x

    async def start(batch: list[int]) -> list[asyncio.Future[int]]:
        return [asyncio.ensure_future(asyncio.sleep(0, x)) for x in batch]

    # Each item's work ends before the next arrives: nothing waits for the 60 s linger.
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert [y async for y in map_unordered_batches(spaced(), start, window=8, gather=32, linger=60.0)] == [0, 1, 2]
    assert loop.time() - began < 5

    async def stuck(batch: list[int]) -> list[asyncio.Future[int]]:
        return [asyncio.ensure_future(asyncio.sleep(3600 if x == 0 else 0, x)) for x in batch]

    # With the first item stuck in flight, the second still starts once the linger is over.
    stream = map_unordered_batches(spaced(), stuck, window=8, gather=32, linger=0.01)
    assert await asyncio.wait_for(stream.__anext__(), 5) == 1
    await stream.aclose()


async def test_gathering_settings_are_checked() -> None:
    async def start(batch: list[int]) -> list[asyncio.Future[int]]:
        return [asyncio.ensure_future(asyncio.sleep(0, x)) for x in batch]

    for bad in ({"gather": 0}, {"linger": -1.0}):
        with pytest.raises(ValueError, match="gather must be >= 1 and linger >= 0"):
            await map_unordered_batches(range(3), start, window=4, **bad).__anext__()  # type: ignore[arg-type]


async def test_failures_end_the_iteration_and_closing_cancels_the_work() -> None:
    async def start(batch: list[int]) -> list[asyncio.Future[int]]:
        async def one(x: int) -> int:
            if x == 3:
                raise ValueError("three")
            return x

        return [asyncio.ensure_future(one(x)) for x in batch]

    with pytest.raises(ValueError, match="three"):
        async for _ in map_unordered_batches(range(10), start, window=4):
            pass

    started: list[asyncio.Future[None]] = []

    async def forever(batch: list[int]) -> list[asyncio.Future[None]]:
        started.extend(asyncio.ensure_future(asyncio.sleep(3600)) for _ in batch)
        return started[-len(batch) :]

    stream = map_unordered_batches(range(10), forever, window=4)
    task = asyncio.ensure_future(stream.__anext__())
    await asyncio.sleep(0.01)
    task.cancel()  # the consumer gives up: the generator's cleanup cancels the work in flight
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert started and all(f.cancelled() for f in started)

    def bad_input():
        yield 1
        raise RuntimeError("bad input")

    with pytest.raises(RuntimeError, match="bad input"):
        async for _ in map_unordered_batches(bad_input(), start, window=4):
            pass
