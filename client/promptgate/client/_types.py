"""Result and request types of the client, and their protobuf conversion."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from promptgate.v1 import classifier_pb2 as pb


class Mode(enum.StrEnum):
    """How the server classifies a query (None in the client means the server's default)."""

    FAST = "fast"
    REASONED = "reasoned"
    AUTO = "auto"


class Verdict(enum.StrEnum):
    BENIGN = "benign"
    MALICIOUS = "malicious"


_MODE_TO_PB = {
    None: pb.MODE_UNSPECIFIED,
    Mode.FAST: pb.MODE_FAST,
    Mode.REASONED: pb.MODE_REASONED,
    Mode.AUTO: pb.MODE_AUTO,
}
_MODE_FROM_PB = {v: k for k, v in _MODE_TO_PB.items()}
_VERDICT_FROM_PB = {pb.VERDICT_BENIGN: Verdict.BENIGN, pb.VERDICT_MALICIOUS: Verdict.MALICIOUS}


@dataclass(frozen=True)
class ScreenRequest:
    """One query with per-query options; plain strings are accepted wherever this is."""

    text: str
    id: str = ""
    mode: Mode | str | None = None
    threshold: float | None = None
    # Cut over-long text to the server's limits (first and last parts) instead of failing.
    truncate: bool = False
    # False: the model reads the text as sent (already normalized); None: the server's default (on).
    canonicalize: bool | None = None


@dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float


@dataclass(frozen=True)
class Classification:
    """The server's answer for one query."""

    id: str
    verdict: Verdict
    malicious_probability: float
    label: str
    category: str
    rationale: str
    mode: Mode
    threshold: float
    model: str
    label_scores: tuple[LabelScore, ...] = field(default=())
    # The server cut the text to its limits before classifying (the request set truncate).
    truncated: bool = False
    # What the server's canonicalization found (e.g. "invisible_characters", "decoded:base64").
    signals: tuple[str, ...] = ()
    # Set when the query could not be screened and the failure policy answered instead.
    error: ItemError | None = None

    @property
    def is_malicious(self) -> bool:
        return self.verdict is Verdict.MALICIOUS

    @property
    def failed(self) -> bool:
        """True when this verdict comes from the failure policy, not from the model."""
        return self.error is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "verdict": self.verdict.value,
            "malicious_probability": self.malicious_probability,
            "label": self.label,
            "category": self.category,
            "rationale": self.rationale,
            "mode": self.mode.value,
            "threshold": self.threshold,
            "model": self.model,
            **({"truncated": True} if self.truncated else {}),
            **({"signals": list(self.signals)} if self.signals else {}),
            **({"error": {"code": self.error.code, "message": self.error.message}} if self.error else {}),
        }


@dataclass(frozen=True)
class ItemError:
    """A batch or stream item the server could not classify; the other items are unaffected."""

    id: str
    code: str  # a gRPC status code name, e.g. "INVALID_ARGUMENT"
    message: str
    # The server's machine-readable cause (google.rpc.ErrorInfo reason), e.g. "TOO_LONG"; "" if none.
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        error = {"code": self.code, "message": self.message, **({"reason": self.reason} if self.reason else {})}
        return {"id": self.id, "error": error}


@dataclass(frozen=True)
class LabelInfo:
    label: str
    verdict: Verdict
    category: str


@dataclass(frozen=True)
class ModelInfo:
    model: str
    profile: str
    labels: tuple[LabelInfo, ...]
    categories: tuple[str, ...]
    rationale_trained: bool
    engine: str
    engine_version: str
    device: str
    dtype: str
    default_mode: Mode
    default_threshold: float
    auto_band: float
    limits: Mapping[str, int]
    server_version: str
    system_prompt: str


def to_mode(mode: Mode | str | None) -> Mode | None:
    if mode is None or isinstance(mode, Mode):
        return mode
    try:
        return Mode(mode.lower())
    except ValueError:
        raise ValueError(f"unknown mode {mode!r}: use fast, reasoned or auto") from None


def to_request_pb(
    item: str | ScreenRequest,
    *,
    mode: Mode | str | None = None,
    threshold: float | None = None,
    id: str = "",
    truncate: bool = False,
    canonicalize: bool | None = None,
) -> pb.ClassifyRequest:
    if isinstance(item, str):
        item = ScreenRequest(text=item, id=id)
    req = pb.ClassifyRequest(
        id=item.id,
        text=item.text,
        mode=_MODE_TO_PB[to_mode(item.mode if item.mode is not None else mode)],
        truncate=item.truncate or truncate,
    )
    chosen = item.threshold if item.threshold is not None else threshold
    if chosen is not None:
        req.threshold = chosen
    canon = item.canonicalize if item.canonicalize is not None else canonicalize
    if canon is not None:
        req.canonicalize = canon
    return req


def parse_response(resp: pb.ClassifyResponse) -> Classification | ItemError:
    """A `ClassifyResponse` as the client returns it: a classification, or the item's error."""
    if resp.HasField("error"):
        from ._errors import code_name, error_reason

        return ItemError(
            id=resp.id, code=code_name(resp.error.code), message=resp.error.message, reason=error_reason(resp.error)
        )
    return Classification(
        id=resp.id,
        verdict=_VERDICT_FROM_PB[resp.verdict],
        malicious_probability=resp.malicious_probability,
        label=resp.label,
        category=resp.category,
        rationale=resp.rationale,
        mode=_MODE_FROM_PB[resp.mode] or Mode.FAST,
        threshold=resp.threshold,
        model=resp.model,
        label_scores=tuple(LabelScore(s.label, s.probability) for s in resp.label_scores),
        truncated=resp.truncated,
        signals=tuple(resp.signals),
    )


def from_model_info_pb(info: pb.GetModelInfoResponse) -> ModelInfo:
    return ModelInfo(
        model=info.model,
        profile=info.profile,
        labels=tuple(LabelInfo(x.label, _VERDICT_FROM_PB[x.verdict], x.category) for x in info.labels),
        categories=tuple(info.categories),
        rationale_trained=info.rationale_trained,
        engine=info.engine,
        engine_version=info.engine_version,
        device=info.device,
        dtype=info.dtype,
        default_mode=_MODE_FROM_PB[info.default_mode] or Mode.FAST,
        default_threshold=info.default_threshold,
        auto_band=info.auto_band,
        limits={
            "max_text_chars": info.limits.max_text_chars,
            "max_batch_items": info.limits.max_batch_items,
            "max_rationale_tokens": info.limits.max_rationale_tokens,
            "max_message_bytes": info.limits.max_message_bytes,
            "max_text_tokens": info.limits.max_text_tokens,
            "max_queue": info.limits.max_queue,
        },
        server_version=info.server_version,
        system_prompt=info.system_prompt,
    )


def batch_request_pb(
    items: Iterable[str | ScreenRequest],
    mode: Mode | str | None,
    threshold: float | None,
    truncate: bool = False,
    canonicalize: bool | None = None,
) -> pb.ClassifyBatchRequest:
    return pb.ClassifyBatchRequest(
        requests=[
            to_request_pb(i, mode=mode, threshold=threshold, truncate=truncate, canonicalize=canonicalize)
            for i in items
        ]
    )
