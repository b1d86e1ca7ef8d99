"""Bulk screening: `promptgate screen --local --engine vllm` against vLLM's offline `LLM.generate`.

    python -m bench.bulk [--model DIR] [--unique 1517] [--zipf 2000] [--zipf-exponent 1.0]

Two inputs, each screened by both in turn (a fresh process each, engine start excluded from
both rates):
- unique: test.jsonl's distinct texts, so no repeat can be answered from a cache (promptgate's
  result cache is on, as by default: on unique queries it must cost nothing);
- zipf: a log with a realistic duplicate rate, a Zipf draw over the same texts
  (`bench._util.zipf_log`).

The peer (`bench.offline`) runs with the engine arguments promptgate's vLLM engine uses for
bulk work. Both read the same JSONL file and write one line per record. Reports rows/s of
each, their ratio and how closely the probabilities agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench._util import (
    REPO,
    add_engine_arguments,
    compare_runs,
    cpu_engine_env,
    last_json,
    load_queries,
    tiny_model,
    write_json,
    zipf_log,
)


def write_input(path: Path, texts: list[str]) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i, text in enumerate(texts):
            fh.write(json.dumps({"id": str(i), "text": text}) + "\n")
    return path


def engine_env(args: argparse.Namespace) -> dict[str, str]:
    """promptgate's settings, as the PROMPTGATE_* variables `screen --local` reads."""
    env = cpu_engine_env()
    env.update(
        PROMPTGATE_DTYPE=args.dtype,
        PROMPTGATE_MAX_MODEL_LEN=str(args.max_model_len),
        PROMPTGATE_ENFORCE_EAGER=str(args.enforce_eager).lower(),
        PROMPTGATE_MAX_TEXT_CHARS="4000",
    )
    if args.max_num_batched_tokens:
        env["PROMPTGATE_MAX_NUM_BATCHED_TOKENS"] = str(args.max_num_batched_tokens)
    if args.max_num_seqs:
        env["PROMPTGATE_MAX_NUM_SEQS"] = str(args.max_num_seqs)
    return env


