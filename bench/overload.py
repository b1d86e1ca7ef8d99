"""Overload: where RESOURCE_EXHAUSTED starts on a server, what callers get, and how fast it recovers.

    python -m bench.overload [--model DIR] [--max-queue N] [--rates 0.5,1,1.5,2,3] [--seconds 8]

Starts `promptgate serve` (transformers engine) in its own process with the given
`--max-queue` (default: the server's), measures its closed-loop capacity on FAST
`Classify` calls, then offers open-loop Poisson load at multiples of that capacity, a few
seconds per rate, with `max_attempts=1` (no client retries: every rejection is seen).
Per rate: offered and answered queries/s, the share turned away with RESOURCE_EXHAUSTED,
p50/p99 latency of the answered calls, the deepest queue seen on the server's /metrics;
and once the arrivals stop, how long until a probe call is answered and until the queue is
empty. Prints a Markdown table and writes JSON (`--out`).

The load comes from this process, the server runs in another; on a small machine they
share the cores, so the offered rate is measured (what was actually sent), not assumed.
Without --model it builds the tiny random-weight model (verdicts meaningless, costs real).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from bench._util import REPO, free_port, load_queries, serving, tiny_model

RATES = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


@dataclass
class Call:
    sent: float
    ended: float = 0.0
    code: str = ""  # OK or a status code name


@dataclass
class RateResult:
    factor: float
    target_qps: float
    offered_qps: float
    answered_qps: float
    sent: int
    ok: int
    resource_exhausted: int
    other_errors: dict[str, int]
    resource_exhausted_share: float
    p50_ms: float | None
    p99_ms: float | None
    max_queue_depth: float
    first_probe_ok_s: float | None  # after the arrivals stopped
    queue_empty_s: float | None  # after the arrivals stopped
    probes_rejected: int = 0


@dataclass
class Report:
    model: str
    max_queue: int
    mode: str
    capacity_qps: float
    capacity_p50_ms: float | None
    capacity_concurrency: int
    seconds_per_rate: float
    rates: list[RateResult] = field(default_factory=list)
    load_average_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_average_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    cpus: int = 0


def percentile_ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


class DepthSampler:
    """Polls the server's `promptgate_queue_depth` gauge in a thread (the event loop stays free)."""

    def __init__(self, metrics_port: int, interval: float = 0.05) -> None:
        self.url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="depth-sampler", daemon=True)

    def depth(self, client: httpx.Client) -> float:
        for line in client.get(self.url, timeout=5).text.splitlines():
            if line.startswith("promptgate_queue_depth "):
                return float(line.split()[1])
        raise RuntimeError("the server exports no promptgate_queue_depth")

    def _run(self) -> None:
        with httpx.Client() as client:
            while not self._stop.is_set():
                with contextlib.suppress(httpx.HTTPError):  # a missed sample, not a failed run
                    self.samples.append((time.perf_counter(), self.depth(client)))
                self._stop.wait(self.interval)

    def __enter__(self) -> DepthSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def max_between(self, start: float, end: float) -> float:
        return max((d for t, d in self.samples if start <= t <= end), default=0.0)

    def first_empty_after(self, start: float) -> float | None:
        return next((t - start for t, d in self.samples if t >= start and d == 0), None)


async def closed_loop_capacity(
    target: str, queries: list[str], concurrency: int, mode: str
) -> tuple[float, float | None]:
    """Queries/s with `concurrency` callers each sending its next query when the last returns."""
    from promptgate.client import AsyncClient

    latencies: list[float] = []
    async with AsyncClient(target, max_attempts=1, on_error="raise", timeout=120) as client:
        for text in queries[:concurrency]:  # warm up: first batches of each length
            await client.classify(text, mode=mode)
        it = iter(queries)

        async def worker() -> None:
            for text in it:
                start = time.perf_counter()
                await client.classify(text, mode=mode)
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return len(queries) / elapsed, percentile_ms(latencies, 0.5)


