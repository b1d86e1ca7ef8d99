"""What an evaluation produces: predictions, refused queries, the report, and their constants.

Shared by the runner (which makes them), the summary and the report writer (which read
them); nothing here imports those modules, so none of them imports another in a circle.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promptgate.trainer.data import Example

__all__ = ["ALL_FILES", "HEADLINE_KEYS", "MODES", "ROBUSTNESS_KEYS", "EvalReport", "Prediction", "QueryFailure"]

MODES = ("fast", "reasoned", "auto")
HEADLINE_KEYS = (
    "n",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "fpr",
    "roc_auc",
    "ece",
    "recall_at_1pct_fpr",
    "recall_at_5pct_fpr",
)
# The `file` of the pooled result over every data file (present when there are several).
ALL_FILES = "ALL"
# One entry of the report's `robustness` list: a data file in one mode under one obfuscation
# family, its figures and their differences from the clean run's (obfuscated minus clean).
ROBUSTNESS_KEYS = (
    "file",
    "mode",
    "family",
    "n",
    "n_failed",
    "accuracy",
    "recall",
    "fpr",
    "roc_auc",
    "delta_accuracy",
    "delta_recall",
    "delta_fpr",
    "delta_roc_auc",
    "canonicalized_share",
)


@dataclass(frozen=True)
class Prediction:
    """The engine's answer for one record in one requested mode."""

    file: str
    record: Example
    mode: str  # the mode asked for
    scored_mode: str  # the mode that produced the scores (AUTO resolves to fast or reasoned)
    verdict: str
    malicious_probability: float
    category_predicted: str | None
    rationale: str
    latency_ms: float
    # What the server's canonicalization found in the text (its signals).
    signals: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The predictions.jsonl line (the evaluation area's contract, plus `scored_mode`)."""
        rec = self.record
        return {
            "file": self.file,
            "id": rec.id,
            "text": rec.text,
            "label": rec.label,
            "category": rec.category,
            "source": rec.source,
            "mode": self.mode,
            "verdict": self.verdict,
            "malicious_probability": self.malicious_probability,
            "category_predicted": self.category_predicted,
            "rationale": self.rationale,
            "latency_ms": self.latency_ms,
            "scored_mode": self.scored_mode,
            "signals": list(self.signals),
        }


@dataclass(frozen=True)
class QueryFailure:
    """A record the engine refused (as the server would, e.g. text over the token limit)."""

    file: str
    id: str
    mode: str
    reason: str


@dataclass
class EvalReport:
    """Everything an evaluation measured. `results` holds one entry per (file, mode)."""

    meta: dict[str, Any]
    results: list[dict[str, Any]]
    warnings: list[str]
    notes: list[str]
    predictions: list[Prediction] = field(repr=False)
    failures: list[QueryFailure] = field(repr=False)
    out_dir: Path | None = None
    # One entry per (file, mode, obfuscation family) when robustness was asked for (ROBUSTNESS_KEYS).
    robustness: list[dict[str, Any]] = field(default_factory=list)
    # The obfuscated runs' answers, (family, prediction); the texts are the obfuscated ones.
    robustness_predictions: list[tuple[str, Prediction]] = field(default_factory=list, repr=False)
    # One entry per data file when the buried-attack suite was asked for (evaluation.buried).
    buried: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {
            **self.meta,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "results": self.results,
            "failures": [dataclasses.asdict(f) for f in self.failures],
        }
        if self.robustness:
            out["robustness"] = self.robustness
        if self.buried:
            out["buried"] = self.buried
        return out

    def robustness_entry(self, family: str, mode: str = "fast", file: str | Path | None = None) -> dict[str, Any]:
        """The robustness entry of `family` in `mode` on `file` (by default the first data file)."""
        file = str(file if file is not None else self.meta["data_files"][0])
        for r in self.robustness:
            if (r["family"], r["mode"], r["file"]) == (family, mode, file):
                return r
        raise KeyError(f"no robustness entry for {family!r} in mode {mode!r} on {file!r}")

    @property
    def modes(self) -> list[str]:
        return list(dict.fromkeys(r["mode"] for r in self.results))

    def result(self, mode: str, file: str | Path | None = None) -> dict[str, Any]:
        """The result of `mode` on `file`; by default the only file's, or the pooled one."""
        files = self.meta["data_files"]
        if file is None:
            file = files[0] if len(files) == 1 else ALL_FILES
        file = str(file)
        for r in self.results:
            if r["mode"] == mode and r["file"] == file:
                return r
        raise KeyError(f"no result for mode {mode!r} on {file!r}; evaluated modes: {self.modes}")

    def headline(self, mode: str, file: str | Path | None = None) -> dict[str, Any]:
        """n, accuracy, precision, recall, F1, FPR, ROC-AUC, ECE and recall at 1% / 5% FPR."""
        r = self.result(mode, file)
        return {key: r[key] for key in HEADLINE_KEYS}

    @property
    def collapsed(self) -> bool:
        return any(r["collapse"] for r in self.results)
