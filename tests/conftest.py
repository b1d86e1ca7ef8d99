from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from promptgate.server import ServerConfig
from promptgate.trainer.tiny_model import build_tiny_model

from .support import BackgroundServer, corpus_files


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3-shaped model with the `promptgate` profile (binary + categories)."""
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-promptgate"), profile="promptgate", corpus_files=corpus_files()
    )


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def server_config(model: Path, **overrides: object) -> ServerConfig:
    values: dict[str, object] = {
        "model": str(model),
        "host": "127.0.0.1",
        "port": 0,
        "engine": "transformers",
        "max_rationale_tokens": 12,
        "max_text_chars": 2000,
        "max_batch_items": 1000,
        "log_level": "warning",
        "metrics_port": 0,  # tests that read metrics pick a free port
    }
    values.update(overrides)
    return ServerConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def server(tiny_model: Path) -> Iterator[BackgroundServer]:
    """One real server for the session, transformers engine, tiny model, port 0."""
    with BackgroundServer(server_config(tiny_model)) as srv:
        yield srv
