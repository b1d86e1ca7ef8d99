"""Regenerate the code and API description in client/promptgate/v1/ from proto/.

- `classifier_pb2.py`, `.pyi`, `classifier_pb2_grpc.py`: messages and gRPC stubs (grpcio-tools);
- `classifier_connect.py`: the Connect service binding and client (protoc-gen-connectrpc, for
  google.protobuf messages), which the server's HTTP/JSON face serves;
- `openapi.json`: an OpenAPI 3.1 description of the same service's Connect unary JSON
  endpoints, with proto3-JSON schemas of its messages, made here from the descriptors
  (comments included), and served by the HTTP face at /openapi.json.

The generated files are committed; tests/test_generated_code.py runs this script into a
temporary folder and fails on any difference, so edit the .proto and rerun:

    python scripts/generate_proto.py

grpcio-tools and protoc-gen-connectrpc are pinned in pyproject.toml's `dev` extra: another
version writes other code.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import sysconfig
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
# Only our own package is generated: google/rpc/status.proto is vendored in proto/ for
# other languages, while Python takes it from googleapis-common-protos.
PROTOS = sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / "promptgate").rglob("*.proto"))
CONNECT_PLUGIN = "protoc-gen-connectrpc"
# Code for google.protobuf messages (the ones grpcio-tools writes), asyncio only.
CONNECT_OPTIONS = "protobuf=google,io=async"
OPENAPI_FILE = "openapi.json"


def _connect_plugin() -> str:
    """The Connect plugin's executable: beside this interpreter (a venv), else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / CONNECT_PLUGIN
    found = str(beside) if beside.exists() else shutil.which(CONNECT_PLUGIN)
    if found is None:
        raise SystemExit(f"{CONNECT_PLUGIN} is not installed: pip install -e '.[dev]'")
    return found


def _protoc(*args: str) -> None:
    from grpc_tools import protoc

    well_known = resources.files("grpc_tools") / "_proto"
    if protoc.main(["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", *args]) != 0:
        raise SystemExit("protoc failed")


