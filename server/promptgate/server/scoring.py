"""Label scoring: probabilities over a label set, read from next-token distributions.

Labels are token sequences arranged in a trie. At every node where the labels branch, the
engine gives the next-token probabilities normalized over the branching tokens (one forward
pass, masked to those tokens); where only one label continues, its next token is forced and
costs nothing. A label's probability is the product along its path, so labels whose first
tokens collide are scored as whole sequences and the probabilities of the set sum to 1. For
the common case — labels with distinct first tokens — that is a single forward pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

# (prompt ids, allowed next-token ids) -> probabilities of those tokens, normalized over them.
ScoreNext = Callable[[Sequence[int], Sequence[int]], Awaitable[Sequence[float]]]


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    index: int | None = None  # the sequence that ends here


class LabelTrie:
    """A prefix-free set of token sequences, scored as a constrained next-token walk."""

    def __init__(self, sequences: Sequence[Sequence[int]]) -> None:
        if not sequences:
            raise ValueError("no sequences to score")
        self.size = len(sequences)
        self._root = _Node()
        for i, seq in enumerate(sequences):
            if not seq:
                raise ValueError(f"sequence {i} is empty")
            node = self._root
            for tok in seq:
                if node.index is not None:
                    raise ValueError(f"sequence {node.index} is a prefix of sequence {i}")
                node = node.children.setdefault(tok, _Node())
            if node.index is not None or node.children:
                raise ValueError(f"sequence {i} is a prefix of, or equal to, another sequence")
            node.index = i

    @property
    def branch_points(self) -> int:
        """Forward passes one full scoring costs."""
        count, stack = 0, [self._root]
        while stack:
            node = stack.pop()
            count += len(node.children) > 1
            stack.extend(node.children.values())
        return count

    @property
    def max_branching(self) -> int:
        """The most tokens one forward pass is asked to score."""
        widest, stack = 0, [self._root]
        while stack:
            node = stack.pop()
            widest = max(widest, len(node.children))
            stack.extend(node.children.values())
        return widest

    async def score(self, prefix: Sequence[int], score_next: ScoreNext) -> list[float]:
        """Probability of each sequence after `prefix`, in the order they were given."""
        probs = [0.0] * self.size
        # Each frontier entry: a branching (or leaf) node, the tokens that lead to it (a base
        # sequence and the forced tokens after it: the whole path is written out only where it
        # is scored, never for a leaf), and the probability of having got there. All nodes of a
        # level are scored concurrently so the engine can batch them.
        frontier = [self._descend(self._root, prefix, (), 1.0)]
        while frontier:
            leaves = [f for f in frontier if f[0].index is not None]
            for node, _, _, p in leaves:
                probs[node.index] = p  # type: ignore[index]
            branching = [(node, [*base, *tail], p) for node, base, tail, p in frontier if node.index is None]
            if not branching:
                break
            if len(branching) == 1:  # the common case (one branch point): no task to gather
                node, path, _ = branching[0]
                results = [await score_next(path, list(node.children))]
            else:
                results = await asyncio.gather(*(score_next(path, list(node.children)) for node, path, _ in branching))
            frontier = []
            for (node, path, p), child_probs in zip(branching, results, strict=True):
                for (tok, child), q in zip(node.children.items(), child_probs, strict=True):
                    frontier.append(self._descend(child, path, (tok,), p * float(q)))
        return probs

    @staticmethod
    def _descend(
        node: _Node, base: Sequence[int], tail: tuple[int, ...], p: float
    ) -> tuple[_Node, Sequence[int], tuple[int, ...], float]:
        # A single continuation is forced: follow it without asking the model.
        while node.index is None and len(node.children) == 1:
            tok, node = next(iter(node.children.items()))
            tail = (*tail, tok)
        return node, base, tail, p
