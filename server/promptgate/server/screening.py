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
import dataclasses
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from promptgate.concurrency import map_unordered_batches
from promptgate.profiles import ModelProfile

from .cache import Reading, ResultCache
from .canonicalize import Canonical, CanonicalizeOptions, canonicalize
from .domain import Classification, Document, DocumentResult, Mode, Query, Span, keep_both_ends
from .engine.base import BackendStats, Engine, EngineDescription, ScreeningSettings
from .errors import InvalidInput, ScreeningError, as_screening_error

if TYPE_CHECKING:
    from .config import ServerConfig

__all__ = ["FinishedQuery", "ModelDescription", "QueryObserver", "Screening", "ScreeningLimits"]

K = TypeVar("K")
T = TypeVar("T")
# Below this size tokenizing inline costs less than a hop to a worker thread; above it
# the event loop would stall for a noticeable time.
_INLINE_TOKENIZE_CHARS = 2048
# Queries read (checked, canonicalized, tokenized) at a time by `submit` before their engine
# work starts: the engine starts on the first ones while the rest are read.
_READ_CHUNK = 32


@dataclass(frozen=True)
class ScreeningLimits:
    """The request limits the path enforces (token limits come from the engine)."""

    max_text_chars: int = 16000
    max_batch_items: int = 1024
    max_documents: int = 16
    max_document_chars: int = 64000
    # Windows over long text, in model tokens; None: the model profile's window_tokens, else
    # as many as fit the model (max_text_tokens).
    window_tokens: int | None = None
    window_overlap_tokens: int = 64
    # Most windows one text or document is cut into; past it INVALID_ARGUMENT names the cap.
    max_windows: int = 256

    @classmethod
    def from_config(cls, config: ServerConfig) -> ScreeningLimits:
        return cls(
            max_text_chars=config.max_text_chars,
            max_batch_items=config.max_batch_items,
            max_documents=config.max_documents,
            max_document_chars=config.max_document_chars,
            window_tokens=config.window_tokens,
            window_overlap_tokens=config.window_overlap_tokens,
            max_windows=config.max_windows,
        )


def window_starts(n: int, size: int, overlap: int, begins_line: Callable[[int], bool] | None = None) -> list[int]:
    """Starts of windows of `size` over `n` tokens, each overlapping the previous by at least `overlap`.

    The last window ends at the end, so every token is in a full window and none is left in
    a short tail window the model has little context for. With `begins_line` (does token i
    begin a line?), a window begins at the latest token that begins a line within its
    advance: a paragraph, where an injected instruction usually begins, is then read from its
    first word, as the model was trained to read a text. A window never advances further than
    without lines, so any run of `overlap` tokens still lies whole in one window; and two
    windows in a row advance at least as far as one without lines, so there are at most
    twice as many.
    """
    if n <= size:
        return [0]
    step = max(1, size - overlap)
    if begins_line is None:
        return [*range(0, n - size, step), n - size]
    starts = [0]
    while starts[-1] + size < n:
        start = starts[-1]
        furthest = min(start + step, n - size)
        starts.append(next((i for i in range(furthest, start, -1) if begins_line(i)), furthest))
    return starts


def begins_line(text: str, offsets: Sequence[tuple[int, int]]) -> Callable[[int], bool]:
    """Whether token i of `text` begins a line: it follows a line break and is not one itself."""

    def test(i: int) -> bool:
        start, end = offsets[i]
        return start > 0 and text[start - 1] == "\n" and not text[start:end].isspace()

    return test


@dataclass(frozen=True)
class _Part:
    """The text or one document, checked, canonicalized and cut into windows."""

    windows: list[list[int]]
    spans: list[Span]  # per window, in the caller's original text
    truncated: bool
    signals: tuple[str, ...]


@dataclass(frozen=True)
class _Reading:
    """One text of a query (its text or a document) checked and canonicalized, not yet tokenized."""

    what: str  # "text", "document 2 ('id')": how errors name it
    length: int  # characters as the caller sent them
    canonical: Canonical
    read: str  # what the model reads: the canonical text, cut when asked to and needed
    cut: bool
    truncate: bool


