"""results.json + results.md + plots from the rows `python -m bench` collected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REFERENCE = ("promptgate-vllm", "fast", "Classify")


def _agreement(a: list[Any], b: list[Any]) -> float | None:
    pairs = [(x, y) for x, y in zip(a, b, strict=False) if x is not None and y is not None]
    return round(sum(x == y for x, y in pairs) / len(pairs), 4) if pairs else None


def _best(rows: list[dict[str, Any]], system: str, mode: str) -> dict[str, Any] | None:
    candidates = [r for r in rows if r["system"] == system and r["mode"] == mode and "qps" in r]
    return max(candidates, key=lambda r: r["qps"], default=None)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    reference = next((r for r in reversed(rows) if (r["system"], r["mode"], r["rpc"]) == REFERENCE), None)
    for row in rows:
        if reference is not None and "verdicts" in row and row is not reference:
            row["agreement_with_promptgate_vllm_fast"] = _agreement(row["verdicts"], reference["verdicts"])
    ratios: dict[str, float] = {}
    pg_fast, seed = _best(rows, "promptgate-vllm", "fast"), _best(rows, "seed-detector", "reasoned")
    serve_fast = _best(rows, "vllm-serve", "fast")
    pg_reasoned, serve_reasoned = _best(rows, "promptgate-vllm", "reasoned"), _best(rows, "vllm-serve", "reasoned")
    if pg_fast and seed:
        ratios["promptgate_fast/seed"] = round(pg_fast["qps"] / seed["qps"], 1)
    if pg_reasoned and seed:
        ratios["promptgate_reasoned/seed"] = round(pg_reasoned["qps"] / seed["qps"], 1)
    if pg_fast and serve_fast:
        ratios["promptgate_fast/vllm_serve_fast"] = round(pg_fast["qps"] / serve_fast["qps"], 2)
    if pg_reasoned and serve_reasoned:
        ratios["promptgate_reasoned/vllm_serve_reasoned"] = round(pg_reasoned["qps"] / serve_reasoned["qps"], 2)
    null = _best(rows, "promptgate-null-engine", "fast")
    if null:
        ratios["null_engine_overhead_ms_per_query"] = round(1000 / null["qps"], 3)
    return ratios


def markdown(rows: list[dict[str, Any]], ratios: dict[str, float], meta: dict[str, Any]) -> str:
    lines = [
        f"Model: `{meta['model']}`; CPU cores: {meta['cpu_count']}.",
        "",
        "| system | mode | rpc | concurrency | queries | q/s | p50 ms | p99 ms | agreement |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["rpc"] == "start":
            continue
        agree = r.get("agreement_with_promptgate_vllm_fast")
        lines.append(
            f"| {r['system']} | {r['mode']} | {r['rpc']} | {r['concurrency'] or '-'} | {r['queries']} | {r['qps']} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {'-' if agree is None else agree} |"
        )
    starts = [r for r in rows if r["rpc"] == "start"]
    if starts:
        lines += [
            "",
            "Start (launch to health SERVING): " + ", ".join(f"{r['system']} {r['start_s']} s" for r in starts),
        ]
    lines += ["", "Ratios: " + ", ".join(f"{k} = {v}" for k, v in ratios.items())]
    return "\n".join(lines) + "\n"


def plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for system in dict.fromkeys(r["system"] for r in rows):
        pts = sorted(
            (r["concurrency"], r["qps"])
            for r in rows
            if r["system"] == system and r["mode"] == "fast" and r.get("concurrency") and "qps" in r
        )
        if len(pts) > 1:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=system)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent callers (closed loop)")
    ax.set_ylabel("FAST queries/s")
    ax.set_title("Throughput vs concurrency")
    ax.legend()
    fig.tight_layout()
    written.append(out / "throughput_vs_concurrency.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    chosen = [r for r in rows if "p50_ms" in r and (r.get("concurrency") in (1, 64) or r["rpc"] == "detect_attack")]
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.35 * len(chosen))))
    labels = [f"{r['system']} {r['mode']} c={r['concurrency']}" for r in chosen]
    ax.barh(labels, [r["p99_ms"] for r in chosen], color="#d0a0a0", label="p99")
    ax.barh(labels, [r["p50_ms"] for r in chosen], color="#5070b0", label="p50")
    ax.set_xscale("log")
    ax.set_xlabel("latency per query, ms (log)")
    ax.set_title("Latency percentiles")
    ax.legend()
    fig.tight_layout()
    written.append(out / "latency_percentiles.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


def write_report(rows: list[dict[str, Any]], out: Path, **meta: Any) -> None:
    ratios = summarize(rows)
    (out / "results.json").write_text(json.dumps({"meta": meta, "ratios": ratios, "rows": rows}, indent=1) + "\n")
    (out / "results.md").write_text(markdown(rows, ratios, meta))
    plots(rows, out)
