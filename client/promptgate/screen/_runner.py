"""The screening pipeline: read -> skip what is done -> classify (bounded window) -> append.

Two ways to classify, one output: `RemoteScreener` streams through a server with
ClassifyStream; the server's `LocalScreener` (`promptgate.server.local`, for `--local`)
runs the screening path in this process. Both give the same answers.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from promptgate.client import AsyncClient, Classification, ClientOptions, Document, ItemError, ScreenRequest, Verdict

from ._output import ResumableOutput
from ._readers import Record, Rejected, count_records, read_records


class Screener(Protocol):
    model: str

    def classify(self, records: AsyncIterator[Record]) -> AsyncIterator[tuple[Record, Classification | ItemError]]: ...

    async def close(self) -> None: ...


@dataclass
class ScreenOptions:
    inputs: list[str]
    out: Path
    rejects: Path
    fmt: str = "auto"
    text_field: str = "text"
    id_field: str = "id"
    # JSONL: the field holding the record's documents (a list of strings or {"id", "content"}).
    documents_field: str | None = None
    mode: str | None = None
    threshold: float | None = None
    rationale: bool = False
    resume: bool = False
    window: int = 256
    top: int = 10
    progress: bool = False


# -- output schema ---------------------------------------------------------------------------


def result_line(record: Record, result: Classification, rationale: bool) -> dict[str, Any]:
    """One output line: the RPC response's fields, the input's id, and the record number."""
    line = {**result.to_dict(), "id": record.id, "record": record.record}
    if not rationale:
        line.pop("rationale")
    return line


def reject_line(record: int, rid: str, kind: str, reason: str, source: str) -> dict[str, Any]:
    """One rejects line: the input's id and record number, what kind of problem, and why."""
    return {"id": rid, "record": record, "source": source, "kind": kind, "reason": reason}


def error_kind(error: ItemError) -> str:
    """A rejects line's `kind` for a query the screening path refused: its reason (too_long,
    empty_text, ...), else the status code for a server that gives none."""
    return error.reason.lower() if error.reason else f"server_{error.code.lower()}"


# -- summary ---------------------------------------------------------------------------------


@dataclass
class Summary:
    model: str = ""
    top_n: int = 10
    verdicts: Counter[str] = field(default_factory=Counter)
    categories: Counter[str] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)
    resumed: int = 0
    screened_now: int = 0
    seconds: float = 0.0
    _top: list[tuple[float, int, str, str, str]] = field(default_factory=list)

    def add_result(self, line: dict[str, Any], excerpt: str = "") -> None:
        self.verdicts[line["verdict"]] += 1
        if line.get("category"):
            self.categories[line["category"]] += 1
        if line["verdict"] == Verdict.MALICIOUS.value:
            item = (
                float(line["malicious_probability"]),
                -int(line["record"]),
                line["id"],
                line.get("category", ""),
                excerpt,
            )
            # A bounded min-heap: the top N flagged queries in O(N) memory.
            if len(self._top) < self.top_n:
                heapq.heappush(self._top, item)
            else:
                heapq.heappushpop(self._top, item)

    def add_reject(self, line: dict[str, Any]) -> None:
        self.rejects[line["kind"]] += 1

    @property
    def rate(self) -> float:
        return self.screened_now / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        top = sorted(self._top, reverse=True)
        return {
            "model": self.model,
            "results": sum(self.verdicts.values()),
            "verdicts": dict(self.verdicts),
            "categories": dict(self.categories.most_common()),
            "rejects": sum(self.rejects.values()),
            "reject_reasons": dict(self.rejects.most_common()),
            "resumed": self.resumed,
            "screened_this_run": self.screened_now,
            "seconds": round(self.seconds, 2),
            "rate_per_s": round(self.rate, 2),
            "top_flagged": [
                {"id": rid, "record": -neg, "malicious_probability": round(p, 4), "category": cat, "excerpt": ex}
                for p, neg, rid, cat, ex in top
            ],
        }

    def render(self) -> str:
        d = self.to_dict()
        lines = [
            f"screened {d['results']} queries ({d['screened_this_run']} this run, {d['resumed']} from earlier runs)"
            f" in {d['seconds']:.1f}s, {d['rate_per_s']:.1f}/s; model {d['model']}",
            "verdicts: " + ", ".join(f"{k} {v}" for k, v in sorted(d["verdicts"].items())),
        ]
        if d["categories"]:
            lines.append("categories: " + ", ".join(f"{k} {v}" for k, v in d["categories"].items()))
        lines.append(f"rejects: {d['rejects']}" + (f" ({', '.join(f'{k} {v}' for k, v in d['reject_reasons'].items())})"
                                                   if d["rejects"] else ""))  # fmt: skip
        if d["top_flagged"]:
            lines.append("top flagged:")
            lines += [
                f"  {t['malicious_probability']:.4f}  {t['id']}  {t['category']}  {t['excerpt']}".rstrip()
                for t in d["top_flagged"]
            ]
        return "\n".join(lines)


