"""Subcommands of this area (filled in as the area is built)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands; each sets `handler(args) -> exit code`."""
