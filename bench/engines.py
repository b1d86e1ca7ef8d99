"""Engine benchmark: FAST / REASONED / AUTO throughput and latency through the real server.

For each engine it starts `promptgate serve` in its own process (the time from launch to
health SERVING is the start time), drives closed-loop `Classify` calls at a fixed
concurrency from this process, and reports queries/s and latency percentiles per mode.

    # CPU, tiny model, both engines (one run, so the ratios compare like with like)
    python -m bench.engines --engines vllm transformers
    # GPU: a random-weight model of Qwen3-0.6B's exact shape, rationales forced to 64 tokens
    python -m bench.engines --engines vllm --shape qwen3-0.6b --rationale-tokens 64 \\
        --fast-queries 20000 --reasoned-queries 2000 --concurrency 256

Speed does not depend on the weights; with random weights the model practically never writes
`</think>`, so every rationale runs to --rationale-tokens (the forced length).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from bench._util import load_queries, serving, tiny_model, write_json


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def closed_loop(target: str, queries: list[str], mode: str, concurrency: int) -> dict[str, float]:
    from promptgate.client import AsyncClient

    latencies: list[float] = []
    escalated = 0
    # raise: a failure must count as a failure, not as a fail-closed verdict.
    async with AsyncClient(target, timeout=3600, on_error="raise") as client:
        await client.classify("warm up the connection", mode=mode)
        queue = list(reversed(queries))

        async def worker() -> None:
            nonlocal escalated
            while queue:
                text = queue.pop()
                start = time.perf_counter()
                result = await client.classify(text, mode=mode)
                latencies.append(time.perf_counter() - start)
                escalated += result.mode.value == "reasoned"

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "queries": len(queries),
        "qps": round(len(queries) / elapsed, 2),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "p90_ms": round(percentile(latencies, 0.90) * 1000, 1),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "escalated_share": round(escalated / len(queries), 3),
    }


def bench_engine(engine: str, model: str, args: argparse.Namespace) -> dict[str, object]:
    flags = [
        "--engine",
        engine,
        "--max-rationale-tokens",
        str(args.rationale_tokens),
        "--max-text-chars",
        str(args.max_chars),
    ]
    if args.dtype:
        flags += ["--dtype", args.dtype]
    if args.max_model_len:
        flags += ["--max-model-len", str(args.max_model_len)]
    if engine == "vllm" and args.enforce_eager:
        flags += ["--enforce-eager", "true"]
    with serving(model, flags) as (target, start_s):
        results: dict[str, object] = {"engine": engine, "start_s": round(start_s, 1)}
        for mode, n in (("fast", args.fast_queries), ("reasoned", args.reasoned_queries), ("auto", args.auto_queries)):
            if n:
                queries = load_queries(n, args.max_chars)
                results[mode] = asyncio.run(closed_loop(target, queries, mode, args.concurrency))
        return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", default=["vllm", "transformers"], choices=["vllm", "transformers"])
    parser.add_argument("--model", help="model directory (default: build one of --shape)")
    parser.add_argument("--shape", default="tiny", choices=["tiny", "qwen3-0.6b"])
    parser.add_argument("--dtype", default=None, help="passed to --dtype (default: the server's)")
    parser.add_argument("--fast-queries", type=int, default=1000)
    parser.add_argument("--reasoned-queries", type=int, default=100)
    parser.add_argument("--auto-queries", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rationale-tokens", type=int, default=32)
    parser.add_argument("--max-chars", type=int, default=2000, help="queries are cut to this length")
    parser.add_argument(
        "--max-model-len", type=int, default=4096, help="context the engine reserves KV cache for (0: the model's)"
    )
    parser.add_argument("--enforce-eager", action="store_true", help="vLLM: no CUDA graphs / compile")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = parser.parse_args()

    model = args.model
    if model is None:
        model = tiny_model(Path(tempfile.mkdtemp(prefix="promptgate-bench-")) / args.shape, shape=args.shape)
    report = {
        "model": model,
        "shape": args.shape,
        "cpu_count": os.cpu_count(),
        "concurrency": args.concurrency,
        "rationale_tokens": args.rationale_tokens,
        "engines": [bench_engine(e, model, args) for e in args.engines],
    }
    by_engine = {r["engine"]: r for r in report["engines"]}
    if {"vllm", "transformers"} <= set(by_engine):
        v, t = by_engine["vllm"], by_engine["transformers"]
        report["vllm_over_transformers"] = {
            mode: round(v[mode]["qps"] / t[mode]["qps"], 2) for mode in ("fast", "reasoned", "auto") if mode in v
        }
    write_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
