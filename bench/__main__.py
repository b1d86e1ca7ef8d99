"""One command for the peer comparison: `python -m bench [--quick] [--out DIR]`.

Starts every system it measures on the same model, drives load from a separate process
(`bench.load`), and writes results.json, results.md and PNG plots to --out. Each peer is set
up as strongly as its users could set it up, with the engine settings promptgate's vLLM
engine runs with (dtype, KV block size, prefix caching, context, eager mode, step sizes):

- promptgate with the vLLM engine: FAST via Classify at each concurrency, REASONED and AUTO,
  ClassifyBatch and ClassifyStream (result cache off, so no row answers another's repeats);
- `vllm serve`, expert: FAST prompts as token ids, one constrained token (`allowed_token_ids`
  = the labels' first tokens, `logprobs=2`, `--logprobs-mode processed_logprobs`), unary and
  batch completions (a list of prompts per request); REASONED and AUTO the same way;
- vLLM's offline `LLM.generate` against `promptgate screen --local`, on unique queries and on
  a log with a realistic duplicate rate (bench.bulk);
- the seed's approach: rival-ai's NarasimhaAttackDetector, one query at a time (bench.seed);
- `vllm serve`, naive, labelled so: chat-template text, top-20 logprobs over the vocabulary;
- promptgate with the transformers engine, and a null engine (bench.null_server):
  promptgate's own per-query cost.

On CPU it builds the tiny model (narasimha-b profile, so the seed's prompts are the model's);
`--model DIR` takes any model directory with a promptgate.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._util import (
    REPO,
    add_engine_arguments,
    cli_flags,
    engine_config,
    free_port,
    last_json,
    promptgate_engine_flags,
    serving,
    serving_process,
    tiny_model,
    vllm_serve,
)

SEED_HUB_ID = "sarthakrastogi/narasimha-b-0.6b"


def load(system: str, target: str, **kwargs: Any) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.load", system, "--target", target, *cli_flags(kwargs)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return last_json(out.stdout)


def hf_cache_layout(model: Path, hf_home: Path) -> None:
    """Put `model` where huggingface_hub looks for the seed's hub id, offline."""
    repo = hf_home / "hub" / ("models--" + SEED_HUB_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(model, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)


@contextlib.contextmanager
def null_server(model: str) -> Iterator[str]:
    port = free_port()
    cmd = [sys.executable, "-m", "bench.null_server", "--model", model, "--port", str(port)]
    with serving_process(cmd, port, timeout=120, cwd=REPO, stop_timeout=60) as (target, _):
        yield target


def engine_settings(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The same engine settings as promptgate flags and as `vllm serve` flags.

    vllm serve's own are promptgate's vLLM engine arguments (`engine_kwargs` of the same
    settings on this device), so the pair differs in nothing the engine computes.
    """
    from vllm.platforms import current_platform

    from promptgate.server.engine.vllm_backend import engine_kwargs

    config = engine_config(args)
    promptgate = promptgate_engine_flags(args)
    kwargs = engine_kwargs(config.vllm_settings(20), str(current_platform.device_type), "-")
    # The model is positional; the rest vllm_serve_command sets for the expert.
    skip = ("model", "disable_log_stats", "max_logprobs", "logprobs_mode", "enable_prefix_caching",
            "skip_tokenizer_init")  # fmt: skip
    return promptgate, cli_flags({k: v for k, v in kwargs.items() if k not in skip})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-results")
    parser.add_argument("--model", help="model directory (default: build the tiny model)")
    parser.add_argument("--quick", action="store_true", help="fewer queries and concurrency levels")
    parser.add_argument("--rationale-tokens", type=int, default=32)
    add_engine_arguments(parser)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["transformers", "null", "naive", "seed", "bulk"],
        help="leave these systems out",
    )  # fmt: skip
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    n = 200 if args.quick else 600
    levels = [1, 16, 64] if args.quick else [1, 4, 16, 64, 256]
    n_reasoned, n_seed = (40, 20) if args.quick else (120, 60)

    model = args.model
    if model is None:
        model = tiny_model(args.out / "model", profile="narasimha-b")
    rows: list[dict[str, Any]] = []

    def record(system: str, mode: str, rpc: str, concurrency: int | None, result: dict[str, Any]) -> dict[str, Any]:
        row = {"system": system, "mode": mode, "rpc": rpc, "concurrency": concurrency, **result}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("verdicts", "probabilities")}), flush=True)
        return row

    pg_engine, serve_engine = engine_settings(args)
    flags = ["--max-rationale-tokens", str(args.rationale_tokens), "--max-text-chars", "4000"]
    # No row may answer another row's repeats from the result cache (bench.bulk measures the cache).
    flags += ["--result-cache-size", "off"]
    for engine in ("vllm", "transformers"):
        if engine == "transformers" and "transformers" in args.skip:
            continue
        extra = pg_engine if engine == "vllm" else ["--dtype", args.dtype]
        with serving(model, ["--engine", engine, *flags, *extra]) as (target, start_s):
            system = f"promptgate-{engine}"
            rows.append({"system": system, "mode": "-", "rpc": "start", "start_s": round(start_s, 1)})
            for c in levels:
                record(system, "fast", "Classify", c, load("promptgate", target, queries=n, concurrency=c))
            for mode in ("reasoned", "auto"):
                result = load("promptgate", target, queries=n_reasoned, concurrency=64, mode=mode)
                record(system, mode, "Classify", 64, result)
            record(system, "fast", "ClassifyBatch", None, load("promptgate", target, queries=n, rpc="batch"))
            record(system, "fast", "ClassifyStream", None, load("promptgate", target, queries=n, rpc="stream"))

    # The result cache on (its default size) over the same unique queries: what it costs when nothing repeats.
    cached_flags = [f for f in flags if f not in ("--result-cache-size", "off")]
    with serving(model, ["--engine", "vllm", *cached_flags, *pg_engine]) as (target, _):
        result = load("promptgate", target, queries=n, concurrency=64)
        record("promptgate-vllm", "fast", "Classify", 64, {**result, "note": "result cache on, unique queries"})

    common = {"model": model, "model_dir": model}
    with vllm_serve(model, expert=True, engine=serve_engine) as url:
        for c in levels:
            record("vllm-serve-expert", "fast", "completions", c,
                   load("openai", url, queries=n, concurrency=c, variant="expert", **common))  # fmt: skip
        record("vllm-serve-expert", "fast", "completions", 64,
               {**load("openai", url, queries=n, concurrency=64, variant="expert", pretokenized=True, **common),
                "note": "pretokenized"})  # fmt: skip
        for mode in ("reasoned", "auto"):
            result = load("openai", url, queries=n_reasoned, concurrency=64, variant="expert", mode=mode,
                          rationale_tokens=args.rationale_tokens, **common)  # fmt: skip
            record("vllm-serve-expert", mode, "completions", 64, result)
        result = load("openai", url, queries=n, rpc="batch", variant="expert", **common)
        record("vllm-serve-expert", "fast", "batch completions", None, result)
        result = load("openai", url, queries=n, rpc="batch", variant="expert", pretokenized=True, **common)
        record("vllm-serve-expert", "fast", "batch completions", None, {**result, "note": "pretokenized"})

    if "bulk" not in args.skip:
        from bench.bulk import run_pairs

        bulk = run_pairs(model, args, unique=min(n * 3, 1517), zipf=2000, work=args.out / "bulk", no_cache_run=True)
        for name, run in bulk.items():
            rows.append({"system": "bulk", "mode": "fast", "rpc": name, **run})

    if "null" not in args.skip:
        with null_server(model) as target:
            for c in levels:
                result = load("promptgate", target, queries=n, concurrency=c)
                record("promptgate-null-engine", "fast", "Classify", c, result)
            result = load("promptgate", target, queries=n, rpc="batch")
            record("promptgate-null-engine", "fast", "ClassifyBatch", None, result)

    if "naive" not in args.skip:
        naive_engine = ["--dtype", args.dtype, "--max-model-len", str(args.max_model_len)]
        naive_engine += ["--enforce-eager"] if args.enforce_eager else []
        with vllm_serve(model, expert=False, engine=naive_engine) as url:
            for c in levels:
                result = load("openai", url, queries=n, concurrency=c, variant="naive", **common)
                record("vllm-serve-naive", "fast", "completions", c, result)
            result = load("openai", url, queries=n_reasoned, concurrency=64, variant="reasoned",
                          rationale_tokens=args.rationale_tokens, **common)  # fmt: skip
            record("vllm-serve-naive", "reasoned", "completions", 64, result)

    if "seed" not in args.skip:
        hf_home = args.out / "hf"
        hf_cache_layout(Path(model), hf_home)
        env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
        seed = subprocess.run([sys.executable, "-m", "bench.seed", "--queries", str(n_seed)], capture_output=True,
                              text=True, env=env, cwd=REPO, timeout=3600)  # fmt: skip
        if seed.returncode != 0:
            raise RuntimeError(seed.stderr[-3000:])
        record("seed-detector", "reasoned", "detect_attack", 1, last_json(seed.stdout))

    from bench.report import write_report

    write_report(rows, args.out, model=model, cpu_count=os.cpu_count() or 0, load_average=os.getloadavg())
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
