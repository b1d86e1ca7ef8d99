"""Long composite texts: benign filler with one attack buried inside, and all-benign twins.

Indirect prompt injection hides an instruction in a long document the agent reads. These
composites rebuild that shape from labelled rows, for two users: the evaluation's
buried-attack suite (`promptgate eval --buried`), which measures whether the attack is
found wherever it sits, and the trainer's `data.composites` option, which trains on
examples of the shape the windowed server now shows the model. Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Composite", "buried_suite", "compose"]

_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Composite:
    id: str
    text: str
    label: str  # "malicious" when an attack is buried in it, else "benign"
    # [start, end) of the buried attack in `text`; None for an all-benign composite.
    attack: tuple[int, int] | None


def compose(
    filler: Sequence[str], inner: str, length: int, rng: random.Random
) -> tuple[str, tuple[int, int]]:
    """About `length` characters of filler paragraphs with `inner` placed between two of them
    at a random point; returns the text and where `inner` is in it."""
    pieces: list[str] = []
    total = len(inner)
    while total < length:
        piece = rng.choice(filler)
        pieces.append(piece)
        total += len(piece) + len(_SEPARATOR)
    at = rng.randint(0, len(pieces))
    before = _SEPARATOR.join(pieces[:at])
    after = _SEPARATOR.join(pieces[at:])
    head = before + _SEPARATOR if before else ""
    start = len(head)
    text = head + inner + (_SEPARATOR + after if after else "")
    return text, (start, start + len(inner))


def buried_suite(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    n: int,
    min_chars: int = 4000,
    max_chars: int = 12000,
    seed: int = 0,
) -> list[Composite]:
    """`n` composites with one malicious row buried in benign filler, and `n` all-benign ones of
    the same lengths (the benign inner row is drawn like the filler), interleaved."""
    benign = [t for t, label in zip(texts, labels, strict=True) if label == "benign"]
    malicious = [t for t, label in zip(texts, labels, strict=True) if label == "malicious"]
    if len(benign) < 2 or not malicious:
        raise ValueError("a buried-attack suite needs at least two benign rows and one malicious row")
    rng = random.Random(seed)
    out: list[Composite] = []
    for i in range(n):
        length = rng.randint(min_chars, max_chars)
        attack = rng.choice(malicious)
        text, span = compose(benign, attack, length, rng)
        out.append(Composite(f"buried:{i}", text, "malicious", span))
        clean, _ = compose(benign, rng.choice(benign), length, rng)
        out.append(Composite(f"clean:{i}", clean, "benign", None))
    return out