@dataclass(frozen=True)
class _Read:
    """A query's checks passed and its texts canonicalized; a document's error is its own."""

    mode: Mode
    threshold: float
    text: _Reading | None
    docs: list[_Reading | ScreeningError]
    documents: tuple[Document, ...]

    def readings(self) -> list[_Reading]:
        return [r for r in (self.text, *self.docs) if isinstance(r, _Reading)]


@dataclass(frozen=True)
class _Prepared:
    """A query ready for the engine: its text and documents in windows of tokens."""

    mode: Mode
    threshold: float
    text: _Part | None
    docs: list[_Part | ScreeningError]
    documents: tuple[Document, ...]
    # The cache's key of the text as sent (ResultCache.text_key); None: not remembered.
    text_key: bytes | None = None


@dataclass(frozen=True)
class _Known:
    """An exact repeat of a text the cache remembers reading: answered without reading it again
    while its entry is cached, else read as any other."""

    query: Query
    mode: Mode
    threshold: float
    text_key: bytes
    reading: Reading


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
    window_tokens: int


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
        cache: ResultCache | None = None,
    ) -> None:
        self.engine = engine
        self.cache = cache
        self.limits = limits or ScreeningLimits()
        # Decoded payloads never grow a text past the character limit (see _prepare).
        self.canonicalization = canonicalization or CanonicalizeOptions(max_decoded_chars=self.limits.max_text_chars)
        self._options_repr: tuple[CanonicalizeOptions | None, str] = (None, "")
        self.observer = observer

    @classmethod
    def over(cls, engine: Engine, config: ServerConfig, *, observer: QueryObserver | None = None) -> Screening:
        """The path over a started engine, with `config`'s limits and canonicalization."""
        size = config.result_cache_size
        return cls(
            engine,
            ScreeningLimits.from_config(config),
            canonicalization=config.canonicalize_options(),
            observer=observer,
            cache=ResultCache(size) if size else None,
        )

    @classmethod
    async def load(
        cls, config: ServerConfig, *, observer: QueryObserver | None = None, offline: bool = False
    ) -> Screening:
        """Load the engine `config` asks for and start it. Slow (weights): run before serving.

        offline: bulk screening in this process (screen --local, Ray, eval), not a server.
        """
        from .engine import load_engine

        return cls.over(await load_engine(config, offline=offline), config, observer=observer)

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
            window_tokens=self.window_tokens,
        )

    @property
    def window_tokens(self) -> int:
        """Windows' size: the setting, else the window the model was trained on (its profile's),
        else as many tokens as fit the model; never more than fit."""
        size = self.limits.window_tokens
        if size is None:
            size = self.engine.profile.window_tokens
        return self.engine.max_text_tokens if size is None else min(size, self.engine.max_text_tokens)

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

    def _options(self, query: Query) -> tuple[Mode, float]:
        mode = self._mode(query.mode)
        threshold = self.engine.settings.threshold if query.threshold is None else query.threshold
        if math.isnan(threshold) or not 0.0 <= threshold <= 1.0:
            raise InvalidInput(f"threshold {threshold} is not in [0, 1]", reason="THRESHOLD_OUT_OF_RANGE")
        if mode is Mode.REASONED and not self.engine.profile.rationale_trained:
            raise InvalidInput(
                f"model profile {self.engine.profile.name!r} was not trained with rationales: use FAST",
                reason="NO_RATIONALES",
            )
        return mode, threshold

    def _check_chars(self, text: str, what: str, limit: int, setting: str, truncate: bool) -> tuple[str, bool]:
        """The text within its character limit (cut when asked); raises InvalidInput for empty or too long."""
        if not text.strip():
            raise InvalidInput(f"{what} is empty", reason="EMPTY_TEXT")
        if len(text) <= limit:
            return text, False
        if not truncate:
            raise InvalidInput(
                f"{what} is {len(text)} characters long; the limit is {limit} characters "
                f"({setting}); set truncate to classify its first and last parts",
                reason="TOO_LONG",
            )
        return "".join(keep_both_ends(text, limit)), True

    def _reading(
        self, text: str, what: str, limit: int, setting: str, *, truncate: bool, canonicalize_it: bool
    ) -> _Reading:
        """One text checked and canonicalized, ready to tokenize. Raises InvalidInput."""
        sent, cut = self._check_chars(text, what, limit, setting, truncate)
        options = self.canonicalization if canonicalize_it else None
        canonical = canonicalize(sent, options) if options is not None and options.steps else Canonical(sent)
        read = canonical.text
        if not read.strip():
            raise InvalidInput(f"{what} is empty after canonicalization", reason="EMPTY_AFTER_CANONICALIZATION")
        if len(read) > limit:  # canonicalization made it longer than the caller could send
            if not truncate:
                raise InvalidInput(
                    f"{what} is {len(read)} characters long after canonicalization; the limit is "
                    f"{limit} characters ({setting}); set truncate to classify its first and last parts",
                    reason="TOO_LONG_DECODED",
                )
            read, cut = "".join(keep_both_ends(read, limit)), True
        return _Reading(what, len(text), canonical, read, cut, truncate)

    def _part(self, reading: _Reading, ids: list[int], offsets: Sequence[tuple[int, int]]) -> _Part:
        """One text's tokens cut into windows. Raises InvalidInput."""
        whole = [Span(0, reading.length)]
        signals = reading.canonical.signals
        if reading.truncate:
            # Asked to cut: one prompt, of the first and last tokens past what fits, as before windows.
            limit_tokens = self.engine.max_text_tokens
            return _Part([keep_both_ends(ids, limit_tokens)], whole, reading.cut or len(ids) > limit_tokens, signals)
        size = self.window_tokens
        # At most half a window shared, whatever the setting: windows must advance.
        overlap = min(self.limits.window_overlap_tokens, size // 2)
        starts = window_starts(len(ids), size, overlap, begins_line(reading.read, offsets))
        if len(starts) > self.limits.max_windows:
            raise InvalidInput(
                f"{reading.what} is {len(ids)} tokens long: {len(starts)} windows of {size} tokens; the limit is "
                f"{self.limits.max_windows} windows (max_windows); set truncate to classify its first and last parts",
                reason="TOO_MANY_WINDOWS",
            )
        if len(starts) == 1:
            return _Part([ids], whole, False, signals)
        windows = [ids[i : i + size] for i in starts]
        spans = [
            Span(*reading.canonical.original_span(offsets[i][0], offsets[i + len(w) - 1][1]))
            for i, w in zip(starts, windows, strict=True)
        ]
        return _Part(windows, spans, False, signals)

    async def _classify_tokens(
        self, text_ids: list[int], mode: Mode, threshold: float, key: bytes | None = None
    ) -> Classification:
        """The engine's answer, or the cached one for the same ids, mode and threshold (`key`:
        their cache key, when the caller has it already)."""
        if self.cache is None:
            return await self.engine.classify_tokens(text_ids, mode, threshold)
        key = self.cache.key(text_ids, mode, threshold) if key is None else key
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        result = await self.engine.classify_tokens(text_ids, mode, threshold)
        # When its first token came belongs to the query that waited for it, not to repeats
        # (only a generated rationale has one).
        stored = result if result.first_token_at is None else dataclasses.replace(result, first_token_at=None)
        self.cache.put(key, stored)
        return result

    # -- reading queries: checks, canonicalization, tokens, windows (many queries at once) ------

    def _read_query(self, query: Query) -> _Read:
        """A query's checks and its texts canonicalized (not tokenized). Raises InvalidInput."""
        has_text = bool(query.text.strip()) or not query.documents
        if has_text:  # the text's own checks first: a request with only bad text fails as it always did
            self._check_chars(query.text, "text", self.limits.max_text_chars, "max_text_chars", query.truncate)
        mode, threshold = self._options(query)
        text = (
            self._reading(
                query.text,
                "text",
                self.limits.max_text_chars,
                "max_text_chars",
                truncate=query.truncate,
                canonicalize_it=query.canonicalize,
            )
            if has_text
            else None
        )
        docs = [self._document(i, d, query) for i, d in enumerate(query.documents)]
        return _Read(mode, threshold, text, docs, query.documents)

    def _document(self, index: int, doc: Document, query: Query) -> _Reading | ScreeningError:
        what = f"document {index}" + (f" ({doc.id!r})" if doc.id else "")
        if index >= self.limits.max_documents:
            return InvalidInput(
                f"{what} is past the limit of {self.limits.max_documents} documents per request (max_documents)",
                reason="TOO_MANY_DOCUMENTS",
            )
        try:
            return self._reading(
                doc.content,
                what,
                self.limits.max_document_chars,
                "max_document_chars",
                truncate=query.truncate,
                canonicalize_it=query.canonicalize,
            )
        except InvalidInput as error:
            return error

    def _prepare_all(self, queries: Sequence[Query]) -> list[_Prepared | Exception]:
        """Every query read, and all their texts tokenized in one batch; a query's failure is its own."""
        reads: list[_Read | Exception] = []
        for query in queries:
            try:
                reads.append(self._read_query(query))
            except Exception as exc:  # InvalidInput, or a bug: this query's outcome, not the others'
                reads.append(exc)
        readings = [r for read in reads if isinstance(read, _Read) for r in read.readings()]
        tokens = self._tokenize([r.read for r in readings])
        by_reading = {id(r): t for r, t in zip(readings, tokens, strict=True)}
        return [read if isinstance(read, Exception) else self._prepared(read, by_reading) for read in reads]

    def _tokenize(self, texts: list[str]) -> list[tuple[list[int], Sequence[tuple[int, int]]] | Exception]:
        """Tokens and offsets of each text: one batch, or text by text when the batch fails."""
        try:
            return list(self.engine.encode_many_with_offsets(texts))
        except Exception:  # one text the tokenizer refuses fails only its own query
            results: list[tuple[list[int], Sequence[tuple[int, int]]] | Exception] = []
            for text in texts:
                try:
                    results.append(self.engine.encode_with_offsets(text))
                except Exception as exc:
                    results.append(exc)
            return results

    def _prepared(self, read: _Read, tokens: dict[int, Any]) -> _Prepared | Exception:
        def part(reading: _Reading) -> _Part:
            encoded = tokens[id(reading)]
            if isinstance(encoded, Exception):
                raise encoded
            return self._part(reading, *encoded)

        try:
            text = part(read.text) if read.text is not None else None
        except Exception as exc:  # the text's failure is the query's
            return exc
        docs: list[_Part | ScreeningError] = []
        for doc in read.docs:
            if isinstance(doc, ScreeningError):
                docs.append(doc)
                continue
            try:
                docs.append(part(doc))
            except InvalidInput as error:
                docs.append(error)
        return _Prepared(read.mode, read.threshold, text, docs, read.documents)

    async def _prepare(self, queries: Sequence[Query]) -> list[_Prepared | _Known | Exception]:
        """Every query read (`_read_all`), except exact repeats of texts the result cache remembers
        reading, which are not read again."""
        keys = [self._text_key(q) for q in queries]
        out: list[_Prepared | _Known | Exception | None] = [None] * len(queries)
        unread = []
        for i, (query, key) in enumerate(zip(queries, keys, strict=True)):
            reading = self.cache.reading(key[0]) if key is not None and self.cache is not None else None
            if reading is not None and key is not None:
                out[i] = _Known(query, key[1], key[2], key[0], reading)
            else:
                unread.append(i)
        if unread:
            prepared = await self._read_all([queries[i] for i in unread])
            for i, p in zip(unread, prepared, strict=True):
                key = keys[i]
                out[i] = dataclasses.replace(p, text_key=key[0]) if isinstance(p, _Prepared) and key else p
        return out  # type: ignore[return-value]

    async def _read_all(self, queries: Sequence[Query]) -> list[_Prepared | Exception]:
        """`_prepare_all`, in a worker thread when the texts are long enough to stall the event loop."""
        size = sum(len(q.text) + sum(len(d.content) for d in q.documents) for q in queries)
        if size > _INLINE_TOKENIZE_CHARS:
            return await asyncio.to_thread(self._prepare_all, queries)
        return self._prepare_all(queries)

    def _text_key(self, query: Query) -> tuple[bytes, Mode, float] | None:
        """The result cache's key of a query's text as sent (text-only queries), with its mode and threshold."""
        if self.cache is None or query.documents:
            return None
        try:
            mode, threshold = self._options(query)
        except InvalidInput:
            return None
        # Everything the reading and the answer depend on besides the text (limits, windows and
        # the model are fixed for this path; the canonicalization options may be replaced).
        if self._options_repr[0] is not self.canonicalization:
            self._options_repr = (self.canonicalization, repr(self.canonicalization))
        options = f"|{mode.value}|{threshold!r}|{query.truncate}|{query.canonicalize}|{self._options_repr[1]}"
        return self.cache.text_key(query.text, options), mode, threshold

    def _known(self, known: _Known) -> Classification | None:
        """A remembered repeat's answer from the cache; None when its entry has been evicted."""
        cache, reading = self.cache, known.reading
        if cache is None or reading.key not in cache:
            return None
        cached = cache.get(reading.key)
        assert cached is not None
        return dataclasses.replace(cached, truncated=reading.truncated, signals=reading.signals, span=reading.span)

    # -- deciding: the engine's answers for a read query ---------------------------------------

    async def _decide(self, prepared: _Prepared | _Known) -> Classification:
        """The verdict over the text and every document: the most malicious window decides."""
        if isinstance(prepared, _Known):
            answer = self._known(prepared)
            if answer is not None:
                return answer
            (read,) = await self._read_all([prepared.query])  # its entry was evicted: read it again
            if isinstance(read, Exception):
                raise read
            prepared = dataclasses.replace(read, text_key=prepared.text_key)
        mode, threshold, text_part, docs = prepared.mode, prepared.threshold, prepared.text, prepared.docs
        parts = [p for p in (text_part, *docs) if isinstance(p, _Part)]
        if not parts:
            raise InvalidInput(
                "nothing to screen: the text is empty and no document could be screened", reason="NOTHING_TO_SCREEN"
            )
        if len(parts) == 1 and len(parts[0].windows) == 1:  # the common case: one prompt, in the asked mode
            ids = parts[0].windows[0]
            key = self.cache.key(ids, mode, threshold) if self.cache is not None else None
            result = await self._classify_tokens(ids, mode, threshold, key)
            scored = [[result]]
            if prepared.text_key is not None and key is not None and text_part is not None:
                # Remember what this text as sent was read to, for its exact repeats.
                reading = Reading(key, text_part.spans[0], tuple(sorted(set(text_part.signals))), text_part.truncated)
                self.cache.put_reading(prepared.text_key, reading)
        else:  # every window FAST, all at once (the engine batches them)
            flat = [w for part in parts for w in part.windows]
            fast = await asyncio.gather(*(self._classify_tokens(w, Mode.FAST, threshold) for w in flat))
            scored, i = [], 0
            for part in parts:
                scored.append(list(fast[i : i + len(part.windows)]))
                i += len(part.windows)
        best = [max(range(len(r)), key=lambda k, r=r: r[k].malicious_probability) for r in scored]
        top = max(range(len(parts)), key=lambda j: scored[j][best[j]].malicious_probability)
        if mode is not Mode.FAST and not (len(parts) == 1 and len(parts[0].windows) == 1):
            # The rationale is written for the deciding window only.
            scored[top][best[top]] = await self._classify_tokens(parts[top].windows[best[top]], mode, threshold)
        results = {id(part): (scored[j][best[j]], part.spans[best[j]]) for j, part in enumerate(parts)}
        documents = tuple(
            DocumentResult(
                d.id,
                None
                if isinstance(p, ScreeningError)
                else dataclasses.replace(
                    results[id(p)][0], span=results[id(p)][1], signals=p.signals, truncated=p.truncated
                ),
                p if isinstance(p, ScreeningError) else None,
            )
            for d, p in zip(prepared.documents, docs, strict=True)
        )
        decided, _ = results[id(parts[top])]
        text_span = results[id(text_part)][1] if text_part is not None and parts[top] is text_part else None
        return dataclasses.replace(
            decided,
            truncated=text_part.truncated if text_part is not None else False,
            signals=tuple(sorted({s for part in parts for s in part.signals})),
            span=text_span,
            documents=documents,
        )

    # -- one query -----------------------------------------------------------------------------

    async def classify(self, query: Query, *, caller: str = "local", id: str = "") -> Classification:
        """Screen one query. Raises ScreeningError (its kind gives the status); cancelling stops the engine's work."""
        started = time.perf_counter()
        try:
            (prepared,) = await self._prepare((query,))
        except asyncio.CancelledError:
            self._tell(FinishedQuery(query, None, caller, id, started))
            raise
        return await self._finish(query, prepared, caller, id, started)

    async def outcome(self, query: Query, *, caller: str = "local", id: str = "") -> Classification | ScreeningError:
        """`classify`, with a failure returned instead of raised (one item of a batch or stream)."""
        try:
            return await self.classify(query, caller=caller, id=id)
        except ScreeningError as error:
            return error

    async def _finish(
        self, query: Query, prepared: _Prepared | _Known | Exception, caller: str, id: str, started: float
    ) -> Classification:
        """A read query's engine work and its end told to the observer. Raises ScreeningError."""
        try:
            if isinstance(prepared, Exception):
                raise prepared
            result = await self._decide(prepared)
        except asyncio.CancelledError:
            self._tell(FinishedQuery(query, None, caller, id, started))
            raise
        except Exception as exc:
            error = as_screening_error(exc)
            self._tell(FinishedQuery(query, error, caller, id, started, None if error is exc else exc))
            raise error from exc
        self._tell(FinishedQuery(query, result, caller, id, started))
        return result

    async def _outcome(
        self, query: Query, prepared: _Prepared | _Known | Exception, caller: str, id: str, started: float
    ) -> Classification | ScreeningError:
        try:
            return await self._finish(query, prepared, caller, id, started)
        except ScreeningError as error:
            return error

    def _tell(self, finished: FinishedQuery) -> None:
        if self.observer is not None:
            self.observer.finished(finished)

    # -- many queries ----------------------------------------------------------------------------

    async def submit(
        self, queries: Sequence[Query], *, caller: str = "local", ids: Sequence[str] | None = None
    ) -> list[asyncio.Task[Classification | ScreeningError]]:
        """Start screening `queries` together: read a chunk at a time (its texts tokenized in one
        batch), each chunk's engine work started before the next is read, so the engine is busy
        while the rest is read. One task per query, in input order, answering its outcome (a
        failure is returned, not raised); cancelling a task stops that query's work."""
        started = time.perf_counter()
        ids = ids if ids is not None else [""] * len(queries)
        tasks: list[asyncio.Task[Classification | ScreeningError]] = []
        try:
            for lo in range(0, len(queries), _READ_CHUNK):
                chunk = queries[lo : lo + _READ_CHUNK]
                prepared = await self._prepare(chunk)
                tasks += [
                    asyncio.ensure_future(self._outcome(q, p, caller, i, started))
                    for q, p, i in zip(chunk, prepared, ids[lo : lo + len(chunk)], strict=True)
                ]
        except asyncio.CancelledError:
            # The started ones have run to their engine call, and tell their own end when cancelled.
            for task in tasks:
                task.cancel()
            for query, id in zip(queries[len(tasks) :], ids[len(tasks) :], strict=True):
                self._tell(FinishedQuery(query, None, caller, id, started))
            raise
        return tasks

    async def classify_many(
        self, queries: Sequence[Query], *, caller: str = "local", ids: Sequence[str] | None = None
    ) -> list[Classification | ScreeningError]:
        """Every query screened together (`submit`), outcomes in input order; no limit on how many."""
        tasks = await self.submit(queries, caller=caller, ids=ids)
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:  # cancelled: stop the engine's work for every query
                task.cancel()

    async def classify_batch(
        self, queries: Sequence[Query], *, caller: str = "local", ids: Sequence[str] | None = None
    ) -> list[Classification | ScreeningError]:
        """A request's batch (refused whole when over max_batch_items), screened together, in input order."""
        self.check_batch(len(queries))
        return await self.classify_many(queries, caller=caller, ids=ids)

    async def screen(
        self, items: AsyncIterable[tuple[K, Query]] | Iterable[tuple[K, Query]], *, window: int, caller: str = "local"
    ) -> AsyncIterator[tuple[K, Classification | ScreeningError]]:
        """Bulk screening: (key, outcome) in completion order, at most `window` queries in hand.

        The queries that are ready when there is room are read and started together (`submit`).
        """

        async def start(chunk: list[tuple[K, Query]]) -> list[Awaitable[tuple[K, Classification | ScreeningError]]]:
            keys = [key for key, _ in chunk]
            tasks = await self.submit([q for _, q in chunk], caller=caller, ids=[str(k) for k in keys])
            return [_keyed(key, task) for key, task in zip(keys, tasks, strict=True)]

        async for result in map_unordered_batches(items, start, window):
            yield result


async def _keyed(key: K, task: Awaitable[T]) -> tuple[K, T]:
    return key, await task
