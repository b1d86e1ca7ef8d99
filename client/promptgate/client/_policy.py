"""What the client answers when screening a query fails: the failure policy.

A screening service on an agent's hot path must decide what a failure means. The default
is fail-closed: a query that could not be screened is treated as malicious, so an outage,
an overload or an input the server refuses never lets an unscreened query through.
Fail-open (treat it as benign) is an explicit choice for callers that prefer availability;
`raise` gives the exception (or the batch's `ItemError`) to handle yourself.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from promptgate.v1 import classifier_pb2 as pb

from ._errors import ServiceError
from ._types import Classification, ItemError, Mode, Verdict, parse_response


class FailurePolicy(enum.StrEnum):
    """What a query that could not be screened gets: a malicious verdict (the default), a benign one, or the error."""

    FAIL_CLOSED = "fail_closed"
    FAIL_OPEN = "fail_open"
    RAISE = "raise"


def to_policy(value: FailurePolicy | str) -> FailurePolicy:
    try:
        return FailurePolicy(value)
    except ValueError:
        raise ValueError(f"unknown failure policy {value!r}: use fail_closed, fail_open or raise") from None


def failed_result(policy: FailurePolicy, error: ItemError) -> Classification:
    """The stand-in answer for a query that could not be screened (`error` says why)."""
    closed = policy is FailurePolicy.FAIL_CLOSED
    return Classification(
        id=error.id,
        verdict=Verdict.MALICIOUS if closed else Verdict.BENIGN,
        malicious_probability=1.0 if closed else 0.0,
        label="",
        category="",
        rationale="",
        mode=Mode.FAST,
        threshold=0.0,
        model="",
        error=error,
    )


def item_result(policy: FailurePolicy, response: pb.ClassifyResponse) -> Classification | ItemError:
    result = parse_response(response)
    if isinstance(result, ItemError) and policy is not FailurePolicy.RAISE:
        return failed_result(policy, result)
    return result


def call_failed(
    policy: FailurePolicy, error: ServiceError, requests: Sequence[pb.ClassifyRequest]
) -> list[Classification]:
    """Results for every query of a failed call, or the error itself under `raise`."""
    if policy is FailurePolicy.RAISE:
        raise error
    code = error.code.name if error.code is not None else "UNKNOWN"
    return [failed_result(policy, ItemError(id=r.id, code=code, message=str(error))) for r in requests]