class Progress:
    """One self-rewriting line on a terminal: done/total, rate, ETA. Silent elsewhere."""

    def __init__(self, enabled: bool, total: int | None, stream: TextIO = sys.stderr) -> None:
        self.enabled, self.total, self.stream = enabled, total, stream
        self.done = 0
        self._start = self._last = time.monotonic()

    def tick(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.25:
            self._last = now
            rate = self.done / max(now - self._start, 1e-9)
            if self.total:
                left = max(self.total - self.done, 0) / rate if rate else 0
                text = f"{self.done}/{self.total} {100 * self.done / self.total:5.1f}%  {rate:8.1f}/s  ETA {_hms(left)}"
            else:
                text = f"{self.done}  {rate:8.1f}/s"
            self.stream.write("\r" + text + " " * 4)
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# -- screeners -------------------------------------------------------------------------------


class RemoteScreener:
    """Streams through a server's ClassifyStream with at most `window` queries outstanding."""

    def __init__(self, client: AsyncClient, model: str, *, mode, threshold, window: int) -> None:
        self.client, self.model = client, model
        self.mode, self.threshold, self.window = mode, threshold, window

    @classmethod
    async def connect(
        cls,
        target: str,
        *,
        mode: str | None,
        threshold: float | None,
        window: int,
        transport: ClientOptions | None = None,
    ) -> RemoteScreener:
        # Bulk screening keeps failures as rejects with their reason, never as verdicts.
        client = AsyncClient(target, timeout=120, on_error="raise", **(transport or {}))
        info = await client.model_info()
        return cls(client, info.model, mode=mode, threshold=threshold, window=window)

    async def classify(
        self, records: AsyncIterator[Record]
    ) -> AsyncIterator[tuple[Record, Classification | ItemError]]:
        slots = asyncio.Semaphore(self.window)
        in_flight: dict[str, Record] = {}

        async def requests() -> AsyncIterator[ScreenRequest]:
            async for record in records:
                await slots.acquire()
                in_flight[str(record.record)] = record
                yield ScreenRequest(
                    record.text,
                    id=str(record.record),
                    mode=self.mode,
                    threshold=self.threshold,
                    documents=tuple(Document(content, id=did) for did, content in record.documents),
                )

        async for result in self.client.classify_stream(requests()):
            record = in_flight.pop(result.id)
            slots.release()
            yield record, result

    async def close(self) -> None:
        await self.client.close()


# -- the run ---------------------------------------------------------------------------------


async def run_screen(options: ScreenOptions, screener: Screener) -> Summary:
    summary = Summary(model=screener.model, top_n=options.top)
    output = ResumableOutput(options.out, options.rejects, resume=options.resume)
    try:
        for is_reject, line in output.resumed():
            summary.resumed += 1
            (summary.add_reject if is_reject else summary.add_result)(line)
        total = count_records(options.inputs, options.fmt) if options.progress else None
        progress = Progress(options.progress, None if total is None else max(total - summary.resumed, 0))
        started = time.monotonic()

        def reject(record: int, rid: str, kind: str, reason: str, source: str) -> None:
            line = reject_line(record, rid, kind, reason, source)
            output.write(line, reject=True)
            summary.add_reject(line)
            progress.tick()

        async def pending() -> AsyncIterator[Record]:
            """Records still to screen; bad ones go straight to the rejects file."""
            items: Iterable[Record | Rejected] = read_records(
                options.inputs,
                fmt=options.fmt,
                text_field=options.text_field,
                id_field=options.id_field,
                documents_field=options.documents_field,
            )
            for item in items:
                if output.is_done(item.record):
                    continue
                if isinstance(item, Rejected):
                    reject(item.record, item.id, item.kind, item.reason, item.source)
                else:
                    yield item

        async for record, result in screener.classify(pending()):
            if isinstance(result, ItemError):
                reject(record.record, record.id, error_kind(result), result.message, "server")
                continue
            line = result_line(record, result, options.rationale)
            output.write(line)
            summary.add_result(line, excerpt=" ".join(record.text.split())[:80])
            summary.screened_now += 1
            progress.tick()
        summary.seconds = time.monotonic() - started
        progress.close()
    finally:
        output.close()
    return summary


def write_summary_json(summary: Summary, path: Path) -> None:
    path.write_text(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
