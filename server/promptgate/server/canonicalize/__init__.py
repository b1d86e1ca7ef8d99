"""Canonicalization: what the classifier reads instead of the caller's raw text.

Published evasions of prompt-injection guards change how a text is written, not what it says:
zero-width characters between letters, letters spaced out, Cyrillic look-alikes in Latin
words, fullwidth forms, text hidden in Unicode tag characters, base64. `canonicalize` undoes
them before the model tokenizes the text, reports what it found as signals, and keeps, for
every output character, the range of the original text it came from (`original_span`), so
spans found in the canonical text can be reported in the caller's text.

The steps, in order, and why that order:

1. NFKC (`normalize_nfkc`) first, so every later step sees one form of each character:
   fullwidth "Ｉｇｎｏｒｅ" is ASCII for the decoders, compatibility spaces are U+0020 for the
   spaced-letter rule, ligatures are letters. NFKC leaves tag and format characters alone, so
   the next steps still see them.
2. Tag characters (`decode_tags`) before invisible characters, because tag characters are
   default-ignorable and the next step would delete the hidden text instead of revealing it.
3. Invisible characters (`strip_invisible`) before the word-level steps: a U+200B between
   letters hides both the spaced-out run and the mixed-script word it is in.
4. Spaced letters (`join_spaced_letters`) before confusables: "I g n о r e" only becomes a
   mixed-script word, with its Cyrillic "о", once it is joined.
5. Confusables (`replace_confusables`) before decoding: a Cyrillic "А" inside a base64 run
   would otherwise break the run.
6. Encoded payloads (`decode_payloads`) last: they are found in the cleaned text, and what
   they decode to is new text, which goes through every step again.

The steps are repeated until the text stops changing, which makes the result a fixed point
(idempotent): one pass can expose work for an earlier step (removing a U+200B between "e" and
a combining accent leaves a sequence NFKC composes; a decoded payload may hold zero-width
characters or another payload). Decoding runs at most `max_decode_depth` times and produces at
most `max_decoded_chars` characters in all; when decodable text is left at either limit the
signal "decode_limit" says so, and only then may canonicalizing the result change it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ._edit import StepResult
from .characters import decode_tags, normalize_nfkc, strip_invisible
from .payloads import decode_base64, decode_hex, decode_payloads, decode_percent, readable, rot13_runs
from .scripts import lookalike, replace_confusables, script_of
from .spacing import MIN_SPACED_LETTERS, join_spaced_letters

__all__ = [
    "MIN_SPACED_LETTERS",
    "SIGNALS",
    "STEPS",
    "Canonical",
    "CanonicalizeOptions",
    "StepResult",
    "canonicalize",
    "decode_base64",
    "decode_hex",
    "decode_payloads",
    "decode_percent",
    "decode_tags",
    "join_spaced_letters",
    "lookalike",
    "normalize_nfkc",
    "readable",
    "replace_confusables",
    "rot13_runs",
    "script_of",
    "strip_invisible",
]

SIGNALS = frozenset(
    {
        "fullwidth_or_compatibility",
        "tag_characters",
        "invisible_characters",
        "spaced_letters",
        "mixed_script",
        "decoded:base64",
        "decoded:hex",
        "decoded:percent",
        "decoded:rot13",
        "decode_limit",
    }
)

# The steps' names (CanonicalizeOptions fields, settings' values), in the order they run.
STEPS = ("nfkc", "tags", "invisible", "spaced_letters", "confusables", "decode")

# Passes without decoding the other steps may need to settle after the last decoding pass
# (in practice one: removing a character can leave a sequence NFKC composes).
_SETTLE_PASSES = 3


@dataclass(frozen=True)
class CanonicalizeOptions:
    """Which steps run (all by default) and the limits on decoding."""

    nfkc: bool = True
    invisible: bool = True
    tags: bool = True
    confusables: bool = True
    spaced_letters: bool = True
    decode: bool = True
    max_decode_depth: int = 2  # layers of nested encoding undone: base64 of base64 is two
    # Characters decoding may produce in all, the server's default max_text_chars: decoding
    # never lengthens a run, so this bounds the work a huge or deeply nested blob can cause.
    max_decoded_chars: int = 16_000

    def __post_init__(self) -> None:
        if self.max_decode_depth < 0 or self.max_decoded_chars < 0:
            raise ValueError("max_decode_depth and max_decoded_chars must not be negative")

    @classmethod
    def disabled(cls) -> CanonicalizeOptions:
        """Every step off: canonicalize returns the text as it is."""
        return cls(nfkc=False, invisible=False, tags=False, confusables=False, spaced_letters=False, decode=False)

    @classmethod
    def from_steps(cls, steps: str, **limits: int) -> CanonicalizeOptions:
        """Options from a setting's value: "all", "none", or a comma-separated list of STEPS."""
        value = steps.strip().lower()
        if value == "all":
            return cls(**limits)
        chosen = set() if value == "none" else {s.strip() for s in value.split(",") if s.strip()}
        unknown = sorted(chosen - set(STEPS))
        if unknown:
            raise ValueError(f"unknown step(s) {', '.join(unknown)}: use all, none or some of {', '.join(STEPS)}")
        if not chosen and value != "none":
            raise ValueError(f"no step named: use all, none or some of {', '.join(STEPS)}")
        return cls(**{step: step in chosen for step in STEPS}, **limits)

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps that run, in the order they run."""
        return tuple(step for step in STEPS if getattr(self, step))


@dataclass(frozen=True)
class Canonical:
    """The canonical text, what was found on the way, and the map back to the original."""

    text: str
    signals: tuple[str, ...] = ()
    # Per character of `text`: the [start, end) of the original it came from; None: identity.
    _starts: tuple[int, ...] | None = field(default=None, repr=False, compare=False)
    _ends: tuple[int, ...] | None = field(default=None, repr=False, compare=False)
    _original_length: int | None = field(default=None, repr=False, compare=False)

    @property
    def original_length(self) -> int:
        return len(self.text) if self._original_length is None else self._original_length

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The smallest [start, end) of the original text that produced text[start:end].

        Always within [0, len(original)] and never splitting an original code point. An
        empty span maps to the insertion point before the character now at `start`.
        """
        step = StepResult(self.text, starts=self._starts, ends=self._ends)
        return step.source_span(start, end, self.original_length)


