"""Builds the engine a configuration asks for: profile, tokenizer, prompt builder, backend."""

from __future__ import annotations

import importlib.util

from promptgate.profiles import PromptBuilder, resolve_profile

from ..config import ServerConfig
from .base import ModelBackend, ScreeningEngine, ScreeningSettings


def available_engines() -> list[str]:
    return ["transformers"]


def pick_engine(requested: str) -> str:
    if requested != "auto":
        return requested
    return available_engines()[0]


def build_backend(config: ServerConfig, pad_token_id: int) -> ModelBackend:
    engine = pick_engine(config.engine)
    if engine == "transformers":
        from .transformers_backend import TransformersBackend

        return TransformersBackend(
            config.model,
            pad_token_id=pad_token_id,
            device=config.device,
            dtype=config.dtype,
            max_batch_size=config.max_engine_batch,
            max_batch_tokens=config.max_engine_batch_tokens,
            max_model_len=config.max_model_len,
        )
    raise ValueError(f"unknown engine {engine!r}")


async def load_engine(config: ServerConfig) -> ScreeningEngine:
    """Load everything and start the backend. Slow (weights); run it before serving traffic."""
    import asyncio

    if importlib.util.find_spec("transformers") is None:
        raise RuntimeError("the server needs its extra: pip install 'promptgate[server]'")
    from transformers import AutoTokenizer

    # The profile first: a model we cannot talk to is a startup error, before any download.
    profile = resolve_profile(config.model, config.profile)
    tokenizer = await asyncio.to_thread(AutoTokenizer.from_pretrained, config.model)
    builder = PromptBuilder(tokenizer, profile)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    backend = build_backend(config, pad_token_id=int(pad))
    await backend.start()
    return ScreeningEngine(
        model_id=config.model,
        backend=backend,
        builder=builder,
        settings=ScreeningSettings(
            default_mode=config.mode,
            threshold=config.threshold,
            auto_band=config.auto_band,
            max_rationale_tokens=config.max_rationale_tokens,
        ),
    )
