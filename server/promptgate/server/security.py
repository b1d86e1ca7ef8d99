"""Transport security and caller authentication: TLS / mutual TLS credentials, bearer tokens.

Tokens travel as `authorization: Bearer <token>` metadata and are checked by
`TokenAuthInterceptor` before any handler runs. The health service stays open so that
load balancers and kubelet probes, which carry no credentials, can still ask whether the
server is serving; it reveals nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

from .config import ServerConfig
from .interceptors import same_shape

__all__ = ["TokenAuthInterceptor", "load_tokens", "server_credentials"]

# Methods any caller may use without a token (probes carry no credentials).
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)
_BEARER = "bearer "


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from the configured PEM files; None for a plaintext port."""
    if config.tls_cert is None or config.tls_key is None:
        return None
    cert = Path(config.tls_cert).read_bytes()
    key = Path(config.tls_key).read_bytes()
    client_ca = Path(config.tls_client_ca).read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(key, cert)],
        root_certificates=client_ca,
        # With a client CA every caller must present a certificate it signed (mutual TLS).
        require_client_auth=client_ca is not None,
    )


def load_tokens(config: ServerConfig) -> list[str]:
    """Accepted tokens from --auth-token-file and PROMPTGATE_AUTH_TOKENS; empty: no auth.

    The configuration read and parsed them when it was validated (`ServerConfig.accepted_tokens`):
    the file is read once, and what was checked to hold a token is what is served.
    """
    return list(config.accepted_tokens)


def _digest(token: str) -> bytes:
    # Compare fixed-length digests: compare_digest is constant-time only for equal lengths,
    # so comparing raw tokens would leak the length of the accepted ones.
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """UNAUTHENTICATED for calls without an accepted bearer token (health excepted)."""

    def __init__(self, tokens: Iterable[str], on_reject: Callable[[str], None] | None = None) -> None:
        self._digests = [_digest(t) for t in tokens]
        if not self._digests:
            raise ValueError("token auth needs at least one token")
        self._on_reject = on_reject

    def accepts(self, metadata: Iterable[tuple[str, Any]] | None) -> bool:
        presented = None
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str) and value[: len(_BEARER)].lower() == _BEARER:
                presented = _digest(value[len(_BEARER) :].strip())
        if presented is None:
            return False
        # Check every accepted token, so the time taken does not say which one matched.
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(presented, digest)
        return matched

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if method.startswith(OPEN_METHOD_PREFIXES) or handler is None:
            return handler
        if self.accepts(handler_call_details.invocation_metadata):
            return handler
        if self._on_reject is not None:
            self._on_reject(method)
        return _rejecting(handler, grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")


def _rejecting(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that answers `code` without running it."""

    async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator, as stream handlers are

    return same_shape(
        handler, {"unary_unary": unary, "unary_stream": streaming, "stream_unary": unary, "stream_stream": streaming}
    )
