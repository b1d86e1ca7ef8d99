"""Server assembly (`create_server`) apart from running it (`serve`).

`create_server` wires the servicer, health and reflection onto a grpc.aio server and binds
the port, and with `--http-port` the HTTP/JSON face (`http.py`) over the same servicer on
the same event loop; tests use it with port 0. `serve` is the process: it starts listening at once
(health NOT_SERVING, calls UNAVAILABLE), loads the model, turns SERVING, and on SIGTERM or
SIGINT turns NOT_SERVING, lets in-flight calls finish within the grace period and exits.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from promptgate.v1 import classifier_pb2 as pb
from promptgate.v1 import classifier_pb2_grpc as pb_grpc

from .config import ServerConfig
from .engine import Engine, load_engine
from .heap import freeze_startup_heap, thaw_heap
from .interceptors import RpcEnvelopeInterceptor
from .logs import configure_logging, get_logger
from .metrics import ServerMetrics
from .screening import Screening
from .security import TokenAuthInterceptor, load_tokens, server_credentials
from .servicer import ClassifierServicer
from .telemetry import QueryTelemetry

if TYPE_CHECKING:
    from .http import HttpServer

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ClassifierService"].full_name
# Shutdown waits until no call has come for this long (see RpcEnvelopeInterceptor.refuse_until_quiet).
_QUIET_BEFORE_STOP_S = 0.1
# How long before the grace ends the calls still running are refused (at most a quarter of
# the grace): time for the refusals to reach their callers before the stop cancels the calls.
_REFUSAL_LEAD_S = 1.0
log = get_logger("promptgate.server")


@dataclass
class ServerHandle:
    server: grpc.aio.Server
    servicer: ClassifierServicer
    health: HealthServicer
    port: int
    config: ServerConfig
    metrics: ServerMetrics
    screening: Screening | None = None
    metrics_port: int | None = None
    envelope: RpcEnvelopeInterceptor | None = None
    token_auth: bool = False
    http: HttpServer | None = None  # the HTTP/JSON face, with --http-port

    @property
    def http_port(self) -> int | None:
        """The HTTP/JSON face's bound port; None when it is off."""
        return self.http.port if self.http is not None else None

    async def start(self) -> None:
        """Start taking calls (health NOT_SERVING until `attach_engine`) and the metrics endpoint."""
        await self.set_serving(False)
        await self.server.start()
        if self.http is not None:
            await self.http.start()
        if self.config.metrics_port is not None:  # 0 binds a free port: the handle holds the one bound
            self.metrics_port = self.metrics.serve_http(self.config.metrics_host, self.config.metrics_port)

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):  # "" is the whole server, as probes ask by default
            await self.health.set(name, status)
        if self.http is not None:
            self.http.app.serving = serving

    def screening_for(self, engine: Engine) -> Screening:
        """The screening path over `engine` with this server's limits, metrics and logs."""
        telemetry = QueryTelemetry(self.metrics, log_query_text=self.config.log_query_text)
        return Screening.over(engine, self.config, observer=telemetry)

    async def load(self) -> Screening:
        """Load the configured model and start serving it (slow: weights)."""
        screening = self.screening_for(await load_engine(self.config))
        await self.attach(screening)
        return screening

    async def attach_engine(self, engine: Engine) -> None:
        """Serve an engine that is already started."""
        await self.attach(self.screening_for(engine))

    async def attach(self, screening: Screening) -> None:
        self.screening = screening
        self.metrics.watch(lambda: screening.stats().running)
        screening.observe_batches(self.metrics.batch_size.observe)
        if screening.cache is not None:
            cache, lookups = screening.cache, self.metrics.result_cache_lookups
            cache.on_lookup = lambda hit: lookups.labels(result="hit" if hit else "miss").inc()
            self.metrics.result_cache_entries.set_function(lambda: len(cache))
        self.servicer.attach(screening)
        await self.set_serving(True)

    async def _refuse_running_after(self, delay: float) -> None:
        assert self.envelope is not None
        await asyncio.sleep(delay)
        if refused := self.envelope.refuse_running():
            log.warning("grace period ended; running calls refused UNAVAILABLE", calls=refused)

    async def close(self, grace: float | None = None) -> None:
        # NOT_SERVING first, so load balancers stop sending before the port closes.
        await self.set_serving(False)
        refusal = None
        if grace and self.envelope is not None:
            # Until callers go quiet, new calls get a retryable UNAVAILABLE rather than the
            # CANCELLED that stop() gives the calls it holds unhandled. At most half the
            # grace: the rest is for the calls already running.
            started = time.monotonic()
            await self.envelope.refuse_until_quiet(quiet=_QUIET_BEFORE_STOP_S, limit=grace / 2)
            grace = max(0.0, grace - (time.monotonic() - started))
            # Calls still running a moment before the grace ends are answered UNAVAILABLE
            # (retry elsewhere), not left to the CANCELLED the stop would give them.
            refusal = asyncio.create_task(self._refuse_running_after(grace - min(_REFUSAL_LEAD_S, grace / 4)))
        # Both faces drain at once, each giving its in-flight calls the rest of the grace.
        stops = [self.server.stop(grace)]
        if self.http is not None:
            stops.append(self.http.stop(grace))
        try:
            await asyncio.gather(*stops)
        finally:
            if refusal is not None:
                refusal.cancel()
        if self.screening is not None:
            await self.screening.close()
        self.metrics.close()


