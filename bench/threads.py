"""Where a served promptgate spends its CPU, thread by thread: `python -m bench.threads`.

    python -m bench.threads [--model DIR] [--rpcs batch,stream,classify] [--queries 3000]

Starts `promptgate serve --engine vllm` (result cache off, the pairs' engine settings) and runs
each RPC in turn (Classify at 64 callers, ClassifyBatch of 256, one ClassifyStream). Around
each run it reads every thread's CPU time and context switches from /proc/PID/task and
prints them per query, busiest first: the event loop (the main thread) apart from the
worker threads that read and tokenize, gRPC's and ZMQ's threads. A thread at 100% of a core
bounds the server; one far below it while the rate stays low points at waiting, not work.
Benchmark instrument, Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.__main__ import load
from bench._util import (
    add_engine_arguments,
    cpu_engine_env,
    free_port,
    promptgate_engine_flags,
    serve_command,
    serving_process,
    tiny_model,
)

_TICK = os.sysconf("SC_CLK_TCK")


def thread_times(pid: int) -> dict[str, tuple[str, float, int, int]]:
    """Each thread of `pid`: (name, CPU seconds, voluntary and involuntary context switches)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue  # ended between the listing and the read
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
        switches = {k: int(v) for k, v in (line.split(":") for line in status.splitlines() if "ctxt_switches" in line)}
        out[tid] = (name, cpu, switches["voluntary_ctxt_switches"], switches["nonvoluntary_ctxt_switches"])
    return out


def per_query(before: dict[str, Any], after: dict[str, Any], pid: int, n: int) -> list[dict[str, Any]]:
    rows = []
    for tid, (name, cpu, vol, invol) in after.items():
        _, cpu0, vol0, invol0 = before.get(tid, (name, 0.0, 0, 0))
        rows.append({
            "thread": "event loop" if tid == str(pid) else f"{name} {tid}",
            "cpu_ms_per_query": round(1000 * (cpu - cpu0) / n, 3),
            "voluntary_switches_per_query": round((vol - vol0) / n, 2),
            "involuntary_switches_per_query": round((invol - invol0) / n, 2),
        })  # fmt: skip
    rows.sort(key=lambda r: -r["cpu_ms_per_query"])
    return [r for r in rows if r["cpu_ms_per_query"] >= 0.005 or r["voluntary_switches_per_query"] >= 0.1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--rpcs", default="batch,stream,classify", help="comma-separated, run in this order")
    parser.add_argument("--queries", type=int, default=3000)
    add_engine_arguments(parser)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model = args.model or tiny_model(Path(tempfile.mkdtemp(prefix="pg-threads-")) / "tiny", profile="narasimha-b")
    flags = ["--engine", "vllm", "--result-cache-size", "off", "--max-text-chars", "4000"]
    flags += promptgate_engine_flags(args)
    port = free_port()
    cmd = serve_command(model, port, flags)
    report: dict[str, Any] = {"model": model, "queries": args.queries, "runs": []}
    with serving_process(cmd, port, timeout=900, env=cpu_engine_env()) as (target, proc):
        for _ in range(2):  # every step shape the runs meet, once, before the clock
            load("promptgate", target, queries=600, rpc="batch")
            load("promptgate", target, queries=600, rpc="stream")
        for rpc in args.rpcs.split(","):
            before = thread_times(proc.pid)
            result = load("promptgate", target, queries=args.queries, rpc=rpc, concurrency=64)
            threads = per_query(before, thread_times(proc.pid), proc.pid, args.queries)
            run = {"rpc": rpc, "qps": result["qps"], "threads": threads}
            report["runs"].append(run)
            print(json.dumps(run), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
