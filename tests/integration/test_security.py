"""Transport security and caller authentication over real channels: TLS, mutual TLS, bearer tokens.

The certificates come from `tests.certs` (a real throwaway PKI); servers are real, on port 0.
A refused TLS handshake reaches a gRPC client as UNAVAILABLE (the connection never comes
up), so that is what the refusals are checked against, along with "nothing was answered".
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from promptgate.client import (
    AsyncClient,
    Client,
    UnauthenticatedError,
    UnavailableError,
    Verdict,
)
from promptgate.client.health import check_health
from promptgate.server import ConfigError, ServerConfig
from promptgate.server.security import TokenAuthInterceptor, load_tokens
from promptgate.v1 import classifier_pb2 as pb
from promptgate.v1 import classifier_pb2_grpc as pb_grpc

from ..certs import Pki, write_pki
from ..support import BackgroundServer, free_port, scrape, server_config, wait_serving

CLI = [sys.executable, "-m", "promptgate.cli"]
# Tokens of the token server: two from the file (one commented out), three from the
# environment-only setting, comma- and newline-separated.
TOKEN_FILE = "# tokens of the agent back ends\n\n  file-token-1  \n# disabled-token\nfile-token-2\n"
ENV_TOKENS = "env-token-a,env-token-b\nenv-token-c"


def _verdict(result: object) -> bool:
    """A verdict from the model (not the failure policy's stand-in)."""
    verdict = getattr(result, "verdict", None)
    return verdict in (Verdict.BENIGN, Verdict.MALICIOUS) and not getattr(result, "failed", True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return write_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(tiny_model: Path, pki: Pki) -> Iterator[BackgroundServer]:
    config = server_config(tiny_model, tls_cert=str(pki.path("server.crt")), tls_key=str(pki.path("server.key")))
    with BackgroundServer(config) as srv:
        yield srv


@pytest.fixture(scope="module")
def mtls_server(tiny_model: Path, pki: Pki) -> Iterator[BackgroundServer]:
    config = server_config(
        tiny_model,
        tls_cert=str(pki.path("server.crt")),
        tls_key=str(pki.path("server.key")),
        tls_client_ca=str(pki.path("client_ca.crt")),
    )
    with BackgroundServer(config) as srv:
        yield srv


@pytest.fixture(scope="module")
def token_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens.txt"
    path.write_text(TOKEN_FILE, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def token_server(tiny_model: Path, token_file: Path) -> Iterator[BackgroundServer]:
    config = server_config(tiny_model, auth_token_file=str(token_file), auth_tokens=ENV_TOKENS, metrics_port=0)
    with BackgroundServer(config) as srv:
        yield srv


def _requests_total(srv: BackgroundServer, rpc: str, code: str) -> float:
    return scrape(srv).get(("promptgate_requests_total", (("code", code), ("rpc", rpc))), 0.0)


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})})


# -- TLS --------------------------------------------------------------------------------------


def test_tls_client_trusting_the_ca_is_served(tls_server: BackgroundServer, pki: Pki) -> None:
    port = tls_server.handle.port if tls_server.handle else 0
    # The CA as a file path, as PEM bytes; the target as an IP (in the certificate), as a
    # name, and as an IP with the name to check given explicitly.
    for target, options in (
        (f"127.0.0.1:{port}", {"root_certificates": pki.path("server_ca.crt")}),
        (f"localhost:{port}", {"root_certificates": pki.server_ca.cert}),
        (f"127.0.0.1:{port}", {"root_certificates": pki.server_ca.cert, "server_name": "localhost"}),
    ):
        with Client(target, max_attempts=1, on_error="raise", timeout=30, **options) as client:  # type: ignore[arg-type]
            assert _verdict(client.classify("hello over TLS"))
            assert all(_verdict(r) for r in client.classify_batch(["a", "b"]))
            assert sorted(r.id for r in client.classify_stream(["x", "y", "z"])) == ["0", "1", "2"]

    async def over_async() -> bool:
        async with AsyncClient(
            tls_server.target, root_certificates=pki.server_ca.cert, on_error="raise", timeout=30
        ) as client:
            return _verdict(await client.classify("async over TLS"))

    assert asyncio.run(over_async())
    assert check_health(tls_server.target, root_certificates=pki.server_ca.cert) == "SERVING"


