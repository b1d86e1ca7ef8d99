"""Character-level steps: NFKC, Unicode tag characters, invisible and format characters.

Character properties come from maintained data: `unicodedata2` (the current Unicode release;
the standard library's `unicodedata` is frozen at the Python release's Unicode version, 14.0
for 3.11, and misses later compatibility forms such as U+1CCD6 OUTLINED LATIN CAPITAL LETTER A)
and the `regex` module's property classes.
"""

from __future__ import annotations

import regex
import unicodedata2 as ud

from ._edit import Builder, StepResult
from .scripts import script_of

ZWNJ = "\u200c"
ZWJ = "\u200d"
VS15 = "\ufe0e"  # text presentation selector
VS16 = "\ufe0f"  # emoji presentation selector
KEYCAP = "\u20e3"  # COMBINING ENCLOSING KEYCAP
WAVING_BLACK_FLAG = "\U0001f3f4"
CANCEL_TAG = "\U000e007f"
_TAG_BASE = 0xE0000

# UTS #51 emoji_tag_sequence for a subdivision flag: U+1F3F4, then a CLDR subdivision id
# (a two-letter region and one to four letters or digits, written in tag characters), then
# CANCEL TAG. Anything else in tag characters is hidden text ("ASCII smuggling").
_FLAG = "\U0001f3f4[\U000e0061-\U000e007a]{2}[\U000e0030-\U000e0039\U000e0061-\U000e007a]{1,4}\U000e007f"
_TAGS = regex.compile(f"(?P<flag>{_FLAG})|[\U000e0000-\U000e007f]+")
_ANY_TAG = regex.compile("[\U000e0000-\U000e007f]")
_CLUSTER = regex.compile(r"\X")

# Removed: Default_Ignorable_Code_Point (zero-width characters, soft hyphen, bidi marks,
# embeddings, overrides and isolates, variation selectors, fillers, tags), the other format
# characters (Cf) except the prepended concatenation marks, which are visible (U+0600 ARABIC
# NUMBER SIGN), and control characters (Cc) that are not white space.
_INVISIBLE = regex.compile(
    rf"(?P<flag>{_FLAG})"
    r"|[\p{Default_Ignorable_Code_Point}\p{Cf}\p{Cc}--\p{Prepended_Concatenation_Mark}--\p{White_Space}]",
    regex.V1,
)
_EXT_PICT = regex.compile(r"\p{Extended_Pictographic}")
_EMOJI = regex.compile(r"\p{Emoji}")
_EMOJI_MODIFIER = regex.compile(r"\p{Emoji_Modifier}")
_LETTER_OR_MARK = regex.compile(r"[\p{L}\p{M}]")
_JOIN_TRANSPARENT = regex.compile(r"\p{Joining_Type=Transparent}")
_JOINS_LEFT = regex.compile(r"[\p{Joining_Type=Dual_Joining}\p{Joining_Type=Left_Joining}]")
_JOINS_RIGHT = regex.compile(r"[\p{Joining_Type=Dual_Joining}\p{Joining_Type=Right_Joining}]")
_VIRAMA_CCC = 9


def normalize_nfkc(text: str) -> StepResult:
    """NFKC: fold fullwidth letters, ligatures, compatibility spaces and the like to their plain forms.

    Offsets: the text is cut into grapheme clusters, which NFKC maps independently in almost
    all text; clusters whose normalization interacts with the next one (halfwidth katakana and
    its separate voiced mark) are merged until the pieces concatenate to NFKC of the whole.
    Every output character maps to the cluster group it came from. Signal:
    "fullwidth_or_compatibility" when anything changed.
    """
    if text.isascii():
        return StepResult(text)
    whole = ud.normalize("NFKC", text)
    if whole == text:
        return StepResult(text)
    clusters = [m.span() for m in _CLUSTER.finditer(text)]
    pieces = [ud.normalize("NFKC", text[a:b]) for a, b in clusters]
    if "".join(pieces) != whole:
        groups: list[list[int]] = []  # [start, end] of the source, merged progressively
        pieces_merged: list[str] = []
        for (a, b), piece in zip(clusters, pieces, strict=True):
            if groups:
                g = groups[-1]
                merged = ud.normalize("NFKC", text[g[0] : b])
                if merged != pieces_merged[-1] + piece:
                    g[1] = b
                    pieces_merged[-1] = merged
                    continue
            groups.append([a, b])
            pieces_merged.append(piece)
        clusters = [(g[0], g[1]) for g in groups]
        pieces = pieces_merged
        if "".join(pieces) != whole:  # never seen; map everything to everything rather than lie
            clusters, pieces = [(0, len(text))], [whole]
    out = Builder(text)
    out.signals.add("fullwidth_or_compatibility")
    for (a, b), piece in zip(clusters, pieces, strict=True):
        if piece == text[a:b]:
            out.copy(a, b)
        else:
            out.emit(piece, a, b)
    return out.result()


