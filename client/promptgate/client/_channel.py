"""Channel settings shared by Client and AsyncClient."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from promptgate.v1 import classifier_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["ClassifierService"].full_name
DEFAULT_TARGET = "localhost:50051"
DEFAULT_TIMEOUT = 30.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def channel_options(max_attempts: int, extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """gRPC's own retry policy: UNAVAILABLE only (loading, restarting, a lost connection).

    Retrying anything else could screen a query twice for nothing (INVALID_ARGUMENT) or
    add load to an overloaded server (RESOURCE_EXHAUSTED). Streams are not retried: their
    responses may already have been consumed.
    """
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ]
    if max_attempts > 1:
        policy = {
            "methodConfig": [
                {
                    "name": [{"service": SERVICE, "method": m} for m in ("Classify", "ClassifyBatch", "GetModelInfo")],
                    "retryPolicy": {
                        "maxAttempts": min(max_attempts, 5),  # gRPC caps attempts at 5
                        "initialBackoff": "0.2s",
                        "maxBackoff": "5s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
        options += [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(policy))]
    else:
        options.append(("grpc.enable_retries", 0))
    return [*options, *extra]
