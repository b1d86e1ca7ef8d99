"""Does vLLM's prefix cache hit on the shared system prompt? Measured, per KV block size.

    python -m bench.prefix_cache [--model DIR] [--queries 600] [--block-sizes 128 32]

For each block size it loads the vLLM engine in this process, runs FAST over the same
queries (32 at a time), and reports the share of prompt tokens the cache served and the
rate. vLLM caches whole blocks only: a system prompt shorter than one block never hits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench._util import load_queries, tiny_model


async def measure(model: str, block_size: int, queries: list[str]) -> dict[str, object]:
    from promptgate.server import Query, Screening, ServerConfig

    config = ServerConfig(model=model, engine="vllm", enforce_eager=True, max_model_len=4096, block_size=block_size)
    screening = await Screening.load(config)
    try:
        before = screening.stats()  # the warm-up's prompts are not the measurement's
        start = time.perf_counter()
        async for _ in screening.screen(((q, Query(q, "fast")) for q in queries), window=32):
            pass
        elapsed = time.perf_counter() - start
        after = screening.stats()
        prompt, cached = after.prompt_tokens - before.prompt_tokens, after.cached_tokens - before.cached_tokens
        return {
            "block_size": block_size,
            "system_prompt_tokens": len(screening.engine.builder.fast_prompt([])),  # type: ignore[attr-defined]
            "prompt_tokens": prompt,
            "cached_tokens": cached,
            "cache_hit_share": round(cached / prompt, 4) if prompt else 0.0,
            "fast_qps": round(len(queries) / elapsed, 1),
        }
    finally:
        await screening.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[128, 32])
    args = parser.parse_args()
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    model = args.model
    if model is None:
        model = tiny_model(Path(tempfile.mkdtemp()) / "tiny")
    queries = load_queries(args.queries)
    results = [asyncio.run(measure(model, b, queries)) for b in args.block_sizes]
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