def test_plaintext_client_to_a_tls_port_is_refused(tls_server: BackgroundServer) -> None:
    client = Client(tls_server.target, max_attempts=1, on_error="raise", timeout=10)
    with client, pytest.raises(UnavailableError):
        client.classify("hello in the clear")
    # The default policy answers for the query that could not be screened: never "benign".
    with Client(tls_server.target, max_attempts=1, timeout=10) as client:
        result = client.classify("hello in the clear")
    assert result.failed and result.verdict is Verdict.MALICIOUS
    assert result.error is not None and result.error.code == "UNAVAILABLE"
    assert check_health(tls_server.target).startswith("UNREACHABLE: UNAVAILABLE")


def test_client_trusting_another_ca_or_expecting_another_name_is_refused(
    tls_server: BackgroundServer, pki: Pki
) -> None:
    for options in (
        {"root_certificates": pki.other_ca.cert},  # the server's certificate is not from a CA it trusts
        {"tls": True},  # the system's trust store knows nothing of the test CA
        {"root_certificates": pki.server_ca.cert, "server_name": "some-other-service"},  # right CA, wrong name
    ):
        client = Client(tls_server.target, max_attempts=1, on_error="raise", timeout=10, **options)  # type: ignore[arg-type]
        with client, pytest.raises(UnavailableError):
            client.classify("hello")


def test_server_with_a_certificate_from_another_ca_is_refused(tiny_model: Path, pki: Pki) -> None:
    config = server_config(
        tiny_model, tls_cert=str(pki.path("other_server.crt")), tls_key=str(pki.path("other_server.key"))
    )
    with BackgroundServer(config) as impostor:
        client = Client(impostor.target, root_certificates=pki.server_ca.cert, max_attempts=1, on_error="raise")
        with client, pytest.raises(UnavailableError):
            client.classify("hello")


# -- mutual TLS -------------------------------------------------------------------------------


def test_mtls_client_certificate_from_the_client_ca_is_served(mtls_server: BackgroundServer, pki: Pki) -> None:
    with Client(
        mtls_server.target,
        root_certificates=pki.server_ca.cert,
        client_cert=pki.path("client.crt"),
        client_key=pki.path("client.key"),
        max_attempts=1,
        on_error="raise",
        timeout=30,
    ) as client:
        assert _verdict(client.classify("hello with a client certificate"))
        assert client.model_info().profile == "promptgate"


def test_mtls_without_a_certificate_or_with_one_from_another_ca_is_refused(
    mtls_server: BackgroundServer, pki: Pki
) -> None:
    for options in (
        {},
        {"client_cert": pki.other_client.cert, "client_key": pki.other_client.key},
        # A certificate the server's own CA signed is still not a client certificate of the client CA.
        {"client_cert": pki.server.cert, "client_key": pki.server.key},
    ):
        client = Client(
            mtls_server.target,
            root_certificates=pki.server_ca.cert,
            max_attempts=1,
            on_error="raise",
            timeout=10,
            **options,  # type: ignore[arg-type]
        )
        with client, pytest.raises(UnavailableError):
            client.classify("hello")
    # Probes need a client certificate too: the handshake comes before any method.
    assert check_health(mtls_server.target, root_certificates=pki.server_ca.cert).startswith("UNREACHABLE")
    assert (
        check_health(
            mtls_server.target,
            root_certificates=pki.server_ca.cert,
            client_cert=pki.client.cert,
            client_key=pki.client.key,
        )
        == "SERVING"
    )


