"""Is a teacher's rationale usable as training data? One sentence, no label word, agrees with the label.

The checks, in order (the first that fails is the reason):
- `empty`: nothing left after cleanup;
- `too_long`: longer than `max_chars` characters;
- `several_sentences`: a line break inside it, or a sentence end (`.`, `!`, `?`) followed by
  a new sentence starting with a capital, digit or quote. Common abbreviations (e.g., i.e.,
  etc., vs., Mr., Dr., U.S., single initials) and decimals or file names (no space after the
  dot) do not end a sentence;
- `label_leak`: the words "malicious" or "benign" (the label strings the model must produce
  after the rationale; a rationale that says them teaches the model to copy, not to reason);
- `contradicts_label`: a keyword/negation heuristic.
  For a malicious example: an assertion that the message is harmless, e.g. "is harmless",
  "is a legitimate request", "is not an attack", "poses no risk", "no attempt to ...",
  "does not try to bypass ...", "nothing harmful".
  For a benign example: an assertion that it is an attack, e.g. "is a jailbreak", "is a
  prompt injection", "attempts to override/bypass/jailbreak ...", "an attempt to ...", unless
  negated just before ("does not attempt to override", "no attempt to bypass", "rather than
  trying to ...").

Limits of the heuristic (why it is one): it only sees explicit assertions in English. It
misses paraphrases ("nothing here would hurt anyone" for an attack), irony and other
languages, so it lowers the rate of contradicting rationales rather than proving there are
none. It can also reject a sound rationale, e.g. "it tries to override a method in Java" for a
benign coding question; a false reject costs one more request, never a wrong label, and the
example still ends up in the output or in the rejects file.
"""

from __future__ import annotations

import re

DEFAULT_MAX_CHARS = 300

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_PREFIX = re.compile(r"^\s*(?:rationale|explanation|reason|sentence|answer)\s*:\s*", re.IGNORECASE)
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»"}

# Abbreviations whose dot does not end a sentence. Matched case-insensitively before a dot.
_ABBREVIATIONS = re.compile(
    r"\b(?:e\.g|i\.e|etc|vs|cf|approx|incl|esp|viz|al|mr|mrs|ms|dr|prof|sr|jr|st|no|fig|"
    r"u\.s|u\.k|u\.n|e\.u|a\.m|p\.m|ph\.d|inc|ltd|co|corp)\.",
    re.IGNORECASE,
)
_INITIAL = re.compile(r"\b[A-Z]\.(?=\s)")
_SENTENCE_END = re.compile(r"[.!?]+[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")

_LEAK = re.compile(r"\b(malicious|benign)\b", re.IGNORECASE)

_BE = r"(?:is|are|was|'s|’s|remains|constitutes)"
_INTENSIFIER = r"(?:(?:a|an|just|simply|purely|entirely|completely|perfectly|clearly|totally|fully|otherwise)\s+)*"
_HARMLESS_WORD = (
    r"(?:harmless|innocuous|innocent|safe|legitimate|legit|benign|ordinary|routine|normal|"
    r"well-intentioned|benevolent|appropriate)"
)
_ATTACK_NOUN = r"(?:attack|jailbreak|injection|threat|exploit|manipulation|attempt\s+to\s+\w+)"
_ATTACK_VERB = (
    r"(?:jailbreak|inject|override|overwrite|bypass|circumvent|subvert|evade|manipulate|trick|hijack|"
    r"disable|sidestep|exfiltrate|leak|extract\s+(?:the\s+|its\s+|their\s+)?(?:system\s+prompt|hidden|secret|"
    r"confidential|instructions))"
)

# Said of a malicious example, these contradict its label.
_SAYS_HARMLESS = [
    # "is harmless", "is a legitimate request"; not "harmless-looking" / "harmless-sounding".
    re.compile(rf"\b{_BE}\s+{_INTENSIFIER}{_HARMLESS_WORD}\b(?!-(?:looking|seeming|sounding))", re.IGNORECASE),
    re.compile(rf"\b{_BE}\s+(?:not|n't|never)\s+(?:a|an|any)?\s*(?:\w+\s+)?{_ATTACK_NOUN}\b", re.IGNORECASE),
    re.compile(r"\b(?:isn't|isn’t|aren't|aren’t)\s+(?:a|an|any)?\s*(?:\w+\s+)?"
               rf"{_ATTACK_NOUN}\b", re.IGNORECASE),
    re.compile(r"\bposes?\s+no\s+(?:\w+\s+)?(?:risk|threat|danger|harm)\b", re.IGNORECASE),
    re.compile(r"\b(?:no|without\s+any)\s+(?:sign|signs|indication|evidence|attempt|intent|intention)\s+(?:of|to)\b",
               re.IGNORECASE),
    re.compile(rf"\b(?:does|do)\s*(?:not|n't|n’t)\s+(?:attempt|try|seek|aim|ask)\s+to\s+{_ATTACK_VERB}", re.IGNORECASE),
    re.compile(r"\bnothing\s+(?:harmful|malicious|suspicious|dangerous|adversarial)\b", re.IGNORECASE),
]

