"""Other gRPC stacks: a Node.js client built from proto/ alone, and buf curl over reflection.

Needs node and npm (the npm registry is reachable from CI); `npm ci` installs the pinned
packages of tests/interop/package-lock.json once into tests/interop/node_modules.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..conftest import server_config
from ..support import REPO, BackgroundServer

INTEROP = REPO / "tests" / "interop"
PROTO = REPO / "proto"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None, reason="node and npm are needed for interop tests"
)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    modules = INTEROP / "node_modules"
    if not (modules / ".package-lock.json").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=INTEROP, check=True, timeout=600)
    return modules


def test_buf_lint_passes(node_modules: Path) -> None:
    out = subprocess.run([str(node_modules / ".bin" / "buf"), "lint"], cwd=PROTO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_node_client_from_proto_alone_calls_every_rpc(server: BackgroundServer, node_modules: Path) -> None:
    out = subprocess.run(
        ["node", "client.mjs", server.target, str(PROTO)], cwd=INTEROP, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["classify"]["id"] == "n1" and summary["classify"]["mode"] == "MODE_FAST"
    assert summary["classify"]["verdict"] in ("VERDICT_BENIGN", "VERDICT_MALICIOUS")
    assert [b["id"] for b in summary["batch"]] == ["b0", "b1", "b2"]
    assert [b["error_code"] for b in summary["batch"]] == [0, 3, 0]  # 3 = INVALID_ARGUMENT
    assert summary["stream"] == sorted(f"s{i}" for i in range(20))
    assert summary["info"] == {"profile": "promptgate", "engine": "transformers", "labels": ["benign", "malicious"]}
    assert summary["invalid"] == {"code": 3, "details": "text is empty"}


def run_buf_curl(node_modules: Path, url: str, data: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(node_modules / ".bin" / "buf"), "curl", *options, "-d", data, url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def buf_curl(node_modules: Path, url: str, data: str, *options: str) -> list[dict]:
    """The response messages of a buf curl call that succeeds."""
    out = run_buf_curl(node_modules, url, data, *options)
    assert out.returncode == 0, out.stderr
    # One JSON object per response message (several for a stream).
    decoder, text, messages = json.JSONDecoder(), out.stdout.strip(), []
    while text:
        message, end = decoder.raw_decode(text)
        messages.append(message)
        text = text[end:].strip()
    return messages


def test_buf_curl_over_reflection_calls_every_rpc(server: BackgroundServer, node_modules: Path) -> None:
    def call(method: str, data: str) -> list[dict]:
        url = f"http://{server.target}/promptgate.v1.ClassifierService/{method}"
        return buf_curl(node_modules, url, data, "--protocol", "grpc", "--http2-prior-knowledge")

    [one] = call("Classify", '{"id": "c1", "text": "hi", "mode": "MODE_REASONED"}')
    assert one["id"] == "c1" and one["mode"] == "MODE_REASONED" and "verdict" in one
    [batch] = call("ClassifyBatch", '{"requests": [{"text": "a"}, {"text": "b"}]}')
    assert len(batch["responses"]) == 2
    stream = call("ClassifyStream", '{"id": "x", "text": "a"} {"id": "y", "text": "b"}')
    assert sorted(m["id"] for m in stream) == ["x", "y"]
    [info] = call("GetModelInfo", "{}")
    assert info["profile"] == "promptgate"


@pytest.fixture(scope="module")
def http_server(tiny_model: Path) -> Iterator[BackgroundServer]:
    with BackgroundServer(server_config(tiny_model, http_port=0)) as srv:
        yield srv


@pytest.mark.parametrize("protocol", ["connect", "grpcweb"])
def test_buf_curl_over_the_http_face(http_server: BackgroundServer, node_modules: Path, protocol: str) -> None:
    """Buf's own Connect and gRPC-Web clients, with the schema from proto/, against --http-port."""
    assert http_server.handle is not None
    base = f"http://127.0.0.1:{http_server.handle.http_port}/promptgate.v1.ClassifierService"
    options = ("--protocol", protocol, "--schema", str(PROTO))

    def call(method: str, data: str) -> list[dict]:
        return buf_curl(node_modules, f"{base}/{method}", data, *options)

    [one] = call("Classify", '{"id": "c1", "text": "hi"}')
    assert one["id"] == "c1" and one["mode"] == "MODE_FAST" and "verdict" in one
    # (No failed item here: its google.rpc.ErrorInfo detail is not in proto/, so buf could not print it.)
    [batch] = call("ClassifyBatch", '{"requests": [{"id": "a", "text": "a"}, {"id": "b", "text": "b"}]}')
    assert [r["id"] for r in batch["responses"]] == ["a", "b"]
    [info] = call("GetModelInfo", "{}")
    assert info["engine"] == "transformers"
    bad = run_buf_curl(node_modules, f"{base}/Classify", '{"text": ""}', *options)
    assert bad.returncode != 0 and "invalid_argument" in bad.stderr.lower() and "text is empty" in bad.stderr