def decode_tags(text: str) -> StepResult:
    """Decode Unicode tag characters (U+E0000 block) to the ASCII they encode, as visible text.

    U+E0020..U+E007E encode ASCII 0x20..0x7E; U+E0001 (language tag), U+E007F (cancel tag) and
    the unassigned rest of the block encode nothing and are dropped. The decoded text replaces
    the tag run, set off by a space from adjacent visible text so hidden words do not fuse with
    visible ones. A well-formed emoji subdivision flag (U+1F3F4, a subdivision id, U+E007F — the
    flag of Scotland) is legitimate and left as it is. Signal: "tag_characters".
    """
    if text.isascii() or not _ANY_TAG.search(text):
        return StepResult(text)
    out = Builder(text)
    pos = 0
    for m in _TAGS.finditer(text):
        if m.group("flag"):
            continue
        start, end = m.span()
        out.signals.add("tag_characters")
        out.copy(pos, start)
        pos = end
        decoded = [(i, chr(ord(text[i]) - _TAG_BASE)) for i in range(start, end) if 0xE0020 <= ord(text[i]) <= 0xE007E]
        if not decoded:
            out.skip()
            continue
        if start > 0 and not text[start - 1].isspace() and not decoded[0][1].isspace():
            out.emit(" ", decoded[0][0], decoded[0][0] + 1)
        for i, ch in decoded:
            out.emit(ch, i, i + 1)
        if end < len(text) and not text[end].isspace() and not decoded[-1][1].isspace():
            out.emit(" ", decoded[-1][0], decoded[-1][0] + 1)
    out.copy(pos, len(text))
    return out.result()


def _is(pattern: regex.Pattern[str], text: str, i: int) -> bool:
    return 0 <= i < len(text) and pattern.match(text[i]) is not None


def _emoji_element_ends_at(text: str, i: int) -> bool:
    """Whether an emoji ZWJ element (UTS #51) ends at text[i]: an emoji, a presentation sequence
    (emoji + U+FE0F) or a modifier sequence (emoji + skin tone)."""
    if _is(_EXT_PICT, text, i) or _is(_EMOJI_MODIFIER, text, i):
        return True
    return 0 <= i < len(text) and text[i] == VS16 and _is(_EMOJI, text, i - 1)


def _cursive_context(text: str, i: int) -> bool:
    """UAX #31 A1 / RFC 5892 A.1: a joining letter on each side, transparent marks skipped."""
    before = i - 1
    while _is(_JOIN_TRANSPARENT, text, before):
        before -= 1
    after = i + 1
    while _is(_JOIN_TRANSPARENT, text, after):
        after += 1
    return _is(_JOINS_LEFT, text, before) and _is(_JOINS_RIGHT, text, after)


def _virama_context(text: str, i: int) -> bool:
    """UAX #31 A2/B / RFC 5892 A.1-A.2: after a virama, followed by a letter of the same script."""
    if i == 0 or i + 1 >= len(text) or ud.combining(text[i - 1]) != _VIRAMA_CCC:
        return False
    return _is(_LETTER_OR_MARK, text, i + 1) and script_of(text[i - 1]) == script_of(text[i + 1])


def _keep(text: str, i: int) -> bool:
    ch = text[i]
    if ch == ZWJ:
        if _emoji_element_ends_at(text, i - 1) and _is(_EXT_PICT, text, i + 1):
            return True
        return _virama_context(text, i) or _cursive_context(text, i)
    if ch == ZWNJ:
        return _virama_context(text, i) or _cursive_context(text, i)
    if ch in (VS15, VS16):
        # One presentation selector right after an emoji; keycap bases (digits, # and *) take
        # it only in a keycap sequence. A second selector, or one after text, hides data.
        if _is(_EXT_PICT, text, i - 1):
            return True
        return _is(_EMOJI, text, i - 1) and i + 1 < len(text) and text[i + 1] == KEYCAP
    return False


def strip_invisible(text: str) -> StepResult:
    """Remove invisible and format characters, keeping the ones legitimate text needs.

    Removed: Default_Ignorable_Code_Point (U+200B and the other zero-width characters, U+00AD
    soft hyphen, bidi marks, embeddings, overrides and isolates, variation selectors, tag
    characters, Hangul fillers), other format characters except visible prepended
    concatenation marks, and non-white-space control characters. Kept, following Unicode:
    ZWJ in emoji ZWJ sequences (an emoji element before it, an emoji after it); ZWJ and ZWNJ
    after a virama before a letter of the same script (Indic half forms and explicit viramas,
    UAX #31 A2/B) and between joining letters (Arabic-script ZWNJ as in Persian "می‌خواهم",
    UAX #31 A1); one U+FE0E/U+FE0F directly after an emoji (or in a keycap sequence); emoji
    subdivision flags with their tag characters. Signal: "invisible_characters".
    """
    if text.isascii() and text.isprintable():
        return StepResult(text)
    out = Builder(text)
    pos = 0
    for m in _INVISIBLE.finditer(text):
        if m.group("flag"):
            continue
        i = m.start()
        if _keep(text, i):
            continue
        out.signals.add("invisible_characters")
        out.copy(pos, i)
        out.skip()
        pos = i + 1
    out.copy(pos, len(text))
    return out.result()
