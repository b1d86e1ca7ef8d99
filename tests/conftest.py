from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .support import BackgroundServer, make_tiny_model, server_config


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Qwen3-shaped model with the `promptgate` profile (binary + categories)."""
    return make_tiny_model(tmp_path_factory.mktemp("tiny-promptgate"), profile="promptgate")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="session")
def server(tiny_model: Path) -> Iterator[BackgroundServer]:
    """One real server for the session, transformers engine, tiny model, port 0."""
    with BackgroundServer(server_config(tiny_model)) as srv:
        yield srv
