"""One (file, mode) result of the report from its predictions: the metrics and breakdowns."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from . import metrics
from .records import MALICIOUS

if TYPE_CHECKING:
    from .types import Prediction, QueryFailure

__all__ = ["summarize"]

NO_VALUE = "(none)"


def _arrays(preds: Sequence[Prediction]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y_true = np.array([p.record.label == MALICIOUS for p in preds], dtype=np.int8)
    y_pred = np.array([p.verdict == MALICIOUS for p in preds], dtype=np.int8)
    scores = np.array([p.malicious_probability for p in preds], dtype=np.float64)
    return y_true, y_pred, scores


def _group(preds: Sequence[Prediction], key: Callable[[Prediction], str | None]) -> dict[str, list[Prediction]]:
    groups: dict[str, list[Prediction]] = {}
    for p in preds:
        groups.setdefault(key(p) or NO_VALUE, []).append(p)
    return dict(sorted(groups.items()))


def _breakdown(group: Sequence[Prediction]) -> dict[str, Any]:
    y_true, y_pred, _ = _arrays(group)
    return {
        "n": len(group),
        "n_malicious": int(y_true.sum()),
        "accuracy": float(np.mean(y_true == y_pred)),
        "flagged_rate": float(y_pred.mean()),
    }


def _category_accuracy(group: Sequence[Prediction]) -> tuple[float | None, float | None]:
    """Share of malicious examples whose predicted category is the gold one: over all of them
    (a missed attack predicts no category, so it counts as wrong), and over the flagged ones."""
    malicious = [p for p in group if p.record.label == MALICIOUS and p.record.category]
    if not malicious:
        return None, None
    right = [p.category_predicted == p.record.category for p in malicious]
    flagged = [ok for p, ok in zip(malicious, right, strict=True) if p.verdict == MALICIOUS]
    return sum(right) / len(right), (sum(flagged) / len(flagged) if flagged else None)


def summarize(
    file: str,
    mode: str,
    preds: Sequence[Prediction],
    failures: Sequence[QueryFailure],
    wall_s: float,
    *,
    categories: Sequence[str] = (),
    min_recall: float = 0.2,
    check_collapse: bool = True,
) -> dict[str, Any]:
    """The JSON-able result for one data file (or the pool of all) in one mode.

    `categories` are the attack categories the model knows; category accuracy is only
    reported for gold categories among them (for any other the model cannot be right).
    """
    y_true, y_pred, scores = _arrays(preds)
    basic = metrics.binary_metrics(y_true, y_pred)
    at1 = metrics.recall_at_fpr(y_true, scores, 0.01) if len(preds) else None
    at5 = metrics.recall_at_fpr(y_true, scores, 0.05) if len(preds) else None
    known = set(categories)
    per_category: dict[str, Any] = {}
    for name, group in _group(preds, lambda p: p.record.category).items():
        entry = _breakdown(group)
        if entry["n_malicious"] and name in known:
            entry["category_accuracy"], entry["category_accuracy_flagged"] = _category_accuracy(group)
        per_category[name] = entry
    overall_category: float | None = None
    if known:
        scored = [p for p in preds if p.record.category in known]
        overall_category = _category_accuracy(scored)[0]
    escalated = None
    if mode == "auto" and preds:
        escalated = sum(p.scored_mode == "reasoned" for p in preds) / len(preds)
    latency = metrics.latency_summary([p.latency_ms for p in preds])
    return {
        "file": file,
        "mode": mode,
        "n": len(preds),
        "n_malicious": int(y_true.sum()),
        "n_benign": int(len(preds) - y_true.sum()),
        "n_failed": len(failures),
        "accuracy": basic["accuracy"],
        "precision": basic["precision"],
        "recall": basic["recall"],
        "f1": basic["f1"],
        "fpr": basic["fpr"],
        "roc_auc": metrics.roc_auc(y_true, scores) if len(preds) else None,
        "ece": metrics.expected_calibration_error(y_true, scores),
        "recall_at_1pct_fpr": at1["recall"] if at1 else None,
        "recall_at_5pct_fpr": at5["recall"] if at5 else None,
        "operating_points": {"fpr_1pct": at1, "fpr_5pct": at5},
        "confusion": metrics.confusion(y_true, y_pred).to_dict(),
        "per_class_recall": {"malicious": basic["recall_malicious"], "benign": basic["recall_benign"]},
        "reliability": metrics.reliability_table(y_true, scores),
        "per_source": {name: _breakdown(g) for name, g in _group(preds, lambda p: p.record.source).items()},
        "per_category": per_category,
        "category_accuracy": overall_category,
        "latency": latency,
        "wall_s": wall_s,
        "throughput_qps": len(preds) / wall_s if wall_s > 0 else None,
        "escalated_share": escalated,
        "collapse": metrics.detect_collapse(y_true, y_pred, min_recall=min_recall) if check_collapse else [],
    }
