"""The engine interface: what the servicer calls, and what a model backend must provide.

The screening path (`promptgate.server.screening`) drives an `Engine`: it encodes and
checks the text, then calls `classify_tokens` once per query, as a coroutine, and never
sees batching. `ScreeningEngine` owns the model contract (prompts, modes, label scoring)
once for every backend; a `ModelBackend` owns batching and the two primitives that
classification needs: next-token probabilities over an allowed set, and greedy generation
up to a stop token. Cancelling the awaiting coroutine must stop the backend's work for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from promptgate.profiles import ModelProfile, PromptBuilder, Verdict

from ..domain import Classification, LabelScore, Mode
from ..scoring import LabelTrie
from ..settings import ScreeningSettings


@dataclass(frozen=True)
class BackendStats:
    """Work the backend holds right now (for tests, metrics and drain), and prompt tokens so far."""

    queued: int
    running: int
    # Prompt tokens sent, and how many of them the prefix cache served (vLLM; 0 where unknown).
    prompt_tokens: int = 0
    cached_tokens: int = 0


@dataclass(frozen=True)
class Generation:
    """A greedy continuation without its stop token, and when its first token came."""

    token_ids: list[int]
    first_token_at: float | None  # time.perf_counter(); None when nothing was generated


@runtime_checkable
class ModelBackend(Protocol):
    name: str
    version: str
    device: str
    dtype: str
    max_model_len: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def score_next(self, prompt_ids: Sequence[int], allowed_ids: Sequence[int]) -> list[float]:
        """Probabilities of `allowed_ids` as the next token, normalized over them."""
        ...

    async def generate(self, prompt_ids: Sequence[int], max_new_tokens: int, stop_ids: Sequence[int]) -> Generation:
        """Greedy continuation, without the stop token; at most `max_new_tokens` long."""
        ...

    def stats(self) -> BackendStats: ...

    @property
    def dead(self) -> bool:
        """The backend can no longer serve (its engine process died)."""
        ...


@dataclass(frozen=True)
class EngineDescription:
    """What the engine says about itself (GetModelInfo's engine fields)."""

    name: str
    version: str
    device: str
    dtype: str


@runtime_checkable
class Engine(Protocol):
    """The complete engine contract the screening path drives (vLLM's `EngineClient` is the model).

    Text goes in as token ids from `encode`; checks, limits and truncation are the screening
    path's (`promptgate.server.screening`), never the engine's.
    """

    model_id: str
    profile: ModelProfile
    settings: ScreeningSettings
    # Most text tokens one prompt may hold (the model's context less prompt and answer).
    max_text_tokens: int

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    @property
    def dead(self) -> bool:
        """The engine can no longer answer (its process died, or it was closed)."""
        ...

    def stats(self) -> BackendStats: ...

    def describe(self) -> EngineDescription: ...

    def observe_batches(self, observer: Callable[[int], None] | None) -> None:
        """Call `observer(n)` with the size of every batch the engine runs (metrics)."""
        ...

    def encode(self, text: str) -> list[int]:
        """The text's token ids, special-token strings tokenized as plain text."""
        ...

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """`encode`, and each token's [start, end) character span in `text`."""
        ...

    def encode_many_with_offsets(self, texts: Sequence[str]) -> list[tuple[list[int], Sequence[tuple[int, int]]]]:
        """`encode_with_offsets` of each text, in one batch (the tokenizer runs it in parallel)."""
        ...

    async def classify_tokens(self, text_ids: list[int], mode: Mode, threshold: float) -> Classification:
        """Classify text already encoded and within `max_text_tokens`; `mode` FAST, REASONED or AUTO."""
        ...


class ScreeningEngine:
    """FAST / REASONED / AUTO classification over any `ModelBackend`."""

    def __init__(
        self,
        *,
        model_id: str,
        backend: ModelBackend,
        builder: PromptBuilder,
        settings: ScreeningSettings,
    ) -> None:
        self.model_id = model_id
        self.backend = backend
        self.builder = builder
        self.profile = builder.profile
        self.settings = settings
        seqs = builder.sequences
        self._labels = LabelTrie(seqs.labels)
        self._categories = LabelTrie(seqs.categories) if seqs.categories else None
        self._malicious = [spec.verdict is Verdict.MALICIOUS for spec in self.profile.labels]
        longest_answer = max(len(s) for s in seqs.labels) + max((len(s) for s in seqs.categories), default=0)
        # Tokens the text may take so that the longest prompt still fits the model.
        self.max_text_tokens = (
            backend.max_model_len
            - builder.overhead_tokens
            - settings.max_rationale_tokens
            - longest_answer
            - 8  # category separator and slack
        )
        if self.max_text_tokens < 16:
            raise ValueError(
                f"max model length {backend.max_model_len} leaves no room for a query "
                f"(prompt overhead {builder.overhead_tokens}, rationale {settings.max_rationale_tokens})"
            )
        if settings.max_text_tokens is not None:
            if settings.max_text_tokens > self.max_text_tokens:
                raise ValueError(
                    f"max_text_tokens {settings.max_text_tokens} does not fit the model: at most "
                    f"{self.max_text_tokens} query tokens fit max model length {backend.max_model_len}"
                )
            self.max_text_tokens = settings.max_text_tokens

    # -- the engine contract ---------------------------------------------------------------

    async def start(self) -> None:
        await self.backend.start()

    async def close(self) -> None:
        await self.backend.close()

    @property
    def dead(self) -> bool:
        return self.backend.dead

    def stats(self) -> BackendStats:
        return self.backend.stats()

    def describe(self) -> EngineDescription:
        b = self.backend
        return EngineDescription(name=b.name, version=b.version, device=b.device, dtype=b.dtype)

    def observe_batches(self, observer: Callable[[int], None] | None) -> None:
        # Backends that batch themselves expose `on_batch`; one that does not reports nothing.
        if hasattr(self.backend, "on_batch"):
            self.backend.on_batch = observer

    def encode(self, text: str) -> list[int]:
        return self.builder.encode_text(text)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        return self.builder.encode_text_with_offsets(text)

    def encode_many_with_offsets(self, texts: Sequence[str]) -> list[tuple[list[int], Sequence[tuple[int, int]]]]:
        return self.builder.encode_texts_with_offsets(texts)

    async def classify_tokens(self, text_ids: list[int], mode: Mode, threshold: float) -> Classification:
        if mode is Mode.REASONED:
            return await self._reasoned(text_ids, threshold)
        result = await self._fast(text_ids, threshold)
        if (
            mode is Mode.AUTO
            and self.profile.rationale_trained
            and abs(result.malicious_probability - threshold) <= self.settings.auto_band
        ):
            result = await self._reasoned(text_ids, threshold)
        return result

    async def _fast(self, text_ids: list[int], threshold: float) -> Classification:
        prompt = self.builder.fast_prompt(text_ids)
        return await self._decide(prompt, threshold, Mode.FAST, rationale="")

    async def _reasoned(self, text_ids: list[int], threshold: float) -> Classification:
        prompt = self.builder.reasoned_prompt(text_ids)
        generation = await self.backend.generate(
            prompt, self.settings.max_rationale_tokens, [self.builder.think_end_id]
        )
        rationale_ids = generation.token_ids
        label_prompt = self.builder.after_rationale(prompt, rationale_ids)
        rationale = self.builder.decode_rationale(rationale_ids)
        result = await self._decide(label_prompt, threshold, Mode.REASONED, rationale=rationale)
        return dataclasses.replace(
            result, rationale_tokens=len(rationale_ids), first_token_at=generation.first_token_at
        )

    async def _decide(self, prompt: list[int], threshold: float, mode: Mode, rationale: str) -> Classification:
        probs = await self._labels.score(prompt, self.backend.score_next)
        p_malicious = min(1.0, max(0.0, sum(p for p, bad in zip(probs, self._malicious, strict=True) if bad)))
        verdict = Verdict.MALICIOUS if p_malicious >= threshold else Verdict.BENIGN
        on_side = [i for i, bad in enumerate(self._malicious) if bad == (verdict is Verdict.MALICIOUS)]
        best = max(on_side, key=lambda i: probs[i])
        spec = self.profile.labels[best]
        category = spec.category
        if verdict is Verdict.MALICIOUS and self._categories is not None:
            prefix = [*prompt, *self.builder.sequences.category_prefix[spec.text]]
            cat_probs = await self._categories.score(prefix, self.backend.score_next)
            category = self.profile.categories[max(range(len(cat_probs)), key=cat_probs.__getitem__)]
        scores = sorted(
            (LabelScore(label, p) for label, p in zip(self.profile.label_texts, probs, strict=True)),
            key=lambda s: -s.probability,
        )
        return Classification(
            verdict=verdict,
            malicious_probability=p_malicious,
            label=spec.text,
            category=category if verdict is Verdict.MALICIOUS else "",
            rationale=rationale,
            mode=mode,
            threshold=threshold,
            label_scores=tuple(scores),
        )
