"""Long composite texts: benign filler with one attack buried inside, and all-benign twins.

Indirect prompt injection hides an instruction in a long document the agent reads. These
composites rebuild that shape from labelled rows, for two users: the evaluation's
buried-attack suite (`promptgate eval --buried`), which measures whether the attack is
found wherever it sits, and the trainer's `data.composites` option, which trains on window
pieces (`window_piece`): what the windowed server shows the model of a long document, a run
of tokens that starts and ends anywhere in the filler, with or without a whole attack inside.
Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Composite", "Encoder", "buried_suite", "compose", "window_piece"]

# A text's token ids and each token's [start, end) characters in it (the serving tokenizer's
# `PromptBuilder.encode_text_with_offsets`): windows are cut at token boundaries, as served.
Encoder = Callable[[str], tuple[Sequence[int], Sequence[tuple[int, int]]]]

_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Composite:
    id: str
    text: str
    label: str  # "malicious" when an attack is buried in it, else "benign"
    # [start, end) of the buried attack in `text`; None for an all-benign composite.
    attack: tuple[int, int] | None


def compose(filler: Sequence[str], inner: str, length: int, rng: random.Random) -> tuple[str, tuple[int, int]]:
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


def _filler_run(filler: Sequence[str], tokens: int, encode: Encoder, rng: random.Random) -> str:
    """`tokens` tokens of benign filler starting at a random token of a run of random rows: a
    window cut from the middle of a long document starts and ends mid-paragraph."""
    if tokens <= 0:
        return ""
    pieces: list[str] = []
    ids: Sequence[int] = ()
    offsets: Sequence[tuple[int, int]] = ()
    # Twice the tokens wanted, so where the run starts is spread over paragraph boundaries.
    while len(ids) < 2 * tokens:
        pieces.append(rng.choice(filler))
        text = _SEPARATOR.join(pieces)
        ids, offsets = encode(text)
    start = rng.randint(0, len(ids) - tokens)
    return text[offsets[start][0] : offsets[start + tokens - 1][1]]


def window_piece(
    filler: Sequence[str], inner: str | None, tokens: int, encode: Encoder, rng: random.Random
) -> tuple[str, tuple[int, int] | None] | None:
    """A text of at most `tokens` tokens, as one served window of a long document shows it: cut
    from benign filler at token boundaries, with `inner` (an attack) whole at a random point
    inside when given. Returns the text and where `inner` is in it, or None when `inner` does
    not fit with room for a separator on each side."""
    if inner is None:
        return _filler_run(filler, tokens, encode, rng), None
    room = tokens - len(encode(inner)[0]) - 2 * len(encode(_SEPARATOR)[0])
    if room < 0:
        return None
    before_tokens = rng.randint(0, room)
    while True:
        before = _filler_run(filler, before_tokens, encode, rng)
        after = _filler_run(filler, room - before_tokens, encode, rng)
        head = before + _SEPARATOR if before else ""
        text = head + inner + (_SEPARATOR + after if after else "")
        # Tokens can merge across a join: trim the filler until the whole piece fits, so
        # training's cut to its text budget never removes part of the attack.
        over = len(encode(text)[0]) - tokens
        if over <= 0:
            return text, (len(head), len(head) + len(inner))
        room -= over
        if room < 0:
            return None
        before_tokens = min(before_tokens, room)
