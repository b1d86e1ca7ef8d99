"""One command for the peer comparison: `python -m bench [--quick] [--out DIR]`.

Starts every system it measures on the same model, drives load from a separate process
(`bench.load`), and writes results.json, results.md and PNG plots to --out:

- promptgate with the vLLM engine and with the transformers engine: FAST via Classify at
  each concurrency, REASONED and AUTO, ClassifyBatch and ClassifyStream;
- a null engine (bench.null_server): promptgate's own per-query cost;
- the seed's approach: rival-ai's NarasimhaAttackDetector, one query at a time (bench.seed);
- `vllm serve` (OpenAI API) doing the same classification the way a user would write it.

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
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench._util import REPO, free_port, serving, tokenizer_corpus

SEED_HUB_ID = "sarthakrastogi/narasimha-b-0.6b"


def load(system: str, target: str, **kwargs: Any) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.load", system, "--target", target]
    for key, value in kwargs.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


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
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.null_server", "--model", model, "--port", str(port)], cwd=REPO
    )
    try:
        from bench._util import wait_serving

        wait_serving(f"127.0.0.1:{port}", proc, 120)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(60)


@contextlib.contextmanager
def vllm_openai_server(model: str, rationale_tokens: int) -> Iterator[str]:
    port = free_port()
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    # What `vllm serve MODEL` runs. (vllm-cpu's `vllm` command itself fails: it looks up the
    # version of a distribution named "vllm", and this one is named "vllm-cpu".)
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "8192", "--max-logprobs", "20", "--enforce-eager", "--disable-log-stats",
        "--dtype", "float32",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("vllm serve exited")
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
                    break
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench-results")
    parser.add_argument("--model", help="model directory (default: build the tiny model)")
    parser.add_argument("--quick", action="store_true", help="fewer queries and concurrency levels")
    parser.add_argument("--rationale-tokens", type=int, default=32)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    n = 200 if args.quick else 600
    levels = [1, 16, 64] if args.quick else [1, 4, 16, 64, 256]
    n_reasoned, n_seed = (40, 20) if args.quick else (120, 60)

    model = args.model
    if model is None:
        from promptgate.trainer.tiny_model import build_tiny_model

        model = str(build_tiny_model(args.out / "model", profile="narasimha-b", corpus_files=tokenizer_corpus()))
    rows: list[dict[str, Any]] = []

    def record(system: str, mode: str, rpc: str, concurrency: int | None, result: dict[str, Any]) -> dict[str, Any]:
        row = {"system": system, "mode": mode, "rpc": rpc, "concurrency": concurrency, **result}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "verdicts"}), flush=True)
        return row

    # float32 everywhere: the same arithmetic in every system, so answers can be compared.
    flags = ["--max-rationale-tokens", str(args.rationale_tokens), "--max-text-chars", "4000", "--dtype", "float32"]
    for engine in ("vllm", "transformers"):
        extra = ["--enforce-eager", "true", "--max-model-len", "8192"] if engine == "vllm" else []
        with serving(model, ["--engine", engine, *flags, *extra]) as (target, start_s):
            system = f"promptgate-{engine}"
            rows.append({"system": system, "mode": "-", "rpc": "start", "start_s": round(start_s, 1)})
            for c in levels:
                record(system, "fast", "Classify", c, load("promptgate", target, queries=n, concurrency=c))
            for mode, count in (("reasoned", n_reasoned), ("auto", n_reasoned)):
                record(
                    system, mode, "Classify", 64, load("promptgate", target, queries=count, concurrency=64, mode=mode)
                )
            record(system, "fast", "ClassifyBatch", None, load("promptgate", target, queries=n, rpc="batch"))
            record(system, "fast", "ClassifyStream", None, load("promptgate", target, queries=n, rpc="stream"))

    with null_server(model) as target:
        for c in levels:
            record(
                "promptgate-null-engine", "fast", "Classify", c, load("promptgate", target, queries=n, concurrency=c)
            )
        record(
            "promptgate-null-engine", "fast", "ClassifyBatch", None, load("promptgate", target, queries=n, rpc="batch")
        )

    with vllm_openai_server(model, args.rationale_tokens) as url:
        for c in levels:
            result = load("openai", url, queries=n, concurrency=c, model=model, model_dir=model, variant="fast")
            record("vllm-serve", "fast", "completions", c, result)
        result = load("openai", url, queries=n_reasoned, concurrency=64, model=model, model_dir=model,
                      variant="reasoned", rationale_tokens=args.rationale_tokens)  # fmt: skip
        record("vllm-serve", "reasoned", "completions", 64, result)

    hf_home = args.out / "hf"
    hf_cache_layout(Path(model), hf_home)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    seed = subprocess.run([sys.executable, "-m", "bench.seed", "--queries", str(n_seed)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=3600)  # fmt: skip
    if seed.returncode != 0:
        raise RuntimeError(seed.stderr[-3000:])
    record("seed-detector", "reasoned", "detect_attack", 1, json.loads(seed.stdout.strip().splitlines()[-1]))

    from bench.report import write_report

    write_report(rows, args.out, model=model, cpu_count=os.cpu_count() or 0)
    print(f"results in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
