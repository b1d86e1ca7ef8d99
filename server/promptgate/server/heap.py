"""The process's garbage-collector policy once its engine is loaded."""

from __future__ import annotations

import gc
import time

from .logs import get_logger

log = get_logger("promptgate.heap")


def freeze_startup_heap() -> None:
    """Move every object alive now out of the collector's reach (`gc.freeze`), as vLLM's own
    server does once it has started (`vllm.utils.gc_utils.freeze_gc_heap`).

    Call it once the engine is loaded, from what owns its process (serve, screen --local, a Ray
    actor), never from a library call: it is a policy for the whole process. `thaw_heap` when
    done, so the objects are finalized at exit as usual (nanobind, under vLLM, reports the
    instances still alive then as leaks).

    Why: after loading, the heap holds hundreds of thousands of objects (torch, transformers,
    vLLM, the tokenizer) that live as long as the process. Every full collection walked them
    all: with vLLM on the 2-core CPU machine one took about 0.2 s and came every couple of
    thousand FAST queries; freezing took the event loop's CPU from 0.21-0.24 to 0.10-0.11 ms
    a query (`python -m bench.heap [--frozen]`). Frozen, a collection walks only what was
    allocated since. Garbage cycles among the frozen objects are never
    freed; the collection just before the freeze clears those that already exist.
    """
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.info("startup heap frozen", objects=gc.get_freeze_count(), seconds=round(time.perf_counter() - started, 3))


def thaw_heap() -> None:
    """Give the frozen objects back to the collector (`gc.unfreeze`), before the process ends."""
    gc.unfreeze()
