"""FAST through the server vs one `generate` call per query, on the same model, in one run.

The baseline is the seed detector's loop (rival-ai's NarasimhaAttackDetector): for each
query, render the chat template, `model.generate(max_new_tokens=100, do_sample=False)`,
parse the text. promptgate's FAST reads the verdict from one batched forward pass.

    python -m bench.fast_vs_generate [--model DIR] [--queries N] [--baseline-queries M]

Without --model it builds the tiny random-weight Qwen3-shaped model. The server runs in its
own process (`promptgate serve`); the load comes from this one.
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

from bench._util import load_queries, serving, tiny_model


async def drive_server(target: str, queries: list[str], concurrency: int) -> dict[str, float]:
    from promptgate.client import AsyncClient

    results: dict[str, float] = {}
    # raise: a failure must count as a failure, not as a fail-closed verdict.
    async with AsyncClient(target, timeout=600, on_error="raise") as client:
        await client.classify("warm up", mode="fast")
        sem = asyncio.Semaphore(concurrency)

        async def one(text: str) -> None:
            async with sem:
                await client.classify(text, mode="fast")

        start = time.perf_counter()
        await asyncio.gather(*(one(q) for q in queries))
        results["classify_qps"] = len(queries) / (time.perf_counter() - start)

        start = time.perf_counter()
        for i in range(0, len(queries), 256):
            await client.classify_batch(queries[i : i + 256], mode="fast")
        results["batch_qps"] = len(queries) / (time.perf_counter() - start)
    return results


def seed_loop(model_dir: str, queries: list[str], max_new_tokens: int) -> float:
    """The seed's way: one chat-template render + greedy generate + text parse per query."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptgate.profiles import resolve_profile

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    system = resolve_profile(model_dir).system_prompt
    start = time.perf_counter()
    for text in queries:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
        prompt = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=True
        )
        inputs = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
            )
        answer = tokenizer.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        _ = "malicious" in answer.lower()
    return len(queries) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: build the tiny model)")
    parser.add_argument("--queries", type=int, default=2000, help="queries through the server")
    parser.add_argument("--baseline-queries", type=int, default=100, help="queries through the generate loop")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=100, help="the seed detector's default")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="promptgate-bench-")
    model_dir = args.model
    if model_dir is None:
        model_dir = tiny_model(Path(workdir) / "tiny")

    queries = load_queries(args.queries, 2000)
    with serving(model_dir, ["--max-text-chars", "4000"]) as (target, _):
        served = asyncio.run(drive_server(target, queries, args.concurrency))
    baseline = seed_loop(model_dir, queries[: args.baseline_queries], args.max_new_tokens)
    report = {
        "model": model_dir,
        "cpu_count": os.cpu_count(),
        "server_fast_classify_qps": round(served["classify_qps"], 1),
        "server_fast_batch_qps": round(served["batch_qps"], 1),
        f"generate_loop_qps(max_new_tokens={args.max_new_tokens})": round(baseline, 2),
        "ratio_classify_vs_generate": round(served["classify_qps"] / baseline, 1),
        "ratio_batch_vs_generate": round(served["batch_qps"] / baseline, 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
