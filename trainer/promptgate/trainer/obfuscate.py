"""Published evasions of prompt-attack screening, applied to a text: the robustness test set's maker.

Each family changes how a text is written, not what it says, the way the evasions of
prompt-injection guards do. The trainer adds obfuscated copies of training rows
(`data.obfuscate`) and `promptgate eval --robustness` re-screens each test file under each
family; both call `obfuscate(text, family, seed=...)`, so training and evaluation use the same
evasions.

Every family is deterministic: what a text becomes depends on the text, the family and the
seed only (never on the order texts are processed in), so a robustness report is reproducible
and an obfuscated training copy is the same on every run.

The families, and what the server's canonicalization (`promptgate.server.canonicalize`) makes
of them (tests/unit/test_obfuscate.py checks each on ordinary text):

- `zero_width`: U+200B ZERO WIDTH SPACE between every two characters (grapheme clusters, so
  an emoji sequence or a letter with its accents stays whole). Canonicalized: the original.
- `spaced`: words spelled out, one space between letters and three between words
  ("I g n o r e   a l l"). Only runs of whole-letter words (no digit or letter touching them)
  of at least `MIN_SPACED_LETTERS` letters are spelled out: fewer single letters in a row are
  ordinary text to the canonicalizer ("a b testing") and spelling out "is" evades nothing.
  A word that is not spelled out but begins or ends with a lone letter ("e-mail", "s.connect")
  is set off by the word gap too, or it would read as one more letter of its neighbour. CJK is
  left alone (written without spaces, it has no words to hide). Canonicalized: the original,
  except that runs of several spaces between spelled-out words become one.
- `homoglyphs`: in about half of the Latin words of three letters or more (seeded), fewer
  than half of the letters are replaced by Cyrillic or Greek look-alikes ("Ignоrе", with
  Cyrillic о and е). The pairs come from the Unicode confusables data through the
  canonicalize package's `lookalike`, and only pairs it maps back to the same letter are used.
  The Latin letters stay the majority of each word: a word mostly written in another script
  is a word of that script, which no canonicalizer should turn into Latin. Canonicalized: the
  original.
- `fullwidth`: printable ASCII U+0021..U+007E as fullwidth forms U+FF01..U+FF5E; spaces and
  non-ASCII characters stay. Canonicalized (NFKC): the original.
- `soft_hyphens`: U+00AD SOFT HYPHEN inside words, at each gap between two letters with
  probability one half (at least one per word of two letters or more). Canonicalized: the
  original.
- `tag_smuggling` ("ASCII smuggling"): a short benign visible sentence (one of
  `TAG_CARRIERS`, seeded), then the text written in Unicode tag characters U+E0020..U+E007E,
  which display as nothing. Tag characters encode printable ASCII only: the hidden text is the
  text's ASCII form (NFKD, accents dropped; whitespace as one space; characters with no ASCII
  form are lost, as they are to an attacker using this channel). Canonicalized: the carrier,
  a space, and the hidden text made visible (for ASCII text, the original).
- `base64`: the text's UTF-8 bytes base64-encoded after a short neutral framing
  (`BASE64_FRAMING`, "Here is my message, base64-encoded: ..."), the form a user of the
  evasion writes. The framing asks for nothing, so a benign text stays benign with it.
  Canonicalized: the framing, then the decoded text. Texts under 11 bytes encode to fewer than
  the 16 characters the canonicalizer decodes (shorter runs are ordinary words and ids).

Labels do not change: an obfuscated attack is an attack, an obfuscated benign text is benign.
"""

from __future__ import annotations

import base64 as _b64
import random
import unicodedata
from collections.abc import Callable, Sequence
from functools import cache

import regex

from promptgate.server.canonicalize import MIN_SPACED_LETTERS, lookalike, script_of

__all__ = [
    "BASE64_FRAMING",
    "FAMILIES",
    "TAG_CARRIERS",
    "base64",
    "fullwidth",
    "homoglyph_pairs",
    "homoglyphs",
    "obfuscate",
    "parse_families",
    "soft_hyphens",
    "spaced",
    "tag_smuggling",
    "zero_width",
]

ZWSP = "\u200b"
SOFT_HYPHEN = "\u00ad"
_TAG_BASE = 0xE0000
# Benign visible sentences the hidden text rides on: plain, short, asking for nothing risky.
TAG_CARRIERS = (
    "Thanks, that helps a lot!",
    "Could you take a look at this when you have a moment?",
    "Here is the note I mentioned earlier.",
    "Hope you are having a good day.",
)
BASE64_FRAMING = "Here is my message, base64-encoded: "
# Scripts whose look-alikes of Latin letters the homoglyph family uses (the usual ones in the
# published evasions: Cyrillic covers most lower-case letters, Greek most capitals).
HOMOGLYPH_SCRIPTS = ("CYRILLIC", "GREEK")

