"""A promptgate server whose backend does no model work: it measures promptgate's own
per-query cost (gRPC, servicer, tokenization, prompt building, label scoring, logging).

The backend answers instantly with uniform label probabilities and an empty rationale;
everything above it is the production code path. Benchmark instrument only.

    python -m bench.null_server --model DIR --port P
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from promptgate.profiles import PromptBuilder, resolve_profile
from promptgate.server import ServerConfig, create_server
from promptgate.server.engine import BackendStats, Generation, ScreeningEngine, ScreeningSettings
from promptgate.server.heap import freeze_startup_heap


class NullBackend:
    name = "null"
    version = "0"
    device = "none"
    dtype = "none"
    max_model_len = 1 << 20
    dead = False

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def score_next(self, prompt_ids: Sequence[int], allowed_ids: Sequence[int]) -> list[float]:
        return [1.0 / len(allowed_ids)] * len(allowed_ids)

    async def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, stop_ids: Sequence[int]) -> Generation:
        return Generation([], None)

    def stats(self) -> BackendStats:
        return BackendStats(queued=0, running=0)


async def run(model: str, port: int) -> None:
    from transformers import AutoTokenizer

    from promptgate.server.logs import configure_logging

    # No result cache: every query goes down the path whose cost this measures.
    config = ServerConfig(
        model=model, host="127.0.0.1", port=port, log_level="warning", metrics_port=None, result_cache_size=None
    )
    configure_logging(config.log_level)  # as `promptgate serve` does: no line per query at warning
    handle = create_server(config)
    await handle.start()
    builder = PromptBuilder(AutoTokenizer.from_pretrained(model), resolve_profile(model))
    engine = ScreeningEngine(model_id=model, backend=NullBackend(), builder=builder, settings=ScreeningSettings())
    freeze_startup_heap()  # as `promptgate serve` does once its engine is loaded
    await handle.attach_engine(engine)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await handle.close(grace=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(run(args.model, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
