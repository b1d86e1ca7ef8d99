"""Blocking client."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Unpack

import grpc

from promptgate.v1 import classifier_pb2 as pb
from promptgate.v1 import classifier_pb2_grpc as pb_grpc

from ._base import ClientOptions, ClientSettings
from ._channel import DEFAULT_TARGET, Targets, sync_channel
from ._errors import ServiceError, translated_errors
from ._policy import item_result
from ._types import (
    Classification,
    ItemError,
    Mode,
    ModelInfo,
    ScreenRequest,
    batch_request_pb,
    from_model_info_pb,
    to_request_pb,
)


class Client(ClientSettings):
    """Blocking promptgate client; `AsyncClient` has the same methods as coroutines.

    target: `host:port`; `dns:///name:port` to balance over every address of a name (a
    Kubernetes headless Service); or a list of `host:port` to balance over.
    timeout: the deadline of each call in seconds (None: no deadline), overridable per call.
    max_attempts: UNAVAILABLE and RESOURCE_EXHAUSTED are retried by the channel, honouring
    the server's retry pushback.
    on_error: what a query that could not be screened gets: "fail_closed" (default: a
    MALICIOUS verdict with `error` set), "fail_open" (BENIGN with `error` set) or "raise"
    (an exception; batch and stream items become `ItemError`).
    tls, root_certificates, client_cert, client_key, server_name: TLS and mutual TLS (PEM
    bytes, text or a file path). token: a bearer token sent with every call.
    """

    def __init__(
        self,
        target: Targets = DEFAULT_TARGET,
        *,
        channel: grpc.Channel | None = None,
        **settings: Unpack[ClientOptions],
    ) -> None:
        super().__init__(target, **settings)
        self._channel = channel or sync_channel(target, self.transport, self._options)
        self._stub = pb_grpc.ClassifierServiceStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def classify(
        self,
        text: str,
        *,
        id: str = "",
        mode: Mode | str | None = None,
        threshold: float | None = None,
        truncate: bool = False,
        canonicalize: bool | None = None,
        timeout: float | None = None,
    ) -> Classification:
        request = to_request_pb(
            text, mode=mode, threshold=threshold, id=id, truncate=truncate, canonicalize=canonicalize
        )
        response, error = None, None
        try:
            with translated_errors():
                response = self._stub.Classify(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except ServiceError as exc:
            error = exc
        return self._single(response, error, request)

    def classify_batch(
        self,
        items: Iterable[str | ScreenRequest],
        *,
        mode: Mode | str | None = None,
        threshold: float | None = None,
        truncate: bool = False,
        canonicalize: bool | None = None,
        timeout: float | None = None,
    ) -> list[Classification | ItemError]:
        """Results in input order; an item the server rejects follows the failure policy."""
        request = batch_request_pb(items, mode, threshold, truncate, canonicalize)
        response, error = None, None
        try:
            with translated_errors():
                response = self._stub.ClassifyBatch(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except ServiceError as exc:
            error = exc
        return self._batch(response, error, request)

    def classify_stream(
        self,
        items: Iterable[str | ScreenRequest],
        *,
        mode: Mode | str | None = None,
        threshold: float | None = None,
        truncate: bool = False,
        canonicalize: bool | None = None,
        timeout: float | None = None,
    ) -> Iterator[Classification | ItemError]:
        """Results as they finish (not in input order); match them by id.

        Items without an id get their 0-based position as id. Item errors follow the failure
        policy; a failure of the stream itself raises (the items not answered yet are not
        known to the server). `timeout` bounds the whole stream and has no client default:
        bulk streams may run for hours.
        """
        requests = (
            to_request_pb(i, mode=mode, threshold=threshold, truncate=truncate, canonicalize=canonicalize)
            for i in items
        )
        call = self._stub.ClassifyStream(requests, timeout=timeout, metadata=self._metadata)
        try:
            with translated_errors():
                for response in call:
                    yield item_result(self.on_error, response)
        finally:
            call.cancel()  # no-op once finished; stops the server's work if we stop early

    def model_info(self, *, timeout: float | None = None) -> ModelInfo:
        with translated_errors():
            info = self._stub.GetModelInfo(
                pb.GetModelInfoRequest(), timeout=self._deadline(timeout), metadata=self._metadata
            )
        return from_model_info_pb(info)
