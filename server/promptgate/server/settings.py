"""What the engines are built with: plain settings, apart from the engines that use them.

The server's configuration (`config.ServerConfig`) makes these from its options, and the
engines (`engine/`) take them; neither needs the other's module to describe them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .domain import Mode

__all__ = ["MAX_NICENESS", "ScreeningSettings", "VllmSettings"]


@dataclass(frozen=True)
class ScreeningSettings:
    """The screening engine's modes, threshold and limits."""

    default_mode: Mode = Mode.FAST
    threshold: float = 0.5
    auto_band: float = 0.15
    max_rationale_tokens: int = 128
    # Cap on query tokens; None: what fits the model. Above what fits is a config error.
    max_text_tokens: int | None = None


MAX_NICENESS = 19  # POSIX: niceness runs from -20 (highest priority) to 19 (lowest)


@dataclass(frozen=True)
class VllmSettings:
    """Engine knobs, passed to vLLM's AsyncEngineArgs as they are."""

    dtype: str = "auto"
    max_model_len: int | None = None
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    enforce_eager: bool = False
    # KV cache size; on CPU vLLM otherwise sizes it from gpu_memory_utilization x host RAM.
    kv_cache_memory_gib: float | None = None
    max_logprobs: int = 128
    # Tokens per KV-cache block. Prefix caching reuses whole blocks only, so a shared system
    # prompt shorter than one block is never reused; None takes vLLM's default (128 on CPU).
    block_size: int | None = None
    # Bulk screening in this process (screen --local, Ray, eval) rather than a server: vLLM's
    # offline defaults for the engine step (see VllmBackend.start).
    offline: bool = False
    # How much lower than this process the engine's processes run (niceness added); None: 10
    # on CPU, where they share cores with the front end, 0 elsewhere (engine/priority.py).
    engine_niceness: int | None = None