async def open_loop(
    target: str,
    queries: list[str],
    rate: float,
    seconds: float,
    mode: str,
    sampler: DepthSampler,
    rng: random.Random,
) -> tuple[list[Call], float, float, float | None, float | None, int]:
    """Poisson arrivals at `rate` for `seconds`; then probes until one is answered.

    Returns the calls, the arrivals' start and end, the seconds from the end to the first
    answered probe and to an empty queue, and the probes turned away.
    """
    from promptgate.client import AsyncClient, ServiceError

    calls: list[Call] = []
    tasks: list[asyncio.Task[None]] = []
    async with AsyncClient(target, max_attempts=1, on_error="raise", timeout=30) as client:

        async def one(text: str) -> None:
            call = Call(sent=time.perf_counter())
            calls.append(call)
            try:
                await client.classify(text, mode=mode)
                call.code = "OK"
            except ServiceError as error:
                call.code = error.code.name
            call.ended = time.perf_counter()

        start = time.perf_counter()
        next_at = start
        i = 0
        while True:
            next_at += rng.expovariate(rate)
            if next_at - start > seconds:
                break
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(queries[i % len(queries)])))
            i += 1
        stopped = time.perf_counter()

        # Recovery: probe every 20 ms until a probe is answered.
        first_ok: float | None = None
        rejected = 0
        while first_ok is None and time.perf_counter() - stopped < 60:
            try:
                await client.classify("recovery probe", mode=mode)
                first_ok = time.perf_counter() - stopped
            except ServiceError:
                rejected += 1
                await asyncio.sleep(0.02)
        await asyncio.gather(*tasks)
    # The sampler polls every 50 ms: wait for a sample that shows the queue empty.
    deadline = time.perf_counter() + 30
    # Polled: the samples come from the sampler's thread, there is no event to wait on.
    while sampler.first_empty_after(stopped) is None and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return calls, start, stopped, first_ok, sampler.first_empty_after(stopped), rejected


def summarize(
    factor: float, rate: float, calls: list[Call], start: float, stopped: float, sampler: DepthSampler, **extra: object
) -> RateResult:
    ok = [c for c in calls if c.code == "OK"]
    exhausted = sum(c.code == "RESOURCE_EXHAUSTED" for c in calls)
    others: dict[str, int] = {}
    for c in calls:
        if c.code not in ("OK", "RESOURCE_EXHAUSTED"):
            others[c.code] = others.get(c.code, 0) + 1
    window = stopped - start
    last_ok = max((c.ended for c in ok), default=stopped)
    return RateResult(
        factor=factor,
        target_qps=round(rate, 1),
        offered_qps=round(len(calls) / window, 1),
        answered_qps=round(len(ok) / max(last_ok - start, 1e-9), 1),
        sent=len(calls),
        ok=len(ok),
        resource_exhausted=exhausted,
        other_errors=others,
        resource_exhausted_share=round(exhausted / len(calls), 4) if calls else 0.0,
        p50_ms=percentile_ms([c.ended - c.sent for c in ok], 0.5),
        p99_ms=percentile_ms([c.ended - c.sent for c in ok], 0.99),
        max_queue_depth=sampler.max_between(start, time.perf_counter()),
        **extra,  # type: ignore[arg-type]
    )


def markdown(report: Report) -> str:
    def fmt(value: float | None, digits: int = 2) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        f"Closed-loop capacity: {report.capacity_qps:.1f} q/s ({report.mode}, {report.capacity_concurrency} callers, "
        f"p50 {fmt(report.capacity_p50_ms, 1)} ms); max_queue {report.max_queue}; {report.seconds_per_rate:g} s "
        f"per rate; load average before/after {report.load_average_before[0]:.2f} / "
        f"{report.load_average_after[0]:.2f} on {report.cpus} CPUs",
        "",
        "| load | offered q/s | answered q/s | RESOURCE_EXHAUSTED | other errors | p50 / p99 ms (answered) "
        "| max queue depth | probe answered after (s) | queue empty after (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report.rates:
        others = ", ".join(f"{k} {v}" for k, v in r.other_errors.items()) or "0"
        lines.append(
            f"| {r.factor:g}x | {r.offered_qps:.1f} | {r.answered_qps:.1f} | "
            f"{100 * r.resource_exhausted_share:.1f}% ({r.resource_exhausted}/{r.sent}) | {others} | "
            f"{fmt(r.p50_ms, 1)} / {fmt(r.p99_ms, 1)} | {r.max_queue_depth:g} | {fmt(r.first_probe_ok_s)} | "
            f"{fmt(r.queue_empty_s)} |"
        )
    return "\n".join(lines)