def test_client_certificate_without_its_key_is_a_usage_error(pki: Pki) -> None:
    with pytest.raises(ValueError, match="client_cert and client_key"):
        Client("127.0.0.1:1", root_certificates=pki.server_ca.cert, client_cert=pki.client.cert)


# -- bearer tokens ----------------------------------------------------------------------------


def test_calls_without_an_accepted_token_are_unauthenticated(token_server: BackgroundServer) -> None:
    for token in (None, "wrong-token", "disabled-token", "file-token-1x", "env-token"):
        with Client(token_server.target, token=token, max_attempts=1, on_error="raise", timeout=30) as client:
            with pytest.raises(UnauthenticatedError, match="bearer token"):
                client.classify("hello")
            with pytest.raises(UnauthenticatedError):
                client.classify_batch(["hello"])
            with pytest.raises(UnauthenticatedError):
                list(client.classify_stream(["hello"]))
            with pytest.raises(UnauthenticatedError):
                client.model_info()
    # fail_closed (the default) never turns a refused call into a benign verdict.
    with Client(token_server.target, token="wrong-token", max_attempts=1, timeout=30) as client:
        result = client.classify("hello")
    assert result.failed and result.verdict is Verdict.MALICIOUS and result.error is not None
    assert result.error.code == "UNAUTHENTICATED"


def test_tokens_from_the_file_and_the_environment_setting_are_accepted(token_server: BackgroundServer) -> None:
    for token in ("file-token-1", "file-token-2", "env-token-a", "env-token-b", "env-token-c"):
        with Client(token_server.target, token=token, max_attempts=1, on_error="raise", timeout=30) as client:
            assert _verdict(client.classify("hello"))
            assert all(_verdict(r) for r in client.classify_batch(["a", "b"]))
            assert len(list(client.classify_stream(["a", "b"]))) == 2


def test_rejection_keeps_the_request_id_and_reflection_needs_a_token(token_server: BackgroundServer) -> None:
    with grpc.insecure_channel(token_server.target) as channel:
        stub = pb_grpc.ClassifierServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Classify(pb.ClassifyRequest(text="hi"), timeout=10, metadata=(("x-request-id", "auth-probe-7"),))
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert dict(info.value.trailing_metadata())["x-request-id"] == "auth-probe-7"
        # Reflection describes the API: behind the token like the classifier itself.
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_health_is_open_without_a_token(token_server: BackgroundServer) -> None:
    assert check_health(token_server.target) == "SERVING"
    assert check_health(token_server.target, service="promptgate.v1.ClassifierService") == "SERVING"
    assert check_health(token_server.target, token="wrong-token") == "SERVING"  # not sent: health needs none


def test_unauthenticated_calls_are_counted_in_metrics(token_server: BackgroundServer) -> None:
    before = {rpc: _requests_total(token_server, rpc, "UNAUTHENTICATED") for rpc in ("Classify", "ClassifyBatch")}
    ok_before = _requests_total(token_server, "Classify", "OK")
    with Client(token_server.target, token="nope", max_attempts=1, on_error="raise", timeout=30) as client:
        for _ in range(3):
            with pytest.raises(UnauthenticatedError):
                client.classify("hello")
        with pytest.raises(UnauthenticatedError):
            client.classify_batch(["a", "b"])
    with Client(token_server.target, token="env-token-b", max_attempts=1, on_error="raise", timeout=30) as client:
        client.classify("hello")
    assert _requests_total(token_server, "Classify", "UNAUTHENTICATED") - before["Classify"] == 3
    assert _requests_total(token_server, "ClassifyBatch", "UNAUTHENTICATED") - before["ClassifyBatch"] == 1
    assert _requests_total(token_server, "Classify", "OK") - ok_before == 1


# -- the command line ---------------------------------------------------------------------------


