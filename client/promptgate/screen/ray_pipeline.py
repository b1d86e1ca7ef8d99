"""`promptgate screen --ray`: the same screening as a Ray Data pipeline, past one machine.

The driver reads and numbers the records with the same readers as the other paths, sends
bad ones to the rejects file, skips what an earlier run finished (--resume) and writes the
same output lines; Ray Data runs `map_batches` over a worker class in a pool of actors,
each holding one model replica (the server's `RayScreeningWorker`: vLLM where installed,
on its own GPU when the cluster has them). A worker returns each row's serialized
`ClassifyResponse`, read here as a server's answer would be. Records go to Ray in chunks,
so the driver's memory stays bounded.

Point it at a cluster with `RAY_ADDRESS=ray://head:10001` (or `auto` on a cluster node);
without it a local Ray instance is started on this machine.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from typing import Any

from promptgate.client import Classification, ItemError, parse_response
from promptgate.v1 import classifier_pb2 as pb

from ._output import ResumableOutput
from ._readers import Record, Rejected, read_records
from ._runner import ScreenOptions, Summary, error_kind, reject_line, result_line


def _chunks(items: Iterator[Record], size: int) -> Iterator[list[Record]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def run_ray(
    options: ScreenOptions,
    worker: type,
    worker_kwargs: dict[str, Any],
    *,
    model: str,
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
                options.inputs,
                fmt=options.fmt,
                text_field=options.text_field,
                id_field=options.id_field,
                documents_field=options.documents_field,
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
            dataset = ray.data.from_items(
                [
                    {"record": r.record, "id": r.id, "text": r.text, "documents": [list(d) for d in r.documents]}
                    for r in chunk
                ]
            )
            dataset = dataset.map_batches(
                worker,
                fn_constructor_kwargs={**worker_kwargs, "mode": options.mode, "threshold": options.threshold},
                batch_size=batch_size,
                concurrency=actors,
                num_gpus=gpus_per_actor,
            )
            for row in dataset.iter_rows():
                record = by_record.pop(int(row["record"]))
                result: Classification | ItemError = parse_response(pb.ClassifyResponse.FromString(row["response"]))
                if isinstance(result, ItemError):
                    line = reject_line(record.record, record.id, error_kind(result), result.message, "ray")
                    output.write(line, reject=True)
                    summary.add_reject(line)
                    continue
                line = result_line(record, result, options.rationale)
                output.write(line)
                summary.model = result.model
                summary.add_result(line, excerpt=" ".join(record.text.split())[:80])
                summary.screened_now += 1
        summary.seconds = time.monotonic() - started
    finally:
        output.close()
    return summary
