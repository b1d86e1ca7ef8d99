"""Protobuf <-> domain conversion, the servicer's whole job (and the in-process path's answers).

Nothing here checks a query: the screening path does. A request field the path must refuse
(an enum number this server does not know) is passed through for it to refuse.
"""

from __future__ import annotations

from importlib import metadata

from google.rpc import error_details_pb2, status_pb2

from promptgate.v1 import classifier_pb2 as pb

from .domain import Classification, Mode, Query, Verdict
from .errors import ERROR_DOMAIN, ScreeningError
from .screening import ModelDescription

__all__ = ["error_status", "model_info", "query_from", "response_for", "server_version", "status_details_trailer"]

_MODES_IN = {
    pb.MODE_UNSPECIFIED: None,
    pb.MODE_FAST: Mode.FAST,
    pb.MODE_REASONED: Mode.REASONED,
    pb.MODE_AUTO: Mode.AUTO,
}
_MODES_OUT = {Mode.FAST: pb.MODE_FAST, Mode.REASONED: pb.MODE_REASONED, Mode.AUTO: pb.MODE_AUTO}
_VERDICTS_OUT = {Verdict.BENIGN: pb.VERDICT_BENIGN, Verdict.MALICIOUS: pb.VERDICT_MALICIOUS}
# gRPC's key for a serialized google.rpc.Status in trailing metadata (what grpcio-status reads).
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def query_from(request: pb.ClassifyRequest) -> Query:
    mode = _MODES_IN[request.mode] if request.mode in _MODES_IN else str(request.mode)
    threshold = request.threshold if request.HasField("threshold") else None
    canonicalize = request.canonicalize if request.HasField("canonicalize") else True
    return Query(
        text=request.text, mode=mode, threshold=threshold, truncate=request.truncate, canonicalize=canonicalize
    )


def response_for(request_id: str, outcome: Classification | ScreeningError, model: str) -> pb.ClassifyResponse:
    if isinstance(outcome, ScreeningError):
        return pb.ClassifyResponse(id=request_id, error=error_status(outcome))
    return pb.ClassifyResponse(
        id=request_id,
        verdict=_VERDICTS_OUT[outcome.verdict],
        malicious_probability=outcome.malicious_probability,
        label=outcome.label,
        category=outcome.category,
        rationale=outcome.rationale,
        mode=_MODES_OUT[outcome.mode],
        threshold=outcome.threshold,
        label_scores=[pb.LabelScore(label=s.label, probability=s.probability) for s in outcome.label_scores],
        model=model,
        truncated=outcome.truncated,
        signals=outcome.signals,
    )


def error_status(error: ScreeningError) -> status_pb2.Status:
    """The google.rpc.Status of an error, with an ErrorInfo detail naming its reason when it has one."""
    status = status_pb2.Status(code=error.status_code.value[0], message=error.message)
    if error.reason:
        status.details.add().Pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN))
    return status


def status_details_trailer(error: ScreeningError) -> tuple[tuple[str, bytes], ...]:
    """Trailing metadata carrying the error's full status (richer error model), when it has details."""
    if not error.reason:
        return ()
    return ((STATUS_DETAILS_KEY, error_status(error).SerializeToString()),)


def model_info(description: ModelDescription, *, max_queue: int, max_message_bytes: int) -> pb.GetModelInfoResponse:
    """GetModelInfo's answer; the transport limits come from the server, the rest from the path."""
    profile = description.profile
    engine = description.engine
    settings = description.settings
    return pb.GetModelInfoResponse(
        model=description.model,
        profile=profile.name,
        labels=[
            pb.LabelInfo(label=s.text, verdict=_VERDICTS_OUT[s.verdict], category=s.category) for s in profile.labels
        ],
        categories=list(profile.categories),
        rationale_trained=profile.rationale_trained,
        engine=engine.name,
        engine_version=engine.version,
        device=engine.device,
        dtype=engine.dtype,
        default_mode=_MODES_OUT[settings.default_mode],
        default_threshold=settings.threshold,
        auto_band=settings.auto_band,
        limits=pb.Limits(
            max_text_chars=description.limits.max_text_chars,
            max_batch_items=description.limits.max_batch_items,
            max_rationale_tokens=settings.max_rationale_tokens,
            max_message_bytes=max_message_bytes,
            max_text_tokens=description.max_text_tokens,
            max_queue=max_queue,
        ),
        server_version=server_version(),
        system_prompt=profile.system_prompt,
        canonicalize_steps=description.canonicalize_steps,
    )


def server_version() -> str:
    try:
        return metadata.version("promptgate")
    except metadata.PackageNotFoundError:
        return "0+unknown"
