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
    """Accumulates output text together with, for each output character, its input range.

    The pieces are kept as ranges and written out only by `result()`, and only when something
    was edited: a step that finds nothing to do pays nothing per character.
    """

    __slots__ = ("_edited", "_pieces", "_source", "decoded_chars", "signals")

    def __init__(self, source: str) -> None:
        self._source = source
        # (text or None for source[start:end], start, end, one-for-one): in output order.
        self._pieces: list[tuple[str | None, int, int, bool]] = []
        self._edited = False
        self.signals: set[str] = set()
        self.decoded_chars = 0

    def copy(self, start: int, end: int) -> None:
        """Keep source[start:end] as it is."""
        if start < end:
            self._pieces.append((None, start, end, True))

    def emit(self, text: str, start: int, end: int) -> None:
        """Write `text` in place of source[start:end]; every character maps to that whole range."""
        self._edited = True
        if text:
            self._pieces.append((text, start, end, False))

    def emit_each(self, text: str, start: int) -> None:
        """Write `text` in place of source[start:start+len(text)], character for character."""
        self._edited = True
        self._pieces.append((text, start, start + len(text), True))

    def skip(self) -> None:
        """Record that something was dropped (the caller simply does not copy it)."""
        self._edited = True

    def result(self) -> StepResult:
        if not self._edited:
            return StepResult(self._source, frozenset(self.signals))
        texts: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        for text, start, end, each in self._pieces:
            texts.append(self._source[start:end] if text is None else text)
            if each:
                starts.extend(range(start, end))
                ends.extend(range(start + 1, end + 1))
            else:
                starts.extend([start] * len(text))  # type: ignore[arg-type]
                ends.extend([end] * len(text))  # type: ignore[arg-type]
        return StepResult("".join(texts), frozenset(self.signals), tuple(starts), tuple(ends), self.decoded_chars)
