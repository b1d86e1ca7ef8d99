from __future__ import annotations

import argparse

import pytest

from promptgate.server.config import DEFAULT_MODEL, ConfigError, ServerConfig, parse_port


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    ServerConfig.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults() -> None:
    config = ServerConfig.from_sources(parse([]), {})
    assert config.model == DEFAULT_MODEL
    assert config.threshold == 0.5 and config.port == 50051 and config.engine == "auto"


def test_flags_win_over_environment_which_wins_over_defaults() -> None:
    env = {"PROMPTGATE_PORT": "6000", "PROMPTGATE_THRESHOLD": "0.7", "PROMPTGATE_MODEL": "/m"}
    config = ServerConfig.from_sources(parse(["--port", "7000"]), env)
    assert (config.port, config.threshold, config.model) == (7000, 0.7, "/m")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PROMPTGATE_THRESHOLD": "1.5"}, r"--threshold / PROMPTGATE_THRESHOLD: 1.5 is not in \[0, 1\]"),
        ({"PROMPTGATE_PORT": "http"}, "--port / PROMPTGATE_PORT: cannot parse 'http'"),
        ({"PROMPTGATE_ENGINE": "tensorrt"}, "'tensorrt' is not one of"),
        ({"PROMPTGATE_MAX_TEXT_CHARS": "0"}, "--max-text-chars / PROMPTGATE_MAX_TEXT_CHARS: must be > 0"),
    ],
)
def test_invalid_values_are_reported_with_flag_and_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerConfig.from_sources(parse([]), env)


def test_bad_flag_choice_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        parse(["--device", "tpu"])


@pytest.mark.parametrize(("raw", "port"), [("8080", 8080), ("0", 0), ("off", None), (" OFF ", None), ("65535", 65535)])
def test_parse_port(raw: str, port: int | None) -> None:
    assert parse_port(raw) == port


@pytest.mark.parametrize("raw", ["", "-1", "65536", "http", "8080.5"])
def test_parse_port_refuses_what_is_no_port(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_port(raw)


def test_http_port_is_off_by_default_and_off_on_the_command_line_wins() -> None:
    assert ServerConfig.from_sources(parse([]), {}).http_port is None
    env = {"PROMPTGATE_HTTP_PORT": "8080"}
    assert ServerConfig.from_sources(parse([]), env).http_port == 8080
    assert ServerConfig.from_sources(parse(["--http-port", "0"]), env).http_port == 0
    assert ServerConfig.from_sources(parse(["--http-port", "off"]), env).http_port is None
    assert ServerConfig.from_sources(parse(["--http-port", "9000"]), {"PROMPTGATE_HTTP_PORT": "off"}).http_port == 9000
    with pytest.raises(ConfigError, match="--http-port / PROMPTGATE_HTTP_PORT: cannot parse 'eighty'"):
        ServerConfig.from_sources(parse([]), {"PROMPTGATE_HTTP_PORT": "eighty"})
    with pytest.raises(SystemExit):
        parse(["--http-port", "70000"])
    with pytest.raises(ConfigError, match="is the gRPC port"):
        ServerConfig(port=5000, http_port=5000)