def create_server(config: ServerConfig) -> ServerHandle:
    """A grpc.aio server with the classifier, health and reflection, bound but not started.

    Call inside a running event loop. Health starts NOT_SERVING; `attach_engine` turns it
    SERVING once the model is loaded.
    """
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]
    if config.max_connection_age > 0:
        # No grace limit: a long bulk stream finishes on its old connection.
        options.append(("grpc.max_connection_age_ms", int(config.max_connection_age * 1000)))
    metrics = ServerMetrics()
    # Outermost first: the envelope sees (and counts) what auth turns away.
    envelope = RpcEnvelopeInterceptor(metrics)
    interceptors: list[grpc.aio.ServerInterceptor] = [envelope]
    tokens = load_tokens(config)
    auth = None
    if tokens:
        auth = TokenAuthInterceptor(tokens, on_reject=lambda method: log.warning("unauthenticated", method=method))
        interceptors.append(auth)
    server = grpc.aio.server(options=options, interceptors=interceptors)
    servicer = ClassifierServicer(config, metrics)
    pb_grpc.add_ClassifierServiceServicer_to_server(servicer, server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    address = f"{config.host}:{config.port}"
    credentials = server_credentials(config)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    http = None
    if config.http_port is not None:
        from .http import HttpApp, HttpServer  # the Connect and uvicorn stack only where it is used

        app = HttpApp(servicer, metrics, max_message_bytes=config.max_message_bytes, envelope=envelope, auth=auth)
        http = HttpServer(app, config)
    return ServerHandle(
        server=server,
        servicer=servicer,
        health=health,
        port=port,
        config=config,
        metrics=metrics,
        envelope=envelope,
        token_auth=bool(tokens),
        http=http,
    )


async def _wait_for_death(screening: Screening, interval: float = 0.5) -> None:
    # Polled: vLLM exposes engine death as a flag (AsyncLLM.errored), not as an awaitable.
    while not screening.dead:  # noqa: ASYNC110
        await asyncio.sleep(interval)


async def serve(config: ServerConfig) -> int:
    """Run the server until SIGTERM/SIGINT; returns the process exit code."""
    configure_logging(config.log_level)
    log.info("config", **config.as_log_dict())
    handle = create_server(config)
    await handle.start()
    log.info(
        "listening",
        host=config.host,
        port=handle.port,
        tls=config.tls_cert is not None,
        mutual_tls=config.tls_client_ca is not None,
        token_auth=handle.token_auth,
        metrics_port=handle.metrics_port,
        http_port=handle.http_port,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    loading = asyncio.create_task(load_engine(config))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if loading.done() and loading.exception() is None:
        screening = handle.screening_for(loading.result())
        freeze_startup_heap()
        await handle.attach(screening)
        engine_name = screening.describe().engine.name
        log.info("serving", model=config.model, engine=engine_name)
        died = asyncio.create_task(_wait_for_death(screening))
        await asyncio.wait({stopping, died}, return_when=asyncio.FIRST_COMPLETED)
        if died.done():
            # No more answers can come: stop taking calls, let the rest end, exit non-zero
            # so the supervisor restarts us.
            log.error("engine died", engine=engine_name)
            exit_code = 1
        died.cancel()
    elif loading.done():
        log.error("model failed to load", model=config.model, error=str(loading.exception()))
        exit_code = 1
    else:
        loading.cancel()
        await asyncio.gather(loading, return_exceptions=True)
    log.info("shutting down", grace_period=config.grace_period)
    await handle.close(grace=config.grace_period)
    thaw_heap()
    stopping.cancel()
    log.info("stopped", exit_code=exit_code)
    return exit_code
