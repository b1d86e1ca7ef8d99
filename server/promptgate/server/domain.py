"""Domain objects the servicer converts protobuf messages to and from (no torch here)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from promptgate.profiles import Verdict

__all__ = ["Classification", "LabelScore", "Mode", "Query", "Verdict", "keep_both_ends"]

T = TypeVar("T")


class Mode(enum.Enum):
    FAST = "fast"
    REASONED = "reasoned"
    AUTO = "auto"


@dataclass(frozen=True)
class Query:
    """One query as a caller sends it, unchecked: the screening path validates it.

    `mode`/`threshold` None mean the server's defaults. `mode` may be a `Mode`, a mode's
    name, or whatever the caller sent (a wire enum number the server does not know): the
    path refuses anything that is not a mode with INVALID_ARGUMENT.
    """

    text: str
    mode: Mode | str | None = None
    threshold: float | None = None
    # Cut over-long text to the limits (first and last parts) instead of rejecting it.
    truncate: bool = False
    # False: the model reads the text as sent, without the server's canonicalization.
    canonicalize: bool = True


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
    truncated: bool = False
    # REASONED: rationale length, and when its first token came (time.perf_counter()).
    rationale_tokens: int = 0
    first_token_at: float | None = None
    # What canonicalization found in the text (promptgate.server.canonicalize.SIGNALS).
    signals: tuple[str, ...] = ()

    def as_screened(self, *, truncated: bool, signals: tuple[str, ...]) -> Classification:
        """The same answer, with what the path did to the text before the model read it."""
        if not truncated and not signals:
            return self
        return dataclasses.replace(self, truncated=truncated, signals=signals)


def keep_both_ends(items: Sequence[T], limit: int) -> list[T]:
    """The first and the last halves of `limit` items: attack instructions sit at either end."""
    if len(items) <= limit:
        return list(items)
    head = (limit + 1) // 2
    tail = limit - head
    return [*items[:head], *items[len(items) - tail :]] if tail else list(items[:head])
