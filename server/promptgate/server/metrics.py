"""Prometheus metrics, served over plain HTTP on their own port (`--metrics-port`).

Each server owns a private registry, so several servers in one process (tests, benchmarks)
never share counters. Names follow Prometheus conventions: `_total` counters, `_seconds`
histograms, and a `promptgate_` prefix.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["ServerMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_PROBABILITY_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
_TOKEN_BUCKETS = (4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "promptgate_requests_total", "RPCs finished, by method and status code.", ["rpc", "code"], registry=r
        )
        self.queries = Counter(
            "promptgate_queries_total",
            "Queries classified, by verdict, attack category (empty for benign) and the mode that answered.",
            ["verdict", "category", "mode"],
            registry=r,
        )
        self.query_errors = Counter(
            "promptgate_query_errors_total",
            "Queries that got an error instead of a verdict, by code.",
            ["code"],
            registry=r,
        )
        self.canonicalization_signals = Counter(
            "promptgate_canonicalization_signals_total",
            "Classified queries in which canonicalization found each evasion signal (decoded:base64, ...).",
            ["signal"],
            registry=r,
        )
        self.malicious_probability = Histogram(
            "promptgate_malicious_probability",
            "Malicious probability of classified queries.",
            buckets=_PROBABILITY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "promptgate_queue_depth",
            "Queries admitted and not yet answered (queued or running in the engine).",
            registry=r,
        )
        self.queue_limit = Gauge("promptgate_queue_limit", "Most queries admitted at once (--max-queue).", registry=r)
        self.engine_running = Gauge(
            "promptgate_engine_running", "Model requests running in the engine right now.", registry=r
        )
        self.batch_size = Histogram(
            "promptgate_engine_batch_size",
            "Sequences per engine step: the forward-pass batch (transformers) or the running requests a new request "
            "joins (vLLM, whose scheduler forms the steps).",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.engine_latency = Histogram(
            "promptgate_engine_latency_seconds",
            "Time from admission to the answer, per query, by mode.",
            ["mode"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.time_to_first_token = Histogram(
            "promptgate_time_to_first_token_seconds",
            "REASONED: time from admission to the rationale's first token.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rationale_tokens = Histogram(
            "promptgate_rationale_tokens",
            "REASONED: tokens in the generated rationale.",
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.rejected_overload = Counter(
            "promptgate_overload_rejections_total",
            "Queries turned away with RESOURCE_EXHAUSTED (queue full).",
            registry=r,
        )
        self._http: Any = None
        self._thread: threading.Thread | None = None

    def watch(self, running: Callable[[], int]) -> None:
        """Read the engine's running-request count at scrape time."""
        self.engine_running.set_function(running)

    def serve_http(self, host: str, port: int) -> int:
        """Start the /metrics endpoint in a daemon thread; returns the bound port."""
        self._http, self._thread = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
