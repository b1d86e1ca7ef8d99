"""Faults: the client's failure policy, a broken engine, balancing over replicas, and, in real
processes, SIGTERM under load, clients killed mid-call, and floods of malformed traffic.

The rule under test: a query is answered with a verdict from the model, or with an error
(which the client's policy turns into a failed-malicious verdict unless told otherwise);
nothing breaks into a "benign", and nothing accepted is silently dropped.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from promptgate.client import (
    AsyncClient,
    Client,
    InternalError,
    ItemError,
    ServiceError,
    UnavailableError,
    Verdict,
)
from promptgate.client._channel import channel_target
from promptgate.v1 import classifier_pb2 as pb
from promptgate.v1 import classifier_pb2_grpc as pb_grpc

from ..support import BackgroundServer, free_port, scrape, server_config, wait_serving, wait_until

CLI = [sys.executable, "-m", "promptgate.cli"]
SERVICE = "/promptgate.v1.ClassifierService/"


def classify_ok(srv: BackgroundServer) -> float:
    assert srv.handle is not None
    value = srv.handle.metrics.registry.get_sample_value("promptgate_requests_total", {"rpc": "Classify", "code": "OK"})
    return value or 0.0


# -- the client's failure policy ------------------------------------------------------------------


@pytest.fixture(scope="module")
def dead_target() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def test_fail_closed_is_the_default_and_answers_malicious(dead_target: str) -> None:
    with Client(dead_target, max_attempts=1, timeout=10) as client:
        result = client.classify("hello", id="q1")
    assert result.failed and result.verdict is Verdict.MALICIOUS and result.is_malicious
    assert result.malicious_probability == 1.0 and result.id == "q1"
    assert result.error is not None and result.error.code == "UNAVAILABLE" and result.error.message
    assert result.to_dict()["error"]["code"] == "UNAVAILABLE"


def test_fail_open_answers_benign_but_says_it_failed(dead_target: str) -> None:
    with Client(dead_target, max_attempts=1, timeout=10, on_error="fail_open") as client:
        result = client.classify("hello")
    assert result.failed and result.verdict is Verdict.BENIGN and result.malicious_probability == 0.0
    assert result.error is not None and result.error.code == "UNAVAILABLE"


def test_raise_policy_raises(dead_target: str) -> None:
    with Client(dead_target, max_attempts=1, timeout=10, on_error="raise") as client:
        with pytest.raises(UnavailableError):
            client.classify("hello")
        with pytest.raises(UnavailableError):
            client.classify_batch(["a", "b"])
    with pytest.raises(ValueError, match="unknown failure policy"):
        Client(dead_target, on_error="fail_sideways")


def test_batch_and_async_follow_the_policy(dead_target: str) -> None:
    with Client(dead_target, max_attempts=1, timeout=10) as client:
        results = client.classify_batch(["a", "b", "c"])
        # A stream's own failure raises whatever the policy: its unanswered items are unknown.
        with pytest.raises(UnavailableError):
            list(client.classify_stream(["a"]))
    assert len(results) == 3
    assert all(
        not isinstance(r, ItemError) and r.failed and r.verdict is Verdict.MALICIOUS and r.error.code == "UNAVAILABLE"  # type: ignore[union-attr]
        for r in results
    )

    async def run() -> tuple[object, object]:
        async with AsyncClient(dead_target, max_attempts=1, timeout=10) as closed:
            one = await closed.classify("hello")
        async with AsyncClient(dead_target, max_attempts=1, timeout=10, on_error="fail_open") as opened:
            batch = await opened.classify_batch(["x", "y"])
        return one, batch

    one, batch = asyncio.run(run())
    assert one.failed and one.verdict is Verdict.MALICIOUS  # type: ignore[attr-defined]
    assert all(r.failed and r.verdict is Verdict.BENIGN for r in batch)  # type: ignore[attr-defined,union-attr]


def test_default_retries_end_in_the_policy_not_a_hang(dead_target: str) -> None:
    with Client(dead_target, timeout=20) as client:  # 5 attempts with backoff, then the policy
        result = client.classify("hello")
    assert result.failed and result.verdict is Verdict.MALICIOUS


@pytest.fixture
def own_server(tiny_model: Path) -> Iterator[BackgroundServer]:
    with BackgroundServer(server_config(tiny_model)) as srv:
        yield srv


def _assert_no_verdicts(responses: list[pb.ClassifyResponse], code: grpc.StatusCode) -> None:
    assert responses
    for response in responses:
        assert response.HasField("error") and response.error.code == code.value[0], response
        assert response.verdict == pb.VERDICT_UNSPECIFIED and response.malicious_probability == 0.0


def test_a_stopped_engine_answers_errors_never_benign(own_server: BackgroundServer) -> None:
    assert own_server.handle is not None and own_server.handle.screening is not None
    own_server.run(own_server.handle.screening.close())
    with grpc.insecure_channel(own_server.target) as channel:
        stub = pb_grpc.ClassifierServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(pb.ClassifyRequest(text="hello"), timeout=30)
        assert info.value.code() is grpc.StatusCode.UNAVAILABLE and "engine" in info.value.details()
        assert time.monotonic() - started < 25, "the call waited for its deadline instead of failing"
        batch = stub.ClassifyBatch(pb.ClassifyBatchRequest(requests=[pb.ClassifyRequest(text="a")] * 3), timeout=30)
        _assert_no_verdicts(list(batch.responses), grpc.StatusCode.UNAVAILABLE)
        stream = list(stub.ClassifyStream(iter([pb.ClassifyRequest(text="a")] * 3), timeout=30))
        _assert_no_verdicts(stream, grpc.StatusCode.UNAVAILABLE)
    with Client(own_server.target, max_attempts=1, timeout=30) as client:
        result = client.classify("hello")
        items = client.classify_batch(["a", "b"])
    assert result.failed and result.verdict is Verdict.MALICIOUS
    assert all(r.failed and r.verdict is Verdict.MALICIOUS for r in items)  # type: ignore[union-attr]


def test_a_broken_model_is_internal_never_benign(own_server: BackgroundServer) -> None:
    assert own_server.handle is not None and own_server.handle.screening is not None
    # Fault injection on the real engine: its model is gone, so every forward pass raises.
    # Fault injection: the backend loses its model mid-flight (no public way to break an engine).
    own_server.handle.screening.engine.backend._model = None  # type: ignore[attr-defined]
    with grpc.insecure_channel(own_server.target) as channel:
        stub = pb_grpc.ClassifierServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(pb.ClassifyRequest(text="hello"), timeout=30)
        assert info.value.code() is grpc.StatusCode.INTERNAL
        assert info.value.details() == "internal error while classifying"  # nothing internal leaks
        batch = stub.ClassifyBatch(pb.ClassifyBatchRequest(requests=[pb.ClassifyRequest(text="a")] * 3), timeout=30)
        _assert_no_verdicts(list(batch.responses), grpc.StatusCode.INTERNAL)
    raising = Client(own_server.target, max_attempts=1, timeout=30, on_error="raise")
    with raising, pytest.raises(InternalError):
        raising.classify("hello")
    with Client(own_server.target, max_attempts=1, timeout=30) as client:
        result = client.classify("hello")
    assert result.failed and result.verdict is Verdict.MALICIOUS and result.error.code == "INTERNAL"  # type: ignore[union-attr]
    servicer = own_server.handle.servicer
    wait_until(lambda: servicer.admission.depth == 0, what="the failed queries' slots given back")


# -- balancing over replicas ----------------------------------------------------------------------


def test_calls_are_spread_over_targets_and_survive_one_stopping(tiny_model: Path) -> None:
    with BackgroundServer(server_config(tiny_model)) as a, BackgroundServer(server_config(tiny_model)) as b:
        with Client([a.target, b.target], timeout=30) as client:
            for i in range(40):
                assert not client.classify(f"query {i}").failed
            on_a, on_b = classify_ok(a), classify_ok(b)
            assert on_a > 0 and on_b > 0 and on_a + on_b == 40, (on_a, on_b)
            a.stop()  # one replica goes away; the channel's retries and balancing carry on
            results = [client.classify(f"after {i}") for i in range(12)]
        assert not any(r.failed for r in results), [r.error for r in results if r.failed]
        assert classify_ok(b) == on_b + 12

        async def over_async() -> list[bool]:
            async with AsyncClient([b.target, f"127.0.0.1:{free_port()}"], timeout=30) as client:
                return [(await client.classify(f"q{i}")).failed for i in range(10)]

        assert asyncio.run(over_async()) == [False] * 10  # a dead address in the list is skipped


def test_dns_target_and_address_lists(server: BackgroundServer) -> None:
    port = server.target.rsplit(":", 1)[1]
    with Client(f"dns:///localhost:{port}", max_attempts=5, on_error="raise", timeout=30) as client:
        assert client.classify("over dns").verdict in (Verdict.BENIGN, Verdict.MALICIOUS)
    assert channel_target(["127.0.0.1:1", "127.0.0.1:2"]) == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert channel_target(["[::1]:5"]) == "[::1]:5"  # one target passes through
    assert channel_target(["[::1]:5", "[::1]:6"]) == "ipv6:[::1]:5,[::1]:6"
    assert channel_target(["localhost:7", "127.0.0.1:8"]).startswith("ipv4:127.0.0.1:7")
    for bad in (["127.0.0.1:1", "dns:///x:2"], ["127.0.0.1:1", "no-port"], []):
        with pytest.raises(ValueError):
            channel_target(bad)


# -- real processes --------------------------------------------------------------------------------


@contextlib.contextmanager
def served(model: Path, log_path: Path, *flags: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    cmd = [
        *CLI, "serve", "--model", str(model), "--engine", "transformers", "--host", "127.0.0.1",
        "--port", str(port), *flags,
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    try:
        wait_serving(f"127.0.0.1:{port}", timeout=120)
        yield f"127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


_GRACE_ENDED_EVENT = "grace period ended; running calls refused UNAVAILABLE"


def test_sigterm_under_load_answers_or_refuses_every_call(tiny_model: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    steady, burst, after = 150, 200, 100
    with served(tiny_model, log_path, "--metrics-port", "off", "--grace-period", "10") as (target, proc):

        async def load() -> collections.Counter[str]:
            async with AsyncClient(target, max_attempts=1, on_error="raise", timeout=60) as client:

                async def one(i: int) -> str:
                    try:
                        result = await client.classify(f"query {i} " + "some words " * (i % 7), id=str(i))
                    except ServiceError as error:
                        return error.code.name
                    assert result.id == str(i) and result.verdict in (Verdict.BENIGN, Verdict.MALICIOUS)
                    return "OK"

                calls = []
                for i in range(steady):  # a steady stream of calls ...
                    calls.append(asyncio.create_task(one(i)))
                    await asyncio.sleep(0.004)
                # ... then a burst, still on its way in (received by gRPC, not all handed to
                # the server's handlers yet) when SIGTERM lands; then more calls keep coming.
                calls += [asyncio.create_task(one(i)) for i in range(steady, steady + burst)]
                await asyncio.sleep(0.01)
                proc.send_signal(signal.SIGTERM)
                for i in range(steady + burst, steady + burst + after):
                    calls.append(asyncio.create_task(one(i)))
                    await asyncio.sleep(0.004)
                # No call may hang: each has a 60 s deadline, and all of them this bound.
                return collections.Counter(await asyncio.wait_for(asyncio.gather(*calls), 120))

        outcome = asyncio.run(load())
        assert proc.wait(60) == 0
    # Accepted calls were answered (or, on a machine too slow to answer them all within the
    # grace, refused when it ended); the rest were refused as UNAVAILABLE (retryable); none dropped.
    assert set(outcome) <= {"OK", "UNAVAILABLE"}, outcome
    assert outcome["OK"] + outcome["UNAVAILABLE"] == steady + burst + after
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    cut = sum(r["calls"] for r in records if r["event"] == _GRACE_ENDED_EVENT)
    assert outcome["OK"] + cut >= steady and outcome["UNAVAILABLE"] >= after + cut, (outcome, cut)
    events = [r["event"] for r in records]
    assert events.index("shutting down") < events.index("stopped")
    statuses = collections.Counter(r.get("status") for r in records if r["event"] == "query")
    # The server's side of the same story: the calls cut at the grace's end were cancelled there.
    assert statuses == {"OK": outcome["OK"], **({"CANCELLED": cut} if cut else {})}, statuses


def test_calls_running_when_the_grace_ends_are_refused_unavailable_not_cancelled(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Calls that outlast the grace period come back UNAVAILABLE (retryable) on both faces: a
    CANCELLED from the stop would lose the query, since no retry policy retries it."""
    import httpx

    log_path, http_port = tmp_path / "server.log", free_port()
    flags = ("--metrics-port", "off", "--http-port", str(http_port), "--max-rationale-tokens", "4000")
    with served(tiny_model, log_path, *flags, "--grace-period", "3") as (target, proc):

        async def load() -> list[object]:
            async with AsyncClient(target, max_attempts=1, on_error="raise", timeout=120) as client:

                async def stream() -> list[object]:
                    seen: list[object] = []
                    try:
                        items = [f"stream item {k}" for k in range(4)]
                        async for item in client.classify_stream(items, mode="reasoned"):
                            seen.append(item)
                    except ServiceError as error:
                        seen.append(error)
                    return seen

                def http_call() -> httpx.Response:
                    body = {"text": "a long think over http", "mode": "MODE_REASONED"}
                    return httpx.post(f"http://127.0.0.1:{http_port}{SERVICE}Classify", json=body, timeout=120)

                calls = [client.classify(f"long think {k}", mode="reasoned") for k in range(3)]
                calls.append(client.classify_batch([f"batch item {k}" for k in range(3)], mode="reasoned"))
                tasks = [asyncio.ensure_future(call) for call in calls]
                tasks.append(asyncio.ensure_future(stream()))
                tasks.append(asyncio.ensure_future(asyncio.to_thread(http_call)))
                await asyncio.sleep(2.0)  # all of them admitted, none near its end (4000 tokens)
                proc.send_signal(signal.SIGTERM)
                return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)

        started = time.monotonic()
        outcomes = asyncio.run(load())
        assert proc.wait(30) == 0
    *grpc_calls, streamed, http_answer = outcomes
    for outcome in [*grpc_calls, streamed[-1]]:
        assert isinstance(outcome, ServiceError), outcome
        assert outcome.code == grpc.StatusCode.UNAVAILABLE and "grace period ended" in outcome.message, outcome
    assert isinstance(http_answer, httpx.Response) and http_answer.status_code == 503, http_answer
    assert http_answer.json()["code"] == "unavailable" and "grace period ended" in http_answer.json()["message"]
    assert time.monotonic() - started < 60
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    refused = [r for r in records if r["event"] == _GRACE_ENDED_EVENT]
    assert [r["calls"] for r in refused] == [6], refused  # 3 unary, the batch, the stream, the HTTP call


