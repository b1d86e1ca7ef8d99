"""The embedded engine: transformers on CPU or one GPU, with its own dynamic batching.

Work is queued by coroutines; a dispatcher task takes what is queued (scoring first, it is
cheap and on the latency path), groups it into left-padded batches within a size and token
budget, and runs each batch in one worker thread so the event loop never blocks on torch.
While a batch runs, new work queues up for the next one. A cancelled job that has not
started is dropped; a cancelled generation row stops at the next decoding step.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import NotReady
from .base import BackendStats, Generation


@dataclass(eq=False)
class _Job:
    kind: str  # "score" | "generate"
    prompt: list[int]
    future: asyncio.Future[Any]
    allowed: list[int] = field(default_factory=list)
    max_new_tokens: int = 0
    stop_ids: tuple[int, ...] = ()
    # Set on the event loop when the waiting coroutine gives up; read by the worker
    # thread between decoding steps (a plain bool: a torn read is impossible under the GIL).
    abandoned: bool = False
    # Set by the worker thread when the row's first new token exists (time.perf_counter()).
    first_token_at: float | None = None


class _StopAbandonedRows:
    """Stopping criterion that ends the rows whose callers went away."""

    def __init__(self, jobs: Sequence[_Job]) -> None:
        self.jobs = jobs

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        # Called after every decoding step: the first call is when the first tokens exist.
        if self.jobs and self.jobs[0].first_token_at is None:
            now = time.perf_counter()
            for job in self.jobs:
                job.first_token_at = now
        return torch.tensor([job.abandoned for job in self.jobs], dtype=torch.bool, device=input_ids.device)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        # bf16 halves memory and is fast on GPUs; on CPUs float32 is the fast, exact path.
        return torch.bfloat16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


class TransformersBackend:
    name = "transformers"

    def __init__(
        self,
        model_path: str,
        *,
        pad_token_id: int,
        device: str = "auto",
        dtype: str = "auto",
        max_batch_size: int = 32,
        max_batch_tokens: int = 16384,
        max_model_len: int | None = None,
    ) -> None:
        import transformers

        self.version = transformers.__version__
        self.model_path = model_path
        self.device = resolve_device(device)
        self._torch_dtype = resolve_dtype(dtype, self.device)
        self.dtype = str(self._torch_dtype).removeprefix("torch.")
        self.pad_token_id = pad_token_id
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self._requested_max_len = max_model_len
        self.max_model_len = max_model_len or 0
        self._model: Any = None
        self._pending: collections.deque[_Job] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._running = 0
        # Set by close(): later submissions fail at once instead of queueing for a dispatcher that is gone.
        self._closed = False
        # Called with each forward pass's batch size (metrics); None: not observed.
        self.on_batch: Callable[[int], None] | None = None
        # One thread: torch parallelizes inside an op; two batches at once would only fight.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="promptgate-engine")

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._model = await loop.run_in_executor(self._executor, self._load)
        cfg_len = int(getattr(self._model.config, "max_position_embeddings", 0) or 0)
        limits = [n for n in (self._requested_max_len, cfg_len) if n]
        self.max_model_len = min(limits) if limits else 4096
        self._wakeup = asyncio.Event()
        self._dispatcher = asyncio.create_task(self._dispatch(), name="promptgate-transformers-dispatch")

    def _load(self) -> Any:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            self.model_path, dtype=self._torch_dtype, attn_implementation="sdpa"
        )
        return model.to(self.device).eval()

    async def close(self) -> None:
        self._closed = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(NotReady("the engine is shutting down"))
        self._executor.shutdown(wait=True, cancel_futures=True)

    @property
    def dead(self) -> bool:
        # The dispatcher only ends by close() or by a bug; either way nothing runs any more.
        return self._closed or (self._dispatcher is not None and self._dispatcher.done())

    def stats(self) -> BackendStats:
        return BackendStats(queued=sum(not j.future.done() for j in self._pending), running=self._running)

    # -- primitives --------------------------------------------------------------------

    async def score_next(self, prompt_ids: Sequence[int], allowed_ids: Sequence[int]) -> list[float]:
        return await self._submit(_Job("score", list(prompt_ids), self._new_future(), allowed=list(allowed_ids)))

    async def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, stop_ids: Sequence[int]) -> Generation:
        job = _Job(
            "generate",
            list(prompt_ids),
            self._new_future(),
            max_new_tokens=max_new_tokens,
            stop_ids=tuple(stop_ids),
        )
        tokens = await self._submit(job)
        return Generation(tokens, job.first_token_at if tokens else None)

    def _new_future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, job: _Job) -> Any:
        if self._wakeup is None:
            raise NotReady("the engine is not started")
        if self.dead:
            # Nothing would ever take the job: answer now rather than at the caller's deadline.
            raise NotReady("the engine has stopped")
        self._pending.append(job)
        self._wakeup.set()
        try:
            return await job.future
        except asyncio.CancelledError:
            job.abandoned = True
            job.future.cancel()
            raise

    # -- batching ----------------------------------------------------------------------

    async def _dispatch(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            batch = self._take_batch()
            if not batch:
                self._wakeup.clear()
                continue
            run = self._run_scores if batch[0].kind == "score" else self._run_generation
            self._running = len(batch)
            if self.on_batch is not None:
                self.on_batch(len(batch))
            try:
                results = await loop.run_in_executor(self._executor, run, batch)
            except asyncio.CancelledError:
                # close() while a batch runs: its rows stop at the next step and its callers,
                # no longer in the queue that close() drains, get an answer instead of waiting forever.
                for job in batch:
                    job.abandoned = True
                    if not job.future.done():
                        job.future.set_exception(NotReady("the engine is shutting down"))
                raise
            except Exception as exc:  # a failed batch fails its jobs, not the dispatcher
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
            else:
                for job, result in zip(batch, results, strict=True):
                    if not job.future.done():
                        job.future.set_result(result)
            finally:
                self._running = 0

    def _take_batch(self) -> list[_Job]:
        live = [j for j in self._pending if not j.future.done()]
        self._pending.clear()
        if not live:
            return []
        # Scoring first: one cheap forward pass that a caller is waiting on right now.
        kind = "score" if any(j.kind == "score" for j in live) else "generate"
        same_kind = [j for j in live if j.kind == kind]
        # The oldest job anchors the batch (so nothing starves); the others join by how
        # close their length is to it, because every row is padded to the longest one.
        anchor = same_kind[0]
        by_length = sorted(same_kind[1:], key=lambda j: abs(len(j.prompt) - len(anchor.prompt)))
        batch = [anchor]
        for job in by_length:
            if self._fits(job, batch):
                batch.append(job)
        chosen = set(map(id, batch))
        self._pending.extend(j for j in live if id(j) not in chosen)
        if self._pending and self._wakeup is not None:
            self._wakeup.set()
        return batch

    def _fits(self, job: _Job, batch: list[_Job]) -> bool:
        if len(batch) >= self.max_batch_size:
            return False
        # Padded size: every row is as long as the longest prompt.
        width = max(len(job.prompt), *(len(j.prompt) for j in batch))
        if width * (len(batch) + 1) > self.max_batch_tokens:
            return False
        # One generate() call shares its length bound and stop tokens.
        return job.kind == "score" or (job.max_new_tokens, job.stop_ids) == (
            batch[0].max_new_tokens,
            batch[0].stop_ids,
        )

    def _pad(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        # Left padding: every row's last real token sits in the last column, where the
        # next-token logits are read and where generation continues.
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        return ids.to(self.device), mask.to(self.device)

    @torch.inference_mode()
    def _run_scores(self, jobs: Sequence[_Job]) -> list[list[float]]:
        ids, mask = self._pad([j.prompt for j in jobs])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # logits_to_keep=1: only the last position's logits, not the vocabulary head over
        # every prompt token.
        out = self._model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1, use_cache=False)
        logits = out.logits[:, -1, :].float()
        results = []
        for row, job in enumerate(jobs):
            allowed = torch.tensor(job.allowed, dtype=torch.long, device=logits.device)
            results.append(torch.softmax(logits[row, allowed], dim=-1).tolist())
        return results

    @torch.inference_mode()
    def _run_generation(self, jobs: Sequence[_Job]) -> list[list[int]]:
        from transformers import GenerationConfig, StoppingCriteriaList

        ids, mask = self._pad([j.prompt for j in jobs])
        stop_ids = list(jobs[0].stop_ids)
        config = GenerationConfig(
            max_new_tokens=jobs[0].max_new_tokens,
            do_sample=False,
            eos_token_id=stop_ids,
            pad_token_id=self.pad_token_id,
        )
        out = self._model.generate(
            input_ids=ids,
            attention_mask=mask,
            generation_config=config,
            stopping_criteria=StoppingCriteriaList([_StopAbandonedRows(jobs)]),
        )
        new = out[:, ids.shape[1] :].tolist()
        results = []
        for row in new:
            cut = next((i for i, tok in enumerate(row) if tok in stop_ids), len(row))
            results.append(row[:cut])
        return results
