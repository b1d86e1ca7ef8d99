"""Domain objects the servicer converts protobuf messages to and from (no torch here)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from promptgate.profiles import Verdict

__all__ = ["Classification", "LabelScore", "Mode", "Query", "Verdict"]


class Mode(enum.Enum):
    FAST = "fast"
    REASONED = "reasoned"
    AUTO = "auto"


@dataclass(frozen=True)
class Query:
    """One query to classify. `mode`/`threshold` None mean the server's defaults."""

    text: str
    mode: Mode | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float


@dataclass(frozen=True)
class Classification:
    verdict: Verdict
    malicious_probability: float
    label: str
    category: str
    rationale: str
    # FAST or REASONED: the mode that produced the scores (AUTO resolves to one).
    mode: Mode
    threshold: float
    label_scores: tuple[LabelScore, ...] = field(default=())