def test_health_and_info_commands_exit_codes(
    token_server: BackgroundServer,
    tls_server: BackgroundServer,
    mtls_server: BackgroundServer,
    pki: Pki,
    token_file: Path,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    (tmp_path / "token").write_text("file-token-2\n")
    ca = ["--tls-ca", str(pki.path("server_ca.crt"))]
    client_cert = ["--tls-cert", str(pki.path("client.crt")), "--tls-key", str(pki.path("client.key"))]
    with BackgroundServer(server_config(tiny_model), load=False) as loading:
        cases = [
            (["health", "--target", token_server.target], {}, 0, "SERVING"),
            (["health", "--target", f"127.0.0.1:{free_port()}", "--timeout", "2"], {}, 1, "UNREACHABLE"),
            (["health", "--target", loading.target], {}, 1, "NOT_SERVING"),
            (["health", "--target", tls_server.target, *ca], {}, 0, "SERVING"),
            (["health", "--target", tls_server.target, "--timeout", "2"], {}, 1, "UNREACHABLE"),
            (["health", "--target", mtls_server.target, *ca, *client_cert], {}, 0, "SERVING"),
            (["health", "--target", mtls_server.target, *ca, "--timeout", "2"], {}, 1, "UNREACHABLE"),
            (["info", "--target", token_server.target, "--token-file", str(tmp_path / "token")], {}, 0, "promptgate"),
            (["info", "--target", token_server.target], {}, 1, "UNAUTHENTICATED"),
            (["info", "--target", token_server.target], {"PROMPTGATE_TOKEN": "env-token-c"}, 0, "promptgate"),
            (["classify", "--target", mtls_server.target, *ca, *client_cert, "hi"], {}, 0, "\t"),
        ]
        # All at once: each is its own process, and none depends on another.
        procs = [
            (
                case,
                subprocess.Popen(
                    [*CLI, *case[0]],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, **case[1]},
                ),
            )
            for case in cases
        ]
        for (args, _, code, expected), proc in procs:
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == code, (args, out, err)
            assert expected in out + err, (args, out, err)


# -- secrets stay out of logs ------------------------------------------------------------------


def test_tokens_are_redacted_from_the_config_log_and_are_not_flags() -> None:
    import argparse

    config = ServerConfig(auth_tokens="s3cret-token,another-s3cret")
    logged = json.dumps(config.as_log_dict())
    assert "s3cret" not in logged and json.loads(logged)["auth_tokens"] == "<redacted>"
    assert ServerConfig().as_log_dict()["auth_tokens"] is None  # nothing to hide: nothing shown

    parser = argparse.ArgumentParser()
    ServerConfig.add_arguments(parser)
    assert "--auth-tokens" not in parser.format_help()  # a flag would show in `ps`
    from_env = ServerConfig.from_sources(parser.parse_args([]), {"PROMPTGATE_AUTH_TOKENS": "a, b"})
    assert from_env.auth_tokens == "a, b" and load_tokens(from_env) == ["a", "b"]


