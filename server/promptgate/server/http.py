"""The HTTP/JSON face: the classifier over the Connect protocol (and gRPC-Web) on `--http-port`.

The service binding is generated from the proto (`promptgate.v1.classifier_connect`, by
protoc-gen-connectrpc), so its paths, methods and message types are the gRPC service's:
`POST /promptgate.v1.ClassifierService/Classify` with `Content-Type: application/json` and a
proto3-JSON body works with plain curl. Every call goes to the gRPC servicer's own
transport-neutral methods (`ClassifierServicer.classify`, ...), so both faces share one
screening path, one bounded queue and one set of checks.

Semantics are the gRPC port's:

- Errors: Connect's error JSON `{"code", "message", "details"}` (the format Connect clients
  in every language read) with the HTTP status google.rpc gives the code
  (`errors.HTTP_STATUS`); `details` carry the same google.rpc.ErrorInfo reason as gRPC.
- Overload: 429 with `Retry-After` (whole seconds, rounded up) and a google.rpc.RetryInfo
  detail with the exact delay (gRPC's retry pushback).
- Auth: the same bearer tokens (`Authorization: Bearer ...`), checked before a body is read;
  401 with `WWW-Authenticate: Bearer`. `/healthz` stays open for load balancers.
- Limits: a unary request body over `--max-message-bytes` gets 413 (code resource_exhausted)
  without being read; each message of a stream is bounded the same way by Connect
  (resource_exhausted, 429, as a decompressed body over the limit).
- Request ids: `x-request-id` in, else a fresh one; bound to the call's log lines and returned
  as a response header on every answer.
- Metrics: `promptgate_http_requests_total{rpc, code, status}`; the per-query metrics and log
  lines are the screening path's, shared with gRPC.
- Shutdown: `/healthz` turns 503 first; while the server drains, new calls get 503
  unavailable (retry another replica), then in-flight calls get the grace period.

TLS: the same certificate and key as the gRPC port (and client CA for mutual TLS). The
server is uvicorn (HTTP/1.1), run on the gRPC server's event loop; nothing here blocks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import math
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import grpc
import structlog
import uvicorn
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2
from protobuf.wkt import Any as AnyDetail

from promptgate.v1 import classifier_connect
from promptgate.v1 import classifier_pb2 as pb

from .config import ServerConfig
from .errors import ERROR_DOMAIN, HTTP_STATUS, NotReady, ScreeningError, as_screening_error
from .interceptors import GRACE_ENDED, REQUEST_ID_KEY, RpcEnvelopeInterceptor, request_id_from
from .logs import get_logger
from .metrics import ServerMetrics
from .security import TokenAuthInterceptor
from .servicer import ClassifierServicer

__all__ = ["ConnectClassifier", "HttpApp", "HttpServer", "connect_error"]

log = get_logger("promptgate.server")
T = TypeVar("T")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_SERVICE = pb.DESCRIPTOR.services_by_name["ClassifierService"]
# Path -> method name, from the descriptor (the generated binding serves the same paths).
_RPC_PATHS = {f"/{_SERVICE.full_name}/{m.name}": m.name for m in _SERVICE.methods}
HEALTH_PATH, OPENAPI_PATH = "/healthz", "/openapi.json"
_TYPE_URL = "type.googleapis.com/"
# Connect spells one code differently from gRPC.
_CONNECT_CODES = {
    code: Code(code.name.lower()) for code in grpc.StatusCode if code.name.lower() in {c.value for c in Code}
}
_CONNECT_CODES[grpc.StatusCode.CANCELLED] = Code.CANCELED
_GRPC_NAMES = {connect: code.name for code, connect in _CONNECT_CODES.items()}
# A Content-Type that is not one of Connect's (or gRPC-Web's) streaming forms is a unary call,
# whose one message is the whole body.
_STREAM_CONTENT_TYPES = ("application/connect+", "application/grpc")


def connect_error(error: ScreeningError) -> ConnectError:
    """The Connect error of a screening failure: same code and message as gRPC, the reason and
    any retry delay as google.rpc details."""
    details = []
    if error.reason:
        info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN)
        details.append(AnyDetail(type_url=_TYPE_URL + info.DESCRIPTOR.full_name, value=info.SerializeToString()))
    if error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(round(error.retry_after * 1000))
        retry = error_details_pb2.RetryInfo(retry_delay=delay)
        details.append(AnyDetail(type_url=_TYPE_URL + retry.DESCRIPTOR.full_name, value=retry.SerializeToString()))
    return ConnectError(_CONNECT_CODES[error.status_code], error.message, details)


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds: rounded up, so a caller never comes back too early."""
    return str(max(1, math.ceil(seconds)))


