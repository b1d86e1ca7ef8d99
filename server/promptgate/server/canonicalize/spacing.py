"""Rejoin words spelled out with spaces or separators between their letters ("I g n o r e")."""

from __future__ import annotations

import re

import regex

from ._edit import Builder, StepResult

# Fewer single letters in a row are ordinary text: "a b testing", "I am", "A B C", "x y z".
MIN_SPACED_LETTERS = 4

# One letter with its combining marks. CJK scripts are left out: they are written without
# spaces, so a spaced CJK character is not an evasion of a word-level reader.
_CJK = r"\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Hangul}\p{Script=Bopomofo}"
_LETTER = rf"[\p{{L}}--[{_CJK}]]\p{{M}}*"
_WORDISH = r"[\p{L}\p{M}\p{N}]"
_SPACED = regex.compile(
    # Letters separated by runs of spaces: "I g n o r e  a l l". The narrowest gap in the run
    # separates letters; any wider gap separates words.
    rf"(?P<spaces>(?<!{_WORDISH}){_LETTER}(?: +{_LETTER})+(?!{_WORDISH}))"
    # Letters joined by one separator, words separated by spaces: "I-g-n-o-r-e a-l-l", "U.S.S.R".
    rf"|(?P<joined>(?<![-._]|{_WORDISH}){_LETTER}(?P<sep>[-._]){_LETTER}(?:(?P=sep){_LETTER})*"
    rf"(?: +{_LETTER}(?P=sep){_LETTER}(?:(?P=sep){_LETTER})*)*(?!{_WORDISH}|(?P=sep){_WORDISH}))",
    regex.V1,
)
_ONE_LETTER = regex.compile(_LETTER, regex.V1)
# A separator, then three letters (each with whatever non-word characters follow it, which
# includes its marks) chained by separators: every _SPACED match of MIN_SPACED_LETTERS or
# more letters contains one (its second to fourth letters). The standard library's `re`
# finds it far faster than `regex` finds _SPACED, so most texts skip _SPACED. It starts at a
# separator, not a letter, because `re` then tries it at a fifth of a text's positions rather
# than four fifths: 12 against 58 us a text on the shared data (it fires on 379 texts of
# 6,548, where starting at the first letter fired on 377).
_HINT = re.compile(r"[ ._-][^\W\d_][^\w ._-]*[ ._-]+[^\W\d_][^\w ._-]*[ ._-]+[^\W\d_]")


def join_spaced_letters(text: str, min_letters: int = MIN_SPACED_LETTERS) -> StepResult:
    """Rejoin letters spelled out one by one into words.

    A run of at least `min_letters` single letters (each with its combining marks, not touching
    another letter or digit) separated by spaces becomes words: the narrowest gap in the run
    separates letters, any wider gap separates words ("I g n o r e   a l l" -> "Ignore all"; a
    uniformly double-spaced run is one word). Letters joined by one repeated "-", "." or "_"
    ("I-g-n-o-r-e a-l-l") join the same way, with spaces between words. Runs never cross a line
    break or a tab. CJK characters are never joined. Signal: "spaced_letters".
    """
    if min_letters >= MIN_SPACED_LETTERS and not _HINT.search(text):
        return StepResult(text)
    out = Builder(text)
    pos = 0
    for m in _SPACED.finditer(text):
        start, end = m.span()
        letters = [(start + a, start + b) for a, b in (x.span() for x in _ONE_LETTER.finditer(m.group()))]
        if len(letters) < min_letters:
            continue
        if m.group("spaces"):
            gaps = [letters[k + 1][0] - letters[k][1] for k in range(len(letters) - 1)]
            narrow = min(gaps)
            breaks = [g > narrow for g in gaps]
        else:
            breaks = [text[letters[k][1]] == " " for k in range(len(letters) - 1)]
        out.signals.add("spaced_letters")
        out.copy(pos, start)
        out.skip()
        for k, (a, b) in enumerate(letters):
            out.copy(a, b)
            if k < len(breaks) and breaks[k]:
                out.emit(" ", b, letters[k + 1][0])
        pos = end
    out.copy(pos, len(text))
    return out.result()
