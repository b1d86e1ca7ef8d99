"""Binary classification metrics for the evaluation report (numpy only, no sklearn).

Conventions: `y_true` holds 1 for malicious (the positive class) and 0 for benign; `scores`
are malicious probabilities; `y_pred` are the engine's verdicts (1 = flagged). A metric that
is undefined on the data (recall with no malicious example, AUC with one class only) is
None, never a made-up number, so a report cannot show a figure the data does not support.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "Confusion",
    "CurvePoints",
    "binary_metrics",
    "confusion",
    "detect_collapse",
    "expected_calibration_error",
    "latency_summary",
    "recall_at_fpr",
    "reliability_table",
    "roc_auc",
    "roc_curve",
]


def _labels(y: ArrayLike) -> NDArray[np.int8]:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError("labels must be one-dimensional")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError("labels must be 0 (benign) or 1 (malicious)")
    return arr.astype(np.int8)


def _scores(s: ArrayLike, n: int) -> NDArray[np.float64]:
    arr = np.asarray(s, dtype=np.float64)
    if arr.shape != (n,):
        raise ValueError(f"expected {n} scores, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("scores must be finite")
    return arr


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    def to_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}


def confusion(y_true: ArrayLike, y_pred: ArrayLike) -> Confusion:
    t, p = _labels(y_true), _labels(y_pred)
    if t.shape != p.shape:
        raise ValueError("y_true and y_pred differ in length")
    return Confusion(
        tp=int(np.sum((t == 1) & (p == 1))),
        fp=int(np.sum((t == 0) & (p == 1))),
        tn=int(np.sum((t == 0) & (p == 0))),
        fn=int(np.sum((t == 1) & (p == 0))),
    )


def binary_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float | None]:
    """Accuracy, precision, recall (malicious), F1, FPR and the recall of each class."""
    c = confusion(y_true, y_pred)
    precision = _ratio(c.tp, c.tp + c.fp)
    recall = _ratio(c.tp, c.tp + c.fn)
    f1 = None
    if precision is not None and recall is not None:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {
        "accuracy": _ratio(c.tp + c.tn, c.n),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fpr": _ratio(c.fp, c.fp + c.tn),
        "recall_malicious": recall,
        "recall_benign": _ratio(c.tn, c.tn + c.fp),
    }


def _average_ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    # Boundaries of runs of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    ends = np.r_[starts[1:], values.size]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + 1 + end) / 2.0
    return ranks


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float | None:
    """Area under the ROC curve as the Mann-Whitney U statistic: the probability that a
    random malicious example scores above a random benign one, ties counting one half."""
    t = _labels(y_true)
    s = _scores(scores, t.size)
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(s)
    u = ranks[t == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@dataclass(frozen=True)
class CurvePoints:
    """ROC points for the rule `score >= threshold`, from the strictest threshold down.

    The first point is (0, 0) at threshold +inf (nothing flagged); tied scores move the
    curve in one step, as any threshold must take all of them or none.
    """

    fpr: NDArray[np.float64]
    tpr: NDArray[np.float64]
    thresholds: NDArray[np.float64]


def roc_curve(y_true: ArrayLike, scores: ArrayLike) -> CurvePoints | None:
    t = _labels(y_true)
    s = _scores(scores, t.size)
    n_pos = int(t.sum())
    n_neg = t.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(-s, kind="mergesort")
    s_sorted, t_sorted = s[order], t[order]
    # Last index of each run of equal scores: the curve only has a point after a whole tie.
    last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    tps = np.cumsum(t_sorted)[last]
    fps = (last + 1) - tps
    return CurvePoints(
        fpr=np.r_[0.0, fps / n_neg],
        tpr=np.r_[0.0, tps / n_pos],
        thresholds=np.r_[np.inf, s_sorted[last]],
    )


def recall_at_fpr(y_true: ArrayLike, scores: ArrayLike, max_fpr: float) -> dict[str, float] | None:
    """Best recall of `score >= threshold` with a false-positive rate of at most `max_fpr`.

    The threshold is chosen on these scores (an optimistic, in-sample operating point, as
    is usual for this figure); returns recall, the threshold and the FPR it reaches.
    """
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError("max_fpr must be in [0, 1]")
    curve = roc_curve(y_true, scores)
    if curve is None:
        return None
    # The tolerance keeps an FPR of exactly max_fpr (e.g. 1 of 100) from failing on float noise.
    ok = curve.fpr <= max_fpr + 1e-12
    best = int(np.flatnonzero(ok)[np.argmax(curve.tpr[ok])])
    return {
        "recall": float(curve.tpr[best]),
        "threshold": float(curve.thresholds[best]),
        "fpr": float(curve.fpr[best]),
    }


def reliability_table(y_true: ArrayLike, scores: ArrayLike, n_bins: int = 10) -> list[dict[str, float | int | None]]:
    """Equal-width bins of the malicious probability: count, mean probability, malicious share.

    Bin i holds [i/n, (i+1)/n); the last bin also holds 1.0.
    """
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    t = _labels(y_true)
    s = _scores(scores, t.size)
    if s.size and ((s < 0).any() or (s > 1).any()):
        raise ValueError("probabilities must be in [0, 1]")
    idx = np.minimum((s * n_bins).astype(np.int64), n_bins - 1)
    rows: list[dict[str, float | int | None]] = []
    for b in range(n_bins):
        mask = idx == b
        count = int(mask.sum())
        rows.append(
            {
                "lower": b / n_bins,
                "upper": (b + 1) / n_bins,
                "n": count,
                "mean_probability": float(s[mask].mean()) if count else None,
                "malicious_share": float(t[mask].mean()) if count else None,
            }
        )
    return rows


def expected_calibration_error(y_true: ArrayLike, scores: ArrayLike, n_bins: int = 10) -> float | None:
    """Sum over equal-width bins of (bin share) x |malicious share - mean probability|."""
    table = reliability_table(y_true, scores, n_bins)
    total = sum(int(row["n"] or 0) for row in table)
    if total == 0:
        return None
    return float(
        sum(
            (row["n"] / total) * abs(row["malicious_share"] - row["mean_probability"])  # type: ignore[operator]
            for row in table
            if row["n"]
        )
    )


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99 (linear interpolation between order statistics) and mean, in ms."""
    arr = np.asarray(latencies_ms, dtype=np.float64)
    if arr.size == 0:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None}
    p50, p95, p99 = np.percentile(arr, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "mean_ms": float(arr.mean())}