class _Trace:
    """The current text and, per character, its range in the original."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts: tuple[int, ...] | None = None
        self.ends: tuple[int, ...] | None = None
        self.signals: set[str] = set()

    def apply(self, step: StepResult) -> bool:
        self.signals |= step.signals
        if step.starts is None or step.ends is None:
            return False
        if self.starts is None or self.ends is None:
            self.starts, self.ends = step.starts, step.ends
        else:
            starts, ends = self.starts, self.ends
            self.starts = tuple([starts[i] for i in step.starts])
            self.ends = tuple([ends[j - 1] for j in step.ends])
        changed = step.text != self.text
        self.text = step.text
        return changed


def canonicalize(text: str, options: CanonicalizeOptions = CanonicalizeOptions()) -> Canonical:
    """Canonicalize `text` for the classifier: see the module docstring for the steps and their order."""
    steps = [
        step
        for enabled, step in (
            (options.nfkc, normalize_nfkc),
            (options.tags, decode_tags),
            (options.invisible, strip_invisible),
            (options.spaced_letters, join_spaced_letters),
            (options.confusables, replace_confusables),
        )
        if enabled
    ]
    trace = _Trace(text)
    depth = 0
    budget = options.max_decoded_chars
    limited = not options.decode
    for _ in range(options.max_decode_depth + _SETTLE_PASSES + 1):
        changed = False
        for step in steps:
            changed |= trace.apply(step(trace.text))
        if not limited:
            decoded = decode_payloads(trace.text, budget)
            if depth < options.max_decode_depth:
                changed |= trace.apply(decoded)
                budget -= decoded.decoded_chars
                depth += decoded.changed
            elif decoded.changed or "decode_limit" in decoded.signals:
                trace.signals.add("decode_limit")  # decodable text left at the depth limit
            limited = "decode_limit" in trace.signals
        if not changed:
            break
    return Canonical(trace.text, tuple(sorted(trace.signals)), trace.starts, trace.ends, len(text))
