"""Training data: the example record and its files, `data prepare` and `data rationales`.

Importing this package is light (no torch, no datasets, no httpx): those load when a step
that needs them runs.
"""

from __future__ import annotations

from .examples import (
    LABELS,
    DataError,
    Example,
    Label,
    dedup_key,
    normalize_label,
    normalize_text,
    read_examples,
    read_texts,
    write_examples,
)
from .prepare import BALANCE_MODES, DROP_REASONS, PrepareOptions, PrepareResult, build_splits, prepare_dataset
from .rationale_check import DEFAULT_MAX_CHARS, check_rationale, clean_rationale
from .rationales import (
    PROMPT_VERSION,
    RationaleCache,
    RationaleOptions,
    RationaleResult,
    RationaleSummary,
    TeacherConfig,
    TeacherFatal,
    build_messages,
    cache_key,
    generate_rationales,
    run_rationales,
)

__all__ = [
    "BALANCE_MODES",
    "DEFAULT_MAX_CHARS",
    "DROP_REASONS",
    "LABELS",
    "PROMPT_VERSION",
    "DataError",
    "Example",
    "Label",
    "PrepareOptions",
    "PrepareResult",
    "RationaleCache",
    "RationaleOptions",
    "RationaleResult",
    "RationaleSummary",
    "TeacherConfig",
    "TeacherFatal",
    "build_messages",
    "build_splits",
    "cache_key",
    "check_rationale",
    "clean_rationale",
    "dedup_key",
    "generate_rationales",
    "normalize_label",
    "normalize_text",
    "prepare_dataset",
    "read_examples",
    "read_texts",
    "run_rationales",
    "write_examples",
]
