"""The `promptgate` command: serve, classify, info, tiny-model.

This is the entry point: the only place that reads the environment. The client commands
need only the base install; `serve` and `tiny-model` need the `server` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from promptgate.client import Classification, Client, ItemError, PromptgateError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
_SERVER_EXTRA_HINT = "this command needs the server extra: pip install 'promptgate[server]'"


def _target_default(environ: os._Environ[str] | dict[str, str]) -> str:
    return environ.get("PROMPTGATE_TARGET", "localhost:50051")


def build_parser(environ: dict[str, str] | os._Environ[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="promptgate", description="Screen user queries to AI agents for prompt attacks."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server")
    try:
        from promptgate.server.config import ServerConfig
    except ImportError:
        serve.set_defaults(server_missing=True)
    else:
        ServerConfig.add_arguments(serve)

    target_help = "server address host:port [env PROMPTGATE_TARGET; default localhost:50051]"
    classify = sub.add_parser("classify", help="classify queries (arguments, or one per line on stdin)")
    classify.add_argument("texts", nargs="*", metavar="TEXT", help="queries; none or '-' reads stdin, one per line")
    classify.add_argument("--target", default=_target_default(environ), help=target_help)
    classify.add_argument("--mode", choices=["fast", "reasoned", "auto"], default=None, help="default: the server's")
    classify.add_argument("--threshold", type=float, default=None, help="malicious-probability threshold")
    classify.add_argument("--json", action="store_true", help="one JSON object per line")
    classify.add_argument("--timeout", type=float, default=60.0, help="deadline per call, seconds")

    info = sub.add_parser("info", help="describe the served model")
    info.add_argument("--target", default=_target_default(environ), help=target_help)
    info.add_argument("--json", action="store_true", help="print JSON")

    tiny = sub.add_parser(
        "tiny-model", help="build a tiny random-weight Qwen3-shaped model (tests, offline smoke runs)"
    )
    tiny.add_argument("out", help="output directory")
    tiny.add_argument("--profile", default="promptgate", help="built-in profile written as promptgate.json")
    tiny.add_argument("--corpus", nargs="*", default=[], help="text/JSONL files to train the tokenizer on")
    tiny.add_argument(
        "--shape", default="tiny", choices=["tiny", "qwen3-0.6b"], help="qwen3-0.6b: the real model's exact shape"
    )
    return parser


def _serve(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str]) -> int:
    if getattr(args, "server_missing", False):
        print(f"promptgate serve: {_SERVER_EXTRA_HINT}", file=sys.stderr)
        return EXIT_FAILED
    import asyncio

    from promptgate.server import ConfigError, ServerConfig, serve

    try:
        config = ServerConfig.from_sources(args, environ)
    except ConfigError as exc:
        print(f"promptgate serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return asyncio.run(serve(config))


def _read_texts(texts: Sequence[str]) -> list[str]:
    if not texts or list(texts) == ["-"]:
        return [line.rstrip("\n") for line in sys.stdin if line.strip()]
    return list(texts)


def _print_result(result: Classification | ItemError, as_json: bool, text: str) -> None:
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    elif isinstance(result, ItemError):
        print(f"ERROR\t{result.code}: {result.message}\t{text[:80]}")
    else:
        extra = f"\t{result.category}" if result.category else ""
        print(f"{result.verdict.value.upper()}\t{result.malicious_probability:.4f}{extra}\t{text[:80]}")
        if result.rationale:
            print(f"\t{result.rationale}")


def _classify(args: argparse.Namespace) -> int:
    texts = _read_texts(args.texts)
    if not texts:
        print("promptgate classify: no text given", file=sys.stderr)
        return EXIT_USAGE
    failed = False
    with Client(args.target, timeout=args.timeout) as client:
        limit = client.model_info().limits["max_batch_items"] or 1
        for start in range(0, len(texts), limit):
            chunk = texts[start : start + limit]
            results = client.classify_batch(chunk, mode=args.mode, threshold=args.threshold)
            for text, result in zip(chunk, results, strict=True):
                failed |= isinstance(result, ItemError)
                _print_result(result, args.json, text)
    return EXIT_FAILED if failed else EXIT_OK


def _info(args: argparse.Namespace) -> int:
    with Client(args.target) as client:
        info = client.model_info()
    data = {
        "model": info.model,
        "profile": info.profile,
        "engine": f"{info.engine} {info.engine_version}",
        "device": info.device,
        "dtype": info.dtype,
        "labels": {x.label: x.verdict.value for x in info.labels},
        "categories": list(info.categories),
        "rationale_trained": info.rationale_trained,
        "default_mode": info.default_mode.value,
        "default_threshold": round(info.default_threshold, 4),
        "auto_band": round(info.auto_band, 4),
        "limits": dict(info.limits),
        "server_version": info.server_version,
    }
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            if key == "labels" and len(value) > 6:
                value = f"{len(value)} labels"
            if key == "categories" and len(value) > 6:
                value = f"{len(value)} categories"
            print(f"{key}: {value}")
    return EXIT_OK


def _tiny_model(args: argparse.Namespace) -> int:
    try:
        from promptgate.trainer.tiny_model import SHAPES, build_tiny_model
    except ImportError:
        print(f"promptgate tiny-model: {_SERVER_EXTRA_HINT}", file=sys.stderr)
        return EXIT_FAILED
    out = build_tiny_model(args.out, profile=args.profile, corpus_files=args.corpus, spec=SHAPES[args.shape])
    print(out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    environ = os.environ
    args = build_parser(environ).parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args, environ)
        if args.command == "classify":
            return _classify(args)
        if args.command == "info":
            return _info(args)
        if args.command == "tiny-model":
            return _tiny_model(args)
    except PromptgateError as exc:
        print(f"promptgate {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `promptgate classify ... | head`: the reader has all it wants
        sys.stderr.close()
        return EXIT_OK
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