def generate(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    _protoc(
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-connectrpc={_connect_plugin()}",
        f"--connectrpc_out={out}",
        f"--connectrpc_opt={CONNECT_OPTIONS}",
        *(str(p) for p in PROTOS),
    )
    # Generated folders get an __init__.py so that `promptgate.v1` is a regular package
    # inside the `promptgate` namespace.
    for proto in PROTOS:
        init = out / proto.parent / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated from proto/ by scripts/generate_proto.py; do not edit."""\n')
    for proto in PROTOS:
        document = openapi(_descriptor_set(proto), str(proto))
        (out / proto.parent / OPENAPI_FILE).write_text(
            json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )


def _descriptor_set(proto: Path) -> Any:
    """The FileDescriptorSet of `proto` and its imports, with comments (source info)."""
    from google.protobuf import descriptor_pb2

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "set.binpb"
        _protoc(f"--descriptor_set_out={path}", "--include_imports", "--include_source_info", str(proto))
        return descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())


# -- OpenAPI ---------------------------------------------------------------------------------
#
# One POST operation per unary method, at Connect's path (/package.Service/Method) with
# `application/json` bodies in the proto3 JSON mapping; a GET as well for methods marked
# NO_SIDE_EFFECTS. Streaming methods speak Connect's enveloped streaming protocol, which
# OpenAPI cannot describe; they are named in the service description.

_SCALARS: dict[str, dict[str, Any]] = {
    "TYPE_STRING": {"type": "string"},
    "TYPE_BOOL": {"type": "boolean"},
    "TYPE_INT32": {"type": "integer", "format": "int32"},
    "TYPE_SINT32": {"type": "integer", "format": "int32"},
    "TYPE_SFIXED32": {"type": "integer", "format": "int32"},
    "TYPE_UINT32": {"type": "integer", "minimum": 0, "maximum": 4294967295},
    "TYPE_FIXED32": {"type": "integer", "minimum": 0, "maximum": 4294967295},
    # proto3 JSON writes 64-bit integers as strings (and reads either).
    "TYPE_INT64": {"type": ["string", "integer"], "format": "int64"},
    "TYPE_SINT64": {"type": ["string", "integer"], "format": "int64"},
    "TYPE_SFIXED64": {"type": ["string", "integer"], "format": "int64"},
    "TYPE_UINT64": {"type": ["string", "integer"], "format": "uint64"},
    "TYPE_FIXED64": {"type": ["string", "integer"], "format": "uint64"},
    "TYPE_FLOAT": {"type": "number", "format": "float"},
    "TYPE_DOUBLE": {"type": "number", "format": "double"},
    "TYPE_BYTES": {"type": "string", "contentEncoding": "base64"},
}
# Well-known types have their own JSON forms.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Any": {
        "type": "object",
        "description": "A message of any type: `@type` names it, the other members are its JSON fields.",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
}
_SCHEMAS = "#/components/schemas/"
_ERROR_SCHEMA = "connect.error"
# The HTTP status each error code answers with (the google.rpc mapping, which Connect shares)
# that callers of this service meet.
_ERROR_RESPONSES = {
    "400": "invalid_argument: the request is malformed or breaks a limit (the message names it).",
    "401": "unauthenticated: missing or wrong bearer token.",
    "404": "No such method.",
    "413": "The request body is larger than the server's max_message_bytes.",
    "415": "Unsupported Content-Type: use application/json (or application/proto).",
    "429": "resource_exhausted: the server is at capacity; retry after the Retry-After header's seconds.",
    "503": "unavailable: the model is loading or the server is shutting down; retry (another replica).",
    "504": "deadline_exceeded: the Connect-Timeout-Ms deadline passed.",
}


def _comments(file: Any) -> dict[tuple[int, ...], str]:
    """Leading comments by descriptor path, tidied into paragraphs."""
    found = {}
    for location in file.source_code_info.location:
        text = location.leading_comments.strip()
        if text:
            lines = [line.strip() for line in text.splitlines()]
            found[tuple(location.path)] = "\n".join(lines)
    return found


def _json_name(field: Any) -> str:
    if field.json_name:
        return field.json_name
    head, *rest = field.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def openapi(descriptor_set: Any, proto: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every service in `proto`, from its descriptor set."""
    files = {f.name: f for f in descriptor_set.file}
    comments = {name: _comments(f) for name, f in files.items()}
    messages: dict[str, tuple[Any, Any, tuple[int, ...]]] = {}  # full name -> (file, descriptor, path)
    enums: dict[str, tuple[Any, Any, tuple[int, ...]]] = {}

    def collect(file: Any, prefix: str, items: Any, path: tuple[int, ...]) -> None:
        for i, message in enumerate(items):
            name, here = f"{prefix}.{message.name}", (*path, i)
            messages[name] = (file, message, here)
            collect(file, name, message.nested_type, (*here, 3))
            for j, enum in enumerate(message.enum_type):
                enums[f"{name}.{enum.name}"] = (file, enum, (*here, 4, j))

    for file in files.values():
        package = f".{file.package}" if file.package else ""
        collect(file, package, file.message_type, (4,))
        for i, enum in enumerate(file.enum_type):
            enums[f"{package}.{enum.name}"] = (file, enum, (5, i))

    schemas: dict[str, Any] = {}

    def ref(type_name: str) -> dict[str, Any]:
        """A reference to a message or enum schema, adding it (and what it uses) to the document."""
        name = type_name.lstrip(".")
        if name not in schemas:
            schemas[name] = {}  # set before the fields are walked, so a message that contains itself stops here
            if name in _WELL_KNOWN:
                schemas[name] = _WELL_KNOWN[name]
            elif type_name in enums:
                schemas[name] = enum_schema(*enums[type_name])
            elif type_name in messages:
                schemas[name] = message_schema(*messages[type_name])
            else:
                raise SystemExit(f"{proto}: no JSON schema for {name}")
        return {"$ref": _SCHEMAS + name}

    def described(schema: dict[str, Any], file: Any, path: tuple[int, ...]) -> dict[str, Any]:
        text = comments[file.name].get(path)
        return {"description": text, **schema} if text else schema

    def enum_schema(file: Any, enum: Any, path: tuple[int, ...]) -> dict[str, Any]:
        lines = [f"- `{v.name}`: {comments[file.name].get((*path, 2, i), '')}" for i, v in enumerate(enum.value)]
        schema = {
            "type": "string",
            "enum": [v.name for v in enum.value],
            "description": "\n".join(lines) + "\n\nThe value's number is accepted on input too.",
        }
        head = comments[file.name].get(path)
        if head:
            schema["description"] = f"{head}\n\n{schema['description']}"
        return schema

    def field_schema(field: Any) -> dict[str, Any]:
        type_name = field.Type.Name(field.type)
        if type_name in ("TYPE_MESSAGE", "TYPE_ENUM"):
            entry = messages.get(field.type_name)
            if entry is not None and entry[1].options.map_entry:
                value = next(f for f in entry[1].field if f.name == "value")
                return {"type": "object", "additionalProperties": field_schema(value)}
            schema = ref(field.type_name)
        else:
            schema = dict(_SCALARS[type_name])
        if field.label == field.LABEL_REPEATED:
            return {"type": "array", "items": schema}
        return schema

    def message_schema(file: Any, message: Any, path: tuple[int, ...]) -> dict[str, Any]:
        properties = {}
        for i, field in enumerate(message.field):
            schema = field_schema(field)
            text = comments[file.name].get((*path, 2, i))
            if text:
                # Beside a $ref, OpenAPI 3.1 keeps sibling keywords such as description.
                schema = {**schema, "description": text}
            properties[_json_name(field)] = schema
        return described({"type": "object", "properties": properties}, file, path)

    [file] = [f for f in files.values() if f.name == proto]
    paths: dict[str, Any] = {}
    tags = []
    for s, service in enumerate(file.service):
        full = f"{file.package}.{service.name}" if file.package else service.name
        streams = [m.name for m in service.method if m.client_streaming or m.server_streaming]
        text = comments[file.name].get((6, s), "")
        if streams:
            text += (
                f"\n\nStreaming methods ({', '.join(streams)}) use Connect's streaming protocol "
                "(`application/connect+json`) or gRPC-Web on this port, or gRPC on the gRPC port."
            )
        tags.append({"name": full, "description": text.strip()})
        for m, method in enumerate(service.method):
            if method.client_streaming or method.server_streaming:
                continue
            operation = {
                "tags": [full],
                "operationId": f"{full}.{method.name}",
                "description": comments[file.name].get((6, s, 2, m), ""),
                "parameters": [{"$ref": "#/components/parameters/RequestId"}],
                "responses": {
                    "200": {
                        "description": "The method's response message.",
                        "headers": {"x-request-id": {"$ref": "#/components/headers/RequestId"}},
                        "content": {"application/json": {"schema": ref(method.output_type)}},
                    },
                    **{status: {"$ref": f"#/components/responses/Error{status}"} for status in _ERROR_RESPONSES},
                },
            }
            post = {
                **operation,
                "parameters": [
                    *operation["parameters"],
                    {"$ref": "#/components/parameters/ConnectProtocolVersion"},
                    {"$ref": "#/components/parameters/ConnectTimeoutMs"},
                ],
                "requestBody": {"required": True, "content": {"application/json": {"schema": ref(method.input_type)}}},
            }
            item: dict[str, Any] = {"post": post}
            if method.options.idempotency_level == method.options.NO_SIDE_EFFECTS:
                item["get"] = {
                    **operation,
                    "operationId": f"{full}.{method.name}.get",
                    "parameters": [
                        *operation["parameters"],
                        {"name": "encoding", "in": "query", "required": True, "schema": {"const": "json"}},
                        {
                            "name": "message",
                            "in": "query",
                            "required": True,
                            "description": "The request message as JSON (e.g. `{}`), URL-encoded.",
                            "schema": {"type": "string"},
                        },
                        {"name": "connect", "in": "query", "schema": {"const": "v1"}},
                    ],
                }
            paths[f"/{full}/{method.name}"] = item

    paths["/healthz"] = {
        "get": {
            "operationId": "healthz",
            "description": "For load balancers; needs no token.",
            "security": [],
            "responses": {
                "200": {"description": "Serving.", "content": {"application/json": {"schema": _HEALTH}}},
                "503": {
                    "description": "Not serving (loading, shutting down).",
                    "content": {"application/json": {"schema": _HEALTH}},
                },
            },
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "description": "This document.",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
        }
    }
    schemas[_ERROR_SCHEMA] = _CONNECT_ERROR
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"{file.package} (HTTP/JSON)",
            "version": file.package.rsplit(".", 1)[-1],
            "description": (
                f"Generated from {proto} by scripts/generate_proto.py; do not edit.\n\n"
                "The Connect protocol's unary form: POST a request message as JSON (the proto3 JSON mapping: "
                "lowerCamelCase names, proto names accepted too, enums by name, unset fields omitted) with "
                "`Content-Type: application/json` to `/<service>/<method>`. Errors are Connect's error JSON "
                "with the HTTP status of the google.rpc code."
            ),
        },
        "tags": tags,
        "security": [{}, {"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Needed when the server has tokens (--auth-token-file, PROMPTGATE_AUTH_TOKENS).",
                }
            },
            "parameters": _PARAMETERS,
            "headers": {"RequestId": _REQUEST_ID_HEADER},
            "responses": {
                f"Error{status}": {
                    "description": text,
                    "content": {"application/json": {"schema": {"$ref": _SCHEMAS + _ERROR_SCHEMA}}},
                    "headers": {
                        "x-request-id": {"$ref": "#/components/headers/RequestId"},
                        **({"Retry-After": _RETRY_AFTER} if status == "429" else {}),
                    },
                }
                for status, text in _ERROR_RESPONSES.items()
            },
        },
    }


