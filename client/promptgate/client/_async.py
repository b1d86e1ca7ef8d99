"""asyncio client, mirroring `Client`."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from typing import Any

import grpc
import grpc.aio

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


class AsyncClient:
    """asyncio promptgate client; see `Client` for the semantics of each method."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_attempts: int = 5,
        channel_options_extra: Sequence[tuple[str, Any]] = (),
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self._channel = channel or grpc.aio.insecure_channel(
            target, options=channel_options(max_attempts, channel_options_extra)
        )
        self._stub = pb_grpc.ClassifierServiceStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    def _deadline(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    async def classify(
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
            response = await self._stub.Classify(request, timeout=self._deadline(timeout))
        result = from_response_pb(response)
        if isinstance(result, ItemError):
            raise InternalError(f"server answered Classify with an item error: {result.message}")
        return result

    async def classify_batch(
        self,
        items: Iterable[str | ScreenRequest],
        *,
        mode: Mode | str | None = None,
        threshold: float | None = None,
        timeout: float | None = None,
    ) -> list[Classification | ItemError]:
        request = batch_request_pb(items, mode, threshold)
        with translated_errors():
            response = await self._stub.ClassifyBatch(request, timeout=self._deadline(timeout))
        return [from_response_pb(r) for r in response.responses]

    async def classify_stream(
        self,
        items: Iterable[str | ScreenRequest] | AsyncIterable[str | ScreenRequest],
        *,
        mode: Mode | str | None = None,
        threshold: float | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Classification | ItemError]:
        async def requests() -> AsyncIterator[pb.ClassifyRequest]:
            if isinstance(items, AsyncIterable):
                async for item in items:
                    yield to_request_pb(item, mode=mode, threshold=threshold)
            else:
                for item in items:
                    yield to_request_pb(item, mode=mode, threshold=threshold)

        call = self._stub.ClassifyStream(requests(), timeout=timeout)
        try:
            with translated_errors():
                async for response in call:
                    yield from_response_pb(response)
        finally:
            call.cancel()

    async def model_info(self, *, timeout: float | None = None) -> ModelInfo:
        with translated_errors():
            info = await self._stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=self._deadline(timeout))
        return from_model_info_pb(info)
