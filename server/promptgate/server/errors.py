"""Errors and the one table that maps them to gRPC status codes (and those to HTTP statuses).

Code is chosen by what kind of failure it is (the caller's fault, overload, not ready,
ours), never by the Python exception type that happened to surface.
"""

from __future__ import annotations

import enum

import grpc


class ErrorKind(enum.Enum):
    INVALID_INPUT = "invalid_input"  # the caller's request is wrong: fix it, do not retry
    OVERLOADED = "overloaded"  # too much work right now: retry later
    UNAUTHENTICATED = "unauthenticated"  # missing or wrong credential
    DEADLINE = "deadline"  # the caller's deadline passed before the work was done
    NOT_READY = "not_ready"  # the model is loading or the engine is down: retry
    INTERNAL = "internal"  # our fault


STATUS_CODES: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.INVALID_INPUT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.OVERLOADED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.DEADLINE: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.NOT_READY: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}


# The HTTP status of each gRPC code, as google.rpc.Code documents it (Connect's table is the
# same): what the HTTP/JSON face answers with.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


class ScreeningError(Exception):
    """A failure with a kind that decides its status code and a message for the caller."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(
        self,
        message: str,
        kind: ErrorKind | None = None,
        *,
        retry_after: float | None = None,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        # Machine-readable cause (google.rpc.ErrorInfo's UPPER_SNAKE_CASE `reason`), e.g.
        # TOO_LONG, so callers branch on it rather than on the message's wording.
        self.reason = reason
        # Seconds after which a retry may succeed; sent as gRPC's retry pushback.
        self.retry_after = retry_after
        if kind is not None:
            self.kind = kind

    @property
    def status_code(self) -> grpc.StatusCode:
        return STATUS_CODES[self.kind]


# google.rpc.ErrorInfo.domain of the reasons above.
ERROR_DOMAIN = "promptgate.v1"


class InvalidInput(ScreeningError):
    kind = ErrorKind.INVALID_INPUT


class NotReady(ScreeningError):
    kind = ErrorKind.NOT_READY


class Overloaded(ScreeningError):
    kind = ErrorKind.OVERLOADED


def as_screening_error(exc: BaseException) -> ScreeningError:
    """Classify any exception: ours keep their kind, anything else is INTERNAL.

    The message of an unexpected exception is not echoed to callers (it may carry
    internals); it is logged by the caller of this function.
    """
    if isinstance(exc, ScreeningError):
        return exc
    return ScreeningError("internal error while classifying", ErrorKind.INTERNAL)
