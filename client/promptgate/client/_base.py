"""What Client and AsyncClient share: their settings and how a call's outcome becomes results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

from promptgate.v1 import classifier_pb2 as pb

from ._channel import DEFAULT_TIMEOUT, PemSource, Targets, Transport, channel_options
from ._errors import InternalError, ServiceError
from ._policy import FailurePolicy, call_failed, item_result, to_policy
from ._types import Classification, ItemError


class ClientOptions(TypedDict, total=False):
    """The keyword settings of Client and AsyncClient (see `Client`)."""

    timeout: float | None
    max_attempts: int
    on_error: FailurePolicy | str
    tls: bool
    root_certificates: PemSource | None
    client_cert: PemSource | None
    client_key: PemSource | None
    token: str | None
    server_name: str | None
    channel_options_extra: Sequence[tuple[str, Any]]


class ClientSettings:
    def __init__(
        self,
        target: Targets,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_attempts: int = 5,
        on_error: FailurePolicy | str = FailurePolicy.FAIL_CLOSED,
        tls: bool = False,
        root_certificates: PemSource | None = None,
        client_cert: PemSource | None = None,
        client_key: PemSource | None = None,
        token: str | None = None,
        server_name: str | None = None,
        channel_options_extra: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.on_error = to_policy(on_error)
        self.transport = Transport(
            tls=tls,
            root_certificates=root_certificates,
            client_cert=client_cert,
            client_key=client_key,
            token=token,
            server_name=server_name,
        )
        self._options = channel_options(max_attempts, channel_options_extra)
        self._metadata = self.transport.metadata()

    def _deadline(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def _single(
        self, response: pb.ClassifyResponse | None, error: ServiceError | None, request: pb.ClassifyRequest
    ) -> Classification:
        if error is not None:
            return call_failed(self.on_error, error, [request])[0]
        assert response is not None
        result = item_result(self.on_error, response)
        if isinstance(result, ItemError):  # a unary call reports errors as its status
            raise InternalError(f"server answered Classify with an item error: {result.message}")
        return result

    def _batch(
        self, response: pb.ClassifyBatchResponse | None, error: ServiceError | None, request: pb.ClassifyBatchRequest
    ) -> list[Classification | ItemError]:
        if error is not None:
            return list(call_failed(self.on_error, error, request.requests))
        assert response is not None
        return [item_result(self.on_error, r) for r in response.responses]
