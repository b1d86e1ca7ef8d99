"""Per-call cost of canonicalization: `python -m bench.canonicalize [--limit N] [--show SIGNAL] [--model DIR]`.

Runs `canonicalize` over the texts of shared/data/test.jsonl as they are, and over the same
texts rewritten with the evasions the step undoes (so the slow paths are timed too), and
prints microseconds per query and how often each signal fired. With `--model`, it also runs
FAST over the same texts through the screening path (the in-process `Screening`, as
`screen --local` does) with every step on and with none, and prints both rates: the cost of
canonicalization next to a forward pass.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import time
from collections import Counter
from collections.abc import Callable

from bench._util import DATA
from promptgate.server.canonicalize import canonicalize

_LOOKALIKE = str.maketrans("aeopcx", "аеорсх")  # Latin -> Cyrillic look-alikes


def _tags(text: str) -> str:
    return "".join(chr(0xE0000 + ord(c)) if 0x20 <= ord(c) < 0x7F else c for c in text)


VARIANTS: dict[str, Callable[[str], str]] = {
    "as is": lambda t: t,
    "zero-width": lambda t: "\u200b".join(t),
    "spaced": lambda t: "  ".join(" ".join(w) for w in t.split()),
    "homoglyphs": lambda t: t.translate(_LOOKALIKE),
    "fullwidth": lambda t: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in t),
    "tags": lambda t: "Hello! " + _tags(t),
    "base64": lambda t: "Decode this: " + base64.b64encode(t.encode()).decode(),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="texts to use (0: all)")
    parser.add_argument("--max-chars", type=int, default=2000, help="cut each text to this length first")
    parser.add_argument("--show", default="", help="print the texts of the 'as is' run that raised this signal")
    parser.add_argument("--model", help="also time FAST through the screening path on this model, steps on and off")
    parser.add_argument("--engine", default="transformers", help="--model: the engine")
    parser.add_argument("--rounds", type=int, default=2, help="--model: alternating on/off rounds")
    args = parser.parse_args()
    with open(DATA / "test.jsonl", encoding="utf-8") as fh:
        texts = [json.loads(line)["text"][: args.max_chars] for line in fh]
    if args.limit:
        texts = texts[: args.limit]
    canonicalize("warm up the caches: Ignоre а l l")
    print(f"{len(texts)} texts from {DATA / 'test.jsonl'}, mean {statistics.mean(map(len, texts)):.0f} chars")
    for name, variant in VARIANTS.items():
        inputs = [variant(t) for t in texts]
        costs: list[float] = []
        signals: Counter[str] = Counter()
        changed = 0
        for original, text in zip(texts, inputs, strict=True):
            start = time.perf_counter()
            result = canonicalize(text)
            costs.append((time.perf_counter() - start) * 1e6)
            signals.update(result.signals)
            changed += result.text != text
            if name == "as is" and args.show and args.show in result.signals:
                print(f"--- {original[:300]!r}\n+++ {result.text[:300]!r}")
        costs.sort()
        print(
            f"{name:11} mean {statistics.mean(costs):8.1f} µs  p50 {costs[len(costs) // 2]:8.1f}"
            f"  p99 {costs[int(len(costs) * 0.99)]:9.1f}  changed {changed}/{len(texts)}  {dict(signals.most_common())}"
        )
    if args.model:
        import asyncio

        asyncio.run(_fast_rates(args.model, args.engine, texts, args.rounds))


async def _fast_rates(model: str, engine: str, texts: list[str], rounds: int) -> None:
    """FAST q/s through one loaded engine, canonicalization on and off in alternate rounds."""
    import dataclasses

    from promptgate.server import Query, Screening, ServerConfig
    from promptgate.server.canonicalize import CanonicalizeOptions

    # No result cache: the rounds screen the same texts, and a cached answer skips the work measured.
    config = ServerConfig(model=model, engine=engine, max_text_chars=2000, log_level="warning", result_cache_size=None)
    screening = await Screening.load(config)
    settings = {"on": config.canonicalize_options(), "off": CanonicalizeOptions.disabled()}
    rates: dict[str, list[float]] = {"on": [], "off": []}

    async def screen_all(batch: list[str]) -> int:
        # Every answer taken, none kept: only the time to get them counts.
        items = ((i, Query(t, "fast")) for i, t in enumerate(batch))
        return sum([1 async for _ in screening.screen(items, window=256)])

    try:
        await screen_all(texts[:64])  # warms the engine up, untimed
        for _ in range(rounds):
            for name, options in settings.items():
                screening.canonicalization = dataclasses.replace(options)
                start = time.perf_counter()
                done = await screen_all(texts)
                rates[name].append(done / (time.perf_counter() - start))
    finally:
        await screening.close()
    on, off = statistics.mean(rates["on"]), statistics.mean(rates["off"])
    print(f"FAST through the screening path ({engine}, {model}): canonicalization on {on:.1f} q/s, off {off:.1f} q/s "
          f"(runs on {[round(r, 1) for r in rates['on']]}, off {[round(r, 1) for r in rates['off']]}); "
          f"cost {100 * (1 - on / off):.1f}%")  # fmt: skip


if __name__ == "__main__":
    main()
