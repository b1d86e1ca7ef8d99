"""The promptgate gRPC server: `create_server()` to assemble, `serve()` to run."""

from .app import ServerHandle, create_server, serve
from .config import ConfigError, ServerConfig
from .domain import Classification, LabelScore, Mode, Query, Verdict
from .errors import ErrorKind, InvalidInput, NotReady, Overloaded, ScreeningError
from .servicer import model_info

__all__ = [
    "Classification",
    "ConfigError",
    "ErrorKind",
    "InvalidInput",
    "LabelScore",
    "Mode",
    "NotReady",
    "Overloaded",
    "Query",
    "ScreeningError",
    "ServerConfig",
    "ServerHandle",
    "Verdict",
    "create_server",
    "model_info",
    "serve",
]