_HEALTH = {
    "type": "object",
    "properties": {"status": {"type": "string", "enum": ["SERVING", "NOT_SERVING"]}},
}
_CONNECT_ERROR = {
    "type": "object",
    "description": "Connect's error JSON.",
    "properties": {
        "code": {
            "type": "string",
            "enum": [
                "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists",
                "permission_denied", "resource_exhausted", "failed_precondition", "aborted", "out_of_range",
                "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated",
            ],
        },
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "description": (
                "google.rpc error details: `google.rpc.ErrorInfo` (`reason`, e.g. TOO_LONG, domain promptgate.v1) "
                "and, when overloaded, `google.rpc.RetryInfo`."
            ),
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "description": "The detail's message type, e.g. google.rpc.ErrorInfo."},
                    "value": {"type": "string", "description": "The detail message, protobuf binary, base64."},
                    "debug": {"description": "The detail as JSON, when the server can render it."},
                },
            },
        },
    },
}  # fmt: skip
_REQUEST_ID_HEADER = {
    "description": "The caller's x-request-id, else one the server made; in the server's log lines.",
    "schema": {"type": "string"},
}
_RETRY_AFTER = {"description": "Seconds after which a retry may be admitted.", "schema": {"type": "integer"}}
_PARAMETERS = {
    "RequestId": {
        "name": "x-request-id",
        "in": "header",
        "description": "Request id for the logs (letters, digits and ._:/=+-, at most 128); echoed back.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:/=+-]{1,128}$"},
    },
    "ConnectProtocolVersion": {
        "name": "Connect-Protocol-Version",
        "in": "header",
        "description": "Optional: Connect clients send 1.",
        "schema": {"const": "1"},
    },
    "ConnectTimeoutMs": {
        "name": "Connect-Timeout-Ms",
        "in": "header",
        "description": "Optional deadline in milliseconds; past it the call ends with deadline_exceeded.",
        "schema": {"type": "integer", "minimum": 1},
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "client", help="output root (default: client/)")
    args = parser.parse_args(argv)
    generate(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