def test_served_process_never_logs_a_token(tiny_model: Path, token_file: Path, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "server.log"
    env = {**os.environ, "PROMPTGATE_AUTH_TOKENS": "env-s3cret-token"}
    cmd = [
        *CLI, "serve", "--model", str(tiny_model), "--engine", "transformers", "--host", "127.0.0.1",
        "--port", str(port), "--metrics-port", "off", "--auth-token-file", str(token_file), "--grace-period", "2",
        "--log-level", "debug",
    ]  # fmt: skip
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    try:
        wait_serving(f"127.0.0.1:{port}", timeout=120)
        target = f"127.0.0.1:{port}"
        client = Client(target, token="presented-wrong-token", max_attempts=1, on_error="raise", timeout=30)
        with client, pytest.raises(UnauthenticatedError):
            client.classify("hello")
        for token in ("env-s3cret-token", "file-token-1"):
            with Client(target, token=token, max_attempts=1, on_error="raise", timeout=30) as client:
                assert _verdict(client.classify("hello"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log_path.read_text()
    for secret in ("env-s3cret-token", "file-token-1", "file-token-2", "presented-wrong-token", "Bearer"):
        assert secret not in text, f"{secret!r} is in the server's log"
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    config = next(r for r in records if r.get("event") == "config")
    assert config["auth_tokens"] == "<redacted>" and config["auth_token_file"] == str(token_file)
    rejected = [r for r in records if r.get("event") == "unauthenticated"]
    assert [r["method"] for r in rejected] == ["/promptgate.v1.ClassifierService/Classify"]
    listening = next(r for r in records if r.get("event") == "listening")
    assert listening["token_auth"] is True


# -- the interceptor's token check, unit cases ---------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "accepted"),
    [
        (None, False),
        ((), False),
        ((("x-request-id", "r1"),), False),
        ((("authorization", "Bearer alpha"),), True),
        ((("authorization", "bearer alpha"),), True),  # the scheme is case-insensitive
        ((("authorization", "BEARER   beta  "),), True),  # spaces around the token do not count
        ((("authorization", "Bearer gamma"),), False),
        ((("authorization", "Bearer Alpha"),), False),  # the token itself is case-sensitive
        ((("authorization", "Bearer alph"),), False),  # a prefix of an accepted token
        ((("authorization", "Bearer alphaa"),), False),
        ((("authorization", "alpha"),), False),  # no scheme
        ((("authorization", "Basic alpha"),), False),
        ((("authorization", "Bearer "),), False),
        ((("authorization", "Bearer"),), False),
        ((("authorization", b"Bearer alpha"),), False),  # binary metadata is not a bearer token
        ((("x-authorization", "Bearer alpha"),), False),
        ((("x-request-id", "r1"), ("authorization", "Bearer beta")), True),
        ((("authorization", "Bearer \u00e9t\u00e9-\ud800"),), False),  # odd text must not raise
    ],
)
def test_token_interceptor_accepts(metadata: object, accepted: bool) -> None:
    interceptor = TokenAuthInterceptor(["alpha", "beta"])
    assert interceptor.accepts(metadata) is accepted  # type: ignore[arg-type]


def test_token_interceptor_needs_a_token_and_load_tokens_reads_both_sources(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one token"):
        TokenAuthInterceptor([])
    path = tmp_path / "tokens"
    path.write_text(TOKEN_FILE)
    config = ServerConfig(auth_token_file=str(path), auth_tokens=ENV_TOKENS)
    assert load_tokens(config) == ["file-token-1", "file-token-2", "env-token-a", "env-token-b", "env-token-c"]
    assert load_tokens(ServerConfig()) == []
    interceptor = TokenAuthInterceptor([f"token-{i}" for i in range(1000)])
    assert interceptor.accepts((("authorization", "Bearer token-999"),))
    assert not interceptor.accepts((("authorization", "Bearer token-1000"),))


def test_auth_configured_without_any_token_is_a_startup_error(tiny_model: Path, tmp_path: Path) -> None:
    # A token file that holds only comments (a secret mounted empty, every token rotated
    # out) must not leave the server open to everyone: it is refused at start.
    path = tmp_path / "tokens"
    path.write_text("# every token rotated out\n\n   \n")
    with pytest.raises(ConfigError, match="--auth-token-file / PROMPTGATE_AUTH_TOKEN_FILE"):
        server_config(tiny_model, auth_token_file=str(path))
    with pytest.raises(ConfigError, match="PROMPTGATE_AUTH_TOKENS"):
        server_config(tiny_model, auth_tokens=" , \n ,")
    out = run_cli("serve", "--model", str(tiny_model), "--port", "0", "--auth-token-file", str(path))
    assert out.returncode == 2 and "PROMPTGATE_AUTH_TOKEN_FILE" in out.stderr, out.stderr
