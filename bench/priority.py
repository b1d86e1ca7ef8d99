"""The engine's priority, measured: `python -m bench.priority [--rounds 3] [--out FILE]`.

Two `promptgate serve` processes on the same model and engine settings, one with its engine's
processes at the server's own priority (`--engine-niceness 0`) and one as it runs by default on
CPU (10 lower), both up at once. Each RPC's runs alternate between them, --rounds times, so a
change in the machine's load falls on both. Prints and writes each run and the median ratio.
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
from bench._util import add_engine_arguments, serving, tiny_model, write_json


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=1500)
    parser.add_argument("--niceness", type=int, default=10, help="the lowered side's --engine-niceness")
    add_engine_arguments(parser)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model = args.model or tiny_model(Path(tempfile.mkdtemp(prefix="promptgate-priority-")) / "tiny", "narasimha-b")
    pg_engine, _ = engine_settings(args)
    flags = ["--engine", "vllm", "--max-text-chars", "4000", "--result-cache-size", "off", *pg_engine]
    runs_of: dict[str, dict[str, Any]] = {
        "Classify x64": {"concurrency": 64},
        "ClassifyBatch": {"rpc": "batch"},
        "ClassifyStream": {"rpc": "stream"},
    }
    report: dict[str, Any] = {"model": model, "rounds": args.rounds, "niceness": args.niceness, "rpcs": {}}
    with (
        serving(model, [*flags, "--engine-niceness", "0"]) as (same, _),
        serving(model, [*flags, "--engine-niceness", str(args.niceness)]) as (lowered, _),
    ):
        for target in (same, lowered):  # warm-up: the first steps of each shape are slower on CPU
            for kwargs in runs_of.values():
                load("promptgate", target, queries=args.queries, **kwargs)
        for name, kwargs in runs_of.items():
            runs = []
            for _ in range(args.rounds):
                before = os.getloadavg()[0]
                a = load("promptgate", same, queries=args.queries, **kwargs)
                b = load("promptgate", lowered, queries=args.queries, **kwargs)
                runs.append({"niceness_0_qps": a["qps"], f"niceness_{args.niceness}_qps": b["qps"],
                             "ratio": round(b["qps"] / a["qps"], 3), "load_before": round(before, 2)})  # fmt: skip
            report["rpcs"][name] = {"runs": runs, "median_ratio": round(statistics.median(r["ratio"] for r in runs), 3)}
            print(json.dumps({name: report["rpcs"][name]}), flush=True)
    write_json(report, args.out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
