"""The trainer's subcommands of `promptgate`: `data prepare`, `data rationales`, `train`, `eval`.

Each area registers its own subcommands (its `commands.register`); a registered command
sets `handler`, a function of the parsed arguments returning the exit code. Registering
imports nothing heavy: torch, TRL and the engines load when a command runs.
"""

from __future__ import annotations

import argparse

from .data import commands as data_commands
from .evaluation import commands as eval_commands
from .sft import commands as train_commands

__all__ = ["add_commands"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    data_commands.register(sub)
    train_commands.register(sub)
    eval_commands.register(sub)
