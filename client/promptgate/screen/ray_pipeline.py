"""`promptgate screen --ray`: the same screening as a Ray Data pipeline, past one machine.

The driver reads and numbers the records with the same readers as the other paths, sends
bad ones to the rejects file, skips what an earlier run finished (--resume) and writes the
same output lines; Ray Data runs `map_batches` over the project's engine in a pool of
actors, each holding one model replica (vLLM where installed, on its own GPU when the
cluster has them). Records go to Ray in chunks, so the driver's memory stays bounded.

Point it at a cluster with `RAY_ADDRESS=ray://head:10001` (or `auto` on a cluster node);
without it a local Ray instance is started on this machine.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Iterator
from typing import Any

from promptgate.client import Classification, Mode, Verdict

from ._output import ResumableOutput
from ._readers import Record, Rejected, read_records
from ._runner import ScreenOptions, Summary, reject_line, result_line

_RESULT_COLUMNS = ("verdict", "malicious_probability", "label", "category", "rationale", "mode", "threshold")


class EngineWorker:
    """A Ray Data UDF: one engine per actor, a batch of queries per call, concurrently."""

    def __init__(self, model: str, engine: str, profile: str | None, mode: str | None, threshold: float | None):
        from promptgate.server.config import ServerConfig
        from promptgate.server.domain import Mode as EngineMode
        from promptgate.server.engine import load_engine

        self.loop = asyncio.new_event_loop()
        self.mode = EngineMode(mode) if mode else None
        self.threshold = threshold
        config = ServerConfig(model=model, engine=engine, profile=profile)
        self.engine = self.loop.run_until_complete(load_engine(config))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        from promptgate.server.domain import Query
        from promptgate.server.errors import ScreeningError

        async def one(text: str) -> dict[str, Any]:
            try:
                r = await self.engine.classify(Query(str(text), self.mode, self.threshold))
            except ScreeningError as exc:
                return {"error_code": exc.status_code.name, "error": exc.message}
            return {
                "verdict": r.verdict.value,
                "malicious_probability": r.malicious_probability,
                "label": r.label,
                "category": r.category,
                "rationale": r.rationale,
                "mode": r.mode.value,
                "threshold": r.threshold,
                "error_code": "",
                "error": "",
            }

        async def all_of() -> list[dict[str, Any]]:
            # The whole batch at once: the engine batches it (continuously, with vLLM).
            return await asyncio.gather(*(one(t) for t in batch["text"]))

        results = self.loop.run_until_complete(all_of())
        out: dict[str, list[Any]] = {"record": list(batch["record"]), "id": list(batch["id"])}
        for column in (*_RESULT_COLUMNS, "error_code", "error"):
            out[column] = [r.get(column, "") for r in results]
        out["model"] = [self.engine.model_id] * len(results)
        return out


def _chunks(items: Iterator[Record], size: int) -> Iterator[list[Record]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def run_ray(
    options: ScreenOptions,
    model: str,
    *,
    engine: str = "auto",
    profile: str | None = None,
    chunk_size: int = 50_000,
    batch_size: int = 64,
    actors: int = 1,
    gpus_per_actor: float = 0,
) -> Summary:
    import ray

    ray.init(address=os.environ.get("RAY_ADDRESS"), ignore_reinit_error=True, log_to_driver=False)
    summary = Summary(model=model, top_n=options.top)
    output = ResumableOutput(options.out, options.rejects, resume=options.resume)
    started = time.monotonic()
    try:
        for is_reject, line in output.resumed():
            summary.resumed += 1
            (summary.add_reject if is_reject else summary.add_result)(line)

        def pending() -> Iterator[Record]:
            for item in read_records(
                options.inputs, fmt=options.fmt, text_field=options.text_field, id_field=options.id_field
            ):
                if output.is_done(item.record):
                    continue
                if isinstance(item, Rejected):
                    line = reject_line(item.record, item.id, item.kind, item.reason, item.source)
                    output.write(line, reject=True)
                    summary.add_reject(line)
                else:
                    yield item

        for chunk in _chunks(pending(), chunk_size):
            by_record = {r.record: r for r in chunk}
            dataset = ray.data.from_items([{"record": r.record, "id": r.id, "text": r.text} for r in chunk])
            dataset = dataset.map_batches(
                EngineWorker,
                fn_constructor_kwargs={
                    "model": model,
                    "engine": engine,
                    "profile": profile,
                    "mode": options.mode,
                    "threshold": options.threshold,
                },
                batch_size=batch_size,
                concurrency=actors,
                num_gpus=gpus_per_actor,
            )
            for row in dataset.iter_rows():
                record = by_record.pop(int(row["record"]))
                if row["error_code"]:
                    line = reject_line(
                        record.record, record.id, f"server_{row['error_code'].lower()}", row["error"], "ray"
                    )
                    output.write(line, reject=True)
                    summary.add_reject(line)
                    continue
                result = Classification(
                    id=record.id,
                    verdict=Verdict(row["verdict"]),
                    malicious_probability=float(row["malicious_probability"]),
                    label=row["label"],
                    category=row["category"],
                    rationale=row["rationale"],
                    mode=Mode(row["mode"]),
                    threshold=float(row["threshold"]),
                    model=row["model"],
                )
                line = result_line(record, result, options.rationale)
                output.write(line)
                summary.model = row["model"]
                summary.add_result(line, excerpt=" ".join(record.text.split())[:80])
                summary.screened_now += 1
        summary.seconds = time.monotonic() - started
    finally:
        output.close()
    return summary
