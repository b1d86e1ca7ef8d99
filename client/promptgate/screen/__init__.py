"""Bulk offline screening of logged queries: `promptgate screen` (resumable, exactly-once)."""

from ._output import OutputError, ResumableOutput
from ._readers import FORMATS, Record, Rejected, read_records
from ._runner import RemoteScreener, Screener, ScreenOptions, Summary, run_screen, write_summary_json

__all__ = [
    "FORMATS",
    "OutputError",
    "Record",
    "Rejected",
    "RemoteScreener",
    "ResumableOutput",
    "ScreenOptions",
    "Screener",
    "Summary",
    "read_records",
    "run_screen",
    "write_summary_json",
]
