"""results.json + results.md + plots from the rows `python -m bench` collected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench._util import answered, compare_runs, share_equal

REFERENCE = ("promptgate-vllm", "fast", "Classify")
EXPERT = "vllm-serve-expert"


def _agreement(row: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any] | None:
    """Verdict agreement, and the largest probability difference where both gave one: over all
    queries, and over those promptgate's canonicalization leaves as they are."""
    pairs = answered(row["verdicts"], reference["verdicts"])
    if not pairs:
        return None
    out: dict[str, Any] = {"verdicts": share_equal(pairs)}
    unchanged = row.get("canonical_unchanged") or [True] * len(row["verdicts"])
    found = compare_runs(row.get("probabilities", []), reference.get("probabilities", []), unchanged)
    if found is not None:
        out["max_abs_difference"] = round(found.max_abs_difference, 6)
        out["max_abs_difference_where_unchanged"] = round(found.max_abs_difference_where_unchanged, 6)
    return out


def _find(rows: list[dict[str, Any]], system: str, mode: str, rpc: str, concurrency: int | None = None,
          note: str | None = None) -> dict[str, Any] | None:  # fmt: skip
    for r in rows:
        same = (r["system"], r["mode"], r["rpc"]) == (system, mode, rpc) and "qps" in r and r.get("note") == note
        if same and (concurrency is None or r.get("concurrency") == concurrency):
            return r
    return None


