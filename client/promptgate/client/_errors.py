"""The client's exception tree, mapped from gRPC status codes.

PromptgateError
└── ServiceError                 a call ended with a non-OK status
    ├── InvalidArgumentError     the request was wrong (do not retry)
    ├── UnauthenticatedError
    ├── ResourceExhaustedError   overload: retry later
    ├── DeadlineExceededError
    ├── UnavailableError         loading or down (already retried by the channel)
    ├── CancelledError
    └── InternalError            anything else
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from google.rpc import error_details_pb2, status_pb2

# Where gRPC's richer error model carries the whole google.rpc.Status of a failed call.
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


class PromptgateError(Exception):
    """Base of every error the client raises."""


class ServiceError(PromptgateError):
    """A call ended with a non-OK gRPC status."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None, *, reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        # The server's machine-readable cause (google.rpc.ErrorInfo reason), e.g. "TOO_LONG"; "" if none.
        self.reason = reason
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgumentError(ServiceError):
    """The request was wrong (empty text, a bad threshold, text over a limit): do not retry it."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class UnauthenticatedError(ServiceError):
    """The server asks for a bearer token and none, or a wrong one, was sent."""

    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhaustedError(ServiceError):
    """The server is overloaded (its queue is full): retry later."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(ServiceError):
    """The call ran past its deadline (`timeout`)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class UnavailableError(ServiceError):
    """The server is loading, shutting down or unreachable (the channel already retried)."""

    code = grpc.StatusCode.UNAVAILABLE


class CancelledError(ServiceError):
    """The call was cancelled before it finished."""

    code = grpc.StatusCode.CANCELLED


class InternalError(ServiceError):
    """Any other failure: a server bug or a broken engine."""

    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[ServiceError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        UnauthenticatedError,
        ResourceExhaustedError,
        DeadlineExceededError,
        UnavailableError,
        CancelledError,
        InternalError,
    )
}
_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def from_rpc_error(error: grpc.RpcError) -> ServiceError:
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _BY_CODE.get(code, ServiceError)
    return cls(details or code.name, code, reason=_trailer_reason(error))


def error_reason(status: status_pb2.Status) -> str:
    """The ErrorInfo reason among a google.rpc.Status's details, or ""."""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def _trailer_reason(error: grpc.RpcError) -> str:
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return error_reason(status_pb2.Status.FromString(value))
            except Exception:  # a malformed trailer from some proxy: the status code still stands
                return ""
    return ""


def code_name(value: int) -> str:
    """The name of a google.rpc.Code number (the same numbering as gRPC's)."""
    code = _BY_VALUE.get(value)
    return code.name if code else f"CODE_{value}"


@contextmanager
def translated_errors() -> Iterator[None]:
    """Raise gRPC failures as the client's exception tree (the cause is dropped: it adds nothing)."""
    try:
        yield
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None
