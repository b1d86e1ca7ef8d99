"""Resumable, exactly-once output: append-only JSONL, one complete line per write.

How exactly-once holds across `kill -9`:
- every line (a result or a reject) carries the input's global `record` number and is
  written with one `write()` of the whole line to a file opened with O_APPEND, then
  fsync'd at least every `fsync_interval` seconds and at the end;
- `--resume` first cuts each file back to its last newline (a line torn by a crash
  mid-write is dropped, never half-read), then marks every record found in either file as
  done; the run then screens only the records not yet marked;
- a record is marked done only by a line that reached the file, so nothing is skipped,
  and nothing is written for a record already there, so nothing is doubled.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class OutputError(Exception):
    """The output cannot be opened or resumed as asked."""


def _cut_torn_tail(path: Path) -> int:
    """Truncate `path` after its last newline; returns the bytes dropped."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        block = 1 << 16
        end = size
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            chunk = fh.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        if keep < size:
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        return size - keep


def read_lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise OutputError(
                    f"{path}:{n} is not a JSON line ({exc.msg}); it was not written by promptgate"
                ) from None


class ResumableOutput:
    def __init__(self, out: Path, rejects: Path, *, resume: bool, fsync_interval: float = 1.0) -> None:
        self.out, self.rejects = out, rejects
        self.fsync_interval = fsync_interval
        self._done = bytearray()  # one byte per input record: 1 = already in a file
        self.dropped_torn_bytes = 0
        existing = [p for p in (out, rejects) if p.exists() and p.stat().st_size > 0]
        if existing and not resume:
            raise OutputError(f"{existing[0]} already has results: pass --resume to continue that run, or remove it")
        for path in existing:
            self.dropped_torn_bytes += _cut_torn_tail(path)
        self._fds = {}
        for path in (out, rejects):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fds[path] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._last_sync = time.monotonic()

    def resumed(self) -> Iterator[tuple[bool, dict[str, Any]]]:
        """Mark what the files already hold as done; yields (is_reject, line) for the summary."""
        for path, is_reject in ((self.out, False), (self.rejects, True)):
            if path.stat().st_size:
                for line in read_lines(path):
                    self._mark(int(line["record"]))
                    yield is_reject, line

    def _mark(self, record: int) -> None:
        if record >= len(self._done):
            self._done.extend(bytes(max(record + 1 - len(self._done), len(self._done))))
        self._done[record] = 1

    def is_done(self, record: int) -> bool:
        return record < len(self._done) and self._done[record] == 1

    def write(self, line: dict[str, Any], *, reject: bool = False) -> None:
        fd = self._fds[self.rejects if reject else self.out]
        data = (json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8")
        # One write() of the whole line: with O_APPEND it lands whole at the end.
        while data:
            written = os.write(fd, data)
            data = data[written:]
        self._mark(int(line["record"]))
        if time.monotonic() - self._last_sync >= self.fsync_interval:
            self.sync()

    def sync(self) -> None:
        for fd in self._fds.values():
            os.fsync(fd)
        self._last_sync = time.monotonic()

    def close(self) -> None:
        self.sync()
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
