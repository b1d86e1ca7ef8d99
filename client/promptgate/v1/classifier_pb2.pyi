from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_FAST: _ClassVar[Mode]
    MODE_REASONED: _ClassVar[Mode]
    MODE_AUTO: _ClassVar[Mode]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_BENIGN: _ClassVar[Verdict]
    VERDICT_MALICIOUS: _ClassVar[Verdict]
MODE_UNSPECIFIED: Mode
MODE_FAST: Mode
MODE_REASONED: Mode
MODE_AUTO: Mode
VERDICT_UNSPECIFIED: Verdict
VERDICT_BENIGN: Verdict
VERDICT_MALICIOUS: Verdict

class ClassifyRequest(_message.Message):
    __slots__ = ("id", "text", "mode", "threshold", "truncate", "canonicalize")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    CANONICALIZE_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    mode: Mode
    threshold: float
    truncate: bool
    canonicalize: bool
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., threshold: _Optional[float] = ..., truncate: _Optional[bool] = ..., canonicalize: _Optional[bool] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "probability")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    label: str
    probability: float
    def __init__(self, label: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("id", "verdict", "malicious_probability", "label", "category", "rationale", "mode", "threshold", "label_scores", "error", "model", "truncated", "signals")
    ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    MALICIOUS_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LABEL_SCORES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    SIGNALS_FIELD_NUMBER: _ClassVar[int]
    id: str
    verdict: Verdict
    malicious_probability: float
    label: str
    category: str
    rationale: str
    mode: Mode
    threshold: float
    label_scores: _containers.RepeatedCompositeFieldContainer[LabelScore]
    error: _status_pb2.Status
    model: str
    truncated: bool
    signals: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., malicious_probability: _Optional[float] = ..., label: _Optional[str] = ..., category: _Optional[str] = ..., rationale: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., threshold: _Optional[float] = ..., label_scores: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., model: _Optional[str] = ..., truncated: _Optional[bool] = ..., signals: _Optional[_Iterable[str]] = ...) -> None: ...

class ClassifyBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ClassifyRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ClassifyRequest, _Mapping]]] = ...) -> None: ...

class ClassifyBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[ClassifyResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[ClassifyResponse, _Mapping]]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LabelInfo(_message.Message):
    __slots__ = ("label", "verdict", "category")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    label: str
    verdict: Verdict
    category: str
    def __init__(self, label: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., category: _Optional[str] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_text_chars", "max_batch_items", "max_rationale_tokens", "max_message_bytes", "max_text_tokens", "max_queue")
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_ITEMS_FIELD_NUMBER: _ClassVar[int]
    MAX_RATIONALE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_FIELD_NUMBER: _ClassVar[int]
    max_text_chars: int
    max_batch_items: int
    max_rationale_tokens: int
    max_message_bytes: int
    max_text_tokens: int
    max_queue: int
    def __init__(self, max_text_chars: _Optional[int] = ..., max_batch_items: _Optional[int] = ..., max_rationale_tokens: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_text_tokens: _Optional[int] = ..., max_queue: _Optional[int] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model", "profile", "labels", "categories", "rationale_trained", "engine", "engine_version", "device", "dtype", "default_mode", "default_threshold", "auto_band", "limits", "server_version", "system_prompt", "canonicalize_steps")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_TRAINED_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    ENGINE_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_MODE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    AUTO_BAND_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    CANONICALIZE_STEPS_FIELD_NUMBER: _ClassVar[int]
    model: str
    profile: str
    labels: _containers.RepeatedCompositeFieldContainer[LabelInfo]
    categories: _containers.RepeatedScalarFieldContainer[str]
    rationale_trained: bool
    engine: str
    engine_version: str
    device: str
    dtype: str
    default_mode: Mode
    default_threshold: float
    auto_band: float
    limits: Limits
    server_version: str
    system_prompt: str
    canonicalize_steps: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model: _Optional[str] = ..., profile: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[LabelInfo, _Mapping]]] = ..., categories: _Optional[_Iterable[str]] = ..., rationale_trained: _Optional[bool] = ..., engine: _Optional[str] = ..., engine_version: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., default_mode: _Optional[_Union[Mode, str]] = ..., default_threshold: _Optional[float] = ..., auto_band: _Optional[float] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., server_version: _Optional[str] = ..., system_prompt: _Optional[str] = ..., canonicalize_steps: _Optional[_Iterable[str]] = ...) -> None: ...
