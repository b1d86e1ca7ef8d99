"""Script of a character and mixed-script confusable repair (UTS #39 data).

Both the script (Scripts.txt) and the look-alike data (confusables.txt) come from
`confusable-homoglyphs`, which ships them as generated from one Unicode release, so the two
tables always agree with each other. Lookups are cached per character: a text repeats few
distinct characters.
"""

from __future__ import annotations

import functools

import regex
import unicodedata2 as ud
from confusable_homoglyphs import categories, confusables

from ._edit import Builder, StepResult

# Characters of these "scripts" are shared by all scripts: they never make a word mixed.
_NEUTRAL = frozenset({"COMMON", "INHERITED", "Unknown"})

# UTS #39 section 5.1: Han, Hiragana and Katakana are written together as Japanese (Jpan),
# Han and Hangul as Korean (Kore), Han and Bopomofo as Chinese (Hanb). A character's augmented
# script set adds those writing systems, so "東京タワー" resolves to one script set.
_AUGMENT = {
    "HAN": frozenset({"HAN", "Jpan", "Kore", "Hanb"}),
    "HIRAGANA": frozenset({"HIRAGANA", "Jpan"}),
    "KATAKANA": frozenset({"KATAKANA", "Jpan"}),
    "HANGUL": frozenset({"HANGUL", "Kore"}),
    "BOPOMOFO": frozenset({"BOPOMOFO", "Hanb"}),
}
# UTS #39 section 5.2, "Highly Restrictive": Latin may be mixed with one of the CJK writing
# systems ("Tシャツ", "iPhone用"); such words are ordinary, not an evasion.
_HIGHLY_RESTRICTIVE = (
    frozenset({"LATIN", "HAN", "HIRAGANA", "KATAKANA"}),
    frozenset({"LATIN", "HAN", "BOPOMOFO"}),
    frozenset({"LATIN", "HAN", "HANGUL"}),
)
# confusables.txt comments wrap right-to-left characters in LRM/RLM for display; the package
# keeps those marks in its strings.
_DISPLAY_MARKS = str.maketrans("", "", "\u200e\u200f")

_WORD = regex.compile(r"[\p{L}\p{M}\p{N}]+")
_MAX_TIE_BREAK = 3


@functools.lru_cache(maxsize=65536)
def script_of(char: str) -> str:
    """The Unicode Script property value of one character, upper case ("LATIN", "COMMON")."""
    return categories.alias(char)


def _homoglyphs(seq: str) -> tuple[str, ...]:
    found = confusables.is_confusable(seq, greedy=True, preferred_aliases=[])
    if not found:
        return ()
    return tuple(h["c"].translate(_DISPLAY_MARKS) for h in found[0]["homoglyphs"])


# Per character that has confusables: every letter it can be read as, with what ranks them.
# Only characters listed in confusables.txt are stored, so the cache is bounded by the data
# (under 10,000 entries) however many distinct characters callers send.
_CLASSES: dict[str, tuple[tuple[str, bool, int, int, str], ...]] = {}


def _lookalikes(char: str) -> tuple[tuple[str, bool, int, int, str], ...]:
    cached = _CLASSES.get(char)
    if cached is not None:
        return cached
    near = _homoglyphs(char)
    if not near:
        return ()
    # confusables.txt maps each character to a prototype; the package stores that relation in
    # both directions, so two hops reach every character sharing the prototype (Cyrillic "а"
    # -> "a" -> Latin "a"; Latin "a" -> Cyrillic "а").
    distance: dict[str, int] = {}
    for n in near:
        distance.setdefault(n, 1)
        for far in _homoglyphs(n):
            distance.setdefault(far, 2)
    category = ud.category(char)
    found = []
    for cand, hops in distance.items():
        if len(cand) != 1 or cand == char:
            continue
        cand_category = ud.category(cand)
        # Only letters that NFKC leaves alone, so the result is stable under the pipeline's NFKC.
        if cand_category.startswith("L") and ud.normalize("NFKC", cand) == cand:
            found.append((script_of(cand), cand_category != category, hops, ord(cand), cand))
    _CLASSES[char] = result = tuple(sorted(found))
    return result


