"""The classifier's calls: protobuf <-> domain conversion around the screening path, plus admission.

No torch here, no checks of a query and no batching: the screening path
(`promptgate.server.screening`) validates and screens every query, and the engine batches
across every in-flight query of every call. What stays here is the service: admission to
the bounded queue and stream flow control, in transport-neutral methods (`classify`,
`classify_batch`, `classify_stream`, `model_info`) that raise `ScreeningError`, and the gRPC
methods over them, which turn the error into a status (through the one table in
`errors.py`). The HTTP/JSON face (`http.py`) calls the same methods of the same instance,
so both share one queue and one set of checks.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable

import grpc

from promptgate.concurrency import map_unordered_batches
from promptgate.v1 import classifier_pb2 as pb
from promptgate.v1 import classifier_pb2_grpc as pb_grpc

from .admission import Admission
from .config import ServerConfig
from .convert import model_info, query_from, response_for, status_details_trailer
from .domain import Classification
from .errors import ErrorKind, NotReady, ScreeningError
from .metrics import ServerMetrics
from .screening import Screening

RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"  # honoured by gRPC's own client retry policy
# A stream's requests arrive one per event-loop turn, so each was started alone: its own
# tokenizer call and engine submission on the event loop. While the stream has queries in
# flight, the server waits up to 2 ms for 32 (the screening path's read chunk) and starts
# them together. With vLLM on the 2-core CPU machine, ClassifyStream of 3,000 FAST queries
# went from 936-1,080 to 1,206-1,213 q/s and the event loop's CPU from 0.63-0.74 to 0.25-0.26 ms a
# query (`python -m bench.threads`).
_STREAM_GATHER = 32
_STREAM_LINGER_S = 0.002


class ClassifierServicer(pb_grpc.ClassifierServiceServicer):
    def __init__(self, config: ServerConfig, metrics: ServerMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or ServerMetrics()
        self.admission = Admission(config.max_queue)
        self.metrics.queue_limit.set(config.max_queue)
        self.metrics.queue_depth.set_function(lambda: self.admission.depth)
        # None while the model loads: every call answers UNAVAILABLE until `attach` runs.
        self.screening: Screening | None = None
        self.info: pb.GetModelInfoResponse | None = None

    def attach(self, screening: Screening) -> None:
        self.info = model_info(
            screening.describe(), max_queue=self.config.max_queue, max_message_bytes=self.config.max_message_bytes
        )
        self.screening = screening

    def _screening(self) -> Screening:
        if self.screening is None:
            raise NotReady("the model is loading; retry shortly")
        return self.screening

    def _admit(self, n: int) -> None:
        try:
            self.admission.try_acquire(n)
        except ScreeningError:
            self.metrics.rejected_overload.inc(n)
            raise

    async def _abort(self, context: grpc.aio.ServicerContext, error: ScreeningError) -> None:
        trailer = tuple(context.trailing_metadata() or ())  # keeps the request id
        if error.kind is ErrorKind.OVERLOADED and error.retry_after is not None:
            trailer += ((RETRY_PUSHBACK_KEY, str(round(error.retry_after * 1000))),)
        trailer += status_details_trailer(error)
        await context.abort(error.status_code, error.message, trailing_metadata=trailer)

    # -- the calls, transport-neutral: every face (gRPC here, HTTP/JSON in http.py) calls these --
    # They raise ScreeningError; each face turns it into its own status.

    async def classify(self, request: pb.ClassifyRequest) -> pb.ClassifyResponse:
        screening = self._screening()
        self._admit(1)
        try:
            result = await screening.classify(query_from(request), caller="Classify", id=request.id)
        finally:
            self.admission.release(1)
        return response_for(request.id, result, screening.model_id)

    async def classify_batch(self, request: pb.ClassifyBatchRequest) -> pb.ClassifyBatchResponse:
        n = len(request.requests)
        screening = self._screening()
        screening.check_batch(n)
        self._admit(n)  # a batch is admitted whole or not at all
        try:
            outcomes = await screening.classify_batch(
                [query_from(r) for r in request.requests], caller="ClassifyBatch", ids=[r.id for r in request.requests]
            )
        finally:
            self.admission.release(n)
        model = screening.model_id
        return pb.ClassifyBatchResponse(
            responses=[response_for(r.id, o, model) for r, o in zip(request.requests, outcomes, strict=True)]
        )

    def classify_stream(self, requests: AsyncIterator[pb.ClassifyRequest]) -> AsyncIterator[pb.ClassifyResponse]:
        """The responses to a stream of requests; raises NotReady at once (not on first read)."""
        screening = self._screening()
        # Flow control: queries in flight plus responses waiting on a slow reader never
        # exceed max_stream_inflight; past it the server stops reading the stream.
        positions = itertools.count()
        model = screening.model_id

        async def numbered() -> AsyncIterator[tuple[str, pb.ClassifyRequest]]:
            async for request in requests:
                position = next(positions)
                yield request.id or str(position), request

        def admitted(_: object) -> None:
            self.admission.release(1)

        async def start(batch: list[tuple[str, pb.ClassifyRequest]]) -> list[Awaitable[pb.ClassifyResponse]]:
            """Admit and start the batch's queries: those that fit now together, then wait for room.

            Streams wait for room instead of failing: waiting stops the reads, and HTTP/2 flow
            control pushes back on the sender. A query gives its slot back when it ends.
            """
            ids = [request_id for request_id, _ in batch]
            queries = [query_from(request) for _, request in batch]
            tasks: list[asyncio.Task[Classification | ScreeningError]] = []
            try:
                while len(tasks) < len(batch):
                    i = len(tasks)
                    await self.admission.acquire(1)
                    j = i + 1
                    while j < len(batch) and self.admission.admit_now(1):
                        j += 1
                    try:
                        started = await screening.submit(queries[i:j], caller="ClassifyStream", ids=ids[i:j])
                    except BaseException:
                        self.admission.release(j - i)
                        raise
                    for task in started:
                        task.add_done_callback(admitted)
                    tasks += started
            except BaseException:
                for task in tasks:
                    task.cancel()
                raise
            return [answer(request_id, task) for request_id, task in zip(ids, tasks, strict=True)]

        async def answer(request_id: str, task: Awaitable[Classification | ScreeningError]) -> pb.ClassifyResponse:
            return response_for(request_id, await task, model)

        # The requests read while earlier ones were being started are started together.
        return map_unordered_batches(
            numbered(), start, self.config.max_stream_inflight, gather=_STREAM_GATHER, linger=_STREAM_LINGER_S
        )

    def model_info(self) -> pb.GetModelInfoResponse:
        if self.info is None:
            raise NotReady("the model is loading; retry shortly")
        return self.info

    # -- gRPC ------------------------------------------------------------------------------

    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        try:
            return await self.classify(request)
        except ScreeningError as error:
            await self._abort(context, error)
            raise  # unreachable: abort raises

    async def ClassifyBatch(
        self, request: pb.ClassifyBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyBatchResponse:
        try:
            return await self.classify_batch(request)
        except ScreeningError as error:
            await self._abort(context, error)
            raise  # unreachable: abort raises

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[pb.ClassifyRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ClassifyResponse]:
        try:
            responses = self.classify_stream(request_iterator)
        except ScreeningError as error:
            await self._abort(context, error)
            raise  # unreachable: abort raises
        async for response in responses:
            yield response

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        try:
            return self.model_info()
        except ScreeningError as error:
            await self._abort(context, error)
            raise  # unreachable: abort raises


__all__ = ["RETRY_PUSHBACK_KEY", "ClassifierServicer"]
