from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from promptgate.server.config import (
    DEFAULT_MODEL,
    ConfigError,
    ServerConfig,
    parse_port,
    parse_token_file,
    parse_token_list,
)


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
        ({"PROMPTGATE_ENGINE_NICENESS": "20"}, "--engine-niceness / PROMPTGATE_ENGINE_NICENESS: 20 is not in 0 to 19"),
        ({"PROMPTGATE_ENGINE_NICENESS": "-1"}, "--engine-niceness / PROMPTGATE_ENGINE_NICENESS: -1 is not in 0 to 19"),
    ],
)
def test_invalid_values_are_reported_with_flag_and_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerConfig.from_sources(parse([]), env)


def test_bad_flag_choice_is_a_usage_error() -> None:
    with pytest.raises(SystemExit):
        parse(["--device", "tpu"])


# -- parsing by type hint ----------------------------------------------------------------------


def test_each_setting_parses_by_its_type_hint() -> None:
    env = {
        "PROMPTGATE_ENFORCE_EAGER": "yes",  # bool
        "PROMPTGATE_MAX_QUEUE": "4096",  # int
        "PROMPTGATE_THRESHOLD": "0.25",  # float
        "PROMPTGATE_MAX_TEXT_TOKENS": "512",  # int | None
        "PROMPTGATE_KV_CACHE_MEMORY_GIB": "1.5",  # float | None
        "PROMPTGATE_PROFILE": "narasimha-m",  # str | None
    }
    config = ServerConfig.from_sources(parse(["--log-query-text", "off", "--max-num-seqs", "8"]), env)
    assert config.enforce_eager is True and config.log_query_text is False
    assert (config.max_queue, config.max_text_tokens, config.max_num_seqs) == (4096, 512, 8)
    assert (config.threshold, config.kv_cache_memory_gib, config.profile) == (0.25, 1.5, "narasimha-m")
    with pytest.raises(ConfigError, match="PROMPTGATE_ENFORCE_EAGER: cannot parse 'maybe': expected true or false"):
        ServerConfig.from_sources(None, {"PROMPTGATE_ENFORCE_EAGER": "maybe"})
    with pytest.raises(ConfigError, match=r"PROMPTGATE_MAX_TEXT_TOKENS: cannot parse '1\.5'"):
        ServerConfig.from_sources(None, {"PROMPTGATE_MAX_TEXT_TOKENS": "1.5"})


# -- ports: 0 picks a free one, off is said explicitly -------------------------------------------


def test_parse_port() -> None:
    assert parse_port("9090") == 9090 and parse_port("0") == 0
    assert parse_port("off") is None and parse_port(" OFF ") is None
    with pytest.raises(ValueError, match="expected a port number or off"):
        parse_port("none")


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], {}, 9090),
        (["--metrics-port", "0"], {}, 0),
        (["--metrics-port", "off"], {}, None),
        ([], {"PROMPTGATE_METRICS_PORT": "off"}, None),
        ([], {"PROMPTGATE_METRICS_PORT": "9100"}, 9100),
        # An explicit off on the command line wins over a port in the environment, and back.
        (["--metrics-port", "off"], {"PROMPTGATE_METRICS_PORT": "9100"}, None),
        (["--metrics-port", "9200"], {"PROMPTGATE_METRICS_PORT": "off"}, 9200),
    ],
)
def test_metrics_port_takes_a_port_zero_or_off(argv: list[str], env: dict[str, str], expected: int | None) -> None:
    assert ServerConfig.from_sources(parse(argv), env).metrics_port == expected


def test_bad_metrics_port_is_reported() -> None:
    with pytest.raises(ConfigError, match="--metrics-port / PROMPTGATE_METRICS_PORT: cannot parse 'none'"):
        ServerConfig.from_sources(None, {"PROMPTGATE_METRICS_PORT": "none"})
    with pytest.raises(ConfigError, match="--metrics-port / PROMPTGATE_METRICS_PORT: 70000 is not a port"):
        ServerConfig(metrics_port=70000)
    with pytest.raises(SystemExit):
        parse(["--metrics-port", "none"])


def test_metrics_serve_http_on_port_zero_returns_the_bound_port() -> None:
    import httpx

    from promptgate.server.metrics import ServerMetrics

    metrics = ServerMetrics()
    try:
        port = metrics.serve_http("127.0.0.1", 0)
        assert port > 0
        assert "promptgate_queue_depth" in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    finally:
        metrics.close()


# -- the engine's settings come from the config --------------------------------------------------


