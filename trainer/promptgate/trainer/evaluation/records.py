"""Labelled queries to evaluate on: the example contract's files and the raw shared files.

Reading and label normalization are the data area's (`promptgate.trainer.data.read_examples`),
so evaluation and training agree on what a file says: a record without an id gets
`<file stem>:<line>`, and a bad record is a DataError naming `file:line`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from promptgate.trainer.data import DataError, Example, read_examples

__all__ = ["MALICIOUS", "DataError", "read_records", "stratified_head"]

MALICIOUS = "malicious"


def read_records(path: str | Path) -> list[Example]:
    """All examples of a JSONL or CSV/TSV file (`.gz` too); an error names the file and line."""
    examples = read_examples(path)
    if not examples:
        raise DataError(f"{path}: no records")
    # Predictions are matched to their records by id: an id used twice would mix them up.
    repeated = [rid for rid, count in Counter(e.id for e in examples).items() if count > 1]
    if repeated:
        shown = ", ".join(repr(r) for r in repeated[:5])
        raise DataError(f"{path}: {len(repeated)} ids are used by more than one record: {shown}")
    return examples


def stratified_head(records: Sequence[Example], limit: int | None) -> list[Example]:
    """The first `limit` records with each label's share kept (largest remainder), in file order.

    Deterministic: the same file and limit always give the same subset, and a subset of a
    balanced file stays balanced (a plain head of a file sorted by label would not).
    """
    if limit is None or limit >= len(records):
        return list(records)
    if limit < 1:
        raise ValueError("limit must be >= 1")
    by_label: dict[str, list[Example]] = {}
    for rec in records:
        by_label.setdefault(rec.label, []).append(rec)
    exact = {label: limit * len(rows) / len(records) for label, rows in by_label.items()}
    quota = {label: int(share) for label, share in exact.items()}
    # Largest remainders first; ties go to the label seen first in the file (sorted is stable).
    order = sorted(by_label, key=lambda label: -(exact[label] - quota[label]))
    for label in order[: limit - sum(quota.values())]:
        quota[label] += 1
    chosen = {id(rec) for label, rows in by_label.items() for rec in rows[: quota[label]]}
    return [rec for rec in records if id(rec) in chosen]
