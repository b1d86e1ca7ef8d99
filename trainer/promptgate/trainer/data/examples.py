"""Labelled examples: the record every trainer area reads and writes, and its file formats.

One record per line of JSONL (also `.gz`), or one row of CSV/TSV with a header:
`{"id", "text", "label", "category", "source", "rationale"}`. Labels are normalized on read
(`1`, `true`, `attack`, `jailbreak`, ... -> `malicious`; `0`, `false`, `safe`, ... -> `benign`)
and anything else is an error naming the file and line, never a silent guess. Texts are
returned as they are in the file; `data prepare` is what normalizes and deduplicates them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Literal

Label = Literal["malicious", "benign"]
LABELS: tuple[Label, ...] = ("malicious", "benign")
FIELDS = ("id", "text", "label", "category", "source", "rationale")

# Spellings of the two labels found in public prompt-attack data sets. Keys are compared after
# lower-casing and turning spaces and hyphens into underscores. 1 means malicious, the usual
# convention of binary "is attack" columns; a data set that counts the other way needs its
# labels mapped before it comes here.
_LABEL_SPELLINGS: dict[str, Label] = {
    **dict.fromkeys(
        (
            "malicious", "1", "true", "yes", "attack", "prompt_attack", "prompt_attack_message", "injection",
            "prompt_injection", "jailbreak", "unsafe", "harmful", "unsafe_prompt",
        ),
        "malicious",
    ),
    **dict.fromkeys(
        ("benign", "0", "false", "no", "safe", "benign_user_message", "legitimate", "harmless", "normal", "clean"),
        "benign",
    ),
}  # fmt: skip


class DataError(ValueError):
    """Input data that cannot be used as it is; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    """One labelled query. `rationale` is one sentence saying why the label holds, or None."""

    id: str
    text: str
    label: Label
    category: str | None = None
    source: str | None = None
    rationale: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


def normalize_label(value: object) -> Label:
    """`malicious` or `benign` for any known spelling of them; ValueError otherwise."""
    if isinstance(value, bool):  # before int: True is an int too
        return "malicious" if value else "benign"
    if isinstance(value, int | float) and value in (0, 1):
        return "malicious" if value == 1 else "benign"
    if isinstance(value, str):
        key = re.sub(r"[\s\-]+", "_", value.strip().lower())
        if key in _LABEL_SPELLINGS:
            return _LABEL_SPELLINGS[key]
    known = ", ".join(sorted(_LABEL_SPELLINGS))
    raise ValueError(f"unknown label {value!r} (known: {known})")


def normalize_text(text: str) -> str:
    """The text as examples store it: Unicode NFC, surrounding whitespace stripped."""
    return unicodedata.normalize("NFC", text).strip()


def dedup_key(text: str) -> str:
    """The key two texts are "the same" under: NFKC, case-folded, whitespace collapsed.

    NFKC folds look-alike forms (full-width letters, ligatures) so that trivially re-encoded
    copies of a test text count as that text when it is excluded from training.
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".csv", ".tsv"):
        name = name.removesuffix(suffix)
    return name or path.name


def detect_format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    return "jsonl"


def _open_text(path: Path) -> IO[str]:
    try:
        raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 (wrapped and closed by the caller)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if path.name.endswith(".gz"):
        raw = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
    # newline="" so the csv module sees quoted line breaks inside cells as they are.
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def _rows(path: Path, fmt: str, text_field: str) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    """(line number, row mapping) per record; a string instead of the mapping is a problem."""
    with _open_text(path) as fh:
        try:
            if fmt == "jsonl":
                for line_no, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue  # blank lines (a trailing newline too many) are not records
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        yield line_no, f"broken JSON: {exc.msg} at column {exc.colno}"
                        continue
                    yield line_no, obj if isinstance(obj, dict) else "the JSON line is not an object"
            else:
                reader = csv.DictReader(fh, delimiter="," if fmt == "csv" else "\t")
                header = reader.fieldnames or []
                if text_field not in header:
                    raise DataError(f"{path}:1: no {text_field!r} column in the header {header}")
                start = reader.line_num + 1
                for row in reader:
                    # A quoted cell may span lines: the row starts where the previous one ended.
                    yield start, row
                    start = reader.line_num + 1
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except (OSError, EOFError) as exc:  # a truncated or corrupt .gz
            raise DataError(f"cannot read {path}: {exc}") from None


def _optional(row: Mapping[str, Any], field: str) -> str | None:
    value = row.get(field)
    if value is None:
        return None
    value = str(value).strip()
    return value or None


# Problems reported at once: enough to see a pattern (a wrong column, a label spelling).
_MAX_REPORTED = 10


class _Problems:
    """Collects per-record problems so one run reports them together, not one per rerun."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[str] = []

    def add(self, line_no: int, problem: str) -> None:
        self.items.append(f"{self.path}:{line_no}: {problem}")

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = "\n  ".join(self.items[:_MAX_REPORTED])
        more = len(self.items) - _MAX_REPORTED
        tail = f"\n  ... and {more} more" if more > 0 else ""
        count = f"{len(self.items)} bad records" if len(self.items) > 1 else "bad record"
        raise DataError(f"{count} in {self.path}:\n  {shown}{tail}")


