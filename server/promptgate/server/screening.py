"""The one screening path: query in, classification (or an error with its code) out.

Every caller screens through `Screening`: the gRPC servicer (which only converts protobuf),
`promptgate screen --local`, the Ray workers, `promptgate eval` and the benchmarks, as
vLLM's offline `LLM` and its server share one engine path. It owns every check of a query
(empty text, character and token limits, truncation, threshold range, mode) and the
lifecycle of each query (engine call, cancellation, telemetry), so no caller repeats them
and no two callers can answer the same query differently.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from promptgate.concurrency import map_unordered
from promptgate.profiles import ModelProfile

from .canonicalize import Canonical, CanonicalizeOptions, canonicalize
from .domain import Classification, Mode, Query, keep_both_ends
from .engine.base import BackendStats, Engine, EngineDescription, ScreeningSettings
from .errors import InvalidInput, ScreeningError, as_screening_error

if TYPE_CHECKING:
    from .config import ServerConfig

__all__ = ["FinishedQuery", "ModelDescription", "QueryObserver", "Screening", "ScreeningLimits"]

K = TypeVar("K")
# Below this size tokenizing inline costs less than a hop to a worker thread; above it
# the event loop would stall for a noticeable time.
_INLINE_TOKENIZE_CHARS = 2048


@dataclass(frozen=True)
class ScreeningLimits:
    """The request limits the path enforces (token limits come from the engine)."""

    max_text_chars: int = 16000
    max_batch_items: int = 1024

    @classmethod
    def from_config(cls, config: ServerConfig) -> ScreeningLimits:
        return cls(max_text_chars=config.max_text_chars, max_batch_items=config.max_batch_items)


@dataclass(frozen=True)
class _Prepared:
    """A checked query: what the engine gets, and what the path did to the text on the way."""

    text_ids: list[int]
    mode: Mode
    threshold: float
    truncated: bool
    signals: tuple[str, ...]


@dataclass(frozen=True)
class ModelDescription:
    """Everything GetModelInfo reports, in domain terms."""

    model: str
    profile: ModelProfile
    engine: EngineDescription
    settings: ScreeningSettings
    limits: ScreeningLimits
    max_text_tokens: int
    canonicalize_steps: tuple[str, ...]


@dataclass(frozen=True)
class FinishedQuery:
    """How one query ended, for a `QueryObserver`.

    `caller` and `id` are the caller's labels (the RPC and request id), passed through.
    `outcome` is None when the query was cancelled; `cause` is the exception behind an
    error that was not one of ours (a bug, a broken engine).
    """

    query: Query
    outcome: Classification | ScreeningError | None
    caller: str
    id: str
    started: float  # time.perf_counter() when the path took the query
    cause: BaseException | None = None


class QueryObserver(Protocol):
    """Told how every query ended (the server's metrics and logs)."""

    def finished(self, query: FinishedQuery) -> None: ...


class Screening:
    """The screening path over one engine. Construct with `load` (or over an engine for tests)."""

    def __init__(
        self,
        engine: Engine,
        limits: ScreeningLimits | None = None,
        *,
        canonicalization: CanonicalizeOptions | None = None,
        observer: QueryObserver | None = None,
    ) -> None:
        self.engine = engine
        self.limits = limits or ScreeningLimits()
        # Decoded payloads never grow a text past the character limit (see _prepare).
        self.canonicalization = canonicalization or CanonicalizeOptions(max_decoded_chars=self.limits.max_text_chars)
        self.observer = observer

    @classmethod
    def over(cls, engine: Engine, config: ServerConfig, *, observer: QueryObserver | None = None) -> Screening:
        """The path over a started engine, with `config`'s limits and canonicalization."""
        return cls(
            engine,
            ScreeningLimits.from_config(config),
            canonicalization=config.canonicalize_options(),
            observer=observer,
        )

    @classmethod
    async def load(cls, config: ServerConfig, *, observer: QueryObserver | None = None) -> Screening:
        """Load the engine `config` asks for and start it. Slow (weights): run before serving."""
        from .engine import load_engine

        return cls.over(await load_engine(config), config, observer=observer)

    # -- what the path is over ---------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    @property
    def profile(self) -> ModelProfile:
        return self.engine.profile

    @property
    def dead(self) -> bool:
        return self.engine.dead

    def stats(self) -> BackendStats:
        return self.engine.stats()

    def describe(self) -> ModelDescription:
        return ModelDescription(
            model=self.engine.model_id,
            profile=self.engine.profile,
            engine=self.engine.describe(),
            settings=self.engine.settings,
            limits=self.limits,
            max_text_tokens=self.engine.max_text_tokens,
            canonicalize_steps=self.canonicalization.steps,
        )

    def observe_batches(self, observer: Callable[[int], None] | None) -> None:
        self.engine.observe_batches(observer)

    async def close(self) -> None:
        await self.engine.close()

    # -- checks --------------------------------------------------------------------------------

    def check_batch(self, n: int) -> None:
        """A batch of `n` queries is refused whole when it is over the limit."""
        limit = self.limits.max_batch_items
        if n > limit:
            raise InvalidInput(
                f"batch has {n} requests; the limit is {limit} (max_batch_items)", reason="TOO_MANY_ITEMS"
            )

    def _mode(self, mode: Mode | str | None) -> Mode:
        if mode is None:
            return self.engine.settings.default_mode
        if isinstance(mode, Mode):
            return mode
        try:
            return Mode(str(mode).lower())
        except ValueError:
            raise InvalidInput(f"unknown mode {mode}", reason="UNKNOWN_MODE") from None

    async def _prepare(self, query: Query) -> _Prepared:
        """Checked, canonicalized and encoded. Raises InvalidInput."""
        text = query.text
        if not text.strip():
            raise InvalidInput("text is empty", reason="EMPTY_TEXT")
        cut = False
        max_chars = self.limits.max_text_chars
        if len(text) > max_chars:
            if not query.truncate:
                raise InvalidInput(
                    f"text is {len(text)} characters long; the limit is {max_chars} characters "
                    "(max_text_chars); set truncate to classify its first and last parts",
                    reason="TOO_LONG",
                )
            text, cut = "".join(keep_both_ends(text, max_chars)), True
        mode = self._mode(query.mode)
        threshold = self.engine.settings.threshold if query.threshold is None else query.threshold
        if math.isnan(threshold) or not 0.0 <= threshold <= 1.0:
            raise InvalidInput(f"threshold {threshold} is not in [0, 1]", reason="THRESHOLD_OUT_OF_RANGE")
        if mode is Mode.REASONED and not self.engine.profile.rationale_trained:
            raise InvalidInput(
                f"model profile {self.engine.profile.name!r} was not trained with rationales: use FAST",
                reason="NO_RATIONALES",
            )
        options = self.canonicalization if query.canonicalize else None
        if len(text) > _INLINE_TOKENIZE_CHARS:
            canonical, ids = await asyncio.to_thread(self._read, text, options)
        else:
            canonical, ids = self._read(text, options)
        read = canonical.text
        if not read.strip():
            raise InvalidInput("text is empty after canonicalization", reason="EMPTY_AFTER_CANONICALIZATION")
        if len(read) > max_chars:  # decoded payloads made it longer than the caller could send
            if not query.truncate:
                raise InvalidInput(
                    f"text is {len(read)} characters long after canonicalization; the limit is "
                    f"{max_chars} characters (max_text_chars); set truncate to classify its first and last parts",
                    reason="TOO_LONG_DECODED",
                )
            read, cut = "".join(keep_both_ends(read, max_chars)), True
            ids = await asyncio.to_thread(self.engine.encode, read)
        limit = self.engine.max_text_tokens
        if len(ids) > limit:
            if not query.truncate:
                raise InvalidInput(
                    f"text is {len(ids)} tokens long; the limit is {limit} tokens (max_text_tokens)",
                    reason="TOO_MANY_TOKENS",
                )
            ids, cut = keep_both_ends(ids, limit), True
        return _Prepared(ids, mode, threshold, cut, canonical.signals)

    def _read(self, text: str, options: CanonicalizeOptions | None) -> tuple[Canonical, list[int]]:
        """What the model reads: the canonical text (when asked and any step is on), and its tokens."""
        canonical = canonicalize(text, options) if options is not None and options.steps else Canonical(text)
        return canonical, self.engine.encode(canonical.text)

    # -- one query -----------------------------------------------------------------------------

    async def classify(self, query: Query, *, caller: str = "local", id: str = "") -> Classification:
        """Screen one query. Raises ScreeningError (its kind gives the status); cancelling stops the engine's work."""
        started = time.perf_counter()
        try:
            prepared = await self._prepare(query)
            result = await self.engine.classify_tokens(prepared.text_ids, prepared.mode, prepared.threshold)
        except asyncio.CancelledError:
            self._tell(FinishedQuery(query, None, caller, id, started))
            raise
        except Exception as exc:
            error = as_screening_error(exc)
            self._tell(FinishedQuery(query, error, caller, id, started, None if error is exc else exc))
            raise error from exc
        result = result.as_screened(truncated=prepared.truncated, signals=prepared.signals)
        self._tell(FinishedQuery(query, result, caller, id, started))
        return result

    async def outcome(self, query: Query, *, caller: str = "local", id: str = "") -> Classification | ScreeningError:
        """`classify`, with a failure returned instead of raised (one item of a batch or stream)."""
        try:
            return await self.classify(query, caller=caller, id=id)
        except ScreeningError as error:
            return error

    def _tell(self, finished: FinishedQuery) -> None:
        if self.observer is not None:
            self.observer.finished(finished)

    # -- many queries ----------------------------------------------------------------------------

    async def classify_batch(
        self, queries: Sequence[Query], *, caller: str = "local", ids: Sequence[str] | None = None
    ) -> list[Classification | ScreeningError]:
        """Every query at once (the engine batches them with all else in flight), in input order."""
        self.check_batch(len(queries))
        ids = ids if ids is not None else [""] * len(queries)
        return list(
            await asyncio.gather(*(self.outcome(q, caller=caller, id=i) for q, i in zip(queries, ids, strict=True)))
        )

    async def screen(
        self, items: AsyncIterable[tuple[K, Query]] | Iterable[tuple[K, Query]], *, window: int, caller: str = "local"
    ) -> AsyncIterator[tuple[K, Classification | ScreeningError]]:
        """Bulk screening: (key, outcome) in completion order, at most `window` queries in hand."""

        async def one(item: tuple[K, Query]) -> tuple[K, Classification | ScreeningError]:
            key, query = item
            return key, await self.outcome(query, caller=caller, id=str(key))

        async for result in map_unordered(items, one, window):
            yield result