@dataclass
class _Call:
    """One HTTP request as the metrics see it."""

    rpc: str
    code: str | None = None  # the gRPC name of the code it ended with, once known
    status: int = 0  # the HTTP status sent
    counted: bool = False


_current: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("promptgate_http_call", default=None)


class ConnectClassifier:
    """The generated Connect service protocol (`classifier_connect.ClassifierService`) over the servicer."""

    def __init__(self, servicer: ClassifierServicer, envelope: RpcEnvelopeInterceptor | None = None) -> None:
        self.servicer = servicer
        self.envelope = envelope

    async def classify(self, request: pb.ClassifyRequest, ctx: RequestContext) -> pb.ClassifyResponse:
        return await self._answer(ctx, self.servicer.classify(request))

    async def classify_batch(self, request: pb.ClassifyBatchRequest, ctx: RequestContext) -> pb.ClassifyBatchResponse:
        return await self._answer(ctx, self.servicer.classify_batch(request))

    async def classify_stream(self, request: Any, ctx: RequestContext) -> Any:
        try:
            async for response in self.servicer.classify_stream(request):
                yield response
        except ScreeningError as error:
            raise self._error(ctx, error) from error
        except asyncio.CancelledError:
            if self._cut():  # the grace period ended: the stream ends UNAVAILABLE after what it sent
                raise self._error(ctx, NotReady(GRACE_ENDED)) from None
            raise

    async def get_model_info(self, request: pb.GetModelInfoRequest, ctx: RequestContext) -> pb.GetModelInfoResponse:
        try:
            return self.servicer.model_info()
        except ScreeningError as error:
            raise self._error(ctx, error) from error

    async def _answer(self, ctx: RequestContext, call: Awaitable[T]) -> T:
        try:
            return await call
        except ScreeningError as error:
            raise self._error(ctx, error) from error
        except asyncio.CancelledError:
            if self._cut():
                raise self._error(ctx, NotReady(GRACE_ENDED)) from None
            raise
        except ConnectError:
            raise
        except Exception as exc:  # a bug: INTERNAL, as over gRPC, without echoing internals
            log.error("http call failed", exc_info=exc)
            raise self._error(ctx, as_screening_error(exc)) from exc

    def _cut(self) -> bool:
        return self.envelope is not None and self.envelope.was_cut()

    @staticmethod
    def _error(ctx: RequestContext, error: ScreeningError) -> ConnectError:
        if error.retry_after is not None:
            ctx.response_headers["retry-after"] = retry_after_header(error.retry_after)
        return connect_error(error)


class _Outcome:
    """A Connect metadata interceptor that notes the code each call ended with, for the metrics."""

    async def on_start(self, ctx: RequestContext) -> None:
        return None

    async def on_end(self, token: None, ctx: RequestContext, error: Exception | None) -> None:
        call = _current.get()
        if call is None:
            return
        if error is None:
            call.code = "OK"
        else:
            call.code = _GRPC_NAMES.get(error.code, "UNKNOWN") if isinstance(error, ConnectError) else "UNKNOWN"


def _error_body(code: grpc.StatusCode, message: str) -> bytes:
    return json.dumps({"code": _CONNECT_CODES[code].value, "message": message}).encode()