_CLUSTER = regex.compile(r"\X")
# A word as the canonicalizer's confusable step sees one: letters, marks and digits.
_WORD = regex.compile(r"[\p{L}\p{M}\p{N}]+")
_CJK = r"\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}\p{Script=Bopomofo}"
# A letter with its marks, not CJK (the canonicalizer never joins spaced CJK).
_LETTER = regex.compile(rf"[\p{{L}}--[{_CJK}]]\p{{M}}*", regex.V1)
# A run of whole-letter words separated by single spaces, touching no other letter or digit
# (the canonicalizer rejoins only single letters, so a word touching a digit or another letter
# stays whole), nor a letter across one of "-", "." and "_": the canonicalizer reads
# "s.c o n n e c t" as the joined form "s.c" ("U.S.S.R", "I-g-n-o-r-e") and would not rejoin
# the rest.
_WORDISH = r"[\p{L}\p{M}\p{N}]"
_SPACEABLE_WORD = rf"(?:[\p{{L}}--[{_CJK}]]\p{{M}}*)+"
_SPACEABLE_RUN = regex.compile(
    rf"(?<!{_WORDISH}|\p{{L}}\p{{M}}*[-._]){_SPACEABLE_WORD}(?: {_SPACEABLE_WORD})*(?!{_WORDISH}|[-._]\p{{L}})",
    regex.V1,
)
# A letter standing alone (no letter or digit touching it) right before or after a position.
_LONE_LETTER_AFTER = regex.compile(rf"[\p{{L}}--[{_CJK}]]\p{{M}}*(?!{_WORDISH})", regex.V1)
_LONE_LETTER_BEFORE = regex.compile(rf"(?<!{_WORDISH})[\p{{L}}--[{_CJK}]]\p{{M}}*\Z", regex.V1)
_LATIN_LETTER = regex.compile(r"\p{Script=Latin}")


def _rng(family: str, text: str, seed: int) -> random.Random:
    # A string seed is hashed (SHA-512) by `random`, the same on every run and platform, and
    # ties each text's choices to the text itself rather than to its position in a file.
    return random.Random(f"promptgate-obfuscate:{family}:{seed}:{text}")


def zero_width(text: str, seed: int = 0) -> str:
    """U+200B between every two grapheme clusters ("I\u200bg\u200bn..."). `seed` is unused."""
    return ZWSP.join(m.group() for m in _CLUSTER.finditer(text))


def spaced(text: str, seed: int = 0) -> str:
    """Letters of words spelled out one by one: "I g n o r e   a l l". `seed` is unused."""
    out: list[str] = []
    pos = 0
    for m in _SPACEABLE_RUN.finditer(text):
        start, end = m.span()
        letters = [[x.group() for x in _LETTER.finditer(w)] for w in m.group().split(" ")]
        if sum(len(w) for w in letters) < MIN_SPACED_LETTERS:
            continue
        # A lone letter across one space from a spelled-out word reads as one more letter of it
        # ("t h r o u g h e-mail" is "throughe-mail"): the word gap tells it apart, as it does
        # between spelled-out words. (`pos` past `start - 1`: the previous run widened it.)
        # The letter with its marks is a few characters: 16 before the space are enough to see it.
        before = text[max(0, start - 17) : start - 1]
        if pos < start and text[start - 1 : start] == " " and _LONE_LETTER_BEFORE.search(before):
            out.append(text[pos : start - 1] + "   ")
        else:
            out.append(text[pos:start])
        out.append("   ".join(" ".join(w) for w in letters))
        pos = end
        if text[end : end + 1] == " " and _LONE_LETTER_AFTER.match(text, end + 1):
            out.append("   ")
            pos = end + 1
    out.append(text[pos:])
    return "".join(out)


@cache
def homoglyph_pairs() -> dict[str, tuple[str, ...]]:
    """Per ASCII letter, its look-alikes in `HOMOGLYPH_SCRIPTS` that canonicalization maps back to it.

    From the Unicode confusables data (UTS #39), through the canonicalize package's
    `lookalike`: a pair is kept only if `lookalike(c, "LATIN")` is the letter again (Cyrillic
    "г" looks like "r" and is kept for "r", not for "m", whose confusable it is too).
    """
    pairs: dict[str, tuple[str, ...]] = {}
    for code in (*range(ord("A"), ord("Z") + 1), *range(ord("a"), ord("z") + 1)):
        letter = chr(code)
        found = []
        for script in HOMOGLYPH_SCRIPTS:
            c = lookalike(letter, script)
            if c is not None and lookalike(c, "LATIN") == letter:
                found.append(c)
        if found:
            pairs[letter] = tuple(found)
    return pairs


