"""Labelled queries to evaluate on: the example contract's JSONL/CSV and the raw shared files.

Every record keeps where it came from (file and line), so a bad one is reported as
`file:line: what is wrong`, and an id (the record's own, else its line number).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DataError", "EvalRecord", "normalize_label", "read_records", "stratified_head"]

MALICIOUS, BENIGN = "malicious", "benign"

# Label spellings found in public prompt-attack datasets, lower-cased.
_LABELS: dict[str, str] = {
    **dict.fromkeys(
        ("malicious", "1", "true", "attack", "injection", "jailbreak", "unsafe", "harmful", "prompt_attack_message"),
        MALICIOUS,
    ),
    **dict.fromkeys(("benign", "0", "false", "safe", "benign_user_message"), BENIGN),
}


class DataError(ValueError):
    """A data file cannot be read or holds a bad record; the message says file:line."""


@dataclass(frozen=True)
class EvalRecord:
    id: str
    text: str
    label: str  # "malicious" | "benign"
    category: str | None
    source: str | None
    line: int


def normalize_label(raw: Any) -> str | None:
    """ "malicious" or "benign" for a known spelling (or bool/0/1), else None."""
    if isinstance(raw, bool):
        return MALICIOUS if raw else BENIGN
    if isinstance(raw, int) and raw in (0, 1):
        return MALICIOUS if raw else BENIGN
    if isinstance(raw, str):
        return _LABELS.get(raw.strip().lower())
    return None


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _record(path: Path, line: int, row: Any) -> EvalRecord:
    where = f"{path}:{line}"
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with text and label, got {type(row).__name__}")
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: missing or empty 'text'")
    if "label" not in row:
        raise DataError(f"{where}: missing 'label'")
    label = normalize_label(row["label"])
    if label is None:
        raise DataError(
            f"{where}: unknown label {row['label']!r} (expected malicious/benign, 1/0, true/false, attack/safe, ...)"
        )
    rid = _optional_str(row.get("id"))
    return EvalRecord(
        id=rid if rid is not None else str(line),
        text=text,
        label=label,
        category=_optional_str(row.get("category")),
        source=_optional_str(row.get("source")),
        line=line,
    )


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not valid JSON: {exc.msg}") from None


def _csv_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ",")
        if reader.fieldnames is None or "text" not in reader.fieldnames or "label" not in reader.fieldnames:
            raise DataError(f"{path}:1: the header needs 'text' and 'label' columns, got {reader.fieldnames}")
        start = reader.line_num + 1
        for row in reader:
            # A record may span lines (quoted newlines): report where it starts.
            yield start, row
            start = reader.line_num + 1


def _read_own(path: Path) -> list[EvalRecord]:
    rows = _csv_rows(path) if path.suffix in (".csv", ".tsv") else _jsonl_rows(path)
    return [_record(path, line, row) for line, row in rows]


def read_records(path: str | Path) -> list[EvalRecord]:
    """All records of a JSONL (default) or CSV/TSV file; a bad record stops with file:line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        records = _read_own(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not records:
        raise DataError(f"{path}: no records")
    seen: dict[str, int] = {}
    for rec in records:
        if rec.id in seen:
            raise DataError(f"{path}:{rec.line}: id {rec.id!r} already used on line {seen[rec.id]}")
        seen[rec.id] = rec.line
    return records


def stratified_head(records: Sequence[EvalRecord], limit: int | None) -> list[EvalRecord]:
    """The first `limit` records with each label's share kept (largest remainder), in file order.

    Deterministic: the same file and limit always give the same subset, and a subset of a
    balanced file stays balanced (a plain head of a file sorted by label would not).
    """
    if limit is None or limit >= len(records):
        return list(records)
    if limit < 1:
        raise ValueError("limit must be >= 1")
    by_label: dict[str, list[EvalRecord]] = {}
    for rec in records:
        by_label.setdefault(rec.label, []).append(rec)
    exact = {label: limit * len(rows) / len(records) for label, rows in by_label.items()}
    quota = {label: int(share) for label, share in exact.items()}
    # Largest remainders first; ties go to the label seen first in the file, for determinism.
    order = sorted(by_label, key=lambda label: -(exact[label] - quota[label]))
    for label in order[: limit - sum(quota.values())]:
        quota[label] += 1
    chosen = {id(rec) for label, rows in by_label.items() for rec in rows[: quota[label]]}
    return [rec for rec in records if id(rec) in chosen]
