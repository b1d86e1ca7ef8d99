"""Overload and abandoned work on a real server: bounded admission, retry pushback, deadlines, slow readers.

The queue is filled deterministically by "hogs": REASONED calls with a rationale bound of
thousands of tokens, which the tiny random model never ends early (it does not write
`</think>`), so they hold their admission slots until they are cancelled. Every wait is
a poll with a bound, never a sleep that assumes a speed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from promptgate.client import AsyncClient, Client, ResourceExhaustedError, ServiceError, Verdict
from promptgate.v1 import classifier_pb2 as pb
from promptgate.v1 import classifier_pb2_grpc as pb_grpc

from ..support import BackgroundServer, scrape, server_config, wait_until

MAX_QUEUE = 8
PUSHBACK_KEY = "grpc-retry-pushback-ms"


def depth(srv: BackgroundServer) -> int:
    assert srv.handle is not None
    return srv.handle.servicer.admission.depth


def engine_idle(srv: BackgroundServer) -> bool:
    assert srv.handle is not None and srv.handle.screening is not None
    stats = srv.handle.screening.stats()
    return stats.running == 0 and stats.queued == 0 and depth(srv) == 0


@pytest.fixture(scope="module")
def hog_server(tiny_model: Path) -> Iterator[BackgroundServer]:
    """max_queue 8, and a rationale bound so long that a REASONED call runs until cancelled."""
    config = server_config(
        tiny_model, max_queue=MAX_QUEUE, max_batch_items=MAX_QUEUE, max_rationale_tokens=4000, metrics_port=0
    )
    with BackgroundServer(config) as srv:
        yield srv


@pytest.fixture
def stub(hog_server: BackgroundServer) -> Iterator[pb_grpc.ClassifierServiceStub]:
    with grpc.insecure_channel(hog_server.target) as channel:
        yield pb_grpc.ClassifierServiceStub(channel)


@contextlib.contextmanager
def hogs(srv: BackgroundServer, stub: pb_grpc.ClassifierServiceStub, n: int) -> Iterator[list[grpc.Future]]:
    """`n` admitted queries that run until the block ends; then they are cancelled and drained."""
    assert depth(srv) == 0
    futures = [stub.Classify.future(pb.ClassifyRequest(text=f"hog {i}", mode=pb.MODE_REASONED)) for i in range(n)]
    try:
        wait_until(lambda: depth(srv) == n, what=f"{n} hogs admitted")
        yield futures
    finally:
        for f in futures:
            f.cancel()
        wait_until(lambda: engine_idle(srv), what="the engine and the queue to drain after the hogs")


def test_full_queue_rejects_at_once_with_pushback_and_request_id(
    hog_server: BackgroundServer, stub: pb_grpc.ClassifierServiceStub
) -> None:
    before = scrape(hog_server)
    with hogs(hog_server, stub, MAX_QUEUE):
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify.with_call(
                pb.ClassifyRequest(text="one more"), timeout=30, metadata=(("x-request-id", "overload-1"),)
            )
        # Turned away at once, not after waiting in a queue for the deadline.
        assert time.monotonic() - started < 10
        error = info.value
        assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert f"{MAX_QUEUE} of {MAX_QUEUE}" in error.details() and "max_queue" in error.details()
        trailers = dict(error.trailing_metadata())
        assert trailers["x-request-id"] == "overload-1"
        pushback_ms = int(trailers[PUSHBACK_KEY])
        assert 50 <= pushback_ms <= 5000

        with Client(hog_server.target, max_attempts=1, on_error="raise") as client:
            with pytest.raises(ResourceExhaustedError):
                client.classify("and another")
            with pytest.raises(ResourceExhaustedError):
                client.classify_batch(["a", "b"])
        with Client(hog_server.target, max_attempts=1) as client:  # fail_closed: a failed-malicious verdict
            failed = client.classify("overloaded")
        assert failed.failed and failed.verdict is Verdict.MALICIOUS
        assert failed.error is not None and failed.error.code == "RESOURCE_EXHAUSTED"
        # GetModelInfo takes no slot: it answers even with the queue full.
        assert stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10).limits.max_queue == MAX_QUEUE
        assert depth(hog_server) == MAX_QUEUE, "a hog ended by itself: the queue was not held full"
    after = scrape(hog_server)
    rejected = 1 + 1 + 2 + 1  # Classify, Classify, a batch of 2, Classify
    key = ("promptgate_overload_rejections_total", ())
    assert after[key] - before.get(key, 0.0) == rejected
    for rpc, calls in (("Classify", 3), ("ClassifyBatch", 1)):
        code = ("promptgate_requests_total", (("code", "RESOURCE_EXHAUSTED"), ("rpc", rpc)))
        assert after[code] - before.get(code, 0.0) == calls
    assert after[("promptgate_queue_limit", ())] == MAX_QUEUE
    # Recovered: the hogs are gone and the next call is answered.
    assert stub.Classify(pb.ClassifyRequest(text="after"), timeout=30).verdict != pb.VERDICT_UNSPECIFIED
    assert scrape(hog_server)[("promptgate_queue_depth", ())] == 0


def _batch(n: int, mode: int = pb.MODE_UNSPECIFIED) -> pb.ClassifyBatchRequest:
    return pb.ClassifyBatchRequest(requests=[pb.ClassifyRequest(id=str(i), text=f"q{i}", mode=mode) for i in range(n)])


def test_batch_over_free_room_is_rejected_whole(
    hog_server: BackgroundServer, stub: pb_grpc.ClassifierServiceStub
) -> None:
    batch = _batch
    with hogs(hog_server, stub, MAX_QUEUE - 2) as running:
        with pytest.raises(grpc.RpcError) as info:
            stub.ClassifyBatch(batch(3), timeout=30)
        assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert depth(hog_server) == MAX_QUEUE - 2, "a rejected batch left some of its items admitted"
        fits = stub.ClassifyBatch.future(batch(2), timeout=60)
        wait_until(lambda: depth(hog_server) == MAX_QUEUE, what="the batch of 2 admitted")
        assert not fits.done()
        for hog in running:  # make room: the admitted batch runs once the generation stops
            hog.cancel()
        response = fits.result(timeout=60)
    assert [r.id for r in response.responses] == ["0", "1"]
    assert all(r.verdict in (pb.VERDICT_BENIGN, pb.VERDICT_MALICIOUS) for r in response.responses)


def test_stream_waits_for_room_instead_of_failing(
    hog_server: BackgroundServer, stub: pb_grpc.ClassifierServiceStub
) -> None:
    answers: list[pb.ClassifyResponse] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            requests = iter([pb.ClassifyRequest(id=f"s{i}", text=f"stream item {i}") for i in range(12)])
            answers.extend(stub.ClassifyStream(requests, timeout=120))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    reader = threading.Thread(target=read)
    with hogs(hog_server, stub, MAX_QUEUE) as running:
        reader.start()
        time.sleep(0.5)  # give a failing implementation the time to fail
        assert not answers and not errors, "a stream under a full queue must wait, not fail"
        assert depth(hog_server) == MAX_QUEUE
        for hog in running:
            hog.cancel()
        reader.join(120)
    assert not errors, errors
    assert sorted(r.id for r in answers) == sorted(f"s{i}" for i in range(12))
    assert all(not r.HasField("error") and r.verdict != pb.VERDICT_UNSPECIFIED for r in answers)


def rejections(srv: BackgroundServer) -> float:
    assert srv.handle is not None
    return srv.handle.metrics.registry.get_sample_value("promptgate_overload_rejections_total") or 0.0


def burst_against_hogs(
    srv: BackgroundServer, stub: pb_grpc.ClassifierServiceStub, held: int, n: int, **client_kwargs: object
) -> collections.Counter[str]:
    """`n` concurrent Classify calls while `held` slots are taken; the hogs go once every call was
    admitted or turned away at least once. Returns the calls' outcomes by status name."""
    free = MAX_QUEUE - held
    before = rejections(srv)

    async def burst(running: list[grpc.Future]) -> collections.Counter[str]:
        async with AsyncClient(srv.target, on_error="raise", timeout=60, **client_kwargs) as client:  # type: ignore[arg-type]

            async def one(i: int) -> str:
                try:
                    result = await client.classify(f"burst query {i}", id=str(i))
                except ResourceExhaustedError as error:
                    assert "max_queue" in error.message
                    return "RESOURCE_EXHAUSTED"
                except ServiceError as error:
                    return error.code.name
                assert result.id == str(i) and result.verdict in (Verdict.BENIGN, Verdict.MALICIOUS)
                return "OK"

            calls = [asyncio.create_task(one(i)) for i in range(n)]
            # The admitted calls wait behind the hogs' generation; every other one is turned away.
            deadline = time.monotonic() + 20
            while rejections(srv) - before < n - free:
                assert time.monotonic() < deadline, f"{rejections(srv) - before} rejections, expected {n - free}"
                await asyncio.sleep(0.01)
            for hog in running:
                hog.cancel()
            return collections.Counter(await asyncio.gather(*calls))

    with hogs(srv, stub, held) as running:
        return asyncio.run(burst(running))