@functools.lru_cache(maxsize=65536)
def lookalike(char: str, script: str) -> str | None:
    """The letter of `script` that `char` imitates (UTS #39 confusables), or None.

    Of the letters of `script` that share `char`'s confusables.txt prototype, the best one has
    the same general category (case), is a direct neighbour of `char` in the data rather than
    a two-hop one, and has the lowest code point (which prefers the basic letter: Cyrillic "І"
    -> "I", not "Ɩ").
    """
    for cand_script, _, _, _, cand in _lookalikes(char):
        if cand_script == script:
            return cand  # sorted by script, then by rank
    return None


def _is_mixed(scripts: set[str]) -> bool:
    resolved: frozenset[str] | None = None
    for sc in scripts:
        augmented = _AUGMENT.get(sc, frozenset({sc}))
        resolved = augmented if resolved is None else resolved & augmented
    if resolved:
        return False
    return not any(scripts <= allowed for allowed in _HIGHLY_RESTRICTIVE)


def _repair_word(word: str) -> str | None:
    """The word with its minority-script look-alikes replaced, or None if it is not mixed."""
    counts: dict[str, int] = {}
    order: dict[str, int] = {}
    letters: list[tuple[int, str]] = []
    for i, ch in enumerate(word):
        sc = script_of(ch)
        if sc in _NEUTRAL:
            continue
        counts[sc] = counts.get(sc, 0) + 1
        order.setdefault(sc, i)
        letters.append((i, sc))
    if len(counts) < 2 or not _is_mixed(set(counts)):
        return None
    # The imitated script is the one most of the word's letters are in. On a tie, the one more
    # of the other letters look like: "Іt" (Cyrillic І, Latin t) is Latin, because І imitates I
    # and no Cyrillic letter looks like t. Then the script that comes first. (More than three
    # tied scripts is no word; the tie-break, quadratic in them, is skipped.)
    most = max(counts.values())
    tied = sorted((sc for sc, n in counts.items() if n == most), key=order.__getitem__)
    target = tied[0]
    if 1 < len(tied) <= _MAX_TIE_BREAK:
        convertible = {
            sc: sum(1 for i, other in letters if other != sc and other in tied and lookalike(word[i], sc) is not None)
            for sc in tied
        }
        target = max(tied, key=convertible.__getitem__)  # max keeps the first of equals
    chars = list(word)
    for i, sc in letters:
        if sc != target:
            repl = lookalike(word[i], target)
            if repl is not None:
                chars[i] = repl
    return "".join(chars)


def replace_confusables(text: str) -> StepResult:
    """Inside words that mix scripts, replace minority-script look-alikes by the letters they imitate.

    A word is a run of letters, marks and digits. It is mixed when its letters' scripts do not
    resolve to one writing system (UTS #39 section 5.1: Han+Kana is Japanese) and are not a
    Highly Restrictive combination (Latin with Japanese, Chinese or Korean). Common and
    Inherited characters (digits, punctuation, combining marks) belong to every script. A word
    written in one script is never touched: Russian stays Russian, Greek stays Greek. Signal:
    "mixed_script" when any mixed word is found, even if no letter of it could be replaced.
    """
    if text.isascii():
        return StepResult(text)
    out = Builder(text)
    pos = 0
    for m in _WORD.finditer(text):
        word = m.group()
        if word.isascii():
            continue
        repaired = _repair_word(word)
        if repaired is None:
            continue
        out.signals.add("mixed_script")
        if repaired != word:
            out.copy(pos, m.start())
            # Each replacement is one code point for one code point: keep the 1:1 map.
            out.emit_each(repaired, m.start())
            pos = m.end()
    out.copy(pos, len(text))
    return out.result()