async def run(args: argparse.Namespace, model: str) -> Report:
    # One shuffled mix for both phases: the cost of a query depends on its length.
    queries = load_queries(max(args.capacity_queries, 5000), max_chars=args.max_chars)
    random.Random(args.seed).shuffle(queries)
    metrics_port = free_port()
    flags = ["--engine", "transformers", "--metrics-port", str(metrics_port), "--metrics-host", "127.0.0.1"]
    if args.max_queue is not None:
        flags += ["--max-queue", str(args.max_queue), "--max-batch-items", str(min(1024, args.max_queue))]
    before = os.getloadavg()
    with serving(model, flags) as (target, _), DepthSampler(metrics_port) as sampler:
        from promptgate.client import Client

        with Client(target) as client:
            max_queue = client.model_info().limits["max_queue"]
        # As many callers as the queue holds (up to --concurrency): the throughput of a full queue.
        concurrency = min(args.concurrency, max_queue)
        capacity, capacity_p50 = await closed_loop_capacity(
            target, queries[: args.capacity_queries], concurrency, args.mode
        )
        print(f"capacity: {capacity:.1f} q/s at {concurrency} callers", file=sys.stderr)
        report = Report(
            model=model,
            max_queue=max_queue,
            mode=args.mode,
            capacity_qps=round(capacity, 1),
            capacity_p50_ms=capacity_p50,
            capacity_concurrency=concurrency,
            seconds_per_rate=args.seconds,
            load_average_before=before,
            cpus=os.cpu_count() or 0,
        )
        rng = random.Random(args.seed)
        offered = queries[args.capacity_queries :] or queries
        for factor in args.rates:
            rate = factor * capacity
            calls, start, stopped, first_ok, empty, rejected = await open_loop(
                target, offered, rate, args.seconds, args.mode, sampler, rng
            )
            offered = offered[len(calls) :] + offered[: len(calls)]  # the next rate gets fresh queries
            result = summarize(
                factor,
                rate,
                calls,
                start,
                stopped,
                sampler,
                first_probe_ok_s=None if first_ok is None else round(first_ok, 3),
                queue_empty_s=None if empty is None else round(empty, 3),
                probes_rejected=rejected,
            )
            report.rates.append(result)
            print(
                f"{factor:g}x: offered {result.offered_qps} q/s, answered {result.answered_qps} q/s, "
                f"RESOURCE_EXHAUSTED {100 * result.resource_exhausted_share:.1f}%",
                file=sys.stderr,
            )
            await asyncio.sleep(args.pause)  # let the server settle between rates
    report.load_average_after = os.getloadavg()
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: build the tiny model)")
    parser.add_argument("--max-queue", type=int, default=None, help="the server's --max-queue (default: its own)")
    parser.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=list(RATES),
        help="offered load as multiples of the measured capacity, comma-separated",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds of arrivals per rate")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between rates")
    parser.add_argument("--capacity-queries", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=64, help="closed-loop callers (at most max_queue)")
    parser.add_argument("--mode", default="fast", choices=["fast", "reasoned", "auto"])
    parser.add_argument("--max-chars", type=int, default=2000, help="queries are cut to this length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench-results" / "overload.json", help="where to write the JSON results"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = tiny_model(Path(tmp) / "tiny")
        report = asyncio.run(run(args, model))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(asdict(report), indent=2))
    print(markdown(report))
    print(f"\nJSON: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