def test_burst_without_retries_sheds_load_and_recovers(
    hog_server: BackgroundServer, stub: pb_grpc.ClassifierServiceStub
) -> None:
    held, n = MAX_QUEUE // 2, 4 * MAX_QUEUE
    outcome = burst_against_hogs(hog_server, stub, held, n, max_attempts=1)
    # Every call answered one way or the other: the free slots' worth answered, the rest turned away at once.
    assert outcome == collections.Counter({"OK": MAX_QUEUE - held, "RESOURCE_EXHAUSTED": n - (MAX_QUEUE - held)})
    with Client(hog_server.target, max_attempts=1, on_error="raise") as client:
        assert client.classify("after the burst").verdict in (Verdict.BENIGN, Verdict.MALICIOUS)


def test_burst_with_default_retries_is_answered_in_full(
    hog_server: BackgroundServer, stub: pb_grpc.ClassifierServiceStub
) -> None:
    # The channel retries RESOURCE_EXHAUSTED and waits out the server's pushback: callers
    # turned away together must not all come back together and be turned away again.
    n = 4 * MAX_QUEUE
    before = rejections(hog_server)
    outcome = burst_against_hogs(hog_server, stub, MAX_QUEUE, n)
    assert outcome == collections.Counter({"OK": n}), outcome
    assert rejections(hog_server) - before >= n  # each call was turned away at least once, then retried


