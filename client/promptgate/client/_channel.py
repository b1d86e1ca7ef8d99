"""Channel settings shared by Client and AsyncClient: targets, TLS, tokens, retries, balancing."""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from promptgate.v1 import classifier_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["ClassifierService"].full_name
DEFAULT_TARGET = "localhost:50051"
DEFAULT_TIMEOUT = 30.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

Targets = str | Sequence[str]
PemSource = bytes | str | Path


def channel_options(max_attempts: int, extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """Balancing and gRPC's own retry policy.

    Calls are spread over every address the target resolves to (`round_robin`: one
    connection per replica, instead of `pick_first`'s one connection for all). Retried:
    UNAVAILABLE (loading, restarting, a lost connection) and RESOURCE_EXHAUSTED (the
    server's queue is full; it sends a retry pushback that the channel waits out before the
    next attempt). Never INVALID_ARGUMENT and the like: retrying cannot fix them. Streams
    are not retried: their responses may already have been consumed.
    """
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if max_attempts > 1:
        config["methodConfig"] = [
            {
                "name": [{"service": SERVICE, "method": m} for m in ("Classify", "ClassifyBatch", "GetModelInfo")],
                "retryPolicy": {
                    "maxAttempts": min(max_attempts, 5),  # gRPC caps attempts at 5
                    "initialBackoff": "0.2s",
                    "maxBackoff": "5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
                },
            }
        ]
        options.append(("grpc.enable_retries", 1))
    else:
        options.append(("grpc.enable_retries", 0))
    options.append(("grpc.service_config", json.dumps(config)))
    return [*options, *extra]


def channel_target(targets: Targets) -> str:
    """One gRPC target for one address or several.

    A single target passes through (`host:port`, or `dns:///name:port` to balance over every
    address a name resolves to, re-resolved as replicas come and go). Several `host:port`
    targets are resolved once here and given to gRPC as one `ipv4:`/`ipv6:` address list,
    which `round_robin` balances over.
    """
    if isinstance(targets, str):
        return targets
    targets = list(targets)
    if not targets:
        raise ValueError("no target given")
    if len(targets) == 1:
        return targets[0]
    addresses: list[tuple[int, str]] = []
    for target in targets:
        host, sep, port = target.rpartition(":")
        if not sep or not port.isdigit() or "/" in target:
            raise ValueError(f"target {target!r}: several targets must each be host:port")
        host = host.strip("[]")
        try:
            ip = ipaddress.ip_address(host)
            addresses.append((ip.version, f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"))
            continue
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ValueError(f"target {target!r}: cannot resolve {host}: {exc}") from exc
        for family, *_, sockaddr in infos:
            version = 6 if family == socket.AF_INET6 else 4
            entry = f"[{sockaddr[0]}]:{port}" if version == 6 else f"{sockaddr[0]}:{port}"
            if (version, entry) not in addresses:
                addresses.append((version, entry))
    v4 = [a for v, a in addresses if v == 4]
    v6 = [a for v, a in addresses if v == 6]
    # gRPC's address-list targets are one family each; prefer IPv4 where a name gives both.
    return "ipv4:" + ",".join(v4) if v4 else "ipv6:" + ",".join(v6)


def _pem(source: PemSource | None) -> bytes | None:
    if source is None:
        return None
    if isinstance(source, bytes):
        return source
    text = str(source)
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    return Path(source).read_bytes()


@dataclass(frozen=True)
class Transport:
    """How to reach the server: TLS settings and the bearer token sent with every call."""

    tls: bool = False
    root_certificates: PemSource | None = None  # None with tls: the system's trust store
    client_cert: PemSource | None = None  # mutual TLS
    client_key: PemSource | None = None
    token: str | None = None
    server_name: str | None = None  # TLS name to check when the target is an address

    def __post_init__(self) -> None:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together (mutual TLS)")

    @property
    def secure(self) -> bool:
        return self.tls or self.root_certificates is not None or self.client_cert is not None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.root_certificates),
            private_key=_pem(self.client_key),
            certificate_chain=_pem(self.client_cert),
        )

    def options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def metadata(self) -> tuple[tuple[str, str], ...]:
        # Sent as plain call metadata (not call credentials), so a token also works on a
        # plaintext channel inside a trusted network, as the server accepts it either way.
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def sync_channel(targets: Targets, transport: Transport, options: list[tuple[str, Any]]) -> grpc.Channel:
    target = channel_target(targets)
    options = [*options, *transport.options()]
    if transport.secure:
        return grpc.secure_channel(target, transport.credentials(), options=options)
    return grpc.insecure_channel(target, options=options)


def async_channel(targets: Targets, transport: Transport, options: list[tuple[str, Any]]) -> grpc.aio.Channel:
    target = channel_target(targets)
    options = [*options, *transport.options()]
    if transport.secure:
        return grpc.aio.secure_channel(target, transport.credentials(), options=options)
    return grpc.aio.insecure_channel(target, options=options)
