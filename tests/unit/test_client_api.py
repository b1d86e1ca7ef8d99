"""The public client API is exactly what `promptgate.client.__all__` says (as httpx checks its own).

A name added to or dropped from the package fails here until the expected list below is
changed on purpose; every exported name is documented; nothing else public leaks out of
the private modules the package is built from.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import promptgate.client

EXPECTED = [
    "AsyncClient",
    "CancelledError",
    "Classification",
    "Client",
    "ClientOptions",
    "DeadlineExceededError",
    "Document",
    "DocumentResult",
    "FailurePolicy",
    "InternalError",
    "InvalidArgumentError",
    "ItemError",
    "LabelInfo",
    "LabelScore",
    "Mode",
    "ModelInfo",
    "PromptgateError",
    "ResourceExhaustedError",
    "ScreenRequest",
    "ServiceError",
    "Span",
    "UnauthenticatedError",
    "UnavailableError",
    "Verdict",
    "parse_response",
]
# Public submodules: attributes of the package once imported, not members of __all__.
PUBLIC_SUBMODULES = {"health"}


def _own_doc(obj: object) -> str:
    """The object's own docstring: not one inherited from a base class, nor dataclass's generated signature."""
    doc = vars(obj).get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if not doc or (isinstance(obj, type) and doc.startswith(f"{obj.__name__}(")):
        return ""
    return inspect.cleandoc(doc)


def test_all_is_the_expected_list() -> None:
    assert promptgate.client.__all__ == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_every_exported_name_imports_and_is_documented(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from promptgate.client import {name}", namespace)
    obj = namespace[name]
    assert obj is getattr(promptgate.client, name)
    assert _own_doc(obj), f"promptgate.client.{name} has no docstring of its own"
    # It comes from inside the package (no re-export of another library's object).
    assert getattr(obj, "__module__", "").startswith("promptgate.client")


def test_no_private_module_name_leaks() -> None:
    # Import every submodule first: importing one binds its name on the package.
    for info in pkgutil.iter_modules(promptgate.client.__path__):
        importlib.import_module(f"promptgate.client.{info.name}")
    public = {name for name in vars(promptgate.client) if not name.startswith("_")}
    assert public == set(EXPECTED) | PUBLIC_SUBMODULES
    # The private modules stay private: none is exported, and the public ones are named above.
    submodules = {info.name for info in pkgutil.iter_modules(promptgate.client.__path__)}
    assert {m for m in submodules if not m.startswith("_")} == PUBLIC_SUBMODULES
    assert not any(name.startswith("_") for name in promptgate.client.__all__)
