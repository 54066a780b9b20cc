# SPDX-License-Identifier: GPL-2.0-only
"""`pyfrag run`: run a program with every allocation on pyfrag (LD_PRELOAD).

Contract: add_parser(subparsers) registers the command; run(args) starts
CMD with libpyfrag.so preloaded (pyfrag.preload.preload_env) and returns
CMD's exit code, 128 + N if signal N killed it, 127 if CMD cannot be found.
The program's own output is untouched; with --stats the library prints its
counters on stderr when the program exits.
"""
from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys

from .. import preload

_SIZE = re.compile(r"^([0-9]+)(?:([kmgt])i?b?)?$", re.IGNORECASE)


def _size(text: str) -> str:
    """A size as the library reads it (digits, then K/M/G/T, optional iB); else a usage error:
    the library would ignore a bad value and run without the cap."""
    match = _SIZE.match(text)
    shift = 10 * (" kmgt".index(match.group(2).lower()) if match and match.group(2) else 0)
    if not match or int(match.group(1)) << shift >= 2**63:
        raise argparse.ArgumentTypeError("%r is not a size such as 64M, 512K or 1G" % text)
    return text


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="run a program with its allocations on pyfrag (LD_PRELOAD)",
        description=__doc__.splitlines()[1],
        usage="pyfrag run [--stats] [--hugepages MODE] [--limit SIZE] -- CMD [ARGS...]")
    parser.add_argument("--stats", action="store_true",
                        help="print pyfrag's counters on stderr when the program exits")
    parser.add_argument("--hugepages", choices=("auto", "hugetlb", "thp", "off"),
                        help="chunk backing (PYFRAG_HUGEPAGES)")
    parser.add_argument("--limit", metavar="SIZE", type=_size,
                        help="cap on committed memory, e.g. 64M (PYFRAG_LIMIT)")
    parser.add_argument("--check", action="store_true",
                        help="stronger heap checks: canaries, poisoning (PYFRAG_CHECK)")
    parser.add_argument("cmd", nargs="+", metavar="CMD", help="the program and its arguments")
    parser.set_defaults(run=run)


def options_from(args) -> dict:
    options = {}
    if args.stats:
        options["stats"] = True
    if args.check:
        options["check"] = True
    if args.hugepages:
        options["hugepages"] = args.hugepages
    if args.limit:
        options["limit"] = args.limit
    return options


def run(args) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print("pyfrag run: error: no program given (pyfrag run -- CMD ARGS...)", file=sys.stderr)
        return 2
    env = preload.preload_env(**options_from(args))
    # the child gets the terminal's signals itself; the launcher only waits for it
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        returncode = subprocess.call(cmd, env=env)
    except FileNotFoundError:
        print("pyfrag run: error: %s: command not found" % cmd[0], file=sys.stderr)
        return 127
    except PermissionError:
        print("pyfrag run: error: %s: permission denied" % cmd[0], file=sys.stderr)
        return 126
    finally:
        signal.signal(signal.SIGINT, previous)
    return preload.exit_code(returncode)
