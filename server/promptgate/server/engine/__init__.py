"""Engines: the interface the servicer calls and the backends that run the model."""

from .base import (
    BackendStats,
    Engine,
    EngineDescription,
    Generation,
    ModelBackend,
    ScreeningEngine,
    ScreeningSettings,
)
from .loader import available_engines, load_engine, pick_engine

__all__ = [
    "BackendStats",
    "Engine",
    "EngineDescription",
    "Generation",
    "ModelBackend",
    "ScreeningEngine",
    "ScreeningSettings",
    "available_engines",
    "load_engine",
    "pick_engine",
]
