"""Input readers: JSONL, CSV, TSV, plain text (one query per line), `-` for stdin, `.gz` too.

Every input record gets a global, 0-based `record` number (across all inputs, in order): it
is what resume keys on, so a record is screened once whatever its id. Readers stream: memory
does not grow with the input. A record that cannot be screened is yielded as a `Rejected`
with its reason; it never stops the run and never vanishes.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

FORMATS = ("auto", "jsonl", "csv", "tsv", "text")


@dataclass(frozen=True)
class Record:
    record: int
    id: str
    text: str
    # (id, content) of the documents the record's documents field held (JSONL).
    documents: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Rejected:
    record: int
    id: str
    kind: str  # invalid_utf8, broken_json, missing_text, bad_documents, empty_text (a blank line)
    reason: str
    source: str


def detect_format(path: str) -> str:
    name = path.lower().removesuffix(".gz")
    for suffix, fmt in (
        (".jsonl", "jsonl"),
        (".ndjson", "jsonl"),
        (".json", "jsonl"),
        (".csv", "csv"),
        (".tsv", "tsv"),
    ):
        if name.endswith(suffix):
            return fmt
    return "text"


def _open(path: str) -> BinaryIO:
    if path == "-":
        stream: BinaryIO = sys.stdin.buffer
        return stream
    raw: BinaryIO = open(path, "rb")  # noqa: SIM115 (closed by the caller)
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def count_records(paths: Sequence[str], fmt: str) -> int | None:
    """Lines in all inputs (for the ETA), or None when one is stdin. CSV rows may span
    lines, so for CSV/TSV it is an upper bound."""
    if "-" in paths:
        return None
    total = 0
    for path in paths:
        with _open(path) as fh:
            lines = sum(1 for _ in fh)
        kind = detect_format(path) if fmt == "auto" else fmt
        total += lines - (1 if kind in ("csv", "tsv") and lines else 0)
    return total


def read_records(
    paths: Sequence[str],
    *,
    fmt: str = "auto",
    text_field: str = "text",
    id_field: str = "id",
    documents_field: str | None = None,
) -> Iterator[Record | Rejected]:
    record = 0
    for path in paths:
        kind = detect_format(path) if fmt == "auto" else fmt
        source = "stdin" if path == "-" else path
        with _open(path) as fh:
            for line_no, item in enumerate(_items(fh, kind, text_field, id_field, documents_field), start=1):
                yield _check(record, line_no, item, source)
                record += 1


Problem = tuple[str, str] | None  # (kind, reason)
Documents = tuple[tuple[str, str], ...]


def _check(
    record: int, line_no: int, item: tuple[str | None, str | None, Problem, Documents], source: str
) -> Record | Rejected:
    # Only what stops a record from being read is judged here; whether its text can be
    # screened (empty, too long) is the screening path's call, made once for every caller.
    rid, text, problem, documents = item
    rid = rid if rid not in (None, "") else str(line_no)
    if problem:
        return Rejected(record, rid, *problem, source)
    assert text is not None
    return Record(record, rid, text, documents)


# Invalid UTF-8 bytes decode (with "surrogateescape") to lone surrogates in this range.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _invalid(text: str) -> bool:
    return _UNDECODABLE.search(text) is not None


def _items(
    fh: BinaryIO, kind: str, text_field: str, id_field: str, documents_field: str | None = None
) -> Iterator[tuple[str | None, str | None, Problem, Documents]]:
    """(id or None, text or None, problem or None, documents) per record."""
    if kind == "text":
        for raw in fh:
            line = _decode(raw.rstrip(b"\r\n"))
            if _invalid(line):
                yield None, None, ("invalid_utf8", "invalid UTF-8"), ()
            elif not line.strip():  # a blank line holds no record, as in JSONL
                yield None, None, ("empty_text", "empty line"), ()
            else:
                yield None, line, None, ()
    elif kind == "jsonl":
        for raw in fh:
            yield _json_item(raw, text_field, id_field, documents_field)
    else:
        for rid, text, problem in _csv_items(fh, "," if kind == "csv" else "\t", text_field, id_field):
            yield rid, text, problem, ()


def _json_item(
    raw: bytes, text_field: str, id_field: str, documents_field: str | None = None
) -> tuple[str | None, str | None, Problem, Documents]:
    line = _decode(raw)
    if _invalid(line):
        return None, None, ("invalid_utf8", "invalid UTF-8"), ()
    if not line.strip():
        return None, None, ("empty_text", "empty line"), ()
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, None, ("broken_json", f"broken JSON: {exc.msg} at column {exc.colno}"), ()
    if not isinstance(obj, dict):
        return None, None, ("broken_json", "JSON line is not an object"), ()
    rid = obj.get(id_field)
    rid = None if rid is None else str(rid)
    documents: Documents = ()
    if documents_field is not None and obj.get(documents_field) is not None:
        documents_or_problem = _documents(obj[documents_field], documents_field)
        if isinstance(documents_or_problem, str):
            return rid, None, ("bad_documents", documents_or_problem), ()
        documents = documents_or_problem
    text = obj.get(text_field)
    if text is None and documents:  # documents alone: the text may be empty
        text = ""
    if text is None:
        return rid, None, ("missing_text", f"no {text_field!r} field"), ()
    if not isinstance(text, str):
        return rid, None, ("missing_text", f"field {text_field!r} is not a string"), ()
    return rid, text, None, documents


def _documents(value: object, field: str) -> Documents | str:
    """A documents field's (id, content) pairs: a list of strings or {"id", "content"} objects; else why not."""
    if not isinstance(value, list):
        return f"field {field!r} is not a list of documents"
    out = []
    for i, doc in enumerate(value):
        if isinstance(doc, str):
            out.append(("", doc))
        elif isinstance(doc, dict) and isinstance(doc.get("content"), str):
            out.append((str(doc.get("id", "")), doc["content"]))
        else:
            return f"document {i} of field {field!r} is neither a string nor an object with a string 'content'"
    return tuple(out)


def _csv_items(fh: BinaryIO, delimiter: str, text_field: str, id_field: str):
    # Decode line by line so one bad byte sequence rejects its row, not the file.
    reader = csv.reader(map(_decode, fh), delimiter=delimiter)
    header = next(reader, None)
    if header is None:
        return
    if text_field not in header:
        raise ValueError(f"no {text_field!r} column in the header {header}")
    t, i = header.index(text_field), header.index(id_field) if id_field in header else None
    for row in reader:
        rid = row[i] if i is not None and i < len(row) else None
        if any(_invalid(cell) for cell in row):
            yield rid, None, ("invalid_utf8", "invalid UTF-8")
        elif t >= len(row):
            yield rid, None, ("missing_text", f"row has no {text_field!r} column")
        else:
            yield rid, row[t], None


__all__ = ["FORMATS", "Record", "Rejected", "count_records", "detect_format", "read_records"]