_ABANDONING_CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    from promptgate.client import AsyncClient, ScreenRequest

    async def endless(tag):
        i = 0
        while True:
            yield ScreenRequest(f"{tag} item {i}", id=f"{tag}-{i}", mode="reasoned")
            i += 1

    async def main():
        client = AsyncClient(sys.argv[1], max_attempts=1, timeout=600)
        async def drain(tag):
            async for _ in client.classify_stream(endless(tag)):
                pass
        tasks = [asyncio.create_task(drain(f"s{k}")) for k in range(6)]
        tasks += [asyncio.create_task(client.classify(f"unary {k}", mode="reasoned")) for k in range(40)]
        tasks += [asyncio.create_task(client.classify_batch([f"b{k}-{j}" for j in range(10)], mode="reasoned"))
                  for k in range(3)]
        await asyncio.sleep(0.5)
        print("sent", flush=True)
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())
    """
)


def _gauges(metrics_port: int) -> dict[str, float]:
    return {name: value for (name, labels), value in scrape(metrics_port).items() if not labels}


def test_killed_clients_leave_nothing_admitted(tiny_model: Path, tmp_path: Path) -> None:
    metrics_port = free_port()
    flags = ("--metrics-port", str(metrics_port), "--max-rationale-tokens", "2000", "--grace-period", "2")
    with served(tiny_model, tmp_path / "server.log", *flags) as (target, server_proc):
        for _ in range(2):  # twice: the server must come back to zero both times
            client = subprocess.Popen(
                [sys.executable, "-c", _ABANDONING_CLIENT, target], stdout=subprocess.PIPE, text=True
            )
            try:
                assert client.stdout is not None and client.stdout.readline().strip() == "sent"
                wait_until(lambda: _gauges(metrics_port)["promptgate_queue_depth"] > 0, what="work admitted")
                os.kill(client.pid, signal.SIGKILL)
                assert client.wait(30) == -signal.SIGKILL
            finally:
                if client.poll() is None:
                    client.kill()
                    client.wait()
            wait_until(
                lambda: (
                    _gauges(metrics_port)["promptgate_queue_depth"] == 0
                    and _gauges(metrics_port)["promptgate_engine_running"] == 0
                ),
                what="the killed client's work to be dropped",
            )
            assert server_proc.poll() is None
            with Client(target, max_attempts=1, on_error="raise", timeout=60) as ok:
                assert ok.classify("still here").verdict in (Verdict.BENIGN, Verdict.MALICIOUS)
        server_proc.send_signal(signal.SIGTERM)
        assert server_proc.wait(60) == 0


# -- malformed traffic ----------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _literal(name: str, value: str) -> bytes:
    """An HPACK header field without indexing, no Huffman coding (short names and values only)."""
    assert len(name) < 127 and len(value) < 127
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def _half_sent_call(target: str) -> bytes:
    """A Classify call whose message announces 1000 bytes and brings 10."""
    headers = b"".join(
        _literal(k, v)
        for k, v in (
            (":method", "POST"),
            (":scheme", "http"),
            (":path", SERVICE + "Classify"),
            (":authority", target),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        )
    )
    settings = _frame(0x4, 0, 0, b"")
    return (
        PREFACE
        + settings
        + _frame(0x1, 0x4, 1, headers)  # HEADERS, END_HEADERS, no END_STREAM
        + _frame(0x0, 0, 1, b"\x00" + (1000).to_bytes(4, "big") + b"x" * 10)
    )


def test_floods_of_malformed_traffic_leave_the_server_answering(tiny_model: Path) -> None:
    with BackgroundServer(server_config(tiny_model)) as srv, grpc.insecure_channel(srv.target) as channel:
        assert srv.handle is not None
        host, port = "127.0.0.1", srv.handle.port
        stub = pb_grpc.ClassifierServiceStub(channel)
        rng = random.Random(7)
        held: list[socket.socket] = []

        def connect(data: bytes, keep: bool) -> None:
            sock = socket.create_connection((host, port), timeout=10)
            with contextlib.suppress(OSError):
                sock.sendall(data)
            if keep:
                held.append(sock)
            else:
                sock.close()

        try:
            for _ in range(50):  # garbage instead of HTTP/2
                connect(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000))), keep=False)
            for _ in range(20):  # a valid preface, then garbage frames
                connect(PREFACE + bytes(rng.getrandbits(8) for _ in range(500)), keep=False)
            for _ in range(10):  # a frame claiming 16 MB
                connect(PREFACE + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01" + b"x" * 100, keep=False)
            for _ in range(20):  # half-open: a partial preface, or a preface and nothing else
                connect(PREFACE[: rng.randint(1, len(PREFACE))], keep=True)
            for _ in range(20):  # half-sent calls that hold a stream open
                connect(_half_sent_call(f"{host}:{port}"), keep=True)
            # With all of that hanging open, real calls are answered.
            for i in range(5):
                response = stub.Classify(pb.ClassifyRequest(text=f"real query {i}"), timeout=30)
                assert response.verdict in (pb.VERDICT_BENIGN, pb.VERDICT_MALICIOUS)
            assert srv.handle.servicer.admission.depth == 0  # a half-sent message is never admitted
            # Invalid protobuf bodies on a real channel: each refused, none admitted.
            raw = channel.unary_unary(SERVICE + "Classify", request_serializer=None, response_deserializer=None)
            codes = collections.Counter()
            for _ in range(200):
                try:
                    raw(b"\x12\x7f" + bytes(rng.getrandbits(8) for _ in range(20)), timeout=30)
                    codes["OK"] += 1
                except grpc.RpcError as error:
                    codes[error.code().name] += 1
            assert codes == {"INVALID_ARGUMENT": 200}, codes
        finally:
            for sock in held:
                sock.close()
        for i in range(5):
            response = stub.Classify(pb.ClassifyRequest(text=f"after the flood {i}"), timeout=30)
            assert response.verdict in (pb.VERDICT_BENIGN, pb.VERDICT_MALICIOUS)
        counted = srv.handle.metrics.registry.get_sample_value(
            "promptgate_requests_total", {"rpc": "Classify", "code": "INVALID_ARGUMENT"}
        )
        assert counted == 200
        wait_until(lambda: srv.handle is not None and srv.handle.servicer.admission.depth == 0, what="depth 0")