# -- deadlines and cancellation reach the engine and give the slots back --------------------------


def test_expired_calls_free_the_engine_and_the_queue(
    hog_server: BackgroundServer, stub: pb_grpc.ClassifierServiceStub
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Classify(pb.ClassifyRequest(text="a long story", mode=pb.MODE_REASONED), timeout=0.5)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: engine_idle(hog_server), what="engine idle and depth 0 after an expired Classify")

    with pytest.raises(grpc.RpcError) as info:
        stub.ClassifyBatch(_batch(4, pb.MODE_REASONED), timeout=0.5)
    assert info.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: engine_idle(hog_server), what="engine idle and depth 0 after an expired batch")


def test_cancelled_stream_frees_the_engine_and_the_queue(
    hog_server: BackgroundServer, stub: pb_grpc.ClassifierServiceStub
) -> None:
    requests = iter([pb.ClassifyRequest(id=str(i), text=f"story {i}", mode=pb.MODE_REASONED) for i in range(5)])
    call = stub.ClassifyStream(requests)
    wait_until(lambda: depth(hog_server) == 5, what="the stream's items admitted")
    assert hog_server.handle is not None and hog_server.handle.screening is not None
    wait_until(lambda: hog_server.handle.screening.stats().running > 0, what="the stream's items running")
    call.cancel()
    wait_until(lambda: engine_idle(hog_server), what="engine idle and depth 0 after a cancelled stream")
    assert stub.Classify(pb.ClassifyRequest(text="still serving"), timeout=30).mode == pb.MODE_FAST


def test_slow_stream_reader_never_has_more_than_the_window_admitted(tiny_model: Path) -> None:
    window = 16
    # Long ids (echoed in every answer, never tokenized) make each message ~1 KB, so the
    # HTTP/2 windows (a few MB) fill long before the 12 MB stream is through.
    total = 12_000
    config = server_config(tiny_model, max_stream_inflight=window, max_queue=1024)
    with BackgroundServer(config) as srv, grpc.insecure_channel(srv.target) as channel:
        stub = pb_grpc.ClassifierServiceStub(channel)
        sent = 0

        def requests() -> Iterator[pb.ClassifyRequest]:
            nonlocal sent
            for i in range(total):
                sent += 1
                yield pb.ClassifyRequest(id=f"{i:05d}-" + "x" * 1000, text=f"query {i}")

        observed: list[int] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                observed.append(depth(srv))
                time.sleep(0.001)

        sampler = threading.Thread(target=sample)
        sampler.start()
        call = stub.ClassifyStream(requests(), timeout=300)
        try:
            time.sleep(1.5)  # the reader reads nothing while the sender keeps sending
            stalled_at = sent
            first = [next(call) for _ in range(100)]  # the reader wakes up: answers flow again
            assert len({r.id for r in first}) == 100
        finally:
            call.cancel()
            stop.set()
            sampler.join()
        assert max(observed) <= window, f"{max(observed)} queries of one stream admitted; the window is {window}"
        assert stalled_at < total, "the server read the whole stream although nobody read its answers"
        wait_until(lambda: engine_idle(srv), what="engine idle and depth 0 after the stream was cancelled")
