"""The server's view of every screened query: one log line and the per-query metrics.

Plugged into the screening path as its `QueryObserver`, so a query is counted and logged
once, where its lifecycle ends, whichever RPC carried it.
"""

from __future__ import annotations

import time
from typing import Any

from .domain import Classification, Mode
from .errors import ScreeningError
from .logs import get_logger
from .metrics import ServerMetrics
from .screening import FinishedQuery

log = get_logger("promptgate.server")


class QueryTelemetry:
    def __init__(self, metrics: ServerMetrics, *, log_query_text: bool = False) -> None:
        self.metrics = metrics
        self.log_query_text = log_query_text

    def finished(self, query: FinishedQuery) -> None:
        outcome, started, cause = query.outcome, query.started, query.cause
        # Key order is the log line's: rpc and id first, the text (when logged) last.
        line: dict[str, Any] = {"rpc": query.caller, "id": query.id}
        text = {"text": query.query.text} if self.log_query_text else {}
        latency_ms = round((time.perf_counter() - started) * 1000, 2)
        if outcome is None:
            log.info("query", **line, status="CANCELLED", latency_ms=latency_ms, **text)
        elif isinstance(outcome, ScreeningError):
            self.metrics.query_errors.labels(code=outcome.status_code.name).inc()
            line.update(status=outcome.status_code.name, latency_ms=latency_ms)
            if cause is None:
                log.info("query", error=outcome.message, **line, **text)
            else:  # not one of ours: a bug or a broken engine; keep the traceback
                log.error("query", exc_info=cause, **line, **text)
        else:
            self._observe(outcome, started)
            log.info(
                "query",
                **line,
                status="OK",
                mode=outcome.mode.value,
                verdict=outcome.verdict.value,
                malicious_probability=round(outcome.malicious_probability, 4),
                truncated=outcome.truncated,
                **({"signals": list(outcome.signals)} if outcome.signals else {}),
                latency_ms=latency_ms,
                **text,
            )

    def _observe(self, result: Classification, started: float) -> None:
        m = self.metrics
        m.queries.labels(verdict=result.verdict.value, category=result.category, mode=result.mode.value).inc()
        m.malicious_probability.observe(result.malicious_probability)
        for signal in result.signals:
            m.canonicalization_signals.labels(signal=signal).inc()
        m.engine_latency.labels(mode=result.mode.value).observe(time.perf_counter() - started)
        if result.mode is Mode.REASONED:
            m.rationale_tokens.observe(result.rationale_tokens)
            if result.first_token_at is not None:
                m.time_to_first_token.observe(max(0.0, result.first_token_at - started))
