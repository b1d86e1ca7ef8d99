"""A bounded LRU of answers, so repeats of the same text skip the engine.

Logged traffic repeats (the same greeting, the same pasted prompt, the same tool output).
The key is what the engine would be given: the text's token ids after canonicalization, the
mode and the threshold, so two spellings that canonicalize alike share an entry and nothing
the answer depends on is left out of it (one cache serves one engine, hence one model and
profile). Ids are keyed by a 128-bit digest, so an entry costs the same whatever the text's
length.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence

from .domain import Classification, Mode

__all__ = ["ResultCache"]


class ResultCache:
    def __init__(self, size: int, *, on_lookup: Callable[[bool], None] | None = None) -> None:
        if size < 1:
            raise ValueError("a result cache holds at least one entry (turn it off instead)")
        self.size = size
        self.on_lookup = on_lookup  # told hit (True) or miss (False), for the metrics
        self._entries: OrderedDict[bytes, Classification] = OrderedDict()

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

    def __len__(self) -> int:
        return len(self._entries)
