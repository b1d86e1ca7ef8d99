"""asyncio client, mirroring `Client`."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Unpack

import grpc.aio

from promptgate.v1 import classifier_pb2 as pb
from promptgate.v1 import classifier_pb2_grpc as pb_grpc

from ._base import ClientOptions, ClientSettings
from ._channel import DEFAULT_TARGET, Targets, async_channel
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


class AsyncClient(ClientSettings):
    """asyncio promptgate client; see `Client` for the settings and each method's semantics."""

    def __init__(
        self,
        target: Targets = DEFAULT_TARGET,
        *,
        channel: grpc.aio.Channel | None = None,
        **settings: Unpack[ClientOptions],
    ) -> None:
        super().__init__(target, **settings)
        self._channel = channel or async_channel(target, self.transport, self._options)
        self._stub = pb_grpc.ClassifierServiceStub(self._channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def classify(
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
                response = await self._stub.Classify(request, timeout=self._deadline(timeout), metadata=self._metadata)
        except ServiceError as exc:
            error = exc
        return self._single(response, error, request)

    async def classify_batch(
        self,
        items: Iterable[str | ScreenRequest],
        *,
        mode: Mode | str | None = None,
        threshold: float | None = None,
        truncate: bool = False,
        canonicalize: bool | None = None,
        timeout: float | None = None,
    ) -> list[Classification | ItemError]:
        request = batch_request_pb(items, mode, threshold, truncate, canonicalize)
        response, error = None, None
        try:
            with translated_errors():
                response = await self._stub.ClassifyBatch(
                    request, timeout=self._deadline(timeout), metadata=self._metadata
                )
        except ServiceError as exc:
            error = exc
        return self._batch(response, error, request)

    async def classify_stream(
        self,
        items: Iterable[str | ScreenRequest] | AsyncIterable[str | ScreenRequest],
        *,
        mode: Mode | str | None = None,
        threshold: float | None = None,
        truncate: bool = False,
        canonicalize: bool | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Classification | ItemError]:
        async def requests() -> AsyncIterator[pb.ClassifyRequest]:
            if isinstance(items, AsyncIterable):
                async for item in items:
                    yield to_request_pb(
                        item, mode=mode, threshold=threshold, truncate=truncate, canonicalize=canonicalize
                    )
            else:
                for item in items:
                    yield to_request_pb(
                        item, mode=mode, threshold=threshold, truncate=truncate, canonicalize=canonicalize
                    )

        call = self._stub.ClassifyStream(requests(), timeout=timeout, metadata=self._metadata)
        try:
            with translated_errors():
                async for response in call:
                    yield item_result(self.on_error, response)
        finally:
            call.cancel()

    async def model_info(self, *, timeout: float | None = None) -> ModelInfo:
        with translated_errors():
            info = await self._stub.GetModelInfo(
                pb.GetModelInfoRequest(), timeout=self._deadline(timeout), metadata=self._metadata
            )
        return from_model_info_pb(info)
