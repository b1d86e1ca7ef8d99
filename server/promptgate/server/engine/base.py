"""The engine interface: what the servicer calls, and what a model backend must provide.

The servicer calls `Engine.classify(query)` once per query, as a coroutine, and never
sees batching. `ScreeningEngine` owns the model contract (prompts, modes, label scoring)
once for every backend; a `ModelBackend` owns batching and the two primitives that
classification needs: next-token probabilities over an allowed set, and greedy generation
up to a stop token. Cancelling the awaiting coroutine must stop the backend's work for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from promptgate.profiles import ModelProfile, PromptBuilder, Verdict

from ..domain import Classification, LabelScore, Mode, Query, keep_both_ends
from ..errors import InvalidInput
from ..scoring import LabelTrie

# Below this size tokenizing inline costs less than a hop to a worker thread; above it
# the event loop would stall for a noticeable time.
_INLINE_TOKENIZE_CHARS = 2048


@dataclass(frozen=True)
class BackendStats:
    """Work the backend holds right now (for tests, metrics and drain)."""

    queued: int
    running: int


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


class Engine(Protocol):
    """What the servicer needs: classify one query, describe the model, report readiness."""

    profile: ModelProfile
    model_id: str

    async def classify(self, query: Query) -> Classification: ...


@dataclass(frozen=True)
class ScreeningSettings:
    default_mode: Mode = Mode.FAST
    threshold: float = 0.5
    auto_band: float = 0.15
    max_rationale_tokens: int = 128
    # Cap on query tokens; None: what fits the model. Above what fits is a config error.
    max_text_tokens: int | None = None


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

    async def classify(self, query: Query) -> Classification:
        mode = query.mode or self.settings.default_mode
        threshold = self.settings.threshold if query.threshold is None else query.threshold
        if mode is Mode.REASONED and not self.profile.rationale_trained:
            raise InvalidInput(f"model profile {self.profile.name!r} was not trained with rationales: use FAST")
        text_ids, cut = await self._encode(query.text, query.truncate)
        truncated = cut or query.truncated
        if mode is Mode.REASONED:
            result = await self._reasoned(text_ids, threshold)
        else:
            result = await self._fast(text_ids, threshold)
            if (
                mode is Mode.AUTO
                and self.profile.rationale_trained
                and abs(result.malicious_probability - threshold) <= self.settings.auto_band
            ):
                result = await self._reasoned(text_ids, threshold)
        return dataclasses.replace(result, truncated=truncated) if truncated else result

    async def _encode(self, text: str, truncate: bool) -> tuple[list[int], bool]:
        if len(text) > _INLINE_TOKENIZE_CHARS:
            ids = await asyncio.to_thread(self.builder.encode_text, text)
        else:
            ids = self.builder.encode_text(text)
        limit = self.max_text_tokens
        if len(ids) <= limit:
            return ids, False
        if not truncate:
            raise InvalidInput(f"text is {len(ids)} tokens long; the limit is {limit} tokens (max_text_tokens)")
        return keep_both_ends(ids, limit), True

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

