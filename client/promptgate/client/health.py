"""Ask a server's standard gRPC health service whether it is serving (probes, health checks).

Needs `grpcio-health-checking` (in the server extra, so in the server's image).
"""

from __future__ import annotations

from typing import Any

import grpc

from ._channel import Targets, Transport, channel_options, sync_channel

__all__ = ["check_health"]


def check_health(target: Targets, *, service: str = "", timeout: float = 5.0, **transport: Any) -> str:
    """The serving status name (SERVING, NOT_SERVING, ...) or UNREACHABLE: <reason>."""
    try:
        from grpc_health.v1 import health_pb2, health_pb2_grpc
    except ImportError as exc:
        raise RuntimeError("health checks need grpcio-health-checking: pip install 'promptgate[server]'") from exc
    transport.pop("token", None)  # the health service is open: no credential to send
    with sync_channel(target, Transport(**transport), channel_options(max_attempts=1)) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as error:
            return f"UNREACHABLE: {error.code().name}: {error.details()}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