def _check_row(row: Mapping[str, Any] | str, text_field: str) -> tuple[str | None, str | None]:
    """(text, problem): the record's text, or what is wrong with the record."""
    if isinstance(row, str):
        return None, row
    text = row.get(text_field)
    if text is None:
        return None, f"no {text_field!r} field"
    if not isinstance(text, str):
        return None, f"field {text_field!r} is not a string but {type(text).__name__}"
    return text, None


def example_from_row(row: Mapping[str, Any], *, text: str, default_id: str, label_field: str = "label") -> Example:
    """An Example from one input row, label normalized (ValueError when it is unknown)."""
    value = row.get(label_field)
    if value is None or value == "":
        raise ValueError(f"no {label_field!r} field")
    return Example(
        id=_optional(row, "id") or default_id,
        text=text,
        label=normalize_label(value),
        category=_optional(row, "category"),
        source=_optional(row, "source"),
        rationale=_optional(row, "rationale"),
    )


def read_examples(path: str | Path, *, text_field: str = "text", label_field: str = "label") -> list[Example]:
    """All examples of a JSONL (or CSV/TSV, by suffix; `.gz` too) file, labels normalized.

    Records without an id get `<file stem>:<line>`. Bad records (broken JSON, no text, an
    unknown label) raise one DataError that lists each as `file:line: problem`.
    """
    path = Path(path)
    stem = _stem(path)
    problems = _Problems(path)
    examples: list[Example] = []
    for line_no, row in _rows(path, detect_format(path), text_field):
        text, problem = _check_row(row, text_field)
        if problem is None:
            assert text is not None and not isinstance(row, str)
            try:
                examples.append(
                    example_from_row(row, text=text, default_id=f"{stem}:{line_no}", label_field=label_field)
                )
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            problems.add(line_no, problem)
    problems.raise_if_any()
    return examples


def read_texts(path: str | Path, *, text_field: str = "text") -> list[str]:
    """The texts of a file of examples (labels neither needed nor checked)."""
    path = Path(path)
    problems = _Problems(path)
    texts: list[str] = []
    for line_no, row in _rows(path, detect_format(path), text_field):
        text, problem = _check_row(row, text_field)
        if problem is None:
            assert text is not None
            texts.append(text)
        else:
            problems.add(line_no, problem)
    problems.raise_if_any()
    return texts


def write_examples(path: str | Path, examples: Iterable[Example]) -> None:
    """Write examples as JSONL (gzip when the name ends in `.gz`), atomically.

    The file appears complete or not at all: it is written beside its final name and
    renamed, so a crash never leaves half a split behind. Output is byte-for-byte a function
    of the examples (fixed field order; gzip without a timestamp).
    """
    path = Path(path)
    data = "".join(example.to_json() + "\n" for example in examples).encode("utf-8")
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    write_atomic(path, data)


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


__all__ = [
    "FIELDS",
    "LABELS",
    "DataError",
    "Example",
    "Label",
    "dedup_key",
    "detect_format",
    "example_from_row",
    "normalize_label",
    "normalize_text",
    "read_examples",
    "read_texts",
    "write_atomic",
    "write_examples",
]