def screen_local(model: str, path: Path, work: Path, args: argparse.Namespace, *, cache: bool = True) -> dict[str, Any]:
    out, summary = work / f"{path.stem}.screen.jsonl", work / f"{path.stem}.summary.json"
    out.unlink(missing_ok=True)
    env = engine_env(args)
    if not cache:
        env["PROMPTGATE_RESULT_CACHE_SIZE"] = "off"
    cmd = [sys.executable, "-m", "promptgate.cli", "screen", str(path), "--local", model, "--engine", "vllm",
           "--out", str(out), "--summary-json", str(summary), "--quiet"]  # fmt: skip
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"screen --local failed:\n{done.stderr[-3000:]}")
    report = json.loads(summary.read_text())
    by_id = {}
    with open(out, encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            by_id[row["id"]] = row["malicious_probability"]
    with open(path, encoding="utf-8") as fh:
        n = sum(1 for _ in fh)
    return {"rows": report["screened_this_run"], "rate_per_s": report["rate_per_s"], "seconds": report["seconds"],
            "probabilities": [by_id.get(str(i)) for i in range(n)]}  # fmt: skip


def offline_command(
    model: str, path: Path, out: Path, args: argparse.Namespace, *, engine_niceness: int = 0,
    freeze_heap: bool = False,
) -> list[str]:  # fmt: skip
    """bench.offline over `path` with `add_engine_arguments`' settings (and its engine's priority
    lowered by `engine_niceness`, as promptgate's is on CPU; its startup heap frozen with
    `freeze_heap`, as promptgate's screen --local freezes its own)."""
    cmd = [sys.executable, "-m", "bench.offline", str(path), "--model", model, "--out", str(out),
           "--dtype", args.dtype, "--max-model-len", str(args.max_model_len),
           "--engine-niceness", str(engine_niceness)]  # fmt: skip
    if freeze_heap:
        cmd.append("--freeze-heap")
    if args.enforce_eager:
        cmd.append("--enforce-eager")
    if args.max_num_batched_tokens:
        cmd += ["--max-num-batched-tokens", str(args.max_num_batched_tokens)]
    if args.max_num_seqs:
        cmd += ["--max-num-seqs", str(args.max_num_seqs)]
    return cmd


def offline(
    model: str, path: Path, work: Path, args: argparse.Namespace, *, engine_niceness: int = 0,
    freeze_heap: bool = False,
) -> dict[str, Any]:  # fmt: skip
    out = work / f"{path.stem}.llm.jsonl"
    cmd = offline_command(model, path, out, args, engine_niceness=engine_niceness, freeze_heap=freeze_heap)
    done = subprocess.run(cmd, env=cpu_engine_env(), cwd=REPO, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"bench.offline failed:\n{done.stderr[-3000:]}")
    return last_json(done.stdout)


def agreement(a: list[float | None], b: list[float | None], texts: list[str]) -> dict[str, Any]:
    """Verdict agreement (threshold 0.5) and the largest probability difference over the rows both answered.

    promptgate canonicalizes what it reads (on by default) and the vLLM peers send the text as
    it is, so the two read different tokens where canonicalization changes a text: the largest
    difference is also given over the rows it leaves as they are.
    """
    from promptgate.server.canonicalize import canonicalize

    found = compare_runs(a, b, [canonicalize(t).text == t for t in texts], strict=True)
    if found is None:
        return {"compared": 0}
    return {
        "compared": found.compared,
        "verdict_agreement": found.verdicts,
        "max_abs_difference": found.max_abs_difference,
        "changed_by_canonicalization": found.changed,
        "max_abs_difference_where_unchanged": found.max_abs_difference_where_unchanged,
    }


def run_pairs(
    model: str, args: argparse.Namespace, *, unique: int, zipf: int, work: Path, exponent: float = 1.0,
    no_cache_run: bool = False, peer_engine_niceness: int = 0, peer_freeze_heap: bool = False,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each input screened by LLM.generate, then by screen --local; per input: rates, ratio, agreement.

    peer_engine_niceness: LLM.generate's engine processes run this much lower (0: as vLLM runs them).
    peer_freeze_heap: LLM.generate's process freezes its startup heap, as screen --local does
    (vLLM's `LLM` does not; its API server does).
    """
    work.mkdir(parents=True, exist_ok=True)
    inputs = {"unique": write_input(work / "unique.jsonl", load_queries(unique))} if unique else {}
    if zipf:
        inputs["zipf"] = write_input(work / "zipf.jsonl", zipf_log(zipf, exponent=exponent))
    runs: dict[str, dict[str, Any]] = {}
    for name, path in inputs.items():
        with open(path, encoding="utf-8") as fh:
            texts = [json.loads(line)["text"] for line in fh]
        peer = offline(model, path, work, args, engine_niceness=peer_engine_niceness, freeze_heap=peer_freeze_heap)
        ours = screen_local(model, path, work, args)
        run = {
            "rows": len(texts),
            "distinct": len(set(texts)),
            "duplicate_share": round(1 - len(set(texts)) / len(texts), 4),
            "llm_generate_rows_per_s": peer["rate_per_s"],
            "screen_local_rows_per_s": ours["rate_per_s"],
            "ratio": round(ours["rate_per_s"] / peer["rate_per_s"], 3),
            "agreement": agreement(ours["probabilities"], peer["probabilities"], texts),
            "engine": {k: v for k, v in peer["engine"].items() if k != "model"},
        }
        if no_cache_run:
            run["screen_local_no_cache_rows_per_s"] = screen_local(model, path, work, args, cache=False)["rate_per_s"]
        runs[name] = run
        print(json.dumps({name: run}), flush=True)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: build the tiny model)")
    parser.add_argument("--unique", type=int, default=1517, help="distinct queries (test.jsonl has 1,517)")
    parser.add_argument("--zipf", type=int, default=2000, help="rows of the duplicate-rate log; 0: none")
    parser.add_argument("--zipf-exponent", type=float, default=1.0)
    add_engine_arguments(parser)
    parser.add_argument("--no-cache-run", action="store_true", help="also screen each input with the cache off")
    parser.add_argument("--peer-freeze-heap", action="store_true",
                        help="LLM.generate's process freezes its startup heap, as screen --local does")  # fmt: skip
    parser.add_argument("--out", type=Path, help="write the report as JSON here too")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="promptgate-bulk-"))
    model = args.model
    if model is None:
        model = tiny_model(work / "tiny", profile="narasimha-b")
    runs = run_pairs(model, args, unique=args.unique, zipf=args.zipf, work=work, exponent=args.zipf_exponent,
                     no_cache_run=args.no_cache_run, peer_freeze_heap=args.peer_freeze_heap)  # fmt: skip
    write_json({"model": model, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "runs": runs}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
