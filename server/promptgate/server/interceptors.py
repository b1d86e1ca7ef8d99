"""The RPC envelope every call passes through: request id, RPC metrics, undecodable requests.

- Request id: the caller's `x-request-id` metadata, else a fresh one; bound to every log
  line of the call and sent back as `x-request-id` trailing metadata.
- `promptgate_requests_total{rpc, code}` counts every finished call, including the ones
  other interceptors (auth) turned away.
- A message that is not a valid protobuf of the method's request type (or whose strings are
  not valid UTF-8) is the caller's fault: INVALID_ARGUMENT naming the problem, instead of
  the INTERNAL that gRPC gives when a deserializer raises.
- Shutdown: `refuse_until_quiet` answers new calls UNAVAILABLE before the server stops, and
  `refuse_running` answers the calls still running when the grace period ends UNAVAILABLE
  too, rather than the CANCELLED they would get from the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError

from .errors import InvalidInput, NotReady, ScreeningError
from .metrics import ServerMetrics

__all__ = [
    "GRACE_ENDED",
    "REQUEST_ID_KEY",
    "MalformedRequest",
    "RpcEnvelopeInterceptor",
    "request_id_from",
    "same_shape",
]

REQUEST_ID_KEY = "x-request-id"
# Answered even while the server shuts down: probes must see NOT_SERVING, not an error.
_OPEN_WHILE_CLOSING = ("/grpc.health.v1.Health/",)
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:/=+-]{1,128}$")
GRACE_ENDED = (
    "the server is shutting down and its grace period ended before this call finished; retry (another replica)"
)


@dataclass(frozen=True)
class MalformedRequest:
    """Stands in for a request that could not be decoded."""

    reason: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, UnicodeDecodeError, ValueError) as exc:
            return MalformedRequest(f"request is not a valid protobuf message of the method's type: {exc}")

    return decode


def request_id_from(metadata: Any) -> str:
    """The caller's `x-request-id` from (key, value) pairs when it is a plain token, else a fresh one."""
    for key, value in metadata or ():
        # Echoed into logs and metadata: accept only a plain token, else make our own.
        if key == REQUEST_ID_KEY and isinstance(value, str) and _REQUEST_ID_OK.match(value):
            return value
    return uuid.uuid4().hex


class RpcEnvelopeInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        # Set at shutdown by refuse_until_quiet(): new calls are answered UNAVAILABLE.
        self.closing = False
        self._last_arrival = time.monotonic()
        # The tasks of the calls being answered now (either face), and those refuse_running cut.
        self._running: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()

    async def refuse_until_quiet(self, quiet: float, limit: float) -> None:
        """Answer new calls UNAVAILABLE until none has come for `quiet` seconds, or `limit` passed.

        Stopping a gRPC server resets the calls it has received but not yet handed to the
        application with CANCELLED: the caller cannot tell that from a dropped query, and its
        retry policy does not retry it (a burst in flight at SIGTERM lost most of its calls
        so). So before the stop, every call that comes is handed over and answered with a
        retryable UNAVAILABLE, until callers have gone quiet and nothing is left in between.
        """
        self.closing = True
        deadline = time.monotonic() + limit
        # Polled: quiet is the absence of calls, there is no event to wait on.
        while (now := time.monotonic()) < deadline and now - self._last_arrival < quiet:  # noqa: ASYNC110
            await asyncio.sleep(min(quiet - (now - self._last_arrival), deadline - now))

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Hold the current task as a running call, for `refuse_running` to find."""
        task = asyncio.current_task()
        assert task is not None, "a call runs in a task"
        self._running.add(task)
        try:
            yield
        finally:
            self._running.discard(task)
            self._cut.discard(task)

    def refuse_running(self) -> int:
        """Cancel every running call so that its face answers it UNAVAILABLE (see `was_cut`); how many.

        For the end of the grace period: the stop would cancel them too, but the caller would
        see CANCELLED, which no retry policy retries, and the query would be lost. UNAVAILABLE
        says: not answered, retry elsewhere.
        """
        cut = self._running - self._cut
        for task in cut:
            self._cut.add(task)
            task.cancel()
        return len(cut)

    def was_cut(self) -> bool:
        """True inside a call that `refuse_running` cancelled: answer it UNAVAILABLE (GRACE_ENDED).

        Takes the cancellation back (`uncancel`), so that the call can still send its answer.
        """
        task = asyncio.current_task()
        if task is None or task not in self._cut:
            return False
        task.uncancel()
        return True

    def arrived(self) -> bool:
        """Note a call's arrival (any face's; health excepted); True: refuse it, the server is closing."""
        self._last_arrival = time.monotonic()
        return self.closing

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        refused = False
        if not handler_call_details.method.startswith(_OPEN_WHILE_CLOSING):
            refused = self.arrived()
        rpc = handler_call_details.method.rsplit("/", 1)[-1]
        request_id = request_id_from(handler_call_details.invocation_metadata)
        requests = self.metrics.requests

        @contextlib.asynccontextmanager
        async def call_scope(context: grpc.aio.ServicerContext, request: Any = None) -> AsyncIterator[None]:
            """One call: request id bound and returned, undecodable input refused, outcome counted."""
            structlog.contextvars.bind_contextvars(request_id=request_id, protocol="grpc")
            # Trailing, not initial, metadata: headers sent before a failure commit the call,
            # and gRPC's client retry policy (UNAVAILABLE, RESOURCE_EXHAUSTED) could not retry it.
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            failed: BaseException | None = None
            try:
                if refused:
                    raise NotReady("the server is shutting down; retry (another replica)")
                if isinstance(request, MalformedRequest):
                    raise InvalidInput(request.reason)
                with self.running():
                    try:
                        yield
                    except asyncio.CancelledError:
                        if self.was_cut():
                            raise NotReady(GRACE_ENDED) from None
                        raise
            except ScreeningError as error:  # shutting down, or an undecodable request, here or in a stream
                failed = error
                await context.abort(error.status_code, error.message, trailing_metadata=context.trailing_metadata())
            except BaseException as exc:
                failed = exc
                raise
            finally:
                code = context.code()
                if not isinstance(code, grpc.StatusCode):  # unset, or set as a raw int
                    code = grpc.StatusCode.OK if failed is None and code is None else grpc.StatusCode.UNKNOWN
                requests.labels(rpc=rpc, code=code.name).inc()

        async def checked(requests_in: AsyncIterator[Any]) -> AsyncIterator[Any]:
            async for request in requests_in:
                if isinstance(request, MalformedRequest):
                    raise InvalidInput(request.reason)
                yield request

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with call_scope(context, request):
                return await handler.unary_unary(request, context)

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with call_scope(context, request):
                async for response in handler.unary_stream(request, context):
                    yield response

        async def stream_unary(requests_in: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            async with call_scope(context):
                return await handler.stream_unary(checked(requests_in), context)

        async def stream_stream(
            requests_in: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            async with call_scope(context):
                async for response in handler.stream_stream(checked(requests_in), context):
                    yield response

        return same_shape(
            handler,
            {
                "unary_unary": unary_unary,
                "unary_stream": unary_stream,
                "stream_unary": stream_unary,
                "stream_stream": stream_stream,
            },
            request_deserializer=_tolerant(handler.request_deserializer),
        )


def same_shape(
    handler: grpc.RpcMethodHandler,
    behaviors: dict[str, Callable[..., Any]],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """A handler of the same kind (unary/stream in and out) as `handler`, running `behaviors[kind]`."""
    kwargs = {
        "request_deserializer": request_deserializer or handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(behaviors["unary_unary"], **kwargs)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(behaviors["unary_stream"], **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(behaviors["stream_unary"], **kwargs)
    return grpc.stream_stream_rpc_method_handler(behaviors["stream_stream"], **kwargs)
