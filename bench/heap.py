"""What the startup heap costs vLLM's front end: `python -m bench.heap [--model DIR] [--frozen]`.

In this process, vLLM's AsyncLLM through promptgate's engine backend (`VllmBackend`), as the
server runs it, scores --queries distinct FAST-shaped prompts all at once, --rounds times, and
prints each round's rate, the event loop's CPU per query and the garbage collector's time
(gc.callbacks). With --frozen the heap is frozen after the engine starts
(`promptgate.server.heap.freeze_startup_heap`, what serve and screen --local do); without it,
every full collection walks the whole startup heap (torch, transformers, vLLM). Run it both
ways and compare. Benchmark instrument.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._util import add_engine_arguments, engine_config, tiny_model


class CollectorClock:
    """The time the garbage collector spends, all collections and full (generation 2) ones."""

    def __init__(self) -> None:
        self.seconds = self.full_seconds = 0.0
        self.collections = 0
        self._started = 0.0
        gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        self.seconds += took
        self.collections += 1
        if info["generation"] == 2:
            self.full_seconds += took

    def reset(self) -> None:
        self.seconds = self.full_seconds = 0.0
        self.collections = 0


def distinct_prompt(i: int, round: int) -> list[int]:
    """Prompt `i` of a round: 62 to 111 token ids, its first two unique to (i, round), so neither
    the engine's prefix cache nor a repeat makes a round cheaper than the first."""
    body = [5 + (i * 31 + j * 7) % 1000 for j in range(60 + i % 50)]
    return [5 + i % 1000, 5 + (i // 1000 + 10 * round) % 1000, *body]


async def run(args: argparse.Namespace, model: str) -> list[dict[str, Any]]:
    from promptgate.server.engine.vllm_backend import VllmBackend
    from promptgate.server.heap import freeze_startup_heap, thaw_heap

    config = engine_config(args, model=model, engine="vllm")
    backend = VllmBackend(model, config.vllm_settings(20))
    await backend.start()
    if args.frozen:
        freeze_startup_heap()
    clock = CollectorClock()
    rounds = []
    try:
        for k in range(args.rounds):
            prompts = [distinct_prompt(i, k) for i in range(args.queries)]
            clock.reset()
            cpu, wall = time.thread_time(), time.perf_counter()
            await asyncio.gather(*(backend.score_next(p, [10, 11]) for p in prompts))
            wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
            rounds.append({
                "queries_per_s": round(args.queries / wall),
                "event_loop_cpu_ms_per_query": round(1000 * cpu / args.queries, 3),
                "gc_seconds": round(clock.seconds, 3), "gc_full_seconds": round(clock.full_seconds, 3),
                "collections": clock.collections,
            })  # fmt: skip
            print(json.dumps(rounds[-1]), flush=True)
    finally:
        await backend.close()
        thaw_heap()
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--frozen", action="store_true", help="freeze the heap once the engine has started")
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    add_engine_arguments(parser)
    args = parser.parse_args()
    model = args.model or tiny_model(Path(tempfile.mkdtemp(prefix="pg-heap-")) / "tiny", profile="narasimha-b")
    rounds = asyncio.run(run(args, model))
    print(json.dumps({"frozen": args.frozen, "queries": args.queries, "rounds": rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
