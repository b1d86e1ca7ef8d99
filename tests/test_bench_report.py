"""The benchmark report's arithmetic (the benchmark itself runs with `bash bench/cpu.sh`)."""

from __future__ import annotations

from pathlib import Path

from bench.report import markdown, summarize, write_report

PRE = "pretokenized"


def rows() -> list[dict]:
    def row(system, mode, rpc, c, qps, verdicts, probabilities=None, **extra):
        return {"system": system, "mode": mode, "rpc": rpc, "concurrency": c, "queries": len(verdicts), "qps": qps,
                "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "verdicts": verdicts,
                "probabilities": probabilities or [None] * len(verdicts), **extra}  # fmt: skip

    probs = [0.6, 0.4, 0.7, 0.3]
    agreement = {"verdict_agreement": 1.0, "max_abs_difference": 0.0}
    bulk = {"system": "bulk", "mode": "fast", "rpc": "unique", "rows": 4, "duplicate_share": 0.0, "ratio": 0.95,
            "llm_generate_rows_per_s": 100.0, "screen_local_rows_per_s": 95.0, "agreement": agreement}  # fmt: skip
    return [
        {"system": "promptgate-vllm", "mode": "-", "rpc": "start", "start_s": 20.0},
        row("promptgate-vllm", "fast", "Classify", 1, 100.0, [True, False, True, True]),
        row("promptgate-vllm", "fast", "ClassifyBatch", None, 900.0, [True, False, True, False], probs),
        row("promptgate-vllm", "fast", "ClassifyStream", None, 800.0, [True, False, True, False], probs),
        row("promptgate-vllm", "reasoned", "Classify", 64, 120.0, [True, True, True, False]),
        row("promptgate-vllm", "fast", "Classify", 64, 500.0, [True, False, True, False], probs),
        row(
            "vllm-serve-expert",
            "fast",
            "completions",
            64,
            400.0,
            [True, False, True, False],
            [0.6, 0.4, 0.7, 0.31],
            canonical_unchanged=[True, True, True, False],
        ),
        row("vllm-serve-expert", "fast", "completions", 64, 450.0, [True, False, True, False], probs, note=PRE),
        row("vllm-serve-expert", "fast", "batch completions", None, 600.0, [True, False, True, False], probs),
        row("vllm-serve-expert", "reasoned", "completions", 64, 100.0, [True, True, True, False]),
        bulk,
        row("promptgate-null-engine", "fast", "Classify", 64, 2000.0, [False, False, False, False]),
        row("vllm-serve-naive", "fast", "completions", 64, 250.0, [True, False, False, False]),
        row("seed-detector", "reasoned", "detect_attack", 1, 10.0, [True, False]),
    ]


def test_ratios_and_agreement(tmp_path: Path) -> None:
    data = rows()
    ratios = summarize(data)
    assert ratios == {
        "fast_classify_64/expert_unary_64": 1.25,
        "fast_ClassifyBatch/expert_batch_completions": 1.5,
        "fast_ClassifyStream/expert_batch_completions": 1.33,
        "fast_classify_64/expert_unary_64_pretokenized": 1.11,
        "reasoned_classify_64/expert_reasoned_64": 1.2,
        "fast_best/seed": 50.0,
        "reasoned_64/seed": 12.0,
        "fast_best/naive_vllm_serve_best": 2.0,
        "screen_local/llm_generate_unique": 0.95,
        "null_engine_overhead_ms_per_query": 0.5,
    }
    # against the last promptgate-vllm Classify row of the same mode (FAST: [True, False, True, False])
    assert data[1]["agreement_with_promptgate_vllm"] == {"verdicts": 0.75}
    expert = {"verdicts": 1.0, "max_abs_difference": 0.01, "max_abs_difference_where_unchanged": 0.0}
    assert data[6]["agreement_with_promptgate_vllm"] == expert
    assert data[9]["agreement_with_promptgate_vllm"] == {"verdicts": 1.0}  # REASONED against REASONED
    assert data[12]["agreement_with_promptgate_vllm"] == {"verdicts": 0.75}
    text = markdown(data, ratios, {"model": "m", "cpu_count": 2, "load_average": (0.5, 0.6, 0.7)})
    assert "| vllm-serve-expert | fast | completions (pretokenized) | 64 | 4 | 450.0 |" in text
    assert "| unique | 4 | 0.0% | 100.0 | 95.0 | 0.95 | 1.0 / 0.0000 |" in text
    assert "promptgate-vllm 20.0 s" in text and "load average at the end: 0.50" in text
    write_report(data, tmp_path, model="m", cpu_count=2)
    assert {p.name for p in tmp_path.iterdir()} == {
        "results.json",
        "results.md",
        "throughput_vs_concurrency.png",
        "latency_percentiles.png",
    }
