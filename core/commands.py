"""Runtime commands (``run``, ``replay``, ``emit``); filled in by the timeline work."""

from __future__ import annotations

import argparse
from typing import Any


def add_runtime_commands(sub: Any) -> None:
    """Register the runtime subcommands."""


async def run_command(args: argparse.Namespace) -> int:
    """Run a runtime subcommand."""
    raise NotImplementedError(args.command)