def _best(rows: list[dict[str, Any]], system: str, mode: str) -> dict[str, Any] | None:
    """The fastest one-query-per-call row (Classify, completions, detect_attack) of a system and mode."""
    candidates = [
        r for r in rows
        if r["system"] == system and r["mode"] == mode and "qps" in r and r.get("concurrency") and not r.get("note")
    ]  # fmt: skip
    return max(candidates, key=lambda r: r["qps"], default=None)


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Adds each row's agreement with promptgate-vllm in the same mode (its last Classify row,
    on the same queries); returns the ratios of every pair."""
    last = {(r["system"], r["mode"], r["rpc"]): r for r in rows if not r.get("note")}
    references = {mode: last.get((REFERENCE[0], mode, REFERENCE[2])) for mode in ("fast", "reasoned", "auto")}
    for row in rows:
        reference = references.get(row["mode"]) or references["fast"]
        if reference is not None and "verdicts" in row and row is not reference:
            row["agreement_with_promptgate_vllm"] = _agreement(row, reference)
    ratios: dict[str, float] = {}

    def ratio(name: str, a: dict[str, Any] | None, b: dict[str, Any] | None) -> None:
        if a and b:
            ratios[name] = round(a["qps"] / b["qps"], 2)

    pg = "promptgate-vllm"
    for note, suffix in ((None, ""), ("pretokenized", "_pretokenized")):
        ratio(f"fast_classify_64/expert_unary_64{suffix}", _find(rows, pg, "fast", "Classify", 64),
              _find(rows, EXPERT, "fast", "completions", 64, note))  # fmt: skip
        for rpc in ("ClassifyBatch", "ClassifyStream"):
            ratio(f"fast_{rpc}/expert_batch_completions{suffix}", _find(rows, pg, "fast", rpc),
                  _find(rows, EXPERT, "fast", "batch completions", None, note))  # fmt: skip
    for mode in ("reasoned", "auto"):
        ratio(f"{mode}_classify_64/expert_{mode}_64", _find(rows, pg, mode, "Classify", 64),
              _find(rows, EXPERT, mode, "completions", 64))  # fmt: skip
    cache_on = _find(rows, pg, "fast", "Classify", 64, "result cache on, unique queries")
    ratio("result_cache_on/off_unique_classify_64", cache_on, _find(rows, pg, "fast", "Classify", 64))
    seed = _best(rows, "seed-detector", "reasoned")
    ratio("fast_best/seed", _best(rows, pg, "fast"), seed)
    ratio("reasoned_64/seed", _find(rows, pg, "reasoned", "Classify", 64), seed)
    ratio("fast_best/naive_vllm_serve_best", _best(rows, pg, "fast"), _best(rows, "vllm-serve-naive", "fast"))
    for r in rows:
        if r["system"] == "bulk":
            ratios[f"screen_local/llm_generate_{r['rpc']}"] = r["ratio"]
            if "screen_local_no_cache_rows_per_s" in r:
                cached, uncached = r["screen_local_rows_per_s"], r["screen_local_no_cache_rows_per_s"]
                ratios[f"screen_local_result_cache_on/off_{r['rpc']}"] = round(cached / uncached, 2)
    null = _best(rows, "promptgate-null-engine", "fast")
    if null:
        ratios["null_engine_overhead_ms_per_query"] = round(1000 / null["qps"], 3)
    return ratios


def _agree_text(agree: dict[str, Any] | None) -> str:
    if not agree:
        return "-"
    text = f"{agree['verdicts']}"
    if "max_abs_difference" in agree:
        text += f" / {agree['max_abs_difference']:.4f} / {agree['max_abs_difference_where_unchanged']:.4f}"
    return text


def markdown(rows: list[dict[str, Any]], ratios: dict[str, float], meta: dict[str, Any]) -> str:
    load = meta.get("load_average")
    lines = [
        f"Model: `{meta['model']}`; CPU cores: {meta['cpu_count']}"
        + (f"; load average at the end: {', '.join(f'{x:.2f}' for x in load)}" if load else "")
        + ".",
        "",
        "| system | mode | rpc | concurrency | queries | q/s | p50 ms | p99 ms | agreement |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if r["rpc"] == "start" or r["system"] == "bulk":
            continue
        rpc = r["rpc"] + (f" ({r['note']})" if r.get("note") else "")
        lines.append(
            f"| {r['system']} | {r['mode']} | {rpc} | {r['concurrency'] or '-'} | {r['queries']} | {r['qps']} | "
            f"{r['p50_ms']} | {r['p99_ms']} | {_agree_text(r.get('agreement_with_promptgate_vllm'))} |"
        )
    bulk = [r for r in rows if r["system"] == "bulk"]
    if bulk:
        lines += [
            "",
            "| bulk input | rows | duplicates | LLM.generate rows/s | screen --local rows/s | ratio | agreement |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in bulk:
            a = r["agreement"]
            lines.append(
                f"| {r['rpc']} | {r['rows']} | {r['duplicate_share']:.1%} | {r['llm_generate_rows_per_s']} | "
                f"{r['screen_local_rows_per_s']} | {r['ratio']} | {a.get('verdict_agreement')} / "
                f"{a.get('max_abs_difference', 0):.4f} |"
            )
    lines += [
        "",
        "Agreement: with promptgate-vllm's last Classify row in the same mode, on the same queries: the share of "
        "equal verdicts / the largest difference in malicious probability / the same over the queries "
        "promptgate's canonicalization leaves as they are (where both read the same tokens).",
    ]
    starts = [r for r in rows if r["rpc"] == "start"]
    if starts:
        lines += [
            "",
            "Start (launch to health SERVING): " + ", ".join(f"{r['system']} {r['start_s']} s" for r in starts),
        ]
    lines += ["", "Ratios: " + ", ".join(f"{k} = {v}" for k, v in ratios.items())]
    return "\n".join(lines) + "\n"


def _save(fig: Any, ax: Any, path: Path, *, xlabel: str, title: str) -> Path:
    """A plot's x label, title and legend; written to `path` and closed."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
            and not r.get("note")
        )  # fmt: skip
        if len(pts) > 1:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=system)
    ax.set_xscale("log", base=2)
    ax.set_ylabel("FAST queries/s")
    written.append(_save(fig, ax, out / "throughput_vs_concurrency.png", xlabel="concurrent callers (closed loop)",
                         title="Throughput vs concurrency"))  # fmt: skip

    chosen = [
        r for r in rows
        if "p50_ms" in r and not r.get("note") and (r.get("concurrency") in (1, 64) or r["rpc"] == "detect_attack")
    ]  # fmt: skip
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.35 * len(chosen))))
    labels = [f"{r['system']} {r['mode']} c={r['concurrency']}" for r in chosen]
    ax.barh(labels, [r["p99_ms"] for r in chosen], color="#d0a0a0", label="p99")
    ax.barh(labels, [r["p50_ms"] for r in chosen], color="#5070b0", label="p50")
    ax.set_xscale("log")
    written.append(_save(fig, ax, out / "latency_percentiles.png", xlabel="latency per query, ms (log)",
                         title="Latency percentiles"))  # fmt: skip
    return written


def write_report(rows: list[dict[str, Any]], out: Path, **meta: Any) -> None:
    ratios = summarize(rows)
    (out / "results.json").write_text(json.dumps({"meta": meta, "ratios": ratios, "rows": rows}, indent=1) + "\n")
    (out / "results.md").write_text(markdown(rows, ratios, meta))
    plots(rows, out)
