from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from promptgate.server.scoring import LabelTrie


def table_model(table: dict[tuple[int, ...], dict[int, float]]):
    """A next-token distribution given by a table (the algorithm under test needs no model)."""
    calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    async def score_next(prompt: Sequence[int], allowed: Sequence[int]) -> list[float]:
        calls.append((tuple(prompt), tuple(allowed)))
        dist = table[tuple(prompt)]
        weights = [dist.get(t, 0.0) for t in allowed]
        total = sum(weights)
        return [w / total for w in weights]

    return score_next, calls


async def test_distinct_first_tokens_cost_one_pass() -> None:
    trie = LabelTrie([[5, 6, 7], [8, 9]])
    score_next, calls = table_model({(1,): {5: 0.3, 8: 0.1, 99: 0.6}})
    probs = await trie.score([1], score_next)
    assert probs == pytest.approx([0.75, 0.25])
    assert calls == [((1,), (5, 8))]
    assert trie.branch_points == 1


async def test_colliding_labels_are_scored_as_whole_sequences() -> None:
    # "memory_poisoning" vs "memory_exhaustion" vs "bias": two share their first token.
    trie = LabelTrie([[10, 11], [10, 12, 13], [20]])
    table = {
        (0,): {10: 0.6, 20: 0.2},
        (0, 10): {11: 0.1, 12: 0.3},
    }
    score_next, calls = table_model(table)
    probs = await trie.score([0], score_next)
    p10 = 0.6 / 0.8
    assert probs == pytest.approx([p10 * 0.25, p10 * 0.75, 0.2 / 0.8])
    assert math.isclose(sum(probs), 1.0)
    # Token 13 after 12 is forced (one continuation): never asked.
    assert ((0, 10, 12), (13,)) not in calls
    assert len(calls) == trie.branch_points == 2


def test_prefixes_are_rejected() -> None:
    with pytest.raises(ValueError, match="prefix"):
        LabelTrie([[1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match="prefix"):
        LabelTrie([[1, 2, 3], [1, 2]])
    with pytest.raises(ValueError, match="empty"):
        LabelTrie([[1], []])
