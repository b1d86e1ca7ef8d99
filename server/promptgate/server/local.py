"""In-process screening for bulk jobs: `promptgate screen --local` and the Ray workers.

Both screen through the one path (`Screening`) and answer with what the server would send:
each outcome is converted to the `ClassifyResponse` the servicer would build and read back
with the client's own `parse_response`, so a record gets the same result (or the same
error, code, message and reason) here as through a server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from promptgate.client import Classification, ItemError, parse_response
from promptgate.screen import Record

from .config import ServerConfig
from .convert import response_for
from .domain import Document, Query
from .errors import ScreeningError
from .heap import freeze_startup_heap, thaw_heap
from .screening import Screening

__all__ = ["LocalScreener", "RayScreeningWorker", "as_served"]


def as_served(screening: Screening, request_id: str, outcome: Classification | ScreeningError):
    """The client's view of an outcome, exactly as a server would have answered it."""
    return parse_response(response_for(request_id, outcome, screening.model_id))


def _documents(pairs: Any) -> tuple[Document, ...]:
    """A record's (id, content) pairs as the path's documents."""
    return tuple(Document(str(did), str(content)) for did, content in pairs)


class LocalScreener:
    """`promptgate screen`'s screener over an engine in this process (vLLM where installed)."""

    def __init__(self, screening: Screening, *, mode: str | None, threshold: float | None, window: int) -> None:
        self.screening = screening
        self.model = screening.model_id
        self.mode, self.threshold, self.window = mode, threshold, window

    @classmethod
    async def load(
        cls, config: ServerConfig, *, mode: str | None, threshold: float | None, window: int
    ) -> LocalScreener:
        screening = await Screening.load(config, offline=True)
        freeze_startup_heap()  # this screener owns its process (screen --local): heap.py says why
        return cls(screening, mode=mode, threshold=threshold, window=window)

    async def classify(
        self, records: AsyncIterator[Record]
    ) -> AsyncIterator[tuple[Record, Classification | ItemError]]:
        async def queries() -> AsyncIterator[tuple[Record, Query]]:
            async for record in records:
                yield record, Query(record.text, self.mode, self.threshold, documents=_documents(record.documents))

        async for record, outcome in self.screening.screen(queries(), window=self.window, caller="screen"):
            yield record, as_served(self.screening, str(record.record), outcome)

    async def close(self) -> None:
        await self.screening.close()
        thaw_heap()


class RayScreeningWorker:
    """A Ray Data UDF: one engine per actor; each batch of rows screened at once.

    Returns each row's `ClassifyResponse` serialized, the same bytes a server would send,
    for the driver to read with `parse_response`.
    """

    def __init__(self, config: ServerConfig, mode: str | None, threshold: float | None) -> None:
        self.loop = asyncio.new_event_loop()
        self.mode, self.threshold = mode, threshold
        self.screening = self.loop.run_until_complete(Screening.load(config, offline=True))
        freeze_startup_heap()  # the actor's process is this engine's

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        queries = [
            Query(str(text), self.mode, self.threshold, documents=_documents(docs))
            for text, docs in zip(batch["text"], batch["documents"], strict=True)
        ]

        # The whole batch at once: read together (one tokenizer batch), then every query in the
        # engine (which batches them continuously, with vLLM). Batch size is the pipeline's
        # setting, not a request's, so the batch limit does not apply.
        outcomes = self.loop.run_until_complete(self.screening.classify_many(queries, caller="ray"))
        model = self.screening.model_id
        return {
            "record": list(batch["record"]),
            "response": [
                response_for(str(rid), o, model).SerializeToString()
                for rid, o in zip(batch["id"], outcomes, strict=True)
            ],
        }
