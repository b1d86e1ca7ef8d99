"""Evaluation: labelled queries through the server's own engine, metrics, JSON/Markdown/PNG report.

`run_evaluation(model, data_files, modes=..., ...)` -> `EvalReport` (`to_dict()`,
`headline(mode)`); `promptgate eval` is its command line. The metric functions live in
`promptgate.trainer.evaluation.metrics`.

The names load on first use: `promptgate` registers this package's subcommand for every
command line, which must not pay for numpy or the engines.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import DataError, read_records, stratified_head
    from .report import headline_table, render_markdown, robustness_table, write_report
    from .runner import run_evaluation, run_evaluation_async
    from .types import EvalReport, Prediction, QueryFailure

__all__ = [
    "DataError",
    "EvalReport",
    "Prediction",
    "QueryFailure",
    "headline_table",
    "read_records",
    "render_markdown",
    "robustness_table",
    "run_evaluation",
    "run_evaluation_async",
    "stratified_head",
    "write_report",
]

_HOME = {
    "DataError": "records",
    "read_records": "records",
    "stratified_head": "records",
    "headline_table": "report",
    "render_markdown": "report",
    "robustness_table": "report",
    "write_report": "report",
    "EvalReport": "types",
    "Prediction": "types",
    "QueryFailure": "types",
    "run_evaluation": "runner",
    "run_evaluation_async": "runner",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
