"""gRPC servicer: converts protobuf <-> domain objects and calls the engine per query.

No torch here and no batching: the engine batches across every in-flight query of every
call. Each query runs inside `_classify` (validation, engine call, logging); errors become
statuses through the one table in `errors.py`.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator
from importlib import metadata

import grpc
from google.rpc import status_pb2

from promptgate._streams import map_unordered
from promptgate.v1 import classifier_pb2 as pb
from promptgate.v1 import classifier_pb2_grpc as pb_grpc

from .admission import Admission
from .config import ServerConfig
from .domain import Classification, Mode, Query, Verdict, keep_both_ends
from .engine import Engine, ScreeningEngine
from .errors import ErrorKind, InvalidInput, NotReady, ScreeningError, as_screening_error
from .logs import get_logger
from .metrics import ServerMetrics

log = get_logger("promptgate.server")

_MODES_IN = {
    pb.MODE_UNSPECIFIED: None,
    pb.MODE_FAST: Mode.FAST,
    pb.MODE_REASONED: Mode.REASONED,
    pb.MODE_AUTO: Mode.AUTO,
}
_MODES_OUT = {Mode.FAST: pb.MODE_FAST, Mode.REASONED: pb.MODE_REASONED, Mode.AUTO: pb.MODE_AUTO}
_VERDICTS_OUT = {Verdict.BENIGN: pb.VERDICT_BENIGN, Verdict.MALICIOUS: pb.VERDICT_MALICIOUS}


RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"  # honoured by gRPC's own client retry policy


class ClassifierServicer(pb_grpc.ClassifierServiceServicer):
    def __init__(self, config: ServerConfig, metrics: ServerMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or ServerMetrics()
        self.admission = Admission(config.max_queue)
        self.metrics.queue_limit.set(config.max_queue)
        self.metrics.queue_depth.set_function(lambda: self.admission.depth)
        # None while the model loads: every call answers UNAVAILABLE until `attach` runs.
        self.engine: Engine | None = None
        self.engine_info: pb.GetModelInfoResponse | None = None

    def attach(self, engine: Engine, info: pb.GetModelInfoResponse) -> None:
        self.engine_info = info
        self.engine = engine

    # -- conversion ----------------------------------------------------------------------

    def to_query(self, request: pb.ClassifyRequest) -> Query:
        text = request.text
        if not text.strip():
            raise InvalidInput("text is empty")
        cut = False
        if len(text) > self.config.max_text_chars:
            if not request.truncate:
                raise InvalidInput(
                    f"text is {len(text)} characters long; the limit is {self.config.max_text_chars} characters "
                    "(max_text_chars); set truncate to classify its first and last parts"
                )
            text, cut = "".join(keep_both_ends(text, self.config.max_text_chars)), True
        if request.mode not in _MODES_IN:
            raise InvalidInput(f"unknown mode {request.mode}")
        threshold: float | None = None
        if request.HasField("threshold"):
            threshold = request.threshold
            if math.isnan(threshold) or not 0.0 <= threshold <= 1.0:
                raise InvalidInput(f"threshold {threshold} is not in [0, 1]")
        return Query(
            text=text, mode=_MODES_IN[request.mode], threshold=threshold, truncate=request.truncate, truncated=cut
        )

    def to_response(self, request_id: str, result: Classification) -> pb.ClassifyResponse:
        return pb.ClassifyResponse(
            id=request_id,
            verdict=_VERDICTS_OUT[result.verdict],
            malicious_probability=result.malicious_probability,
            label=result.label,
            category=result.category,
            rationale=result.rationale,
            mode=_MODES_OUT[result.mode],
            threshold=result.threshold,
            label_scores=[pb.LabelScore(label=s.label, probability=s.probability) for s in result.label_scores],
            model=self.engine.model_id if self.engine else "",
            truncated=result.truncated,
        )

    @staticmethod
    def error_response(request_id: str, error: ScreeningError) -> pb.ClassifyResponse:
        return pb.ClassifyResponse(
            id=request_id, error=status_pb2.Status(code=error.status_code.value[0], message=error.message)
        )

    # -- one query -----------------------------------------------------------------------

    def _engine(self) -> Engine:
        if self.engine is None:
            raise NotReady("the model is loading; retry shortly")
        return self.engine

    async def _classify(self, rpc: str, request_id: str, request: pb.ClassifyRequest) -> pb.ClassifyResponse:
        """The lifecycle of one admitted query. Raises ScreeningError; cancellation reaches the engine."""
        started = time.perf_counter()
        text_field = {"text": request.text} if self.config.log_query_text else {}
        try:
            engine = self._engine()
            result = await engine.classify(self.to_query(request))
        except asyncio.CancelledError:
            log.info("query", rpc=rpc, id=request_id, status="CANCELLED", latency_ms=_ms(started), **text_field)
            raise
        except Exception as exc:
            error = as_screening_error(exc)
            self.metrics.query_errors.labels(code=error.status_code.name).inc()
            fields = {"rpc": rpc, "id": request_id, "status": error.status_code.name, "latency_ms": _ms(started)}
            if error is exc:
                log.info("query", error=error.message, **fields, **text_field)
            else:  # not one of ours: a bug or a broken engine; keep the traceback
                log.error("query", exc_info=exc, **fields, **text_field)
            raise error from exc
        self._observe(result, started)
        log.info(
            "query",
            rpc=rpc,
            id=request_id,
            status="OK",
            mode=result.mode.value,
            verdict=result.verdict.value,
            malicious_probability=round(result.malicious_probability, 4),
            truncated=result.truncated,
            latency_ms=_ms(started),
            **text_field,
        )
        return self.to_response(request_id, result)

    def _observe(self, result: Classification, started: float) -> None:
        m = self.metrics
        m.queries.labels(verdict=result.verdict.value, category=result.category, mode=result.mode.value).inc()
        m.malicious_probability.observe(result.malicious_probability)
        m.engine_latency.labels(mode=result.mode.value).observe(time.perf_counter() - started)
        if result.mode is Mode.REASONED:
            m.rationale_tokens.observe(result.rationale_tokens)
            if result.first_token_at is not None:
                m.time_to_first_token.observe(max(0.0, result.first_token_at - started))

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
        await context.abort(error.status_code, error.message, trailing_metadata=trailer)

    async def _classify_item(self, rpc: str, request_id: str, request: pb.ClassifyRequest) -> pb.ClassifyResponse:
        """Like `_classify`, but a failure becomes the item's `error` instead of the call's status."""
        try:
            return await self._classify(rpc, request_id, request)
        except ScreeningError as error:
            return self.error_response(request_id, error)

    # -- RPCs ------------------------------------------------------------------------------

    async def Classify(self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext) -> pb.ClassifyResponse:
        try:
            self._engine()
            self._admit(1)
        except ScreeningError as error:
            await self._abort(context, error)
        try:
            return await self._classify("Classify", request.id, request)
        except ScreeningError as error:
            await self._abort(context, error)
            raise  # unreachable: abort raises
        finally:
            self.admission.release(1)

    async def ClassifyBatch(
        self, request: pb.ClassifyBatchRequest, context: grpc.aio.ServicerContext
    ) -> pb.ClassifyBatchResponse:
        n = len(request.requests)
        if n > self.config.max_batch_items:
            await self._abort(
                context,
                InvalidInput(f"batch has {n} requests; the limit is {self.config.max_batch_items} (max_batch_items)"),
            )
        try:
            self._engine()
            self._admit(n)  # a batch is admitted whole or not at all
        except ScreeningError as error:
            await self._abort(context, error)
        try:
            # All items go to the engine at once: it batches them with everything else in flight.
            responses = await asyncio.gather(
                *(self._classify_item("ClassifyBatch", r.id, r) for r in request.requests)
            )
        finally:
            self.admission.release(n)
        return pb.ClassifyBatchResponse(responses=responses)

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[pb.ClassifyRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ClassifyResponse]:
        if self.engine is None:
            await self._abort(context, NotReady("the model is loading; retry shortly"))
        # Flow control: queries in flight plus responses waiting on a slow reader never
        # exceed max_stream_inflight; past it the server stops reading the stream.
        positions = itertools.count()

        async def numbered() -> AsyncIterator[tuple[str, pb.ClassifyRequest]]:
            async for request in request_iterator:
                position = next(positions)
                yield request.id or str(position), request

        async def answer(item: tuple[str, pb.ClassifyRequest]) -> pb.ClassifyResponse:
            # Streams wait for room instead of failing: waiting stops the reads, and HTTP/2
            # flow control pushes back on the sender.
            await self.admission.acquire(1)
            try:
                return await self._classify_item("ClassifyStream", *item)
            finally:
                self.admission.release(1)

        async for response in map_unordered(numbered(), answer, self.config.max_stream_inflight):
            yield response

    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetModelInfoResponse:
        if self.engine_info is None:
            await self._abort(context, NotReady("the model is loading; retry shortly"))
        return self.engine_info


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def model_info(engine: ScreeningEngine, config: ServerConfig) -> pb.GetModelInfoResponse:
    """GetModelInfo's answer, built once when the engine is attached."""
    profile = engine.profile
    backend = engine.backend
    return pb.GetModelInfoResponse(
        model=engine.model_id,
        profile=profile.name,
        labels=[
            pb.LabelInfo(label=s.text, verdict=_VERDICTS_OUT[s.verdict], category=s.category) for s in profile.labels
        ],
        categories=list(profile.categories),
        rationale_trained=profile.rationale_trained,
        engine=backend.name,
        engine_version=backend.version,
        device=backend.device,
        dtype=backend.dtype,
        default_mode=_MODES_OUT[engine.settings.default_mode],
        default_threshold=engine.settings.threshold,
        auto_band=engine.settings.auto_band,
        limits=pb.Limits(
            max_text_chars=config.max_text_chars,
            max_batch_items=config.max_batch_items,
            max_rationale_tokens=config.max_rationale_tokens,
            max_message_bytes=config.max_message_bytes,
            max_text_tokens=engine.max_text_tokens,
            max_queue=config.max_queue,
        ),
        server_version=server_version(),
        system_prompt=profile.system_prompt,
    )


def server_version() -> str:
    try:
        return metadata.version("promptgate")
    except metadata.PackageNotFoundError:
        return "0+unknown"
