"""The target pairs, measured in alternation: `python -m bench.pairs [--rounds 3] [--out FILE]`.

promptgate (vLLM engine) and the expert `vllm serve` (bench.__main__'s setup: the same engine
arguments) are both started, and each pair's two sides run one after the other, --rounds
times (ABAB...), so a change in the machine's load falls on both sides alike. An idle server
uses no CPU. Pairs: FAST Classify x 64 / unary completions x 64; ClassifyBatch and
ClassifyStream / batch completions (256 per request); REASONED and AUTO Classify x 64 /
completions x 64. Then the bulk pair, screen --local / LLM.generate, on unique queries and on
the Zipf log (bench.bulk), alternated the same way. With --peer-engine-niceness N (10 by
default; 0: none) it adds labelled rows with the peers' engine processes reniced by N, the
scheduling promptgate gives its own engine on CPU. With --peer-freeze-heap (the default) it
adds labelled bulk rows with LLM.generate's startup heap frozen, as screen --local freezes its
own. Prints and writes every run, each round's ratio and the median ratio, with the load
average around each round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.__main__ import engine_settings, load
from bench._util import (
    add_engine_arguments,
    lower_vllm_serve_engine_priority,
    serving,
    tiny_model,
    vllm_serve,
    write_json,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=600)
    parser.add_argument("--reasoned-queries", type=int, default=120)
    parser.add_argument("--rationale-tokens", type=int, default=32)
    add_engine_arguments(parser)
    parser.add_argument("--no-bulk", action="store_true")
    parser.add_argument(
        "--peer-engine-niceness", type=int, default=10,
        help="extra rows with the peers' engine processes this much lower, as promptgate runs its own on CPU; 0: none",
    )  # fmt: skip
    parser.add_argument(
        "--peer-freeze-heap", action=argparse.BooleanOptionalAction, default=True,
        help="extra bulk rows with LLM.generate's startup heap frozen, as screen --local freezes its own",
    )  # fmt: skip
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="promptgate-pairs-"))
    model = args.model
    if model is None:
        model = tiny_model(work / "tiny", profile="narasimha-b")
    pg_engine, serve_engine = engine_settings(args)
    flags = ["--engine", "vllm", "--max-rationale-tokens", str(args.rationale_tokens), "--max-text-chars", "4000",
             "--result-cache-size", "off", *pg_engine]  # fmt: skip
    common = {"model": model, "model_dir": model, "variant": "expert", "rationale_tokens": args.rationale_tokens}
    n, nr = args.queries, args.reasoned_queries
    pairs: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "fast Classify x64 / completions x64": ({"queries": n, "concurrency": 64}, {"queries": n, "concurrency": 64}),
        "fast Classify x64 / completions x64 (pretokenized)": (
            {"queries": n, "concurrency": 64}, {"queries": n, "concurrency": 64, "pretokenized": True}),
        "ClassifyBatch / batch completions": ({"queries": n, "rpc": "batch"}, {"queries": n, "rpc": "batch"}),
        "ClassifyStream / batch completions": ({"queries": n, "rpc": "stream"}, {"queries": n, "rpc": "batch"}),
        "ClassifyBatch / batch completions (pretokenized)": (
            {"queries": n, "rpc": "batch"}, {"queries": n, "rpc": "batch", "pretokenized": True}),
        "reasoned Classify x64 / completions x64": (reasoned := {"queries": nr, "concurrency": 64, "mode": "reasoned"},
                                                    reasoned),
        "auto Classify x64 / completions x64": (auto := {"queries": nr, "concurrency": 64, "mode": "auto"}, auto),
    }  # fmt: skip
    report: dict[str, Any] = {"model": model, "cpu_count": os.cpu_count(), "rounds": args.rounds, "pairs": {}}

    def summarize(name: str, runs: list[dict[str, Any]]) -> None:
        ratios = [r["ratio"] for r in runs]
        report["pairs"][name] = {"runs": runs, "median_ratio": round(statistics.median(ratios), 3),
                                 "min_ratio": min(ratios), "max_ratio": max(ratios)}  # fmt: skip
        print(json.dumps({name: {k: v for k, v in report["pairs"][name].items() if k != "runs"}}), flush=True)

    with serving(model, flags) as (target, _), vllm_serve(model, expert=True, engine=serve_engine) as url:
        # Warm both engines up on every step shape a run meets (the first steps of a new shape
        # are slower on CPU), so neither side's first round pays for it.
        for _ in range(2):
            load("promptgate", target, queries=n, concurrency=64)
            load("promptgate", target, queries=n, rpc="batch")
            load("openai", url, queries=n, concurrency=64, **common)
            load("openai", url, queries=n, rpc="batch", **common)

        def measure(pairs: dict[str, tuple[dict[str, Any], dict[str, Any]]]) -> None:
            for name, (ours, theirs) in pairs.items():
                runs = []
                for _ in range(args.rounds):
                    before = os.getloadavg()[0]
                    a = load("promptgate", target, **ours)
                    b = load("openai", url, **theirs, **common)
                    ratio = round(a["qps"] / b["qps"], 3)
                    load_after = round(os.getloadavg()[0], 2)
                    runs.append({"promptgate_qps": a["qps"], "vllm_serve_qps": b["qps"], "ratio": ratio,
                                 "promptgate_client_cpu_ms_per_query": a.get("client_cpu_ms_per_query"),
                                 "vllm_serve_client_cpu_ms_per_query": b.get("client_cpu_ms_per_query"),
                                 "load_before": round(before, 2), "load_after": load_after})  # fmt: skip
                summarize(name, runs)

        measure(pairs)
        if args.peer_engine_niceness:
            # Extra rows: the peer given the scheduling promptgate gives its own engine on CPU
            # (vLLM does not do this itself; a user would have to renice its processes).
            report["peer_engine_niceness"] = lower_vllm_serve_engine_priority(args.peer_engine_niceness)
            names = ("fast Classify x64 / completions x64", "ClassifyBatch / batch completions",
                     "ClassifyStream / batch completions")  # fmt: skip
            measure({f"{name} (peer's engine reniced)": pairs[name] for name in names})
    if not args.no_bulk:
        from bench.bulk import run_pairs

        def bulk(name: str, label: str = "", **peer: Any) -> None:
            """The bulk pair on one input (unique or zipf), --rounds times; `peer`: run_pairs' peer options."""
            runs = []
            sizes = {"unique": 1517, "zipf": 0} if name == "unique" else {"unique": 0, "zipf": 2000}
            for k in range(args.rounds):
                before = os.getloadavg()[0]
                row = len(report["pairs"])  # each row's runs in a folder of their own
                r = run_pairs(model, args, **sizes, work=work / f"bulk-{row}-{name}-{k}", **peer)[name]
                runs.append({"screen_local_rows_per_s": r["screen_local_rows_per_s"],
                             "llm_generate_rows_per_s": r["llm_generate_rows_per_s"], "ratio": r["ratio"],
                             "duplicate_share": r["duplicate_share"], "agreement": r["agreement"],
                             "load_before": round(before, 2), "load_after": round(os.getloadavg()[0], 2)})  # fmt: skip
            summarize(f"screen --local / LLM.generate, {name}{label}", runs)

        bulk("unique")
        bulk("zipf")
        if args.peer_engine_niceness:
            bulk("unique", " (peer's engine reniced)", peer_engine_niceness=args.peer_engine_niceness)
        if args.peer_freeze_heap:
            # Extra rows: vLLM's `LLM` leaves its startup heap to the collector (its API server
            # freezes it); a user can freeze it by hand, as screen --local does.
            bulk("unique", " (peer's heap frozen)", peer_freeze_heap=True)
            bulk("zipf", " (peer's heap frozen)", peer_freeze_heap=True)
    write_json(report, args.out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
