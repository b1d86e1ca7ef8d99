"""The GPU comparison in one run: promptgate and the expert `vllm serve`, side by side.

    python -m bench.gpu --out DIR            # one GPU (H200), no network, at most --budget-s seconds
    python -m bench.gpu --out DIR --cpu      # the same steps on CPU with the tiny model (small counts)

`bash bench/gpu.sh` runs it. Steps, each written to DIR/gpu.json as soon as it is done (a run
stopped by the time budget keeps what it measured, and says which steps it skipped):

1. a random-weight model of Qwen3-0.6B's exact shape (`promptgate tiny-model --shape
   qwen3-0.6b`; with --cpu the tiny shape), built locally;
2. `promptgate serve --engine vllm`: FAST, REASONED and AUTO via Classify at --concurrency
   callers, FAST via ClassifyBatch;
3. the expert `vllm serve` with the same engine arguments (bench.__main__.engine_settings):
   the same modes as completions of token-id prompts (tokenized before the clock starts), and
   FAST as batch completions; with
   --api-servers N > 1 also with N API server processes (`--api-server-count`), the way an
   expert scales vLLM's frontend on a many-core host.

The load comes from --load-processes processes of bench.load (the callers split between
them), so the client is not what limits a GPU. Every pair reports its ratio and how closely
the probabilities agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._util import (
    REPO,
    cli_flags,
    compare_runs,
    engine_arguments,
    last_json,
    serving,
    tiny_model,
    vllm_serve,
)


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def load(system: str, target: str, processes: int, concurrency: int, queries: int, **kwargs: Any) -> dict[str, Any]:
    """bench.load in `processes` processes at once, the callers and queries split between them."""
    procs = []
    share, callers = max(1, queries // processes), max(1, concurrency // processes)
    for k in range(processes):
        cmd = [sys.executable, "-m", "bench.load", system, "--target", target, "--queries", str(share),
               "--offset", str(k * share), "--concurrency", str(callers), *cli_flags(kwargs)]  # fmt: skip
        procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"bench.load failed:\n{err[-3000:]}")
        results.append(last_json(out))
    # Each process starts its clock after its own setup: the run lasts from the first start to the last end.
    seconds = max(r["ended_at"] for r in results) - min(r["ended_at"] - r["seconds"] for r in results)
    total = sum(r["queries"] for r in results)
    return {
        "queries": total,
        "seconds": round(seconds, 3),
        "qps": round(total / seconds, 2),
        "p50_ms": max(r["p50_ms"] for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "errors": sum(r["errors"] for r in results),
        "probabilities": [p for r in results for p in r["probabilities"]],
    }


def agreement(a: list[float | None], b: list[float | None]) -> dict[str, Any]:
    found = compare_runs(a, b)
    if found is None:
        return {"compared": 0}
    return {
        "compared": found.compared,
        "verdicts": found.verdicts,
        "max_abs_difference": round(found.max_abs_difference, 6),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cpu", action="store_true", help="the same steps on CPU, tiny model, small counts")
    parser.add_argument("--model", help="a model directory (default: build one)")
    parser.add_argument("--budget-s", type=float, default=570, help="stop starting steps after this long")
    parser.add_argument("--fast-queries", type=int)
    parser.add_argument("--reasoned-queries", type=int)
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--rationale-tokens", type=int, default=64)
    parser.add_argument("--load-processes", type=int)
    parser.add_argument("--api-servers", type=int, nargs="+", default=[1, 4], help="expert vllm serve frontends")
    args = parser.parse_args()
    budget = Budget(args.budget_s)
    cpu = args.cpu
    fast_n = args.fast_queries or (200 if cpu else 20000)
    reasoned_n = args.reasoned_queries or (32 if cpu else 2000)
    concurrency = args.concurrency or (32 if cpu else 256)
    processes = args.load_processes or (1 if cpu else min(8, max(1, (os.cpu_count() or 2) // 2)))
    rationale_tokens = 8 if cpu else args.rationale_tokens
    api_servers = [1] if cpu else args.api_servers
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"cpu_mode": cpu, "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "steps": {},
                              "skipped": [], "ratios": {}, "agreement": {}}  # fmt: skip

    def save() -> None:
        (args.out / "gpu.json").write_text(json.dumps(report, indent=1) + "\n")

    def step(name: str, result: dict[str, Any]) -> None:
        report["steps"][name] = {k: v for k, v in result.items() if k != "probabilities"}
        report.setdefault("_probabilities", {})[name] = result.get("probabilities", [])
        print(json.dumps({name: report["steps"][name]}), flush=True)
        save()

    model = args.model
    if model is None:
        shape = "tiny" if cpu else "qwen3-0.6b"
        started = time.monotonic()
        model = tiny_model(args.out / f"model-{shape}", profile="narasimha-b", shape=shape)
        report["model_build_s"] = round(time.monotonic() - started, 1)
    report["model"] = model

    from bench.__main__ import engine_settings

    engine_args = engine_arguments(dtype="float32" if cpu else "auto", max_model_len=4096, enforce_eager=cpu)
    pg_engine, serve_engine = engine_settings(engine_args)
    report["engine"] = {"promptgate": pg_engine, "vllm_serve": serve_engine}
    modes = [("fast", fast_n), ("reasoned", reasoned_n), ("auto", reasoned_n)]
    flags = ["--engine", "vllm", "--max-rationale-tokens", str(rationale_tokens), "--max-text-chars", "4000",
             "--result-cache-size", "off", *pg_engine]  # fmt: skip
    if budget.left() > 120:
        with serving(model, flags) as (target, start_s):
            report["promptgate_start_s"] = round(start_s, 1)
            for mode, n in modes:
                if budget.left() < 30:
                    report["skipped"].append(f"promptgate {mode}")
                    continue
                step(f"promptgate {mode} Classify", load("promptgate", target, processes, concurrency, n, mode=mode))
            if budget.left() > 30:
                step("promptgate fast ClassifyBatch", load("promptgate", target, processes, processes, fast_n,
                                                           rpc="batch"))  # fmt: skip
    else:
        report["skipped"].append("promptgate")
    # Pretokenized: on a GPU the load generator's tokenizing would limit the peer before its server does.
    common = {"model": model, "model_dir": model, "variant": "expert", "rationale_tokens": rationale_tokens,
              "pretokenized": True}  # fmt: skip
    for servers in api_servers:
        label = "vllm-serve-expert" + (f" x{servers} API servers" if servers > 1 else "")
        if budget.left() < 120:
            report["skipped"].append(label)
            continue
        extra = ["--api-server-count", str(servers)] if servers > 1 else []
        started = time.monotonic()
        with vllm_serve(model, expert=True, engine=[*serve_engine, *extra]) as url:
            report[f"{label} start_s"] = round(time.monotonic() - started, 1)
            for mode, n in modes if servers == 1 else modes[:1]:
                if budget.left() < 30:
                    report["skipped"].append(f"{label} {mode}")
                    continue
                step(f"{label} {mode} completions", load("openai", url, processes, concurrency, n, mode=mode, **common))
            if budget.left() > 30:
                step(f"{label} fast batch completions", load("openai", url, processes, processes, fast_n, rpc="batch",
                                                             **common))  # fmt: skip
    probs = report.pop("_probabilities", {})
    steps = report["steps"]
    for servers in api_servers:
        label = "vllm-serve-expert" + (f" x{servers} API servers" if servers > 1 else "")
        pairs = [(f"promptgate {m} Classify", f"{label} {m} completions") for m, _ in modes]
        pairs.append(("promptgate fast ClassifyBatch", f"{label} fast batch completions"))
        for ours, theirs in pairs:
            if ours in steps and theirs in steps:
                report["ratios"][f"{ours} / {theirs}"] = round(steps[ours]["qps"] / steps[theirs]["qps"], 2)
                report["agreement"][f"{ours} / {theirs}"] = agreement(probs.get(ours, []), probs.get(theirs, []))
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    report["seconds_left_in_budget"] = round(budget.left(), 1)
    save()
    print(json.dumps({"ratios": report["ratios"], "agreement": report["agreement"], "skipped": report["skipped"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
