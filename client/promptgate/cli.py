"""The `promptgate` command: the client's classify, info, health and screen, plus what other parts add.

This is the entry point: the only place that reads the environment. The client's commands
need only the base install. The server (`serve`, `screen --local/--ray`) and the trainer
(`data`, `train`, `eval`, `tiny-model`) add theirs through the `promptgate.commands` entry
points (see `promptgate.commands`), so nothing here imports an upper layer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from promptgate.client import Classification, Client, Document, ItemError, PromptgateError, ScreenRequest
from promptgate.commands import CommandLine, register_installed

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _target_default(environ: Mapping[str, str]) -> str:
    return environ.get("PROMPTGATE_TARGET", "localhost:50051")


def _add_connection_args(parser: argparse.ArgumentParser) -> None:
    """TLS, mutual TLS and token flags of every command that calls a server."""
    group = parser.add_argument_group("connection")
    group.add_argument("--tls", action="store_true", help="connect with TLS (the system's trust store)")
    group.add_argument("--tls-ca", metavar="PEM", help="CA bundle to verify the server with (implies --tls)")
    group.add_argument("--tls-cert", metavar="PEM", help="client certificate for mutual TLS (implies --tls)")
    group.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    group.add_argument("--tls-server-name", help="name the server's certificate must carry, if not the target's host")
    group.add_argument("--token-file", metavar="FILE", help="file holding the bearer token [or env PROMPTGATE_TOKEN]")


def _connection(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, object]:
    """Client settings from the connection flags; the token comes from a file or the environment."""
    token = environ.get("PROMPTGATE_TOKEN") or None
    if args.token_file:
        token = Path(args.token_file).read_text(encoding="utf-8").strip()
    return {
        "tls": args.tls,
        "root_certificates": Path(args.tls_ca) if args.tls_ca else None,
        "client_cert": Path(args.tls_cert) if args.tls_cert else None,
        "client_key": Path(args.tls_key) if args.tls_key else None,
        "server_name": args.tls_server_name,
        "token": token,
    }


def build_parser(environ: Mapping[str, str]) -> tuple[argparse.ArgumentParser, CommandLine]:
    parser = argparse.ArgumentParser(
        prog="promptgate", description="Screen user queries to AI agents for prompt attacks."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    target_help = "server address host:port [env PROMPTGATE_TARGET; default localhost:50051]"
    classify = sub.add_parser("classify", help="classify queries (arguments, or one per line on stdin)")
    classify.add_argument("texts", nargs="*", metavar="TEXT", help="queries; none or '-' reads stdin, one per line")
    classify.add_argument("--target", default=_target_default(environ), help=target_help)
    classify.add_argument("--mode", choices=["fast", "reasoned", "auto"], default=None, help="default: the server's")
    classify.add_argument("--threshold", type=float, default=None, help="malicious-probability threshold")
    classify.add_argument("--json", action="store_true", help="one JSON object per line")
    classify.add_argument("--timeout", type=float, default=60.0, help="deadline per call, seconds")
    classify.add_argument(
        "--truncate", action="store_true", help="cut over-long queries to the server's limits instead of failing"
    )
    classify.add_argument(
        "--document",
        action="append",
        default=[],
        metavar="FILE",
        help="screen FILE as a document the agent reads, with every query (repeatable; no TEXT: documents alone)",
    )
    _add_connection_args(classify)
    classify.set_defaults(handler=_classify)

    info = sub.add_parser("info", help="describe the served model")
    info.add_argument("--target", default=_target_default(environ), help=target_help)
    info.add_argument("--json", action="store_true", help="print JSON")
    _add_connection_args(info)
    info.set_defaults(handler=_info)

    health = sub.add_parser(
        "health", help="exit 0 if the server's gRPC health service says SERVING (container health checks)"
    )
    health.add_argument("--target", default=_target_default(environ), help=target_help)
    health.add_argument("--service", default="", help="service to ask about (default: the whole server)")
    health.add_argument("--timeout", type=float, default=5.0, help="deadline, seconds")
    _add_connection_args(health)
    health.set_defaults(handler=_health)

    screen = sub.add_parser(
        "screen",
        help="screen logged queries in bulk (JSONL, CSV, TSV, text; .gz; '-' for stdin), resumably",
        description="Screen logged queries in bulk. Output: one JSON line per query; bad records go to the "
        "rejects file with their reason. Kill it at any moment and rerun with --resume: every input record "
        "ends up in the output or the rejects exactly once.",
    )
    screen.add_argument("inputs", nargs="+", metavar="INPUT", help="files to screen; '-' reads stdin")
    screen.add_argument("--out", required=True, type=Path, help="output JSONL (appended to with --resume)")
    screen.add_argument("--rejects", type=Path, help="rejects JSONL (default: OUT with .rejects.jsonl)")
    where = screen.add_mutually_exclusive_group()
    where.add_argument("--target", help=target_help)
    screen.add_argument("--format", default="auto", choices=["auto", "jsonl", "csv", "tsv", "text"])
    screen.add_argument("--text-field", default="text", help="JSONL key / CSV column of the query (default: text)")
    screen.add_argument(
        "--id-field", default="id", help="JSONL key / CSV column of the id (default: id, else line number)"
    )
    screen.add_argument(
        "--documents-field",
        metavar="KEY",
        help="JSONL key holding each record's documents (a list of strings or {id, content} objects)",
    )
    screen.add_argument("--mode", choices=["fast", "reasoned", "auto"], default=None, help="default: the server's")
    screen.add_argument("--threshold", type=float, default=None)
    screen.add_argument("--rationale", action="store_true", help="write the rationale field (REASONED/AUTO)")
    screen.add_argument("--resume", action="store_true", help="continue into existing output files")
    screen.add_argument("--window", type=int, default=256, help="queries in flight at most (memory stays flat)")
    screen.add_argument("--summary-json", type=Path, help="also write the summary as JSON here")
    screen.add_argument("--top", type=int, default=10, help="flagged queries listed in the summary")
    screen.add_argument("--quiet", action="store_true", help="no progress bar and no summary on stderr")
    _add_connection_args(screen)

    cli = CommandLine(subcommands=sub, screen=screen, screen_where=where, environ=environ)
    screen.set_defaults(handler=lambda args: _screen(args, cli))
    register_installed(cli)
    return parser, cli


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
        if result.span is not None and (result.span.start, result.span.end) != (0, len(text)):  # a window decided
            print(f"\tspan {result.span.start}:{result.span.end}\t{text[result.span.start : result.span.end][:80]}")
        if result.rationale:
            print(f"\t{result.rationale}")
        for doc in result.documents:
            if doc.error is not None:
                print(f"\tdocument {doc.id}\tERROR\t{doc.error.code}: {doc.error.message}")
            else:
                where = f"\tspan {doc.span.start}:{doc.span.end}" if doc.span else ""
                verdict = doc.verdict.value.upper() if doc.verdict else ""
                print(f"\tdocument {doc.id}\t{verdict}\t{doc.malicious_probability:.4f}{where}")


def _classify(args: argparse.Namespace) -> int:
    documents = tuple(Document(Path(f).read_text(encoding="utf-8"), id=f) for f in args.document)
    # With documents and no text, one query of the documents alone (stdin is not read).
    texts = [""] if documents and not args.texts else _read_texts(args.texts)
    if not texts:
        print("promptgate classify: no text given", file=sys.stderr)
        return EXIT_USAGE
    failed = False
    # on_error="raise": an operator's command shows what failed instead of a stand-in verdict.
    with Client(args.target, timeout=args.timeout, on_error="raise", **_connection(args, os.environ)) as client:
        limit = client.model_info().limits["max_batch_items"] or 1
        for start in range(0, len(texts), limit):
            chunk = texts[start : start + limit]
            requests = [ScreenRequest(t, documents=documents) for t in chunk]
            results = client.classify_batch(requests, mode=args.mode, threshold=args.threshold, truncate=args.truncate)
            for text, result in zip(chunk, results, strict=True):
                failed |= isinstance(result, ItemError)
                _print_result(result, args.json, text)
    return EXIT_FAILED if failed else EXIT_OK


def _health(args: argparse.Namespace) -> int:
    from promptgate.client.health import check_health

    status = check_health(args.target, service=args.service, timeout=args.timeout, **_connection(args, os.environ))
    print(status)
    return EXIT_OK if status == "SERVING" else EXIT_FAILED


def _info(args: argparse.Namespace) -> int:
    with Client(args.target, **_connection(args, os.environ)) as client:
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


def _screen(args: argparse.Namespace, cli: CommandLine) -> int:
    import asyncio

    from promptgate.screen import OutputError, ScreenOptions, write_summary_json

    if args.window < 1:
        print("promptgate screen: --window must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    options = ScreenOptions(
        inputs=args.inputs,
        out=args.out,
        rejects=args.rejects or args.out.with_name(args.out.name.removesuffix(".jsonl") + ".rejects.jsonl"),
        fmt=args.format,
        text_field=args.text_field,
        id_field=args.id_field,
        documents_field=args.documents_field,
        mode=args.mode,
        threshold=args.threshold,
        rationale=args.rationale,
        resume=args.resume,
        window=args.window,
        top=args.top,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    try:
        # Another part's way to screen (the server's --local and --ray), else through a server.
        summary = next((s for run in cli.screen_runners if (s := run(args, options)) is not None), None)
        if summary is None:
            summary = asyncio.run(_screen_remote(options, args, cli.environ))
    except (OutputError, ValueError, OSError) as exc:
        print(f"promptgate screen: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.summary_json:
        write_summary_json(summary, args.summary_json)
    if not args.quiet:
        print(summary.render(), file=sys.stderr)
    return EXIT_OK


async def _screen_remote(options, args: argparse.Namespace, environ: Mapping[str, str]):
    from promptgate.screen import RemoteScreener, run_screen

    target = args.target or _target_default(environ)
    screener = await RemoteScreener.connect(
        target,
        mode=args.mode,
        threshold=args.threshold,
        window=options.window,
        transport=_connection(args, environ),  # type: ignore[arg-type]
    )
    try:
        return await run_screen(options, screener)
    finally:
        await screener.close()


def main(argv: Sequence[str] | None = None) -> int:
    environ = os.environ
    parser, _ = build_parser(environ)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except PromptgateError as exc:
        print(f"promptgate {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except BrokenPipeError:  # `promptgate classify ... | head`: the reader has all it wants
        sys.stderr.close()
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
