"""The trainer's subcommands of `promptgate`: `data prepare`, `data rationales`, `train`, `eval`, `tiny-model`.

Registered through the `promptgate.commands` entry point. Each area registers its own
subcommands (its `commands.register`); a registered command sets `handler`, a function of
the parsed arguments returning the exit code. Registering imports nothing heavy: torch,
TRL and the engines load when a command runs.
"""

from __future__ import annotations

import argparse
import sys

from promptgate.commands import CommandLine

from .data import commands as data_commands
from .evaluation import commands as eval_commands
from .sft import commands as train_commands

__all__ = ["register"]

_SERVER_EXTRA_HINT = "this command needs the server extra: pip install 'promptgate[server]'"


def register(cli: CommandLine) -> None:
    sub = cli.subcommands
    tiny = sub.add_parser(
        "tiny-model", help="build a tiny random-weight Qwen3-shaped model (tests, offline smoke runs)"
    )
    tiny.add_argument("out", help="output directory")
    tiny.add_argument("--profile", default="promptgate", help="built-in profile written as promptgate.json")
    tiny.add_argument("--corpus", nargs="*", default=[], help="text/JSONL files to train the tokenizer on")
    tiny.add_argument(
        "--shape", default="tiny", choices=["tiny", "qwen3-0.6b"], help="qwen3-0.6b: the real model's exact shape"
    )
    tiny.set_defaults(handler=_tiny_model)
    data_commands.register(sub)
    train_commands.register(sub)
    eval_commands.register(sub)


def _tiny_model(args: argparse.Namespace) -> int:
    try:
        from .tiny_model import SHAPES, build_tiny_model
    except ImportError:
        print(f"promptgate tiny-model: {_SERVER_EXTRA_HINT}", file=sys.stderr)
        return 1
    out = build_tiny_model(args.out, profile=args.profile, corpus_files=args.corpus, spec=SHAPES[args.shape])
    print(out)
    return 0
