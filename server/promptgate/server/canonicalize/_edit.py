"""What every step returns, and the builder the steps use to produce it with its offset map."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepResult:
    """One step's output text, what it found, and where each output character came from.

    `starts[i]`/`ends[i]` give the [start, end) range of the step's input that produced output
    character i. Both are non-decreasing, so a span of output maps to one contiguous input span.
    None for both means the step left its input unchanged (the identity map), which keeps the
    common case — nothing to do — free of per-character lists.
    """

    text: str
    signals: frozenset[str] = frozenset()
    starts: tuple[int, ...] | None = None
    ends: tuple[int, ...] | None = None
    decoded_chars: int = 0  # characters the step produced by decoding (counted against the cap)

    @property
    def changed(self) -> bool:
        return self.starts is not None

    def source_span(self, start: int, end: int, source_length: int | None = None) -> tuple[int, int]:
        """The smallest [start, end) of the step's input that produced text[start:end]."""
        if not 0 <= start <= end <= len(self.text):
            raise ValueError(f"span [{start}, {end}) is outside the text (length {len(self.text)})")
        if self.starts is None or self.ends is None:
            return start, end
        if start == end:
            # An empty span is an insertion point: put it before the character now at `start`.
            if start < len(self.text):
                return self.starts[start], self.starts[start]
            at = source_length if source_length is not None else self.ends[-1] if self.ends else 0
            return at, at
        return self.starts[start], self.ends[end - 1]


class Builder:
    """Accumulates output text together with, for each output character, its input range."""

    __slots__ = ("_edited", "_ends", "_pieces", "_source", "_starts", "decoded_chars", "signals")

    def __init__(self, source: str) -> None:
        self._source = source
        self._pieces: list[str] = []
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._edited = False
        self.signals: set[str] = set()
        self.decoded_chars = 0

    def copy(self, start: int, end: int) -> None:
        """Keep source[start:end] as it is."""
        if start < end:
            self._pieces.append(self._source[start:end])
            self._starts.extend(range(start, end))
            self._ends.extend(range(start + 1, end + 1))

    def emit(self, text: str, start: int, end: int) -> None:
        """Write `text` in place of source[start:end]; every character maps to that whole range."""
        self._edited = True
        if text:
            self._pieces.append(text)
            self._starts.extend([start] * len(text))
            self._ends.extend([end] * len(text))

    def emit_each(self, text: str, start: int) -> None:
        """Write `text` in place of source[start:start+len(text)], character for character."""
        self._edited = True
        self._pieces.append(text)
        self._starts.extend(range(start, start + len(text)))
        self._ends.extend(range(start + 1, start + len(text) + 1))

    def skip(self) -> None:
        """Record that something was dropped (the caller simply does not copy it)."""
        self._edited = True

    def result(self) -> StepResult:
        if not self._edited:
            return StepResult(self._source, frozenset(self.signals))
        return StepResult(
            "".join(self._pieces),
            frozenset(self.signals),
            tuple(self._starts),
            tuple(self._ends),
            self.decoded_chars,
        )
