"""The benchmark report's arithmetic (the benchmark itself runs with `bash bench/cpu.sh`)."""

from __future__ import annotations

from pathlib import Path

from bench.report import markdown, summarize, write_report


def rows() -> list[dict]:
    def row(system, mode, rpc, c, qps, verdicts):
        return {"system": system, "mode": mode, "rpc": rpc, "concurrency": c, "queries": len(verdicts), "qps": qps,
                "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "verdicts": verdicts}  # fmt: skip

    return [
        {"system": "promptgate-vllm", "mode": "-", "rpc": "start", "start_s": 20.0},
        row("promptgate-vllm", "fast", "Classify", 1, 100.0, [True, False, True, True]),
        row("promptgate-vllm", "fast", "Classify", 64, 500.0, [True, False, True, False]),
        row("promptgate-vllm", "reasoned", "Classify", 64, 120.0, [True, True, True, False]),
        row("promptgate-null-engine", "fast", "Classify", 64, 2000.0, [False, False, False, False]),
        row("vllm-serve", "fast", "completions", 64, 250.0, [True, False, False, False]),
        row("vllm-serve", "reasoned", "completions", 64, 60.0, [True, True, True, True]),
        row("seed-detector", "reasoned", "detect_attack", 1, 10.0, [True, False]),
    ]


def test_ratios_and_agreement(tmp_path: Path) -> None:
    data = rows()
    ratios = summarize(data)
    assert ratios == {
        "promptgate_fast/seed": 50.0,
        "promptgate_reasoned/seed": 12.0,
        "promptgate_fast/vllm_serve_fast": 2.0,
        "promptgate_reasoned/vllm_serve_reasoned": 2.0,
        "null_engine_overhead_ms_per_query": 0.5,
    }
    # against the last promptgate-vllm FAST Classify row: [True, False, True, False]
    assert data[1]["agreement_with_promptgate_vllm_fast"] == 0.75
    assert data[5]["agreement_with_promptgate_vllm_fast"] == 0.75
    assert data[7]["agreement_with_promptgate_vllm_fast"] == 1.0
    text = markdown(data, ratios, {"model": "m", "cpu_count": 2})
    assert "| vllm-serve | fast | completions | 64 | 4 | 250.0 |" in text and "promptgate-vllm 20.0 s" in text
    write_report(data, tmp_path, model="m", cpu_count=2)
    assert {p.name for p in tmp_path.iterdir()} == {
        "results.json",
        "results.md",
        "throughput_vs_concurrency.png",
        "latency_percentiles.png",
    }
