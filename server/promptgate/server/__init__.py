"""The promptgate server: `create_server()` to assemble, `serve()` to run, `Screening` to screen in-process.

Names load on first use (PEP 562), so `promptgate.server.config` and the command
registration import no gRPC server, metrics or logging stack: `promptgate --help` works on
a client-only install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import ServerHandle, create_server, serve
    from .config import ConfigError, ServerConfig
    from .convert import model_info
    from .domain import Classification, LabelScore, Mode, Query, Verdict
    from .errors import ErrorKind, InvalidInput, NotReady, Overloaded, ScreeningError
    from .screening import ModelDescription, Screening, ScreeningLimits

_WHERE = {
    "ServerHandle": "app",
    "create_server": "app",
    "serve": "app",
    "ConfigError": "config",
    "ServerConfig": "config",
    "model_info": "convert",
    "Classification": "domain",
    "LabelScore": "domain",
    "Mode": "domain",
    "Query": "domain",
    "Verdict": "domain",
    "ErrorKind": "errors",
    "InvalidInput": "errors",
    "NotReady": "errors",
    "Overloaded": "errors",
    "ScreeningError": "errors",
    "ModelDescription": "screening",
    "Screening": "screening",
    "ScreeningLimits": "screening",
}
__all__ = [
    "Classification",
    "ConfigError",
    "ErrorKind",
    "InvalidInput",
    "LabelScore",
    "Mode",
    "ModelDescription",
    "NotReady",
    "Overloaded",
    "Query",
    "Screening",
    "ScreeningError",
    "ScreeningLimits",
    "ServerConfig",
    "ServerHandle",
    "Verdict",
    "create_server",
    "model_info",
    "serve",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