def detect_collapse(
    y_true: ArrayLike,
    y_pred: ArrayLike,
    *,
    min_recall: float = 0.2,
    max_one_class_share: float = 0.95,
    balanced_min_share: float = 0.4,
) -> list[str]:
    """Reasons why these predictions look collapsed onto one class (empty when they do not).

    Two symptoms of the "everything is malicious" failure: a class whose recall is below
    `min_recall`, or, on a balanced set (each class at least `balanced_min_share` of it), one
    verdict given to more than `max_one_class_share` of the examples.
    """
    t, p = _labels(y_true), _labels(y_pred)
    if t.shape != p.shape:
        raise ValueError("y_true and y_pred differ in length")
    reasons: list[str] = []
    if t.size == 0:
        return reasons
    names = {1: "malicious", 0: "benign"}
    for cls in (1, 0):
        support = int(np.sum(t == cls))
        if support:
            recall = float(np.sum((t == cls) & (p == cls))) / support
            if recall < min_recall:
                reasons.append(f"{names[cls]} recall is {recall:.3f} (< {min_recall:g}) over {support} examples")
    true_share = float(t.mean())
    if min(true_share, 1 - true_share) >= balanced_min_share:
        for cls in (1, 0):
            share = float(np.mean(p == cls))
            if share > max_one_class_share:
                reasons.append(
                    f"{share:.1%} of a balanced set ({true_share:.0%} malicious) is predicted {names[cls]} "
                    f"(> {max_one_class_share:.0%})"
                )
    return reasons
