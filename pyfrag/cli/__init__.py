# SPDX-License-Identifier: GPL-2.0-only
"""The `pyfrag` command: argparse front for the subcommands (one module each).

Contract: main(argv=None) -> int, never raises for expected failures.
Exit codes: 0 ok, 1 failure (message on stderr), 2 usage, 130 interrupted.
Importing this package does not load libpyfrag.so (nor psutil, nor the
stress harness: each command imports what it runs when it runs), so
`pyfrag --help` and `pyfrag COMMAND --help` work without it.
"""
from __future__ import annotations

import argparse
import os
import sys

from .. import __version__
from .._native.errors import FragError
from . import bench, info, run, stress

COMMANDS = (info, stress, bench, run)  # each has add_parser(subparsers) and run(args) -> int


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyfrag", description="The Linux kernel's page_frag allocator in userspace.")
    parser.add_argument("--version", action="version", version="pyfrag " + __version__)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("pyfrag: error: a command is required", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `pyfrag info | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (FragError, OSError, MemoryError, ValueError) as exc:
        print("pyfrag %s: error: %s" % (args.command, exc), file=sys.stderr)
        return 1
