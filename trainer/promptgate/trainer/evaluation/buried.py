"""The buried-attack suite: is an attack found wherever it sits in a long text, and where?

From any labelled file: benign filler with one malicious row placed at a random point,
against all-benign composites of the same lengths (`promptgate.trainer.composites`). Every
composite is screened through the server's one path, windows and all, and the result says
how well injected composites are told from clean ones (ROC-AUC), the rates at the
threshold, and how often the span the server reports overlaps the buried attack.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from promptgate.trainer.composites import buried_suite

from .metrics import binary_metrics, roc_auc

if TYPE_CHECKING:
    from promptgate.server.screening import Screening

__all__ = ["evaluate_buried"]


async def evaluate_buried(
    screening: Screening,
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    n: int,
    threshold: float,
    seed: int = 0,
    min_chars: int = 4000,
    max_chars: int = 12000,
    concurrency: int = 64,
) -> dict[str, Any]:
    from promptgate.server.domain import Query
    from promptgate.server.errors import ScreeningError

    composites = buried_suite(texts, labels, n=n, min_chars=min_chars, max_chars=max_chars, seed=seed)
    items = ((c, Query(c.text, "fast", threshold)) for c in composites)
    started = time.perf_counter()
    outcomes: dict[str, Any] = {}
    async for composite, outcome in screening.screen(items, window=concurrency, caller="eval"):
        outcomes[composite.id] = outcome
    wall = time.perf_counter() - started
    scored = [(c, outcomes[c.id]) for c in composites if not isinstance(outcomes[c.id], ScreeningError)]
    failed = len(composites) - len(scored)
    y = [1 if c.label == "malicious" else 0 for c, _ in scored]
    p = [r.malicious_probability for _, r in scored]
    rates = binary_metrics(y, [1 if x >= threshold else 0 for x in p])
    injected = [(c, r) for c, r in scored if c.attack is not None]
    hits = sum(1 for c, r in injected if _overlaps(r.span, c.attack))
    return {
        "n_injected": sum(y),
        "n_clean": len(y) - sum(y),
        "n_failed": failed,
        "min_chars": min_chars,
        "max_chars": max_chars,
        "roc_auc": roc_auc(y, p),
        "tpr": rates["recall"],
        "fpr": rates["fpr"],
        "accuracy": rates["accuracy"],
        # Of the injected composites, the share whose deciding window covers part of the attack.
        "span_hit_rate": hits / len(injected) if injected else None,
        "seconds": round(wall, 2),
        "chars_per_s": round(sum(len(c.text) for c, _ in scored) / wall, 1) if wall > 0 else None,
    }


def _overlaps(span: Any, attack: tuple[int, int] | None) -> bool:
    return span is not None and attack is not None and span.start < attack[1] and attack[0] < span.end


