"""Blocking client."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import grpc

from promptgate.v1 import classifier_pb2 as pb
from promptgate.v1 import classifier_pb2_grpc as pb_grpc

from ._channel import DEFAULT_TARGET, DEFAULT_TIMEOUT, channel_options
from ._errors import InternalError, translated_errors
from ._types import (
    Classification,
    ItemError,
    Mode,
    ModelInfo,
    ScreenRequest,
    batch_request_pb,
    from_model_info_pb,
    from_response_pb,
    to_request_pb,
)


class Client:
    """Blocking promptgate client; `AsyncClient` has the same methods as coroutines.

    `timeout` is the deadline of each call in seconds (None: no deadline), overridable per
    call. UNAVAILABLE is retried by the channel up to `max_attempts` times.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_attempts: int = 5,
        channel_options_extra: Sequence[tuple[str, Any]] = (),
        channel: grpc.Channel | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = channel or grpc.insecure_channel(
            target, options=channel_options(max_attempts, channel_options_extra)
        )
        self._stub = pb_grpc.ClassifierServiceStub(self._channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _deadline(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def classify(
        self,
        text: str,
        *,
        id: str = "",
        mode: Mode | str | None = None,
        threshold: float | None = None,
        timeout: float | None = None,
    ) -> Classification:
        request = to_request_pb(text, mode=mode, threshold=threshold, id=id)
        with translated_errors():
            response = self._stub.Classify(request, timeout=self._deadline(timeout))
        result = from_response_pb(response)
        if isinstance(result, ItemError):  # a unary call reports errors as its status
            raise InternalError(f"server answered Classify with an item error: {result.message}")
        return result

    def classify_batch(
        self,
        items: Iterable[str | ScreenRequest],
        *,
        mode: Mode | str | None = None,
        threshold: float | None = None,
        timeout: float | None = None,
    ) -> list[Classification | ItemError]:
        """Results in input order; an item the server rejects is an `ItemError`, not an exception."""
        request = batch_request_pb(items, mode, threshold)
        with translated_errors():
            response = self._stub.ClassifyBatch(request, timeout=self._deadline(timeout))
        return [from_response_pb(r) for r in response.responses]

    def classify_stream(
        self,
        items: Iterable[str | ScreenRequest],
        *,
        mode: Mode | str | None = None,
        threshold: float | None = None,
        timeout: float | None = None,
    ) -> Iterator[Classification | ItemError]:
        """Results as they finish (not in input order); match them by id.

        Items without an id get their 0-based position as id. `timeout` bounds the whole
        stream and has no client default: bulk streams may run for hours.
        """
        requests = (to_request_pb(i, mode=mode, threshold=threshold) for i in items)
        call = self._stub.ClassifyStream(requests, timeout=timeout)
        try:
            with translated_errors():
                for response in call:
                    yield from_response_pb(response)
        finally:
            call.cancel()  # no-op once finished; stops the server's work if we stop early

    def model_info(self, *, timeout: float | None = None) -> ModelInfo:
        with translated_errors():
            info = self._stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=self._deadline(timeout))
        return from_model_info_pb(info)