def test_engine_settings_are_built_from_the_config() -> None:
    from promptgate.server.domain import Mode
    from promptgate.server.engine import ScreeningSettings
    from promptgate.server.engine.vllm_backend import VllmSettings

    # Each of vLLM's settings is the server setting of the same name.
    vllm = dict(
        dtype="bfloat16",
        max_model_len=4096,
        max_num_batched_tokens=8192,
        max_num_seqs=64,
        gpu_memory_utilization=0.5,
        tensor_parallel_size=2,
        data_parallel_size=3,
        enforce_eager=True,
        kv_cache_memory_gib=4.0,
        block_size=16,
        engine_niceness=5,
    )
    config = ServerConfig(
        default_mode="auto",
        threshold=0.3,
        auto_band=0.1,
        max_rationale_tokens=64,
        max_text_tokens=900,
        **vllm,
        device="cpu",
        max_engine_batch=8,
        max_engine_batch_tokens=2048,
    )
    assert config.screening_settings() == ScreeningSettings(
        default_mode=Mode.AUTO, threshold=0.3, auto_band=0.1, max_rationale_tokens=64, max_text_tokens=900
    )
    assert config.vllm_settings(max_logprobs=40) == VllmSettings(**vllm, max_logprobs=40)
    # Bulk screening in the process (screen --local, Ray, eval) asks vLLM for its offline defaults.
    assert config.vllm_settings(max_logprobs=40, offline=True).offline
    assert not config.vllm_settings(max_logprobs=40).offline
    assert config.transformers_options() == {
        "device": "cpu",
        "dtype": "bfloat16",
        "max_batch_size": 8,
        "max_batch_tokens": 2048,
        "max_model_len": 4096,
    }


def test_a_settings_field_without_a_server_setting_fails_loudly() -> None:
    @dataclasses.dataclass(frozen=True)
    class Knobs:
        dtype: str = "auto"
        new_knob: int = 1

    with pytest.raises(TypeError, match=r"Knobs.new_knob is no server setting"):
        ServerConfig()._settings(Knobs)
    assert ServerConfig()._settings(Knobs, new_knob=5) == Knobs(dtype="auto", new_knob=5)


def test_the_config_loads_without_torch_or_vllm() -> None:
    code = (
        "import sys\n"
        "from promptgate.server.config import ServerConfig\n"
        "c = ServerConfig()\n"
        "c.screening_settings(); c.vllm_settings(20); c.transformers_options()\n"
        "print(sorted(m for m in ('torch', 'vllm', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- tokens: read and parsed once, at validation -------------------------------------------------


def test_tokens_are_read_once_when_the_config_is_validated(tmp_path: Path) -> None:
    from promptgate.server.security import load_tokens

    path = tmp_path / "tokens"
    path.write_text("# rotated 2024-05\n  tok-1  \n\n#tok-old\ntok-2\n", encoding="utf-8")
    config = ServerConfig(auth_token_file=str(path), auth_tokens="env-1, env-2\nenv-3")
    path.write_text("changed-after-validation\n", encoding="utf-8")
    # What was checked to hold a token is what is served: the file is not read again.
    assert config.accepted_tokens == ("tok-1", "tok-2", "env-1", "env-2", "env-3")
    assert load_tokens(config) == ["tok-1", "tok-2", "env-1", "env-2", "env-3"]
    assert ServerConfig().accepted_tokens == ()
    # Re-validated copies read the file as it is now.
    assert dataclasses.replace(config, auth_tokens=None).accepted_tokens == ("changed-after-validation",)


def test_tokens_stay_out_of_repr_equality_and_the_log(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("file-s3cret\n", encoding="utf-8")
    config = ServerConfig(auth_token_file=str(path), auth_tokens="env-s3cret")
    assert "s3cret" not in repr(config) and "s3cret" not in json.dumps(config.as_log_dict())
    # The parsed tokens are no field: asdict (which the log starts from) holds only the settings.
    assert "file-s3cret" not in json.dumps(dataclasses.asdict(config))
    assert "_accepted_tokens" not in {f.name for f in dataclasses.fields(ServerConfig)}
    assert config == ServerConfig(auth_token_file=str(path), auth_tokens="env-s3cret")


def test_token_parsers() -> None:
    assert parse_token_file("a\n  # c\n\n b \n#d") == ["a", "b"]
    assert parse_token_list(" a, b ,\n c,,") == ["a", "b", "c"]
    assert parse_token_file("# only comments\n\n") == [] and parse_token_list(" , \n ") == []


@pytest.mark.parametrize(("raw", "port"), [("8080", 8080), ("0", 0), ("off", None), (" OFF ", None), ("65535", 65535)])
def test_parse_port_cases(raw: str, port: int | None) -> None:
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
