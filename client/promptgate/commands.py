"""How each installed part of promptgate adds its commands to the `promptgate` command.

The command line (`promptgate.cli`) holds the client's commands. Every other part
registers its own through the `promptgate.commands` entry-point group: a function that
takes a `CommandLine` and adds subcommands to it (the server adds `serve` and in-process
screening, the trainer `data`, `train`, `eval` and `tiny-model`). So the client imports no
upper layer, a client-only install offers the client's commands and a full one all of them.

A registered subcommand sets `handler(args) -> exit code` with `set_defaults`. Registering
must import nothing heavy: the handler imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promptgate.screen import ScreenOptions, Summary

__all__ = ["ENTRY_POINT_GROUP", "CommandLine", "ScreenRunner", "register_installed"]

ENTRY_POINT_GROUP = "promptgate.commands"

# Screens `options` another way than through a server, or returns None when `args` do not ask for it.
ScreenRunner = Callable[[argparse.Namespace, "ScreenOptions"], "Summary | None"]


@dataclass
class CommandLine:
    """The `promptgate` command as parts see it while they register."""

    subcommands: argparse._SubParsersAction
    # `promptgate screen`: parts add where else to screen (mutually exclusive with --target).
    screen: argparse.ArgumentParser
    screen_where: argparse._MutuallyExclusiveGroup
    # Only the entry point reads the environment; commands get it from here.
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    screen_runners: list[ScreenRunner] = field(default_factory=list)

    def add_screen_runner(self, runner: ScreenRunner) -> None:
        self.screen_runners.append(runner)


def register_installed(cli: CommandLine) -> None:
    """Let every installed part add its commands, in the order of their names.

    A part whose module cannot be imported (its dependencies are not installed) adds
    nothing: the commands of the parts that are installed still work.
    """
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        try:
            register = ep.load()
        except ImportError:
            continue
        register(cli)