class HttpApp:
    """The ASGI application: health, the OpenAPI document and the generated Connect service,
    behind the envelope every call passes (request id, auth, size limit, shutdown, metrics)."""

    def __init__(
        self,
        servicer: ClassifierServicer,
        metrics: ServerMetrics,
        *,
        max_message_bytes: int,
        envelope: RpcEnvelopeInterceptor | None = None,
        auth: TokenAuthInterceptor | None = None,
    ) -> None:
        self.metrics = metrics
        self.envelope = envelope
        self.auth = auth
        self.max_message_bytes = max_message_bytes
        self.serving = False
        self.openapi = (resources.files("promptgate.v1") / "openapi.json").read_bytes()
        self.connect = classifier_connect.ClassifierServiceASGIApplication(
            ConnectClassifier(servicer, envelope), interceptors=[_Outcome()], read_max_bytes=max_message_bytes
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan is off and websockets are not served
            return
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", ())]
        request_id = request_id_from(headers)
        path = scope["path"]
        call = _Call(_RPC_PATHS.get(path) or {HEALTH_PATH: "healthz", OPENAPI_PATH: "openapi"}.get(path, "unknown"))
        reset = _current.set(call)

        async def answer(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                call.status = message["status"]
                extra = [(REQUEST_ID_KEY.encode(), request_id.encode())]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                self._count(call)  # before the answer's end leaves: whoever has the answer sees it counted
            await send(message)

        try:
            with structlog.contextvars.bound_contextvars(request_id=request_id, protocol="http"):
                try:
                    await self._route(scope, receive, answer, call, headers)
                except Exception as exc:  # a bug: Connect answers what a caller got wrong itself
                    log.error("http request failed", path=path, exc_info=exc)
                    if not call.status:
                        await self._error(answer, call, grpc.StatusCode.INTERNAL, "internal error")
                    elif not call.counted:
                        call.code = "INTERNAL"
        finally:
            _current.reset(reset)
            self._count(call)  # no answer (the caller went away), or a failure after it

    def _count(self, call: _Call) -> None:
        if not call.counted:
            call.counted = True
            code = call.code or _CODES_BY_STATUS.get(call.status, "UNKNOWN")
            self.metrics.http_requests.labels(rpc=call.rpc, code=code, status=str(call.status)).inc()

    async def _route(
        self, scope: Scope, receive: Receive, send: Send, call: _Call, headers: list[tuple[str, str]]
    ) -> None:
        path, method = scope["path"], scope["method"]
        if path == HEALTH_PATH:
            if method not in ("GET", "HEAD"):
                return await _reply(send, 405, b"", call, "UNIMPLEMENTED", (("allow", "GET, HEAD"),))
            body = json.dumps({"status": "SERVING" if self.serving else "NOT_SERVING"}).encode()
            code = "OK" if self.serving else "UNAVAILABLE"
            return await _reply(send, 200 if self.serving else 503, body, call, code, json_body=True)
        if path not in _RPC_PATHS and path != OPENAPI_PATH:
            return await self.connect(scope, receive, send)  # Connect's own 404
        if self.envelope is None:
            return await self._admitted(scope, receive, send, call, headers)
        if self.envelope.arrived():
            message = "the server is shutting down; retry (another replica)"
            return await self._error(send, call, grpc.StatusCode.UNAVAILABLE, message, (("connection", "close"),))
        with self.envelope.running():
            try:
                return await self._admitted(scope, receive, send, call, headers)
            except asyncio.CancelledError:
                if not self.envelope.was_cut():
                    raise
                if call.status:  # part of an answer has gone: the connection closes on the rest
                    return None
                closing = (("connection", "close"),)
                return await self._error(send, call, grpc.StatusCode.UNAVAILABLE, GRACE_ENDED, closing)

    async def _admitted(
        self, scope: Scope, receive: Receive, send: Send, call: _Call, headers: list[tuple[str, str]]
    ) -> None:
        path, method = scope["path"], scope["method"]
        if self.auth is not None and not self.auth.accepts(headers):
            log.warning("unauthenticated", method=path, protocol="http")
            challenge = (("www-authenticate", 'Bearer realm="promptgate"'),)
            return await self._error(
                send, call, grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token", challenge
            )
        if path == OPENAPI_PATH:
            if method not in ("GET", "HEAD"):
                return await _reply(send, 405, b"", call, "UNIMPLEMENTED", (("allow", "GET, HEAD"),))
            return await _reply(send, 200, self.openapi, call, "OK", json_body=True)
        content_type = dict(headers).get("content-type", "")
        if content_type.startswith("application/grpc") and not content_type.startswith("application/grpc-web"):
            # gRPC needs HTTP/2 trailers, which uvicorn (HTTP/1.1) has not.
            message = "gRPC is served on the gRPC port (--port); this port speaks Connect and gRPC-Web"
            body = _error_body(grpc.StatusCode.INVALID_ARGUMENT, message)
            return await _reply(send, 415, body, call, "INVALID_ARGUMENT", json_body=True)
        if method == "POST" and not content_type.startswith(_STREAM_CONTENT_TYPES):
            length = dict(headers).get("content-length", "")
            if length.isdigit() and int(length) > self.max_message_bytes:
                return await self._too_large(send, call, int(length))
            limited = _BodyLimit(receive, send, self.max_message_bytes, self, call)
            return await self.connect(scope, limited.receive, limited.send)
        return await self.connect(scope, receive, send)

    async def _error(
        self, send: Send, call: _Call, code: grpc.StatusCode, message: str, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        await _reply(send, HTTP_STATUS[code], _error_body(code, message), call, code.name, headers, json_body=True)

    async def _too_large(self, send: Send, call: _Call, size: int | None) -> None:
        got = f"is {size} bytes" if size is not None else "goes past the limit"
        message = f"request body {got}; the limit is {self.max_message_bytes} bytes (max_message_bytes)"
        body = _error_body(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
        # The rest of the body is not read: the connection cannot be reused.
        await _reply(send, 413, body, call, "RESOURCE_EXHAUSTED", (("connection", "close"),), json_body=True)


class _BodyLimit:
    """Ends a unary request whose body grows past the limit (no Content-Length) with a 413."""

    def __init__(self, receive: Receive, send: Send, limit: int, app: HttpApp, call: _Call) -> None:
        self._receive, self._send, self._limit, self._app, self._call = receive, send, limit, app, call
        self.read = 0
        self.over = False

    async def receive(self) -> dict[str, Any]:
        if self.over:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.read += len(message.get("body", b""))
            if self.read > self._limit:
                self.over = True
                await self._app._too_large(self._send, self._call, None)
                return {"type": "http.disconnect"}  # the application stops reading; its answer is dropped
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if not self.over:
            await self._send(message)


async def _reply(
    send: Send,
    status: int,
    body: bytes,
    call: _Call,
    code: str,
    headers: Iterable[tuple[str, str]] = (),
    *,
    json_body: bool = False,
) -> None:
    call.code = code
    head = [(k.encode(), v.encode()) for k, v in headers]
    if json_body:
        head.append((b"content-type", b"application/json"))
    head.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# The code of an answer Connect gave before any handler ran (no such path, wrong media type,
# HTTP method), for the metrics; HTTP statuses that several codes share resolve to the
# caller's fault or to ours.
_CODES_BY_STATUS = {
    200: "OK",
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "UNIMPLEMENTED",
    405: "UNIMPLEMENTED",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class _Uvicorn(uvicorn.Server):
    # The process's signals belong to `serve()`, which drains both faces in order; uvicorn
    # would otherwise take SIGTERM/SIGINT over and stop the HTTP face on its own.
    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} (--http-port): {exc}") from exc
    return sock


class HttpServer:
    """The HTTP face's listener: bound at construction (so the port is known), served by
    `start()` on the running event loop, drained by `stop()`."""

    def __init__(self, app: HttpApp, config: ServerConfig) -> None:
        assert config.http_port is not None
        self.app = app
        self.socket = _listen(config.host, config.http_port)
        self.port: int = self.socket.getsockname()[1]
        tls: dict[str, Any] = {}
        if config.tls_cert is not None:
            tls = {"ssl_certfile": config.tls_cert, "ssl_keyfile": config.tls_key}
            if config.tls_client_ca is not None:
                tls.update(ssl_ca_certs=config.tls_client_ca, ssl_cert_reqs=ssl.CERT_REQUIRED)
        self._server = _Uvicorn(
            uvicorn.Config(
                app,
                lifespan="off",
                ws="none",
                http="h11",
                log_config=None,
                log_level="warning",
                access_log=False,
                server_header=False,
                proxy_headers=False,
                **tls,
            )
        )
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self.socket]), name="promptgate-http")
        # Polled: uvicorn exposes readiness as a flag; startup takes milliseconds.
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError(f"the HTTP face did not start on port {self.port}")
            await asyncio.sleep(0.005)

    async def stop(self, grace: float | None) -> None:
        """Stop taking connections; in-flight requests get `grace` seconds, then are cancelled."""
        if self._task is None:
            self.socket.close()
            return
        self._server.config.timeout_graceful_shutdown = grace or 0  # type: ignore[assignment]
        self._server.should_exit = True
        await self._task
