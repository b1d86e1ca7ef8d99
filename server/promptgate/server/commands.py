"""The server's subcommands of `promptgate`: `serve`, and in-process screening for `screen`.

Registered through the `promptgate.commands` entry point. Registering imports only the
configuration (no gRPC server, engine or logging stack); a handler imports the rest when
it runs, and says which extra is missing if it cannot.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import TYPE_CHECKING

from promptgate.commands import CommandLine

if TYPE_CHECKING:
    from promptgate.screen import ScreenOptions, Summary

__all__ = ["register"]

SERVER_EXTRA_HINT = "this command needs the server extra: pip install 'promptgate[server]'"
EXIT_FAILED, EXIT_USAGE = 1, 2


def register(cli: CommandLine) -> None:
    serve = cli.subcommands.add_parser("serve", help="run the gRPC server")
    try:
        from .config import ServerConfig
    except ImportError:
        serve.set_defaults(handler=lambda args: _missing("serve"))
    else:
        ServerConfig.add_arguments(serve)
        serve.set_defaults(handler=lambda args: _serve(args, cli))

    where, screen = cli.screen_where, cli.screen
    where.add_argument("--local", metavar="MODEL", help="run the engine in this process on MODEL (server extra)")
    where.add_argument("--ray", action="store_true", help="run as a Ray Data pipeline (see README)")
    screen.add_argument("--ray-model", metavar="MODEL", help="--ray: the model every Ray worker loads")
    screen.add_argument("--ray-actors", type=int, default=1, help="--ray: engine replicas (actors)")
    screen.add_argument("--ray-gpus-per-actor", type=float, default=0, help="--ray: GPUs each replica takes")
    screen.add_argument("--ray-chunk", type=int, default=50_000, help="--ray: records handed to Ray at a time")
    screen.add_argument(
        "--engine", default="auto", choices=["auto", "vllm", "transformers"], help="--local/--ray engine"
    )
    screen.add_argument("--profile", help="--local/--ray: model profile (default: from the model)")
    cli.add_screen_runner(lambda args, options: _screen_here(args, options, cli))


def _missing(command: str) -> int:
    print(f"promptgate {command}: {SERVER_EXTRA_HINT}", file=sys.stderr)
    return EXIT_FAILED


def _serve(args: argparse.Namespace, cli: CommandLine) -> int:
    import asyncio

    from .config import ConfigError, ServerConfig

    try:
        config = ServerConfig.from_sources(args, cli.environ)
    except ConfigError as exc:
        print(f"promptgate serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from .app import serve
    except ImportError:
        return _missing("serve")
    return asyncio.run(serve(config))


def _screen_here(args: argparse.Namespace, options: ScreenOptions, cli: CommandLine) -> Summary | None:
    """`screen --local` and `screen --ray`; None for a screen through a server."""
    if not (args.local or args.ray):
        return None
    try:
        from .config import ServerConfig
        from .local import LocalScreener
    except ImportError:
        raise ValueError(f"--{'local' if args.local else 'ray'}: {SERVER_EXTRA_HINT}") from None
    if args.ray and not args.ray_model:
        raise ValueError("--ray: --ray-model is required")
    # PROMPTGATE_* settings apply to the in-process engine as they would to a server.
    config = dataclasses.replace(
        ServerConfig.from_sources(None, cli.environ),
        model=args.local or args.ray_model,
        engine=args.engine,
        profile=args.profile,
    )
    if args.ray:
        from promptgate.screen.ray_pipeline import run_ray

        from .local import RayScreeningWorker

        return run_ray(
            options,
            RayScreeningWorker,
            {"config": config},
            model=config.model,
            chunk_size=args.ray_chunk,
            actors=args.ray_actors,
            gpus_per_actor=args.ray_gpus_per_actor,
        )
    import asyncio

    from promptgate.screen import run_screen

    async def run() -> Summary:
        screener = await LocalScreener.load(config, mode=args.mode, threshold=args.threshold, window=options.window)
        try:
            return await run_screen(options, screener)
        finally:
            await screener.close()

    return asyncio.run(run())