# Said of a benign example, these contradict its label, unless a negation comes just before.
_SAYS_ATTACK = [
    # "is a jailbreak", "is a prompt injection"; not "is a SQL injection question".
    re.compile(
        rf"\b{_BE}\s+(?:a|an|clearly\s+an?|likely\s+an?|obviously\s+an?)\s+(?:\w+\s+)?"
        r"(?:attack|jailbreak|injection|exploit|manipulation\s+attempt)\b"
        r"(?!\s+(?:question|prevention|defen[cs]e|detection|technique|concept|topic|example|scenario|tutorial|"
        r"vulnerabilit\w*|mitigation|protection|awareness|training|research|test\w*))",
        re.IGNORECASE,
    ),
    re.compile(rf"\b(?:attempts|attempting|tries|trying|seeks|seeking|aims|aiming)\s+to\s+{_ATTACK_VERB}",
               re.IGNORECASE),
    re.compile(rf"\ban\s+attempt\s+to\s+{_ATTACK_VERB}", re.IGNORECASE),
    re.compile(r"\b(?:jailbreak|injection)\s+attempt\b", re.IGNORECASE),
]
# A negation in the few words before an attack assertion flips it ("makes no attempt to ...").
_NEGATION_BEFORE = re.compile(
    r"(?:\b(?:not|no|never|nor|without|neither)\b|n't|n’t|\brather\s+than\b|\binstead\s+of\b)(?:\W+\w+){0,3}\W*$",
    re.IGNORECASE,
)

# "pretends it is harmless", "framed so that it seems legitimate": the attack's disguise, not a verdict.
_DISGUISE_BEFORE = re.compile(
    r"\b(?:pretend\w*|claim\w*|insist\w*|fram\w*|disguis\w*|as\s+if|as\s+though|appear\w*|seem\w*|"
    r"look\w*|pos(?:es|ing)\s+as|dress\w*|guise|supposedly|ostensibly|purportedly)\b(?:\W+\w+){0,4}\W*$",
    re.IGNORECASE,
)


def clean_rationale(raw: str) -> str:
    """The sentence in a teacher's answer: think blocks, a `Rationale:` prefix and wrapping quotes removed."""
    text = _THINK.sub("", raw)
    if "<think>" in text.lower():  # an unclosed think block: the answer never came
        return ""
    text = _PREFIX.sub("", text.strip()).strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def count_sentences(text: str) -> int:
    """Sentences in `text`, by the boundary rule in the module docstring (1 for a plain sentence)."""
    masked = _INITIAL.sub("X", _ABBREVIATIONS.sub(lambda m: m.group(0).replace(".", ""), text.strip()))
    return len(_SENTENCE_END.findall(masked)) + 1 if masked else 0


def _contradiction(text: str, label: str) -> str | None:
    if label == "malicious":
        for pattern in _SAYS_HARMLESS:
            for match in pattern.finditer(text):
                if not _DISGUISE_BEFORE.search(text[: match.start()]):
                    return f"calls a prompt attack harmless ({match.group(0).strip()!r})"
        return None
    for pattern in _SAYS_ATTACK:
        for match in pattern.finditer(text):
            if not _NEGATION_BEFORE.search(text[: match.start()]):
                return f"calls a harmless message an attack ({match.group(0).strip()!r})"
    return None


def check_rationale(text: str, label: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> tuple[str, str] | None:
    """None when `text` is a usable rationale for `label`, else (kind, reason)."""
    if not text.strip():
        return "empty", "empty rationale"
    if len(text) > max_chars:
        return "too_long", f"rationale is {len(text)} characters long; the limit is {max_chars}"
    if "\n" in text.strip():
        return "several_sentences", "rationale spans several lines; it must be one sentence"
    sentences = count_sentences(text)
    if sentences > 1:
        return "several_sentences", f"rationale has {sentences} sentences; it must be one"
    leak = _LEAK.search(text)
    if leak:
        return "label_leak", f"rationale says the label word {leak.group(1).lower()!r}"
    contradiction = _contradiction(text, label)
    if contradiction:
        return "contradicts_label", f"rationale contradicts the label {label!r}: it {contradiction}"
    return None


__all__ = ["DEFAULT_MAX_CHARS", "check_rationale", "clean_rationale", "count_sentences"]
