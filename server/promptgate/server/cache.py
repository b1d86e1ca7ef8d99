"""A bounded LRU of answers, so repeats of the same text skip the engine.

Logged traffic repeats (the same greeting, the same pasted prompt, the same tool output).
The key is what the engine would be given: the text's token ids after canonicalization, the
mode and the threshold, so two spellings that canonicalize alike share an entry and nothing
the answer depends on is left out of it (one cache serves one engine, hence one model and
profile). Ids are keyed by a 128-bit digest, so an entry costs the same whatever the text's
length.

An exact repeat of a text (the common repeat in a log) need not be read again either: the
cache also remembers, for as many texts as it holds answers, which entry a text as sent (with
its mode, threshold and reading options) was read to, with what the reading added to the
answer (its span, signals, truncation). Such a repeat skips canonicalization and tokenization
and is answered from that entry while the entry is in the cache; it counts as one lookup, as
any other, and once the entry is evicted the text is read again.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import NamedTuple

from .domain import Classification, Mode, Span

__all__ = ["Reading", "ResultCache"]


class Reading(NamedTuple):
    """What reading a text as sent led to: the entry its tokens are cached under, and what the
    reading adds to that entry's answer."""

    key: bytes
    span: Span
    signals: tuple[str, ...]
    truncated: bool


class ResultCache:
    def __init__(self, size: int, *, on_lookup: Callable[[bool], None] | None = None) -> None:
        if size < 1:
            raise ValueError("a result cache holds at least one entry (turn it off instead)")
        self.size = size
        self.on_lookup = on_lookup  # told hit (True) or miss (False), for the metrics
        self._entries: OrderedDict[bytes, Classification] = OrderedDict()
        self._readings: OrderedDict[bytes, Reading] = OrderedDict()

    @staticmethod
    def key(text_ids: Sequence[int], mode: Mode, threshold: float) -> bytes:
        digest = hashlib.blake2b(array("q", text_ids).tobytes(), digest_size=16)
        digest.update(f"|{mode.value}|{threshold!r}".encode())
        return digest.digest()

    def get(self, key: bytes) -> Classification | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        if self.on_lookup is not None:
            self.on_lookup(found is not None)
        return found

    def put(self, key: bytes, result: Classification) -> None:
        self._entries[key] = result
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def __contains__(self, key: object) -> bool:
        """Whether an answer is held for `key` (not a lookup: neither counted nor moved)."""
        return key in self._entries

    @staticmethod
    def text_key(text: str, options: str) -> bytes:
        """The key of a text as sent, with everything its reading and answer depend on in `options`."""
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16)
        digest.update(options.encode())
        return digest.digest()

    def reading(self, text_key: bytes) -> Reading | None:
        found = self._readings.get(text_key)
        if found is not None:
            self._readings.move_to_end(text_key)
        return found

    def put_reading(self, text_key: bytes, reading: Reading) -> None:
        self._readings[text_key] = reading
        self._readings.move_to_end(text_key)
        while len(self._readings) > self.size:
            self._readings.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