def homoglyphs(text: str, seed: int = 0) -> str:
    """Some letters of some Latin words replaced by Cyrillic or Greek look-alikes ("Ignоrе")."""
    rng = _rng("homoglyphs", text, seed)
    pairs = homoglyph_pairs()
    out: list[str] = []
    pos = 0
    for m in _WORD.finditer(text):
        word = m.group()
        letters = [i for i, ch in enumerate(word) if ch.isalpha()]
        # Only words written in Latin alone: Russian stays Russian, and a word that already
        # mixes scripts is someone else's evasion.
        if len(letters) < 3 or not all(_LATIN_LETTER.match(word[i]) for i in letters) or rng.random() >= 0.5:
            continue
        script = rng.choice(HOMOGLYPH_SCRIPTS)
        candidates = [i for i in letters if any(script_of(c) == script for c in pairs.get(word[i], ()))]
        # Strictly fewer than half of the letters: Latin stays the word's majority script.
        most = (len(letters) - 1) // 2
        if not candidates:
            continue
        chosen = rng.sample(candidates, rng.randint(1, min(most, len(candidates))))
        chars = list(word)
        for i in chosen:
            chars[i] = next(c for c in pairs[word[i]] if script_of(c) == script)
        out.append(text[pos : m.start()])
        out.append("".join(chars))
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def fullwidth(text: str, seed: int = 0) -> str:
    """Printable ASCII as fullwidth forms ("Ｉｇｎｏｒｅ"); spaces stay. `seed` is unused."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def soft_hyphens(text: str, seed: int = 0) -> str:
    """U+00AD inside words, at about half of the gaps between letters, at least one per word."""
    rng = _rng("soft_hyphens", text, seed)
    out: list[str] = []
    pos = 0
    for m in _WORD.finditer(text):
        clusters = [c.group() for c in _CLUSTER.finditer(m.group())]
        gaps = len(clusters) - 1
        if gaps < 1:
            continue
        cut = {i for i in range(gaps) if rng.random() < 0.5} or {rng.randrange(gaps)}
        out.append(text[pos : m.start()])
        out.append("".join(c + (SOFT_HYPHEN if i in cut else "") for i, c in enumerate(clusters)))
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)


def _ascii_form(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(" " if c.isspace() else c for c in decomposed if c.isspace() or " " <= c <= "~")
    return " ".join(kept.split())


def tag_smuggling(text: str, seed: int = 0) -> str:
    """A benign visible sentence, then the text's ASCII form in invisible Unicode tag characters."""
    carrier = _rng("tag_smuggling", text, seed).choice(TAG_CARRIERS)
    return carrier + "".join(chr(_TAG_BASE + ord(c)) for c in _ascii_form(text))


def base64(text: str, seed: int = 0) -> str:
    """`BASE64_FRAMING`, then the text's UTF-8 bytes in base64. `seed` is unused."""
    return BASE64_FRAMING + _b64.b64encode(text.encode("utf-8")).decode("ascii")


_FUNCTIONS: dict[str, Callable[[str, int], str]] = {
    "zero_width": zero_width,
    "spaced": spaced,
    "homoglyphs": homoglyphs,
    "fullwidth": fullwidth,
    "soft_hyphens": soft_hyphens,
    "tag_smuggling": tag_smuggling,
    "base64": base64,
}
FAMILIES: tuple[str, ...] = tuple(_FUNCTIONS)


def obfuscate(text: str, family: str, *, seed: int = 0) -> str:
    """`text` under the evasion `family` (one of `FAMILIES`), deterministic for a given `seed`."""
    try:
        function = _FUNCTIONS[family]
    except KeyError:
        raise ValueError(f"unknown obfuscation family {family!r}; known: {', '.join(FAMILIES)}") from None
    return function(text, seed)


def parse_families(value: bool | str | Sequence[str] | None) -> list[str]:
    """Families from a flag or a list: True / "all" is every family, a comma list or a sequence names some."""
    if value is None or value is False:
        return []
    if value is True:
        return list(FAMILIES)
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(x).strip() for x in items if str(x).strip()]
    if names == ["all"]:
        return list(FAMILIES)
    unknown = [n for n in names if n not in _FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown obfuscation famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; known: "
                         f"{', '.join(FAMILIES)}")  # fmt: skip
    if len(set(names)) != len(names):
        raise ValueError(f"obfuscation family given twice: {names}")
    if not names:
        raise ValueError("no obfuscation family given")
    return names
